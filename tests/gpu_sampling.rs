//! The three samplers (CPU, naive GPU, incremental GPU) draw the same images from the same probabilities.

mod common;
use common::*;
use pixelcnn::cpu::{self, Samples};
use pixelcnn::gpu::gpu_for_tests;
use pixelcnn::gpu::sampler::{sample, SampleRequest, Sampler};
use pixelcnn::gpu::trainer::GpuModel;
use pixelcnn::model::{Config, Network, PIXELS};
use pixelcnn::rng;

/// Compares two samplers image by image up to the first pixel where the drawn images differ (after that the
/// conditioning differs). A difference is allowed only where |u − p| is within float tolerance: such near-ties
/// are counted and reported.
fn compare_samplers(what: &str, a: &Samples, b: &Samples, key: u32, first: u32, start: usize) -> usize {
    let count = a.images.len() / PIXELS;
    let mut max_dp = 0.0f32;
    let mut ties = 0;
    for i in 0..count {
        for q in start..PIXELS {
            let (pa, pb) = (a.probs[i * PIXELS + q], b.probs[i * PIXELS + q]);
            max_dp = max_dp.max((pa - pb).abs());
            assert!((pa - pb).abs() < 1e-4, "{what}: image {i} pixel {q}: p {pa} vs {pb}");
            if a.images[i * PIXELS + q] != b.images[i * PIXELS + q] {
                let u = rng::sample_uniform(key, first + i as u32, q as u32);
                assert!(
                    (u - pa).abs() < 1e-4,
                    "{what}: image {i} pixel {q} differs but u={u} p={pa} is no near-tie"
                );
                ties += 1;
                break;
            }
        }
    }
    eprintln!("{what}: {count} images, max |Δp| = {max_dp:.2e}, images differing at a near-tie: {ties}");
    ties
}

fn model(seed: u64) -> (Network, Vec<f32>) {
    let net = Network::new(Config { filters: 6, blocks: 2 });
    let params = perturbed_params(&net, seed, 0.1);
    (net, params)
}

#[test]
fn incremental_gpu_equals_naive_gpu_and_cpu() {
    let Some(gpu) = gpu_for_tests() else { return };
    let (net, params) = model(4);
    let count = 3;
    let key = rng::sample_key(99);
    let g = GpuModel::new(&gpu, &net, &params).unwrap();
    let req = SampleRequest {
        count,
        key,
        first_image: 0,
        init: None,
        start_pixel: 0,
        naive: false,
        max_steps: None,
    };
    let inc = sample(&gpu, &g, req, |_| {}).unwrap();
    let naive = sample(&gpu, &g, SampleRequest { naive: true, ..req }, |_| {}).unwrap();
    let cpu = cpu::sample_naive(&net, &params, count, key, 0, None, 0);
    let ties = compare_samplers("incremental GPU vs naive CPU", &inc, &cpu, key, 0, 0)
        + compare_samplers("naive GPU vs naive CPU", &naive, &cpu, key, 0, 0);
    assert!(ties <= 1, "too many near-ties: {ties}");
    let ones = inc.images.iter().filter(|&&v| v == 1).count();
    assert!(ones > 0 && ones < count * PIXELS, "degenerate samples: {ones} ones");
    // The same seed gives the same images; another seed other images.
    assert_eq!(sample(&gpu, &g, req, |_| {}).unwrap().images, inc.images);
    let other = sample(
        &gpu,
        &g,
        SampleRequest {
            key: rng::sample_key(100),
            ..req
        },
        |_| {},
    )
    .unwrap();
    assert_ne!(other.images, inc.images);
}

#[test]
fn completion_keeps_the_known_rows_and_matches_cpu() {
    let Some(gpu) = gpu_for_tests() else { return };
    let (net, params) = model(5);
    let count = 2;
    let key = rng::sample_key(7);
    let init = random_images(count, 3);
    let start = 14 * 28;
    let g = GpuModel::new(&gpu, &net, &params).unwrap();
    let req = SampleRequest {
        count,
        key,
        first_image: 10,
        init: Some(&init),
        start_pixel: start,
        naive: false,
        max_steps: None,
    };
    let inc = sample(&gpu, &g, req, |_| {}).unwrap();
    let cpu = cpu::sample_incremental(&net, &params, count, key, 10, Some(&init), start);
    for i in 0..count {
        assert_eq!(
            &inc.images[i * PIXELS..i * PIXELS + start],
            &init[i * PIXELS..i * PIXELS + start],
            "known rows changed"
        );
    }
    compare_samplers(
        "completion: incremental GPU vs incremental CPU",
        &inc,
        &cpu,
        key,
        10,
        start,
    );
}

#[test]
fn sampler_split_over_devices_equals_one_device() {
    let Some(gpu) = gpu_for_tests() else { return };
    let (net, params) = model(6);
    // 20 images over two devices are 16 + 4; a completion, so the known rows and the image counters are split too.
    let count = 20;
    let key = rng::sample_key(11);
    let init = random_images(count, 5);
    let req = SampleRequest {
        count,
        key,
        first_image: 3,
        init: Some(&init),
        start_pixel: 5 * 28,
        naive: false,
        max_steps: None,
    };
    let sampler = Sampler::new(&net, &params).unwrap();
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
