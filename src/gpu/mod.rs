//! The GPU backend.
//!
//! * `mod.rs` (this file): finding an adapter, opening the device with the adapter's real limits.
//! * [`versions`]: which version of each kernel family serves this device, decided once, with the reason.
//! * [`kernels`]: one module per WGSL kernel family (its uniform struct, named bindings, dispatch shapes and
//!   launch functions), and the shader registry; [`shader`]: the WGSL template expander.
//! * [`buffers`]: owns GPU memory: tensors, uploads and readbacks.
//! * [`record`]: records dispatches into programs that are encoded into one compute pass per submit.
//! * [`layers`]: one forward / backward pair per layer kind, mirroring `cpu.rs`.
//! * [`trainer`], [`sampler`]: the training step, evaluation and the samplers, built from those layers.

pub mod buffers;
pub mod kernels;
pub mod layers;
pub mod record;
pub mod sampler;
pub mod shader;
pub mod trainer;
pub mod versions;

use anyhow::{anyhow, Context, Result};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use versions::{AdapterFacts, KernelChoice};

/// How to get a GPU on a machine without one: the message every "no adapter" error carries.
pub const NO_ADAPTER_HELP: &str =
    "no GPU adapter found. pixelcnn needs a Vulkan, Metal or DX12 device. On a Linux machine \
without a GPU, install Mesa's software Vulkan driver (lavapipe), e.g. `sudo apt-get install mesa-vulkan-drivers` on \
Debian/Ubuntu, then run `pixelcnn devices` to check. The CPU backend (`--device cpu`) also works, slowly.";

/// What `pixelcnn devices` shows about an adapter.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub selected: bool,
    /// For the selected adapter: the kernel versions that serve it and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernels: Option<KernelChoice>,
}

fn summarize(info: &wgpu::AdapterInfo, selected: bool) -> AdapterSummary {
    AdapterSummary {
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: info.driver.clone(),
        driver_info: info.driver_info.clone(),
        selected,
        kernels: None,
    }
}

