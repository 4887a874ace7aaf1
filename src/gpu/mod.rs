//! The GPU backend.
//!
//! * `mod.rs` (this file): finding an adapter, creating the device with the adapter's real limits, and compiling
//!   the WGSL kernels from `shaders/`.
//! * [`buffers`]: owns GPU memory: typed tensors, uploads and readbacks, the parameter layout on the GPU.
//! * [`record`]: records dispatches into programs that are encoded into one compute pass per submit.
//! * [`kernels`]: one function per WGSL entry point, with its uniform block and dispatch shape.
//! * [`trainer`], [`sampler`]: the training step, evaluation and the samplers, built from those kernels.

pub mod buffers;
pub mod kernels;
pub mod record;
pub mod sampler;
pub mod trainer;

use anyhow::{anyhow, Context, Result};
use std::collections::HashMap;
use std::sync::Mutex;

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
}

fn summarize(info: &wgpu::AdapterInfo, selected: bool) -> AdapterSummary {
    AdapterSummary {
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: info.driver.clone(),
        driver_info: info.driver_info.clone(),
        selected,
    }
}

fn instance() -> wgpu::Instance {
    // Honours WGPU_BACKEND (and WGPU_VALIDATION, WGPU_DEBUG, ...).
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// The adapter pixelcnn will use: WGPU_ADAPTER_NAME if set, else wgpu's choice under WGPU_POWER_PREF.
async fn choose_adapter(instance: &wgpu::Instance) -> Result<wgpu::Adapter> {
    if let Ok(name) = std::env::var("WGPU_ADAPTER_NAME") {
        return wgpu::util::initialize_adapter_from_env(instance, None)
            .await
            .map_err(|_| anyhow!("WGPU_ADAPTER_NAME={name:?} matches no adapter; `pixelcnn devices` lists them"));
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

/// Every adapter wgpu can see, with the one [`Gpu::new`] would use marked.
pub fn list_adapters() -> Result<Vec<AdapterSummary>> {
    let instance = instance();
    let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
    let adapters = pollster::block_on(instance.enumerate_adapters(backends));
    let chosen = pollster::block_on(choose_adapter(&instance)).ok().map(|a| a.get_info());
    Ok(adapters
        .iter()
        .map(|a| {
            let info = a.get_info();
            let selected = chosen
                .as_ref()
                .is_some_and(|c| c.name == info.name && c.backend == info.backend && c.device == info.device);
            summarize(&info, selected)
        })
        .collect())
}

/// The device, its queue, and the compiled kernels.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pipelines: Mutex<HashMap<String, std::sync::Arc<kernels::Pipeline>>>,
}

impl Gpu {
    /// Opens the adapter chosen by the environment (see [`list_adapters`]) with its own limits, which are far above
    /// wgpu's defaults (lavapipe allows 128 MiB per storage binding; the defaults allow 128 MB total buffers).
    pub fn new() -> Result<Gpu> {
        let instance = instance();
        let adapter = pollster::block_on(choose_adapter(&instance))?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let features = adapter.features() & wgpu::Features::SUBGROUP;
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
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            pipelines: Mutex::new(HashMap::new()),
        })
    }

    /// The subgroup size the sampler's single-pixel conv (`conv_pixel.wgsl`) runs with, or None where the sampler
    /// uses the tiled `conv_forward` instead. The kernel is shaped for CPU rasterisers (and measured only there)
    /// and needs subgroups of one fixed size that divides 16, the sampler's padding of each pixel's images.
    /// `PIXELCNN_PIXEL_KERNEL=0` turns it off, for comparisons.
    pub fn pixel_subgroup(&self) -> Option<u32> {
        if std::env::var("PIXELCNN_PIXEL_KERNEL").is_ok_and(|v| v == "0") {
            return None;
        }
        let sg = self.info.subgroup_min_size;
        let usable = self.device.features().contains(wgpu::Features::SUBGROUP)
            && self.info.subgroup_max_size == sg
            && (4..=16).contains(&sg)
            && 16 % sg == 0;
        (usable && self.is_software()).then_some(sg)
    }

    /// "name (backend)" for reports.
    pub fn adapter_name(&self) -> String {
        format!("{} ({:?})", self.info.name, self.info.backend)
    }

    /// Whether this adapter is a CPU rasteriser (lavapipe/llvmpipe, SwiftShader, WARP): such devices want
    /// register blocking rather than shared-memory tiling.
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
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
    match Gpu::new() {
        Ok(g) => {
            eprintln!("GPU adapter: {}", g.adapter_name());
            Some(g)
        }
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but no GPU adapter: {e:#}");
            }
            eprintln!("SKIPPING GPU test: {e:#}");
            None
        }
    }
}
