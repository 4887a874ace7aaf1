//! Which version of each kernel family serves a device, decided once when the device opens, with the reason.
//!
//! * Convolutions (training, evaluation, whole rows in the sampler): `raster` (`conv_raster.wgsl`: subgroup
//!   register tiles for CPU rasterisers) or `tiled` (`conv_tiled.wgsl`: workgroup-memory tiles for GPUs).
//! * The sampler's per-pixel step: `layers` (each layer one dispatch of its family's kernel at the pixel, the
//!   convs in the conv version above: for CPU rasterisers, whose dispatches can each use every core) or `net`
//!   (`pixel_net.wgsl`: one dispatch per pixel runs the whole network, one workgroup per image, for GPUs).
//!
//! The raster kernels need subgroups of one fixed size; adapters without them (wgpu's GL backend) get the tiled
//! ones. `PIXELCNN_KERNELS` forces a choice: `raster`, `tiled`, or per family `conv=tiled,pixel=layers`.
//! The tile sizes (`Tuning`) are read from the environment here, once.

use anyhow::{bail, Result};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvVersion {
    Raster,
    Tiled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PixelVersion {
    Layers,
    Net,
}

/// What the choice depends on (a plain struct, so that tests can describe adapters they do not have).
#[derive(Clone, Debug, Serialize)]
pub struct AdapterFacts {
    pub name: String,
    pub backend: String,
    /// A CPU rasteriser (lavapipe/llvmpipe, SwiftShader, WARP).
    pub software: bool,
    /// The device was opened with `Features::SUBGROUP`.
    pub subgroups: bool,
    pub subgroup_min: u32,
    pub subgroup_max: u32,
    pub max_uniform_buffers_per_stage: u32,
    pub max_uniform_binding: u64,
}

impl AdapterFacts {
    /// The fixed subgroup size the raster kernels can use, if any.
    pub fn fixed_subgroup(&self) -> Option<u32> {
        let sg = self.subgroup_min;
        (self.subgroups && self.subgroup_max == sg && [4, 8, 16].contains(&sg)).then_some(sg)
    }

    /// Mesa's llvmpipe (lavapipe on Vulkan, llvmpipe on GL), whose worker pool `LP_NUM_THREADS` sizes.
    pub fn is_llvmpipe(&self) -> bool {
        self.name.to_ascii_lowercase().contains("llvmpipe")
    }
}

/// Tile sizes of the raster kernels and the sampler's device count (`PIXELCNN_*` overrides, read once).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Tuning {
    /// Output rows per lane of the raster conv kernels (`PIXELCNN_CONV_TM`).
    pub conv_tm: u32,
    /// Largest number of output vec4 columns per lane (`PIXELCNN_CONV_TN`).
    pub conv_tn: u32,
    /// Row groups per lane of the raster weight gradient (`PIXELCNN_WGRAD_TI`).
    pub wgrad_ti: u32,
    /// Largest number of output vec4 columns per lane of the raster weight gradient (`PIXELCNN_WGRAD_TN`).
    pub wgrad_tn: u32,
    /// Most uniform windows a raster conv may read a weight larger than one uniform binding through
    /// (`PIXELCNN_WEIGHT_WINDOWS`, 1–3; 1 keeps such weights in storage).
    pub weight_windows: u32,
    /// Positions per chunk of the weight-gradient reduction (`PIXELCNN_WGRAD_CHUNK`; changes the summation order).
    pub wgrad_chunk: usize,
    /// Devices the sampler splits its images over on a CPU rasteriser (`PIXELCNN_SAMPLER_DEVICES`).
    pub sampler_devices: usize,
    /// Whether the sampler's devices run their dispatches on the thread that submits them rather than on a
    /// worker pool (llvmpipe's `LP_NUM_THREADS=0`, applied to the sampler's devices only, unless the user set
    /// `LP_NUM_THREADS`; `PIXELCNN_SAMPLER_INLINE` = 0 or 1). With two devices in two threads both cores stay
    /// busy either way, and the sampler's many small dispatches skip the hand-off to the workers and back (64
    /// default-model images on the 2-core VM: 1.14–1.30 s with worker pools, 0.95–0.98 s inline).
    pub sampler_inline: bool,
}

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

