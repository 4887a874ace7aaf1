//! `pixelcnn bench`: training and sampling speed on the chosen adapter, with synthetic data and random weights.

use crate::cpu::{AdamConfig, SampleSpec};
use crate::gpu::kernels::peak;
use crate::gpu::layers::GpuModel;
use crate::gpu::record::ProfileLine;
use crate::gpu::record::Program;
use crate::gpu::sampler::{self, SampleRequest, Sampler};
use crate::gpu::trainer::Trainer;
use crate::gpu::versions::KernelChoice;
use crate::gpu::Gpu;
use crate::model::{Config, Network};
use anyhow::Result;
use std::time::Instant;

/// Random binary images of `pixels` pixels with about the data's density of ones (0.38).
pub fn synthetic_images(count: usize, pixels: usize, seed: u64) -> Vec<u8> {
    let mut rng = crate::rng::SplitMix64::new(seed);
    (0..count * pixels).map(|_| (rng.next_f64() < 0.38) as u8).collect()
}

/// Labels 0, 1, …, classes − 1, 0, … for a conditional model.
pub fn synthetic_labels(count: usize, classes: usize) -> Vec<u8> {
    (0..count).map(|i| (i % classes.max(1)) as u8).collect()
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
    /// The adapter's measured multiply-add peak (`bench peak`, or `--peak`) and `gflops` as a percentage of it.
    pub peak_gflops: f64,
    pub percent_of_peak: f64,
    /// Dispatches of one recorded step.
    pub dispatches_per_step: usize,
    /// Bytes of GPU memory the trainer allocated.
    pub gpu_bytes: u64,
    /// With `--profile`: each kernel and layer shape of one step, run dispatch by dispatch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Vec<ProfileLine>>,
}

/// What a benchmark measures against: the adapter's multiply-add peak in GFLOP/s, given, or measured on the
/// benchmark's own device first (3 runs at each workgroup size; a few seconds).
fn peak_of(gpu: &Gpu, given: Option<f64>) -> Result<f64> {
    match given {
        Some(p) => Ok(p),
        None => Ok(bench_peak(gpu, 3, 0.05)?.peak_gflops),
    }
}

/// Each profile line's GFLOP/s as a percentage of `peak`.
fn with_percent(lines: Option<Vec<ProfileLine>>, peak: f64) -> Option<Vec<ProfileLine>> {
    lines.map(|v| {
        v.into_iter()
            .map(|l| ProfileLine {
                percent_of_peak: 100.0 * l.gflops_per_second / peak,
                ..l
            })
            .collect()
    })
}

/// Times `steps` training steps after `warmup` steps; each step is submitted and waited for. `peak`: the
/// adapter's multiply-add peak in GFLOP/s (measured first when None).
pub fn bench_train(
    config: Config,
    batch_size: usize,
    steps: usize,
    warmup: usize,
    profile: bool,
    peak: Option<f64>,
) -> Result<TrainBench> {
    config.validate()?;
    let gpu = Gpu::new()?;
    let peak = peak_of(&gpu, peak)?;
    let net = Network::new(config);
    let model = GpuModel::new(&gpu, &net, &net.init_params(0))?;
    let mut trainer = Trainer::new(&gpu, model, AdamConfig::default(), batch_size)?;
    let images = synthetic_images(batch_size, net.pixels(), 1);
    let labels = synthetic_labels(batch_size, config.classes);
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
    let gflops = flop_per_image * images_per_second / 1e9;
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
        gflops,
        peak_gflops: peak,
        percent_of_peak: 100.0 * gflops / peak,
        dispatches_per_step: trainer.step_dispatches(batch_size).unwrap_or(0),
        gpu_bytes: trainer.gpu_bytes(),
        profile: with_percent(profile, peak),
    })
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SampleBench {
    pub adapter: String,
    pub kernels: KernelChoice,
    pub model: String,
    /// Devices the sampler split the images over (more than one on CPU rasterisers; see `gpu::sampler::Sampler`).
    pub devices: usize,
    /// The devices ran their dispatches on the sampling threads, without worker pools (llvmpipe).
    pub devices_inline: bool,
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
    /// The live-tap FLOPs of the whole run (a forward pass per image) per second of the incremental sampler, and
    /// that as a percentage of the adapter's measured multiply-add peak.
    pub gflops: f64,
    pub peak_gflops: f64,
    pub percent_of_peak: f64,
    /// With `--profile`: each kernel and layer shape of one interior image row of the sampler, run dispatch by
    /// dispatch on one device (so hand-offs are not overlapped as in a real run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Vec<ProfileLine>>,
}

