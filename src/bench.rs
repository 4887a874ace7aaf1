//! `pixelcnn bench`: training and sampling speed on the chosen adapter, with synthetic data and random weights.

use crate::cpu::{AdamConfig, SampleSpec};
use crate::gpu::layers::GpuModel;
use crate::gpu::record::ProfileLine;
use crate::gpu::sampler::{self, SampleRequest, Sampler};
use crate::gpu::trainer::Trainer;
use crate::gpu::versions::KernelChoice;
use crate::gpu::Gpu;
use crate::model::{Config, Network, CLASSES, PIXELS};
use anyhow::Result;
use std::time::Instant;

/// Random binary images with about the data's density of ones (0.38).
pub fn synthetic_images(count: usize, seed: u64) -> Vec<u8> {
    let mut rng = crate::rng::SplitMix64::new(seed);
    (0..count * PIXELS).map(|_| (rng.next_f64() < 0.38) as u8).collect()
}

/// Labels 0, 1, ..., 9, 0, ... for a conditional model.
pub fn synthetic_labels(count: usize) -> Vec<u8> {
    (0..count).map(|i| (i % CLASSES) as u8).collect()
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct TrainBench {
    pub adapter: String,
    pub kernels: KernelChoice,
    pub model: String,
    pub batch_size: usize,
    pub filters: usize,
    pub depth: usize,
    pub steps: usize,
    pub step_seconds_median: f64,
    pub step_seconds_all: Vec<f64>,
    pub images_per_second: f64,
    /// Achieved GFLOP/s, counting 3 × the forward pass's live-tap FLOPs per image (0.570 GFLOP for F=128, N=5).
    pub gflops: f64,
    /// Dispatches of one recorded step.
    pub dispatches_per_step: usize,
    /// Bytes of GPU memory the trainer allocated.
    pub gpu_bytes: u64,
    /// With `--profile`: each kernel and layer shape of one step, run dispatch by dispatch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Vec<ProfileLine>>,
}

/// Times `steps` training steps after `warmup` steps; each step is submitted and waited for.
pub fn bench_train(
    config: Config,
    batch_size: usize,
    steps: usize,
    warmup: usize,
    profile: bool,
) -> Result<TrainBench> {
    config.validate()?;
    let gpu = Gpu::new()?;
    let net = Network::new(config);
    let model = GpuModel::new(&gpu, &net, &net.init_params(0))?;
    let mut trainer = Trainer::new(&gpu, model, AdamConfig::default(), batch_size)?;
    let images = synthetic_images(batch_size, 1);
    let labels = synthetic_labels(batch_size);
    let labels = config.is_conditional().then_some(&labels[..]);
    let mut times = Vec::new();
    for s in 0..warmup + steps.max(1) {
        let t = Instant::now();
        trainer.step(&gpu, &images, labels, s as u64 + 1)?;
        gpu.wait()?;
        if s >= warmup {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let profile = if profile {
        Some(trainer.profile_step(&gpu, &images, labels)?)
    } else {
        None
    };
    let all = times.clone();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let images_per_second = batch_size as f64 / median;
    let flop_per_image = 3.0 * 2.0 * net.live_macs_per_image() as f64;
    Ok(TrainBench {
        adapter: gpu.adapter_name(),
        kernels: gpu.kernels.clone(),
        model: config.describe(),
        batch_size,
        filters: config.filters,
        depth: config.depth,
        steps: times.len(),
        step_seconds_median: median,
        step_seconds_all: all,
        images_per_second,
        gflops: flop_per_image * images_per_second / 1e9,
        dispatches_per_step: trainer.step_dispatches(batch_size).unwrap_or(0),
        gpu_bytes: trainer.gpu_bytes(),
        profile,
    })
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SampleBench {
    pub adapter: String,
    pub kernels: KernelChoice,
    pub model: String,
    /// Devices the sampler split the images over (more than one on CPU rasterisers; see `gpu::sampler::Sampler`).
    pub devices: usize,
    pub count: usize,
    pub incremental_seconds: f64,
    /// The incremental sampler on the first device alone.
    pub incremental_one_device_seconds: f64,
    /// Dispatches per pixel of the incremental sampler.
    pub dispatches_per_pixel: f64,
    pub naive_seconds: f64,
    /// True when the naive time was extrapolated from `naive_pixels_timed` pixel steps to 784.
    pub naive_extrapolated: bool,
    pub naive_pixels_timed: usize,
    pub speedup: f64,
}

/// Times the incremental sampler on `count` images (on all the sampler's devices, then on one) and the naive one
/// (on all devices) on a prefix of `naive_pixels` pixels. Each is run once untimed first (pipeline compiles).
pub fn bench_sample(net: &Network, params: &[f32], count: usize, naive_pixels: usize) -> Result<SampleBench> {
    let sampler = Sampler::new(net, params)?;
    let labels = synthetic_labels(count);
    let spec = SampleSpec {
        count,
        key: crate::rng::sample_key(0),
        first_image: 0,
        labels: net.config.is_conditional().then_some(&labels[..]),
        init: None,
        start_pixel: 0,
    };
    let req = SampleRequest {
        spec,
        naive: false,
        max_steps: None,
    };
    let warm = SampleRequest {
        max_steps: Some(28),
        ..req
    };
    sampler.sample(warm, |_| {})?;
    let t = Instant::now();
    sampler.sample(req, |_| {})?;
    let incremental = t.elapsed().as_secs_f64();
    let (gpu, model) = sampler.first();
    sampler::sample(gpu, model, warm, |_| {})?;
    let t = Instant::now();
    sampler::sample(gpu, model, req, |_| {})?;
    let one_device = t.elapsed().as_secs_f64();
    let per_pixel = sampler::dispatches_per_pixel(gpu, model, count)?;
    let naive_pixels = naive_pixels.clamp(1, PIXELS);
    let naive_req = |steps| SampleRequest {
        naive: true,
        max_steps: Some(steps),
        ..req
    };
    sampler.sample(naive_req(1), |_| {})?;
    let t = Instant::now();
    sampler.sample(naive_req(naive_pixels), |_| {})?;
    let naive = t.elapsed().as_secs_f64() * PIXELS as f64 / naive_pixels as f64;
    Ok(SampleBench {
        adapter: sampler.adapter_name(),
        kernels: gpu.kernels.clone(),
        model: net.config.describe(),
        devices: sampler.devices(),
        count,
        incremental_seconds: incremental,
        incremental_one_device_seconds: one_device,
        dispatches_per_pixel: per_pixel,
        naive_seconds: naive,
        naive_extrapolated: naive_pixels < PIXELS,
        naive_pixels_timed: naive_pixels,
        speedup: naive / incremental,
    })
}
