//! The samplers (CPU, naive GPU, incremental GPU layer by layer or with `pixel_net`) draw the same images from the
//! same probabilities, for both architectures and with labels; completions keep their given rows; the sampler split
//! over two devices draws what one device draws.

mod common;
use common::*;
use pixelcnn::cpu::{self, SampleSpec};
use pixelcnn::gpu::gpu_for_tests;
use pixelcnn::gpu::layers::GpuModel;
use pixelcnn::gpu::sampler::{sample, SampleRequest, Sampler};
use pixelcnn::gpu::Gpu;
use pixelcnn::model::{Config, Network};
use pixelcnn::rng;

fn nets() -> Vec<(Network, Vec<f32>)> {
    [
        Config::pixelcnn(6, 2),
        Config::gated(5, 3).conditional(),
        Config::pixelcnn(5, 1).conditional(),
        // A non-square image (16 rows of 20): a dilated gated net with 4 classes, and a plain one.
        Config::gated(4, 3).dilated(2).with_classes(4).with_shape(16, 20),
        Config::pixelcnn(4, 1).with_shape(16, 20),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, c)| {
        let net = Network::new(c);
        let params = perturbed_params(&net, 4 + i as u64, 0.1);
        (net, params)
    })
    .collect()
}

fn request<'a>(spec: SampleSpec<'a>, naive: bool) -> SampleRequest<'a> {
    SampleRequest {
        spec,
        naive,
        max_steps: None,
    }
}

fn check_samplers(gpu: &Gpu, version: &str, net: &Network, params: &[f32]) {
    let count = 3;
    let key = rng::sample_key(99);
    let (pixels, width) = (net.pixels(), net.width());
    let labels = random_labels_of(count, net.config.classes.max(1), 3);
    let spec = SampleSpec {
        count,
        key,
        first_image: 0,
        labels: net.config.is_conditional().then_some(&labels[..]),
        init: None,
        start_pixel: 0,
        temperature: 1.0,
    };
    let what = format!("[{version}] {}", net.config.describe());
    let g = GpuModel::new(gpu, net, params).unwrap();
    let inc = sample(gpu, &g, request(spec, false), |_| {}).unwrap();
    // The CPU's incremental sampler (itself checked against its naive one in cpu_reference.rs).
    let cpu = cpu::sample_incremental(net, params, spec);
    let mut ties = compare_samplers(
        &format!("{what} incremental GPU vs CPU"),
        &inc,
        &cpu,
        pixels,
        (key, 0, 0),
    );
    // The naive GPU sampler runs one whole forward pass per pixel: only with the raster kernels, which lavapipe runs
    // in seconds (the tiled ones, shaped for GPUs, take a minute there).
    if version == "raster" {
        let naive = sample(gpu, &g, request(spec, true), |_| {}).unwrap();
        ties += compare_samplers(&format!("{what} naive GPU vs CPU"), &naive, &cpu, pixels, (key, 0, 0));
    }
    assert!(ties <= 1, "too many near-ties: {ties}");
    // At another temperature the GPU and CPU samplers still agree (p = σ(logit / T) on both).
    let cool = SampleSpec {
        temperature: 0.8,
        ..spec
    };
    let inc_cool = sample(gpu, &g, request(cool, false), |_| {}).unwrap();
    let cpu_cool = cpu::sample_incremental(net, params, cool);
    let ties_cool = compare_samplers(
        &format!("{what} T 0.8 incremental GPU vs CPU"),
        &inc_cool,
        &cpu_cool,
        pixels,
        (key, 0, 0),
    );
    assert!(ties_cool <= 1, "too many near-ties at T 0.8: {ties_cool}");
    let ones = inc.images.iter().filter(|&&v| v == 1).count();
    assert!(ones > 0 && ones < count * pixels, "degenerate samples: {ones} ones");
    // The same seed gives the same images; another seed other images.
    assert_eq!(
        sample(gpu, &g, request(spec, false), |_| {}).unwrap().images,
        inc.images
    );
    let other = SampleSpec {
        key: rng::sample_key(100),
        ..spec
    };
    assert_ne!(
        sample(gpu, &g, request(other, false), |_| {}).unwrap().images,
        inc.images
    );

    // Completion: the known rows stay, the rest matches the CPU's incremental sampler.
    let init = random_images_of(2, pixels, 3);
    let start = net.config.height / 2 * width;
    let spec = SampleSpec {
        count: 2,
        first_image: 10,
        init: Some(&init),
        start_pixel: start,
        temperature: 1.0,
        labels: spec.labels.map(|l| &l[..2]),
        ..spec
    };
    let inc = sample(gpu, &g, request(spec, false), |_| {}).unwrap();
    let cpu = cpu::sample_incremental(net, params, spec);
    for i in 0..2 {
        assert_eq!(
            &inc.images[i * pixels..i * pixels + start],
            &init[i * pixels..i * pixels + start],
            "known rows changed"
        );
    }
    compare_samplers(
        &format!("{what} completion: incremental GPU vs incremental CPU"),
        &inc,
        &cpu,
        pixels,
        (key, 10, start),
    );
}