/// Times the incremental sampler on `count` images (on all the sampler's devices, then on one) and the naive one
/// (on all devices) on a prefix of `naive_pixels` pixels. Each is run once untimed first (pipeline compiles).
/// `peak` as in [`bench_train`]; `profile`: also time one image row dispatch by dispatch.
pub fn bench_sample(
    net: &Network,
    params: &[f32],
    count: usize,
    naive_pixels: usize,
    peak: Option<f64>,
    profile: bool,
) -> Result<SampleBench> {
    // The peak is measured on a device of its own: the sampler's devices may run without worker pools (see
    // `Tuning::sampler_inline`), and the adapter's peak is what all its threads can do.
    let peak = peak_of(&Gpu::new()?, peak)?;
    let sampler = Sampler::new(net, params)?;
    let labels = synthetic_labels(count, net.config.classes);
    let spec = SampleSpec {
        count,
        key: crate::rng::sample_key(0),
        first_image: 0,
        labels: net.config.is_conditional().then_some(&labels[..]),
        init: None,
        start_pixel: 0,
        temperature: 1.0,
    };
    let req = SampleRequest {
        spec,
        naive: false,
        max_steps: None,
    };
    let warm = SampleRequest {
        max_steps: Some(net.width()),
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
    let pixels = net.pixels();
    let naive_pixels = naive_pixels.clamp(1, pixels);
    let naive_req = |steps| SampleRequest {
        naive: true,
        max_steps: Some(steps),
        ..req
    };
    sampler.sample(naive_req(1), |_| {})?;
    let t = Instant::now();
    sampler.sample(naive_req(naive_pixels), |_| {})?;
    let naive = t.elapsed().as_secs_f64() * pixels as f64 / naive_pixels as f64;
    let gflops = count as f64 * 2.0 * net.live_macs_per_image() as f64 / incremental / 1e9;
    let profile = if profile {
        Some(sampler::profile_row(gpu, model, count)?)
    } else {
        None
    };
    Ok(SampleBench {
        adapter: sampler.adapter_name(),
        kernels: gpu.kernels.clone(),
        model: net.config.describe(),
        devices: sampler.devices(),
        devices_inline: sampler.inline(),
        count,
        incremental_seconds: incremental,
        incremental_one_device_seconds: one_device,
        dispatches_per_pixel: per_pixel,
        naive_seconds: naive,
        naive_extrapolated: naive_pixels < pixels,
        naive_pixels_timed: naive_pixels,
        speedup: naive / incremental,
        gflops,
        peak_gflops: peak,
        percent_of_peak: 100.0 * gflops / peak,
        profile: with_percent(profile, peak),
    })
}

/// One configuration of the multiply-add peak: invocations per workgroup, and its rate (median of the runs).
#[derive(Clone, Debug, serde::Serialize)]
pub struct FmaPeak {
    pub workgroup: u32,
    pub invocations: usize,
    pub iters: usize,
    pub gflops_median: f64,
    pub gflops_all: Vec<f64>,
}

/// `pixelcnn bench peak`: what this adapter can do at best.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PeakBench {
    pub adapter: String,
    pub kernels: KernelChoice,
    /// The best median over the workgroup sizes tried: the roofline every other figure is a percentage of.
    pub peak_gflops: f64,
    pub fma: Vec<FmaPeak>,
    /// Storage reads, each invocation streaming its own vec4s (median of the runs).
    pub read_gb_per_s: f64,
    pub read_gb_per_s_all: Vec<f64>,
    pub read_bytes: u64,
    pub runs: usize,
}

/// Times one dispatch of `entry` over `run` (after one untimed run), `runs` times.
fn time_peak(
    gpu: &Gpu,
    entry: &'static str,
    run: peak::PeakRun,
    views: &peak::PeakViews,
    runs: usize,
) -> Result<Vec<f64>> {
    let mut p = Program::new();
    peak::peak(gpu, &mut p, entry, views.clone(), run)?;
    p.finish(gpu);
    p.submit(gpu);
    gpu.wait()?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        p.submit(gpu);
        gpu.wait()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(times)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// Measures the adapter's vec4 multiply-add rate (independent register chains, at 8 and 64 invocations per
/// workgroup, with enough invocations to fill every core and each dispatch lengthened until it takes at least
/// `min_seconds`) and its storage-read bandwidth; each figure is the median of `runs` runs.
pub fn bench_peak(gpu: &Gpu, runs: usize, min_seconds: f64) -> Result<PeakBench> {
    let runs = runs.max(1);
    // A CPU rasteriser fills its cores with a few thousand workgroups; a GPU wants a million invocations.
    let invocations = if gpu.is_software() { 16_384 } else { 1 << 20 };
    let out = gpu.tensor("peak out", invocations * 4)?;
    let mut fma = Vec::new();
    for workgroup in [8u32, 64] {
        let views = peak::views(out.view(), gpu.dummy.view());
        let mut run = peak::PeakRun {
            n: invocations,
            iters: 16,
            workgroup,
        };
        while time_peak(gpu, "fma_peak", run, &views, 1)?[0] < min_seconds && run.iters < 1 << 24 {
            run.iters *= 2;
        }
        let times = time_peak(gpu, "fma_peak", run, &views, runs)?;
        let all: Vec<f64> = times.iter().map(|t| run.flops() / t / 1e9).collect();
        fma.push(FmaPeak {
            workgroup,
            invocations,
            iters: run.iters,
            gflops_median: median(&all),
            gflops_all: all,
        });
    }
    // Reads: the largest buffer one binding takes, up to 128 MiB, streamed once per dispatch.
    let max = gpu
        .limits
        .max_storage_buffer_binding_size
        .min(gpu.limits.max_buffer_size);
    let src_bytes = (128u64 << 20).min(max) as usize;
    let n = if gpu.is_software() { 131_072 } else { 1 << 20 };
    let iters = src_bytes / 16 / n;
    let src = gpu.tensor("peak src", n * iters * 4)?;
    let run = peak::PeakRun {
        n,
        iters,
        workgroup: 64,
    };
    let times = time_peak(gpu, "read_bandwidth", run, &peak::views(out.view(), src.view()), runs)?;
    let read: Vec<f64> = times.iter().map(|t| run.bytes() / t / 1e9).collect();
    Ok(PeakBench {
        adapter: gpu.adapter_name(),
        kernels: gpu.kernels.clone(),
        peak_gflops: fma.iter().map(|f| f.gflops_median).fold(0.0, f64::max),
        fma,
        read_gb_per_s: median(&read),
        read_gb_per_s_all: read,
        read_bytes: run.bytes() as u64,
        runs,
    })
}
