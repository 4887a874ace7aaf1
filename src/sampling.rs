//! Sampling and completion on either device, the labels a conditional model samples with, the completion grid,
//! and the default (shipped) checkpoint.

use crate::checkpoint::{self, Checkpoint};
use crate::cpu::{self, SampleSpec, Samples};
use crate::data::Split;
use crate::device::Device;
use crate::gpu::sampler::{SampleRequest, Sampler};
use crate::model::Network;
use anyhow::{bail, ensure, Result};
use std::path::{Path, PathBuf};

/// The model shipped in `assets/`, used when `--checkpoint` is omitted.
pub const SHIPPED_MODEL: &str = "assets/pixelcnn.safetensors";

/// Images sampled per chunk: outputs are written chunk by chunk, so memory stays bounded for any `--count`.
pub const CHUNK: usize = 1024;

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

/// The checkpoint path `--checkpoint` names, or the shipped model's.
pub fn model_path(path: Option<&Path>) -> Result<PathBuf> {
    match path {
        Some(p) => Ok(p.to_path_buf()),
        None => shipped_model_path(),
    }
}

/// Loads `--checkpoint`, or the shipped model when it is None.
pub fn load_model(path: Option<&Path>) -> Result<(PathBuf, Checkpoint)> {
    let path = model_path(path)?;
    let ck = checkpoint::load(&path)?;
    Ok((path, ck))
}

/// The label of each of `count` images: the classes asked for in turn (`--class` repeated), or for a
/// conditional model asked for none, an even mix of all classes. None for an unconditional model (which must
/// not be asked for classes).
pub fn sample_labels(net: &Network, classes: &[usize], count: usize) -> Result<Option<Vec<u8>>> {
    if !net.config.is_conditional() {
        ensure!(
            classes.is_empty(),
            "--class needs a class-conditional model; this one ({}) is unconditional (train one with --conditional)",
            net.config.describe()
        );
        return Ok(None);
    }
    let all: Vec<usize> = (0..net.config.classes).collect();
    let cycle = if classes.is_empty() { &all } else { classes };
    Ok(Some((0..count).map(|i| cycle[i % cycle.len()] as u8).collect()))
}

/// What `sample --class` asked for, resolved against a model.
pub struct ClassRequest {
    /// Images in all: `count`, or `count` per class for `--class all`.
    pub total: usize,
    /// Each image's label (None for an unconditional model).
    pub labels: Option<Vec<u8>>,
    /// `--class all`: the images come class by class, `count` each, for a grid with one labelled row per class.
    pub per_class: bool,
}

/// Resolves `--class` values (the model's class `names`, label numbers, or a single `all`) for `count` images of
/// `net`.
pub fn class_request(net: &Network, names: &[String], classes: &[String], count: usize) -> Result<ClassRequest> {
    let per_class = classes.iter().any(|c| c.trim().eq_ignore_ascii_case("all"));
    if !per_class {
        if !net.config.is_conditional() {
            // The unconditional model's error, not the parser's.
            return Ok(ClassRequest {
                total: count,
                labels: sample_labels(net, &vec![0; classes.len()], count)?,
                per_class,
            });
        }
        let ids = classes
            .iter()
            .map(|c| crate::model::parse_class(c, names))
            .collect::<Result<Vec<_>>>()?;
        return Ok(ClassRequest {
            total: count,
            labels: sample_labels(net, &ids, count)?,
            per_class,
        });
    }
    ensure!(classes.len() == 1, "--class all cannot be combined with other classes");
    ensure!(
        net.config.is_conditional(),
        "--class needs a class-conditional model; this one ({}) is unconditional (train one with --conditional)",
        net.config.describe()
    );
    let total = count
        .checked_mul(net.config.classes)
        .ok_or_else(|| anyhow::anyhow!("--count {count} per class is too many"))?;
    Ok(ClassRequest {
        total,
        labels: Some((0..total).map(|i| (i / count) as u8).collect()),
        per_class,
    })
}

/// Samples one chunk of images on `device`: `spec.count` images, pixels from `spec.start_pixel` on.
pub fn sample_chunk(
    device: Device,
    sampler: Option<&Sampler>,
    net: &Network,
    params: &[f32],
    spec: SampleSpec,
    naive: bool,
    mut progress: impl FnMut(usize),
) -> Result<Samples> {
    match device {
        Device::Cpu => {
            let mut images = Vec::new();
            let mut probs = Vec::new();
            // In small batches so the progress bar moves.
            for start in (0..spec.count).step_by(8) {
                let n = (spec.count - start).min(8);
                let sub = spec.slice(start, n, net.pixels());
                let s = if naive {
                    cpu::sample_naive(net, params, sub)
                } else {
                    cpu::sample_incremental(net, params, sub)
                };
                images.extend(s.images);
                probs.extend(s.probs);
                progress(n * net.pixels());
            }
            Ok(Samples { images, probs })
        }
        Device::Gpu => {
            let sampler = sampler.expect("a GPU sampler");
            sampler.sample(
                SampleRequest {
                    spec,
                    naive,
                    max_steps: None,
                },
                progress,
            )
        }
    }
}

