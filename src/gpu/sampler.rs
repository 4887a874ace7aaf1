//! Sampling on the GPU. The images, every layer's activation cache and the random draws stay on the device;
//! the images and probabilities are read back once, at the end.
//!
//! * Incremental (default): every layer is causal, so its activation at pixel q depends only on pixels before q.
//!   For each pixel q in raster order, one dispatch chain computes every layer at position q only (the masked
//!   convs read the cached activations of earlier positions), then draws pixel q. A whole sample costs about one
//!   forward pass.
//! * Naive (`--naive`): the original algorithm, a full forward pass over all 784 positions per pixel, still
//!   GPU-resident. For verification and as the benchmark baseline.

use super::buffers::{pad4, Tensor};
use super::kernels;
use super::record::Program;
use super::trainer::{record_forward, GpuModel};
use super::Gpu;
use crate::cpu::Samples;
use crate::model::PIXELS;
use anyhow::Result;

/// Images sampled together in one batch (bounded by the per-buffer size limit).
pub const MAX_SAMPLE_BATCH: usize = 128;

/// What to sample: `count` images, image `i` drawing with counter `first_image + i` under `key`, pixels from
/// `start_pixel` on (earlier pixels come from `init`).
#[derive(Clone, Copy, Debug)]
pub struct SampleRequest<'a> {
    pub count: usize,
    pub key: u32,
    pub first_image: u32,
    pub init: Option<&'a [u8]>,
    pub start_pixel: usize,
    pub naive: bool,
    /// Stop after this many pixel steps (for timing the naive sampler on a prefix); None = all.
    pub max_steps: Option<usize>,
}

/// Samples on the GPU; `progress(pixels_done_in_batch, batch_index)` is called after every submitted row.
pub fn sample(gpu: &Gpu, model: &GpuModel, req: SampleRequest, mut progress: impl FnMut(usize)) -> Result<Samples> {
    anyhow::ensure!(
        req.start_pixel <= PIXELS,
        "start pixel {} is past the image",
        req.start_pixel
    );
    let mut images = Vec::with_capacity(req.count * PIXELS);
    let mut probs = Vec::with_capacity(req.count * PIXELS);
    let mut done = 0;
    while done < req.count {
        let batch = (req.count - done).min(MAX_SAMPLE_BATCH);
        let init = req.init.map(|s| &s[done * PIXELS..(done + batch) * PIXELS]);
        let s = sample_batch(
            gpu,
            model,
            batch,
            req.key,
            req.first_image + done as u32,
            init,
            req.start_pixel,
            req.naive,
            req.max_steps,
            &mut progress,
        )?;
        images.extend(s.images);
        probs.extend(s.probs);
        done += batch;
    }
    Ok(Samples { images, probs })
}

/// Images per position in the incremental sampler's position-major buffers: a multiple of 16, so that every
/// pixel's block of images starts at a bindable offset and holds whole subgroups.
pub fn padded_count(count: usize) -> usize {
    count.next_multiple_of(16)
}

#[allow(clippy::too_many_arguments)]
fn sample_batch(
    gpu: &Gpu,
    model: &GpuModel,
    count: usize,
    key: u32,
    first_image: u32,
    init: Option<&[u8]>,
    start_pixel: usize,
    naive: bool,
    max_steps: Option<usize>,
    progress: &mut impl FnMut(usize),
) -> Result<Samples> {
    let net = &model.net;
    // The naive sampler runs whole forward passes (image-major, as in training); the incremental one works one
    // pixel of every image at a time, so it keeps each pixel's images together (position-major, `rows` images
    // per position) and its tensors carry the tail `conv_pixel`'s uniform windows need.
    let rows = if naive { count } else { padded_count(count) };
    let positions = rows * PIXELS;
    let acts = net
        .act_channels
        .iter()
        .enumerate()
        .map(|(i, &c)| gpu.tensor(&format!("sample act{i}"), positions * pad4(c) + kernels::WINDOW_TAIL))
        .collect::<Result<Vec<Tensor>>>()?;
    let start = crate::cpu::starting_images(init, count, start_pixel);
    let to_layout = |i: usize, q: usize| if naive { i * PIXELS + q } else { q * rows + i };
    let mut x = vec![0.0f32; positions * 4];
    for i in 0..count {
        for q in 0..PIXELS {
            x[to_layout(i, q) * 4] = start[i * PIXELS + q] as f32;
        }
    }
    gpu.write(&acts[0], 0, &x);
    let probs = gpu.upload("sample probs", &vec![f32::NAN; count * PIXELS])?;
    let logits = acts[net.logits_act()].view();
    let end = max_steps.map_or(PIXELS, |n| (start_pixel + n).min(PIXELS));

    // One program for all pixels; `row_ends[r]` is the dispatch index where image row r ends, so that rows are
    // submitted separately and progress can be shown.
    let mut p = Program::new();
    let mut row_ends = Vec::new();
    for q in 0..end {
        if naive {
            if q >= start_pixel {
                record_forward(gpu, &mut p, model, &acts, rows, None)?;
            }
        } else {
            record_forward(gpu, &mut p, model, &acts, rows, Some(q))?;
        }
        if q >= start_pixel {
            kernels::sample_pixel(
                gpu,
                &mut p,
                logits.clone(),
                acts[0].view(),
                probs.view(),
                count,
                q,
                key,
                first_image,
                if naive { 0 } else { rows },
            )?;
        }
        if (q + 1) % 28 == 0 || q + 1 == end {
            row_ends.push((p.len(), q + 1));
        }
    }
    p.finish(gpu);
    let mut from = 0;
    let mut last_pixels = 0;
    for (to, pixels) in row_ends {
        p.submit_range(gpu, from..to);
        from = to;
        gpu.wait()?;
        progress(pixels - last_pixels);
        last_pixels = pixels;
    }
    let x = gpu.read_range(&acts[0], 0, positions * 4)?;
    let mut images = vec![0u8; count * PIXELS];
    for i in 0..count {
        for q in 0..PIXELS {
            images[i * PIXELS + q] = x[to_layout(i, q) * 4] as u8;
        }
    }
    let probs = gpu.read_range(&probs, 0, count * PIXELS)?;
    Ok(Samples { images, probs })
}
