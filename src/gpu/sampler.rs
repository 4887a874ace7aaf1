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
use crate::model::{Network, PIXELS, WIDTH};
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

/// The sampler's devices and the model on each. On CPU rasterisers the images are split over several devices of
/// the same adapter, sampled in parallel threads: lavapipe runs each device's dispatches through its own queue
/// thread and worker pool, and a single device spends much of every small dispatch handing it to its workers and
/// back; two devices overlap those hand-offs with each other's work (64 default-model images on the 2-core VM:
/// 3.6–4.4 s on one device, 2.3–3.1 s on two). Elsewhere there is one device.
pub struct Sampler {
    streams: Vec<(Gpu, GpuModel)>,
}

/// Devices the sampler opens on a CPU rasteriser (`PIXELCNN_SAMPLER_DEVICES` overrides; measured on 2 cores).
fn software_devices() -> usize {
    std::env::var("PIXELCNN_SAMPLER_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .clamp(1, 8)
}

impl Sampler {
    /// Opens the adapter (more than once on CPU rasterisers) and uploads the model to each device.
    pub fn new(net: &Network, params: &[f32]) -> Result<Sampler> {
        let gpu = Gpu::new()?;
        let devices = if gpu.is_software() { software_devices() } else { 1 };
        let model = GpuModel::new(&gpu, net, params)?;
        let mut streams = vec![(gpu, model)];
        for _ in 1..devices {
            let gpu = Gpu::new()?;
            if gpu.info.name != streams[0].0.info.name {
                break;
            }
            let model = GpuModel::new(&gpu, net, params)?;
            streams.push((gpu, model));
        }
        Ok(Sampler { streams })
    }

    /// The first device and its model.
    pub fn first(&self) -> (&Gpu, &GpuModel) {
        (&self.streams[0].0, &self.streams[0].1)
    }

    pub fn adapter_name(&self) -> String {
        self.streams[0].0.adapter_name()
    }

    pub fn devices(&self) -> usize {
        self.streams.len()
    }

    /// The images each device samples: see [`split_images`].
    pub fn split(&self, count: usize) -> Vec<std::ops::Range<usize>> {
        split_images(count, self.devices())
    }

    /// Samples `req` over the devices; `progress(k)` is called (on this thread) as image-pixel steps complete,
    /// `req.count · 784` in all.
    pub fn sample(&self, req: SampleRequest, mut progress: impl FnMut(usize)) -> Result<Samples> {
        let parts = self.split(req.count);
        if parts.len() <= 1 {
            let (gpu, model) = &self.streams[0];
            return sample(gpu, model, req, progress);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let results = std::thread::scope(|scope| {
            let threads: Vec<_> = parts
                .iter()
                .zip(&self.streams)
                .map(|(part, (gpu, model))| {
                    let sub = SampleRequest {
                        count: part.len(),
                        first_image: req.first_image + part.start as u32,
                        init: req.init.map(|s| &s[part.start * PIXELS..part.end * PIXELS]),
                        ..req
                    };
                    let tx = tx.clone();
                    scope.spawn(move || sample(gpu, model, sub, |k| tx.send(k).unwrap_or(())))
                })
                .collect();
            drop(tx);
            for k in rx {
                progress(k);
            }
            threads
                .into_iter()
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a sampler thread panicked")))
                })
                .collect::<Result<Vec<Samples>>>()
        })?;
        let mut out = Samples {
            images: Vec::with_capacity(req.count * PIXELS),
            probs: Vec::with_capacity(req.count * PIXELS),
        };
        for s in results {
            out.images.extend(s.images);
            out.probs.extend(s.probs);
        }
        Ok(out)
    }
}

/// Splits `count` images over at most `devices` devices: contiguous slices of whole 16-image blocks (the
/// sampler pads each pixel's images to 16, so smaller slices would only add padding).
pub fn split_images(count: usize, devices: usize) -> Vec<std::ops::Range<usize>> {
    let per = count.div_ceil(devices.max(1)).next_multiple_of(16).max(16);
    (0..count).step_by(per).map(|s| s..(s + per).min(count)).collect()
}

/// Samples on one device, in batches of at most [`MAX_SAMPLE_BATCH`]; `progress(k)` is called after every image
/// row of every batch with the image-pixel steps done (pixel steps × images in the batch).
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
            &mut |pixels| progress(pixels * batch),
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

    // One program per image row (28 pixel steps), recorded while the GPU runs the row before, so the host's
    // recording overlaps the GPU's work; nothing is read back until the end.
    let record_row = |row: std::ops::Range<usize>| -> Result<Program> {
        let mut p = Program::new();
        for q in row {
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
        }
        p.finish(gpu);
        Ok(p)
    };
    let mut in_flight: Option<(Program, wgpu::SubmissionIndex, usize)> = None;
    for row_start in (0..end).step_by(WIDTH) {
        let row = row_start..(row_start + WIDTH).min(end);
        let pixels = row.len();
        let p = record_row(row)?;
        let submitted = p.submit(gpu);
        if let Some((_, index, pixels)) = in_flight.replace((p, submitted, pixels)) {
            gpu.wait_for(index)?;
            progress(pixels);
        }
    }
    if let Some((_, index, pixels)) = in_flight {
        gpu.wait_for(index)?;
        progress(pixels);
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

#[cfg(test)]
mod tests {
    use super::split_images;

    #[test]
    fn split_images_keeps_whole_blocks_of_16() {
        assert_eq!(split_images(64, 2), vec![0..32, 32..64]);
        assert_eq!(split_images(40, 2), vec![0..32, 32..40]);
        assert_eq!(split_images(100, 2), vec![0..64, 64..100]);
        assert_eq!(split_images(10, 2), vec![0..10]);
        assert_eq!(split_images(64, 1), vec![0..64]);
        assert_eq!(split_images(300, 2), vec![0..160, 160..300]);
        assert!(split_images(0, 2).is_empty());
    }
}