/// What [`sample_streaming`] draws: `count` images on `device` under `seed`.
#[derive(Clone, Copy, Debug)]
pub struct StreamRequest<'a> {
    pub device: Device,
    pub count: usize,
    pub seed: u64,
    /// Each image's label, for a conditional model.
    pub labels: Option<&'a [u8]>,
    /// The original algorithm (a full forward pass per pixel) instead of the incremental sampler.
    pub naive: bool,
    /// p = σ(logit / temperature); 1 draws from the model itself.
    pub temperature: f32,
}

/// Samples `req.count` images in chunks of [`CHUNK`], handing each chunk to `each(first_index, samples)` as it is
/// done, so that memory stays bounded. Image i draws with counter i under `req.seed`, whatever the chunking.
pub fn sample_streaming(
    net: &Network,
    params: &[f32],
    req: StreamRequest,
    mut progress: impl FnMut(usize),
    mut each: impl FnMut(usize, &Samples) -> Result<()>,
) -> Result<()> {
    let StreamRequest {
        device,
        count,
        seed,
        labels,
        naive,
        temperature,
    } = req;
    let sampler = match device {
        Device::Gpu => Some(Sampler::new(net, params)?),
        Device::Cpu => None,
    };
    let key = crate::rng::sample_key(seed);
    for start in (0..count).step_by(CHUNK) {
        let n = (count - start).min(CHUNK);
        let spec = SampleSpec {
            count: n,
            key,
            first_image: start as u32,
            labels: labels.map(|l| &l[start..start + n]),
            init: None,
            start_pixel: 0,
            temperature,
        };
        let s = sample_chunk(device, sampler.as_ref(), net, params, spec, naive, &mut progress)?;
        each(start, &s)?;
    }
    Ok(())
}

/// What `complete` produces: for each test image, the original, the occluded input and the completions.
pub struct Completions {
    pub originals: Vec<Vec<u8>>,
    pub occluded: Vec<Vec<u8>>,
    /// `samples` completions per original, in order.
    pub completions: Samples,
    pub samples: usize,
    /// Pixels per image.
    pub pixels: usize,
}

impl Completions {
    /// The grid rows: original | occluded | completion 1 | completion 2 ...
    pub fn grid_rows(&self) -> Vec<Vec<&[u8]>> {
        let pixels = self.pixels;
        (0..self.originals.len())
            .map(|i| {
                let mut row = vec![&self.originals[i][..], &self.occluded[i][..]];
                row.extend(
                    (0..self.samples).map(|j| &self.completions.images[(i * self.samples + j) * pixels..][..pixels]),
                );
                row
            })
            .collect()
    }
}

/// What [`complete`] does on `device`: keep the top `rows` rows of the first `count` images and sample the rest,
/// `samples` times each, under `seed`.
#[derive(Clone, Copy, Debug)]
pub struct CompleteRequest {
    pub device: Device,
    pub count: usize,
    pub rows: usize,
    pub samples: usize,
    pub seed: u64,
    /// p = σ(logit / temperature); 1 draws from the model itself.
    pub temperature: f32,
}

/// Keeps the top `req.rows` rows of the first `req.count` images of `split` and samples the rest, `req.samples`
/// times each; a conditional model conditions on each image's own label.
pub fn complete(
    net: &Network,
    params: &[f32],
    split: &Split,
    req: CompleteRequest,
    progress: impl FnMut(usize),
) -> Result<Completions> {
    let CompleteRequest {
        device,
        count,
        rows,
        samples,
        seed,
        temperature,
    } = req;
    let (height, width, pixels) = (net.config.height, net.width(), net.pixels());
    ensure!(
        rows <= height,
        "--rows must be between 0 and {height} (the model's images have {height} rows)"
    );
    ensure!(split.len() >= count, "the test split has only {} images", split.len());
    ensure!(
        split.images.len() == split.len() * pixels,
        "the images are not {} like the model's",
        net.image()
    );
    // Every image repeated `samples` times; each copy draws with its own counter.
    let mut init = Vec::with_capacity(count * samples * pixels);
    let mut labels = Vec::with_capacity(count * samples);
    for i in 0..count {
        for _ in 0..samples {
            init.extend_from_slice(split.image(i));
            labels.push(split.labels[i]);
        }
    }
    let start = rows * width;
    let sampler = match device {
        Device::Gpu => Some(Sampler::new(net, params)?),
        Device::Cpu => None,
    };
    let spec = SampleSpec {
        count: count * samples,
        key: crate::rng::sample_key(seed),
        first_image: 0,
        labels: net.config.is_conditional().then_some(&labels[..]),
        init: Some(&init),
        start_pixel: start,
        temperature,
    };
    let completions = sample_chunk(device, sampler.as_ref(), net, params, spec, false, progress)?;
    let originals: Vec<Vec<u8>> = (0..count).map(|i| split.image(i).to_vec()).collect();
    let occluded = originals
        .iter()
        .map(|img| {
            let mut img = img.clone();
            img[start..].fill(crate::grid::HIDDEN);
            img
        })
        .collect();
    Ok(Completions {
        originals,
        occluded,
        completions,
        samples,
        pixels,
    })
}

/// The length of the progress bar the samplers drive: image-pixel steps (`count · pixels`) on either device.
pub fn progress_units(net: &Network, count: usize) -> u64 {
    (count * net.pixels()) as u64
}