fn instance() -> wgpu::Instance {
    // Before the first driver call: without XDG_RUNTIME_DIR, Mesa prints an error line on every device open.
    crate::runtime_dir::ensure_runtime_dir();
    // Honours WGPU_BACKEND (and WGPU_VALIDATION, WGPU_DEBUG, ...).
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// The backends to look at: WGPU_BACKEND's, or all. A WGPU_BACKEND that names none is an error.
fn backends() -> Result<wgpu::Backends> {
    match std::env::var("WGPU_BACKEND") {
        Ok(v) if !v.trim().is_empty() => {
            let b = wgpu::Backends::from_comma_list(&v);
            anyhow::ensure!(
                !b.is_empty(),
                "WGPU_BACKEND={v:?} names no backend; use vulkan, metal, dx12 or gl (comma-separated)"
            );
            Ok(b)
        }
        _ => Ok(wgpu::Backends::all()),
    }
}

/// "name (backend)" of every adapter, for messages.
fn adapter_names(adapters: &[wgpu::Adapter]) -> String {
    if adapters.is_empty() {
        return "none".into();
    }
    adapters
        .iter()
        .map(|a| {
            let i = a.get_info();
            format!("{:?} ({:?})", i.name, i.backend)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The adapter pixelcnn will use: the first whose name contains WGPU_ADAPTER_NAME (case-insensitive) if that is
/// set, else wgpu's choice under WGPU_POWER_PREF. Never panics: no match is an error listing the adapters.
async fn choose_adapter(instance: &wgpu::Instance) -> Result<wgpu::Adapter> {
    let backends = backends()?;
    if let Some(name) = std::env::var_os("WGPU_ADAPTER_NAME") {
        let name = name.to_string_lossy();
        let wanted = name.to_lowercase();
        let adapters = instance.enumerate_adapters(backends).await;
        let found = adapters
            .iter()
            .position(|a| a.get_info().name.to_lowercase().contains(&wanted));
        return match found {
            Some(i) => Ok(adapters.into_iter().nth(i).expect("found")),
            None => Err(anyhow!(
                "WGPU_ADAPTER_NAME={name:?} matches no adapter's name; the adapters are: {}",
                adapter_names(&adapters)
            )),
        };
    }
    let power_preference = wgpu::PowerPreference::from_env().unwrap_or(wgpu::PowerPreference::HighPerformance);
    instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference,
            ..Default::default()
        })
        .await
        .map_err(|_| anyhow!(NO_ADAPTER_HELP))
}

/// Vulkan drivers that are often installed where the Vulkan loader does not look by default: (name, the substring
/// of its adapter's name, its ICD file). SwiftShader, a Vulkan driver that runs on the CPU, comes with Chromium
/// (`apt-get install chromium-common`).
pub const EXTRA_DRIVERS: &[(&str, &str, &str)] = &[(
    "SwiftShader",
    "SwiftShader",
    "/usr/lib/chromium/vk_swiftshader_icd.json",
)];

/// The drivers of [`EXTRA_DRIVERS`] installed on this machine but not among `adapters`, with how to use each.
pub fn unlisted_drivers(adapters: &[AdapterSummary]) -> Vec<String> {
    EXTRA_DRIVERS
        .iter()
        .filter(|(_, name, icd)| {
            Path::new(icd).is_file() && !adapters.iter().any(|a| a.name.contains(name))
        })
        .map(|(what, _, icd)| {
            format!("{what} is installed but not on the Vulkan loader's path; to use it: VK_ICD_FILENAMES={icd} pixelcnn ...")
        })
        .collect()
}

/// Every adapter wgpu can see, with the one [`Gpu::new`] would use marked (and its kernel choice).
pub fn list_adapters() -> Result<Vec<AdapterSummary>> {
    let instance = instance();
    let adapters = pollster::block_on(instance.enumerate_adapters(backends()?));
    let chosen = match pollster::block_on(choose_adapter(&instance)) {
        Ok(a) => Some(a),
        // A name that matches nothing is the user's error, not "no adapter".
        Err(e) if std::env::var_os("WGPU_ADAPTER_NAME").is_some() => return Err(e),
        Err(_) => None,
    };
    let chosen_info = chosen.as_ref().map(|a| a.get_info());
    let mut out: Vec<AdapterSummary> = adapters
        .iter()
        .map(|a| {
            let info = a.get_info();
            let selected = chosen_info
                .as_ref()
                .is_some_and(|c| c.name == info.name && c.backend == info.backend && c.device == info.device);
            summarize(&info, selected)
        })
        .collect();
    if let Some(a) = chosen {
        let choice = KernelChoice::choose(
            &facts(&a, a.features()),
            std::env::var("PIXELCNN_KERNELS").ok().as_deref(),
        )?;
        if let Some(s) = out.iter_mut().find(|s| s.selected) {
            s.kernels = Some(choice);
        }
    }
    Ok(out)
}

fn facts(adapter: &wgpu::Adapter, features: wgpu::Features) -> AdapterFacts {
    let info = adapter.get_info();
    let limits = adapter.limits();
    AdapterFacts {
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        software: info.device_type == wgpu::DeviceType::Cpu,
        subgroups: features.contains(wgpu::Features::SUBGROUP),
        subgroup_min: info.subgroup_min_size,
        subgroup_max: info.subgroup_max_size,
        max_uniform_buffers_per_stage: limits.max_uniform_buffers_per_shader_stage,
        max_uniform_binding: limits.max_uniform_buffer_binding_size,
    }
}

/// The device, its queue, the kernel versions that serve it, and the compiled kernels.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub kernels: KernelChoice,
    /// Compiled pipelines by [`kernels::pipeline_key`] (a hash of the family, entry point and constants; the
    /// pipeline's own name is compared on a hit, so a collision can never hand out the wrong one).
    pipelines: Mutex<HashMap<u64, Vec<std::sync::Arc<kernels::Pipeline>>>>,
    variants: Mutex<Vec<kernels::Variant>>,
    /// A dry-run device builds pipelines' layouts and records programs, but compiles no compute pipeline and must
    /// never submit: for enumerating every pipeline variant cheaply.
    pub dry_run: bool,
    /// Bytes of every tensor allocated on this device.
    pub allocated: AtomicU64,
    /// Small buffers bound where a kernel declares a binding that a dispatch does not use (read-only and
    /// read-write, which must not alias).
    pub dummy: buffers::Tensor,
    pub dummy_rw: buffers::Tensor,
}

impl Gpu {
    /// Opens the adapter chosen by the environment (see [`list_adapters`]) with its own limits, which are far above
    /// wgpu's defaults (lavapipe allows 128 MiB per storage binding; the defaults allow 128 MB total buffers).
    pub fn new() -> Result<Gpu> {
        Gpu::open(std::env::var("PIXELCNN_KERNELS").ok().as_deref())
    }

    /// Opens the adapter with the kernel versions `force` names (`raster`, `tiled`, ...; see `versions`), or the
    /// adapter's defaults when None.
    pub fn open(force: Option<&str>) -> Result<Gpu> {
        let instance = instance();
        let adapter = pollster::block_on(choose_adapter(&instance))?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let features = adapter.features() & wgpu::Features::SUBGROUP;
        let kernels = KernelChoice::choose(&facts(&adapter, features), force)?;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("pixelcnn"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .with_context(|| format!("opening GPU device {:?}", info.name))?;
        log::info!("GPU: {} ({:?}, {:?})", info.name, info.backend, info.device_type);
        log::info!("kernels: {} — {}", kernels.describe(), kernels.reason);
        let dummy = |label| buffers::Tensor {
            id: buffers::next_id(),
            buffer: std::sync::Arc::new(device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 256,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })),
            len: 64,
        };
        let (dummy, dummy_rw) = (dummy("unused binding"), dummy("unused output binding"));
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            kernels,
            pipelines: Mutex::new(HashMap::new()),
            variants: Mutex::new(Vec::new()),
            dry_run: false,
            allocated: AtomicU64::new(0),
            dummy,
            dummy_rw,
        })
    }

    /// A dry-run device (see [`Gpu::dry_run`]) with the kernel versions `force` names.
    pub fn open_dry(force: Option<&str>) -> Result<Gpu> {
        Ok(Gpu {
            dry_run: true,
            ..Gpu::open(force)?
        })
    }

    /// "name (backend)" for reports.
    pub fn adapter_name(&self) -> String {
        format!("{} ({:?})", self.info.name, self.info.backend)
    }

    /// Whether this adapter is a CPU rasteriser (lavapipe/llvmpipe, SwiftShader, WARP).
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Bytes of GPU memory allocated so far on this device.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until the GPU has finished submission `index` (later submissions may still run).
    pub fn wait_for(&self, index: wgpu::SubmissionIndex) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| anyhow!("GPU wait failed: {e}"))?;
        Ok(())
    }

    /// Waits until the GPU has finished everything submitted so far.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| anyhow!("GPU wait failed: {e}"))?;
        Ok(())
    }
}

/// Creates the GPU context, or explains how to get one. In tests under `CI=true` a missing adapter is an error,
/// never a silent skip; elsewhere tests call this and skip with a printed note.
pub fn gpu_for_tests() -> Option<Gpu> {
    gpu_for_tests_with(std::env::var("PIXELCNN_KERNELS").ok().as_deref())
}

/// [`gpu_for_tests`] with the kernel versions `force` names (tests run every version).
pub fn gpu_for_tests_with(force: Option<&str>) -> Option<Gpu> {
    match Gpu::open(force) {
        Ok(g) => {
            eprintln!("GPU adapter: {} — kernels {}", g.adapter_name(), g.kernels.describe());
            Some(g)
        }
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but no GPU adapter: {e:#}");
            }
            eprintln!("SKIPPING: {e:#}");
            None
        }
    }
}