impl Tuning {
    /// The tiles for a device with fixed subgroups of `subgroup` (the raster kernels' lanes): measured best on
    /// lavapipe (8 lanes); smaller elsewhere, because SwiftShader's shader compiler (4 lanes) exhausts 24 GiB of
    /// memory on the unrolled register tiles of TM = 8, TN = 16, TI = 32, and still 10 GiB at TI = 16 (0.35 GiB
    /// at TM = 4, TN = 8, TI = 8). The weight gradient's TI = 18 keeps a lane's accumulators (TI · TN · 4 vec4s, in
    /// memory on a CPU) near 144: the masked 3×3 at TI = 27 (216) took 182 ms against 143 ms at TI = 18, while the
    /// 1×1s (TI = 17 either way) were unchanged and fewer rows (TI = 11) load dz more often (74 against 65 ms).
    /// Three uniform weight windows on 8 lanes: the default model's five masked 3×3 forwards took 608 against
    /// 654 ms in a training step (their backward-data unchanged within noise), 64 samples 0.89 against 0.98 s;
    /// one elsewhere, as each window copies the tap loop that SwiftShader's compiler already finds costly.
    fn from_env(software: bool, subgroup: Option<u32>, llvmpipe: bool) -> Tuning {
        let (tm, tn, ti, windows) = if subgroup == Some(8) {
            (8, 16, 18, 3)
        } else {
            (4, 8, 8, 1)
        };
        Tuning {
            conv_tm: env("PIXELCNN_CONV_TM").unwrap_or(tm).clamp(1, 16),
            conv_tn: env("PIXELCNN_CONV_TN").unwrap_or(tn).clamp(1, 32),
            wgrad_ti: env("PIXELCNN_WGRAD_TI").unwrap_or(ti).clamp(1, 64),
            wgrad_tn: env("PIXELCNN_WGRAD_TN").unwrap_or(2).clamp(1, 8),
            weight_windows: env("PIXELCNN_WEIGHT_WINDOWS").unwrap_or(windows).clamp(1, 3),
            wgrad_chunk: env("PIXELCNN_WGRAD_CHUNK").unwrap_or(1568).clamp(16, 1 << 20),
            sampler_devices: if software {
                env("PIXELCNN_SAMPLER_DEVICES").unwrap_or(2).clamp(1, 8)
            } else {
                1
            },
            sampler_inline: env::<u8>("PIXELCNN_SAMPLER_INLINE").map_or(llvmpipe, |v| v != 0) && llvmpipe,
        }
    }
}

/// The versions serving a device, and why.
#[derive(Clone, Debug, Serialize)]
pub struct KernelChoice {
    pub conv: ConvVersion,
    pub pixel: PixelVersion,
    /// The subgroup size the raster kernels are compiled for.
    pub subgroup: Option<u32>,
    pub reason: String,
    pub tuning: Tuning,
}

impl KernelChoice {
    /// The choice for an adapter, with `force` (the value of `PIXELCNN_KERNELS`) overriding the default.
    pub fn choose(facts: &AdapterFacts, force: Option<&str>) -> Result<KernelChoice> {
        let sg = facts.fixed_subgroup();
        let raster_ok = sg.is_some();
        let (mut conv, mut pixel, mut reason) = if facts.software && raster_ok {
            (
                ConvVersion::Raster,
                PixelVersion::Layers,
                format!(
                    "{} is a CPU rasteriser with subgroups of {}: register-tiled raster kernels, the sampler layer by layer",
                    facts.name,
                    sg.unwrap_or(0),
                ),
            )
        } else if facts.software {
            (
                ConvVersion::Tiled,
                PixelVersion::Net,
                format!(
                    "{} is a CPU rasteriser without fixed-size subgroups: tiled kernels",
                    facts.name
                ),
            )
        } else {
            (
                ConvVersion::Tiled,
                PixelVersion::Net,
                format!("{} ({}) is a GPU: workgroup-tiled kernels", facts.name, facts.backend),
            )
        };
        if let Some(spec) = force.map(str::trim).filter(|s| !s.is_empty()) {
            for part in spec.split(',') {
                match part.trim() {
                    "raster" => (conv, pixel) = (ConvVersion::Raster, PixelVersion::Layers),
                    "tiled" => (conv, pixel) = (ConvVersion::Tiled, PixelVersion::Net),
                    "conv=raster" => conv = ConvVersion::Raster,
                    "conv=tiled" => conv = ConvVersion::Tiled,
                    "pixel=layers" => pixel = PixelVersion::Layers,
                    "pixel=net" => pixel = PixelVersion::Net,
                    other => bail!(
                        "PIXELCNN_KERNELS={spec:?}: unknown part {other:?} (expected raster, tiled, conv=raster|tiled, pixel=layers|net)"
                    ),
                }
            }
            if conv == ConvVersion::Raster && !raster_ok {
                bail!("PIXELCNN_KERNELS={spec:?}: the raster kernels need subgroups of a fixed size (4, 8 or 16), which {} ({}) does not offer", facts.name, facts.backend);
            }
            reason = format!("forced by PIXELCNN_KERNELS={spec}");
        }
        Ok(KernelChoice {
            conv,
            pixel,
            subgroup: sg.filter(|_| conv == ConvVersion::Raster),
            reason,
            tuning: Tuning::from_env(facts.software, sg, facts.is_llvmpipe()),
        })
    }

