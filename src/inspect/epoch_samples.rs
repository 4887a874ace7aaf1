//! The sample grid `train` writes into the run directory at the end of every epoch, `samples_epoch_NNN.png`, so
//! that a user can watch the model learn: `--epoch-samples N` images (default 16; 0 turns it off) drawn with the
//! fixed seed [`SEED`], so that the grids of successive epochs differ only by what the model learned; a
//! conditional model draws an even mix of classes. It samples on the training device: the GPU run's own device
//! (no second adapter is opened), or the CPU reference. `pixelcnn train` hands the training loop a hook that
//! calls [`write`] at the end of each epoch.

use crate::cpu::{self, SampleSpec};
use crate::gpu::layers::GpuModel;
use crate::gpu::sampler::{self, SampleRequest};
use crate::gpu::Gpu;
use crate::grid;
use crate::model::Network;
use crate::sampling;
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Images in the grid unless told otherwise.
pub const DEFAULT_COUNT: usize = 16;
/// The seed of the draws, the same every epoch.
pub const SEED: u64 = 0;

/// `samples_epoch_NNN.png`.
pub fn file_name(epoch: usize) -> String {
    format!("samples_epoch_{epoch:03}.png")
}

/// Samples `count` images of `net` with `params` on `gpu`, or on the CPU reference for None (seed [`SEED`]).
pub fn draw(gpu: Option<&Gpu>, net: &Network, params: &[f32], count: usize) -> Result<Vec<u8>> {
    let labels = sampling::sample_labels(net, &[], count)?;
    let spec = SampleSpec {
        count,
        key: crate::rng::sample_key(SEED),
        first_image: 0,
        labels: labels.as_deref(),
        init: None,
        start_pixel: 0,
        temperature: 1.0,
    };
    let images = match gpu {
        Some(gpu) => {
            let model = GpuModel::new(gpu, net, params)?;
            let req = SampleRequest {
                spec,
                naive: false,
                max_steps: None,
            };
            sampler::sample(gpu, &model, req, |_| {})?.images
        }
        None => cpu::sample_incremental(net, params, spec).images,
    };
    Ok(images)
}

/// Draws the grid for the epoch numbered `epoch` (1-based, as in `metrics.jsonl`) into `dir`, on `gpu` (None: the
/// CPU reference); returns its path and the seconds it took. Nothing is written for `count` 0.
pub fn write(
    gpu: Option<&Gpu>,
    net: &Network,
    params: &[f32],
    dir: &Path,
    epoch: usize,
    count: usize,
) -> Result<Option<(PathBuf, f64)>> {
    if count == 0 {
        return Ok(None);
    }
    let t = Instant::now();
    let images = draw(gpu, net, params, count)?;
    let cells: Vec<&[u8]> = images.chunks(net.pixels()).collect();
    let path = dir.join(file_name(epoch));
    grid::write_grid_png(
        &path,
        &cells,
        net.image(),
        grid::grid_columns(count),
        grid::DEFAULT_SCALE,
        grid::DEFAULT_GAP,
    )?;
    Ok(Some((path, t.elapsed().as_secs_f64())))
}