#[test]
fn incremental_gpu_equals_naive_gpu_and_cpu_on_every_version() {
    for (version, gpu) in devices() {
        for (net, params) in nets() {
            check_samplers(&gpu, &version, &net, &params);
        }
    }
}

#[test]
fn pixel_net_needs_at_most_two_dispatches_per_pixel() {
    for (version, gpu) in devices() {
        for (net, params) in nets() {
            let g = GpuModel::new(&gpu, &net, &params).unwrap();
            let d = pixelcnn::gpu::sampler::dispatches_per_pixel(&gpu, &g, 16).unwrap();
            eprintln!("[{version}] {}: {d:.2} dispatches per pixel", net.config.describe());
            if version == "tiled" {
                assert!(d <= 6.0, "the GPU-shaped sampler takes {d} dispatches per pixel");
            }
        }
    }
}

/// `bench sample` counts dispatches and profiles a row on one batch of the images it was asked for: as many as
/// fit one binding, never all of them at once (pixel_net keeps every activation's cache in one buffer, which for
/// 64 images of a gated F=32 L=8 net is past lavapipe's 128 MiB).
#[test]
fn dispatch_counts_and_profiles_take_one_batch_that_fits() {
    let net = Network::new(Config::gated(32, 8).dilated(5).conditional());
    let params = perturbed_params(&net, 9, 0.1);
    for (version, gpu) in devices() {
        let g = GpuModel::new(&gpu, &net, &params).unwrap();
        let limit = pixelcnn::gpu::sampler::batch_limit(&gpu, &net);
        let count = limit + 8;
        eprintln!("[{version}] batch limit {limit}, asking for {count} images");
        let d = pixelcnn::gpu::sampler::dispatches_per_pixel(&gpu, &g, count).unwrap();
        assert!(d >= 1.0, "[{version}] {d} dispatches per pixel");
        let lines = pixelcnn::gpu::sampler::profile_row(&gpu, &g, count).unwrap();
        assert!(!lines.is_empty(), "[{version}] an empty profile");
    }
}

#[test]
fn sampler_split_over_devices_equals_one_device() {
    let Some(gpu) = gpu_for_tests() else { return };
    let (net, params) = nets().remove(1);
    // 20 images over two devices are 16 + 4; a completion, so the known rows and the image counters are split too.
    let count = 20;
    let key = rng::sample_key(11);
    let init = random_images(count, 5);
    let labels = random_labels(count, 6);
    let spec = SampleSpec {
        count,
        key,
        first_image: 3,
        labels: Some(&labels),
        init: Some(&init),
        start_pixel: 5 * 28,
        temperature: 1.0,
    };
    let req = request(spec, false);
    let user_threads = || std::env::var_os("LP_NUM_THREADS").filter(|v| !v.is_empty());
    let before = user_threads();
    let sampler = Sampler::new(&net, &params).unwrap();
    // On llvmpipe the sampler's devices open with LP_NUM_THREADS=0 (no worker pools); devices opened later must
    // keep theirs, and a user's own setting is left alone.
    assert_eq!(
        user_threads(),
        before,
        "the sampler leaves LP_NUM_THREADS as it found it"
    );
    if gpu.is_software() {
        assert!(sampler.devices() >= 2, "CPU rasterisers sample on several devices");
    }
    assert_eq!(sampler.split(count).len(), sampler.devices().min(2));
    let mut steps = 0;
    let split = sampler.sample(req, |k| steps += k).unwrap();
    assert_eq!(steps, count * PIXELS, "progress covers every image-pixel step");
    let (g, m) = sampler.first();
    let one = sample(g, m, req, |_| {}).unwrap();
    let max_dp = split
        .probs
        .iter()
        .zip(&one.probs)
        .filter(|(a, _)| !a.is_nan())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!(
        "{} devices ({:?}) vs one device: {count} images, max |Δp| = {max_dp:.2e}",
        sampler.devices(),
        sampler.split(count)
    );
    assert_eq!(split.images, one.images, "the split sampler draws the same images");
    assert!(max_dp <= 1e-6);
}