    /// "conv=raster pixel=layers (subgroups of 8)".
    pub fn describe(&self) -> String {
        let v = |x: &dyn erased::Name| x.name();
        format!(
            "conv={} pixel={}{}",
            v(&self.conv),
            v(&self.pixel),
            self.subgroup
                .map(|s| format!(" (subgroups of {s})"))
                .unwrap_or_default()
        )
    }
}

mod erased {
    pub trait Name {
        fn name(&self) -> &'static str;
    }
    impl Name for super::ConvVersion {
        fn name(&self) -> &'static str {
            match self {
                super::ConvVersion::Raster => "raster",
                super::ConvVersion::Tiled => "tiled",
            }
        }
    }
    impl Name for super::PixelVersion {
        fn name(&self) -> &'static str {
            match self {
                super::PixelVersion::Layers => "layers",
                super::PixelVersion::Net => "net",
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(software: bool, subgroups: bool) -> AdapterFacts {
        AdapterFacts {
            name: "test".into(),
            backend: if subgroups { "Vulkan" } else { "Gl" }.into(),
            software,
            subgroups,
            subgroup_min: 8,
            subgroup_max: 8,
            max_uniform_buffers_per_stage: 12,
            max_uniform_binding: 65536,
        }
    }

    #[test]
    fn each_adapter_gets_a_version_it_can_run() {
        let lavapipe = KernelChoice::choose(&facts(true, true), None).unwrap();
        assert_eq!(
            (lavapipe.conv, lavapipe.pixel),
            (ConvVersion::Raster, PixelVersion::Layers)
        );
        // llvmpipe over GL: no subgroups, so the raster kernels cannot be expressed there.
        let gl = KernelChoice::choose(&facts(true, false), None).unwrap();
        assert_eq!((gl.conv, gl.pixel), (ConvVersion::Tiled, PixelVersion::Net));
        let gpu = KernelChoice::choose(&facts(false, true), None).unwrap();
        assert_eq!((gpu.conv, gpu.pixel), (ConvVersion::Tiled, PixelVersion::Net));
        let forced = KernelChoice::choose(&facts(true, true), Some("conv=tiled")).unwrap();
        assert_eq!((forced.conv, forced.pixel), (ConvVersion::Tiled, PixelVersion::Layers));
        assert!(forced.reason.contains("PIXELCNN_KERNELS"));
        assert!(KernelChoice::choose(&facts(true, false), Some("raster")).is_err());
        assert!(KernelChoice::choose(&facts(true, true), Some("fast")).is_err());
    }

    #[test]
    fn only_llvmpipe_samples_without_worker_pools() {
        let named = |name: &str, software: bool| AdapterFacts {
            name: name.into(),
            ..facts(software, true)
        };
        let inline = |f: AdapterFacts| KernelChoice::choose(&f, None).unwrap().tuning.sampler_inline;
        assert!(inline(named("llvmpipe (LLVM 15.0.6, 256 bits)", true)));
        assert!(!inline(named("SwiftShader Device (Subzero)", true)));
        assert!(!inline(named("NVIDIA H200", false)));
    }
}
