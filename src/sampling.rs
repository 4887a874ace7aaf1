//! Sampling and completion on either device, and the default (shipped) checkpoint.

use crate::checkpoint::{self, Checkpoint};
use crate::cpu::{self, Samples};
use crate::gpu::sampler::{SampleRequest, Sampler};
use crate::model::{Network, PIXELS};
use crate::train::Device;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// The model shipped in `assets/`, used when `--checkpoint` is omitted.
pub const SHIPPED_MODEL: &str = "assets/pixelcnn.safetensors";

/// Finds the shipped model: relative to the working directory, then to the source tree this binary was built from.
pub fn shipped_model_path() -> Result<PathBuf> {
    let candidates = [
        PathBuf::from(SHIPPED_MODEL),
        Path::new(env!("CARGO_MANIFEST_DIR")).join(SHIPPED_MODEL),
    ];
    for c in &candidates {
        if c.is_file() {
            return Ok(c.clone());
        }
    }
    bail!("no --checkpoint given and the shipped model {SHIPPED_MODEL} was not found (looked in the working directory and {}); pass --checkpoint PATH", env!("CARGO_MANIFEST_DIR"))
}

/// Loads `--checkpoint`, or the shipped model when it is None.
pub fn load_model(path: Option<&Path>) -> Result<(PathBuf, Checkpoint)> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => shipped_model_path()?,
    };
    let ck = checkpoint::load(&path)?;
    Ok((path, ck))
}

/// The length of the progress bar [`sample`] drives: image-pixel steps (`count · 784`) on either device.
pub fn progress_units(count: usize) -> u64 {
    (count * PIXELS) as u64
}

/// Samples `count` images (pixels from `start_pixel` on; earlier ones from `init`) on `device`.
#[allow(clippy::too_many_arguments)]
pub fn sample(
    device: Device,
    net: &Network,
    params: &[f32],
    count: usize,
    seed: u64,
    init: Option<&[u8]>,
    start_pixel: usize,
    naive: bool,
    progress: impl FnMut(usize),
) -> Result<Samples> {
    let key = crate::rng::sample_key(seed);
    match device {
        Device::Cpu => {
            let mut progress = progress;
            let mut images = Vec::new();
            let mut probs = Vec::new();
            // In small batches so the progress bar moves.
            for start in (0..count).step_by(8) {
                let n = (count - start).min(8);
                let init = init.map(|s| &s[start * PIXELS..(start + n) * PIXELS]);
                let s = if naive {
                    cpu::sample_naive(net, params, n, key, start as u32, init, start_pixel)
                } else {
                    cpu::sample_incremental(net, params, n, key, start as u32, init, start_pixel)
                };
                images.extend(s.images);
                probs.extend(s.probs);
                progress(n * PIXELS);
            }
            Ok(Samples { images, probs })
        }
        Device::Gpu => {
            let sampler = Sampler::new(net, params)?;
            let req = SampleRequest {
                count,
                key,
                first_image: 0,
                init,
                start_pixel,
                naive,
                max_steps: None,
            };
            sampler.sample(req, progress)
        }
    }
}
