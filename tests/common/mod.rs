//! Shared test helpers: random data, error reports, and the kernel versions to run.
#![allow(dead_code)]

use pixelcnn::cpu::Samples;
use pixelcnn::gpu::{gpu_for_tests_with, Gpu};
use pixelcnn::model::Network;

/// Pixels of the default 28×28 image, which most tests use.
pub const PIXELS: usize = 784;
use pixelcnn::rng::{self, SplitMix64};

/// Uniform values in [-1, 1): fresh random inputs, never zeros.
pub fn random_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| (rng.next_f64() * 2.0 - 1.0) as f32).collect()
}

/// Random binary 28×28 images (0/1 bytes).
pub fn random_images(count: usize, seed: u64) -> Vec<u8> {
    random_images_of(count, PIXELS, seed)
}

/// Random binary images of `pixels` pixels (0/1 bytes).
pub fn random_images_of(count: usize, pixels: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    (0..count * pixels).map(|_| (rng.next_f64() < 0.4) as u8).collect()
}

/// Random labels below `classes`.
pub fn random_labels_of(count: usize, classes: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    (0..count).map(|_| rng.below(classes as u64) as u8).collect()
}

/// Random labels 0..9.
pub fn random_labels(count: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    (0..count).map(|_| rng.below(10) as u8).collect()
}

/// Max absolute error and max relative error (relative to max(|expected|, 1e-3 · max|expected|)), printed.
pub fn compare(what: &str, got: &[f32], expected: &[f32]) -> (f64, f64) {
    assert_eq!(got.len(), expected.len(), "{what}: lengths differ");
    let scale = expected.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
    let floor = (scale * 1e-3).max(1e-12);
    let mut max_abs = 0.0f64;
    let mut max_rel = 0.0f64;
    for (&g, &e) in got.iter().zip(expected) {
        assert!(g.is_finite(), "{what}: non-finite output");
        let abs = (g as f64 - e as f64).abs();
        max_abs = max_abs.max(abs);
        max_rel = max_rel.max(abs / (e.abs() as f64).max(floor));
    }
    eprintln!(
        "{what:<64} n={:<8} max|expected|={scale:<10.3e} max abs err={max_abs:.3e}  max rel err={max_rel:.3e}",
        got.len()
    );
    (max_abs, max_rel)
}

/// The one comparison every kernel test makes: prints the max absolute and relative errors of `got` (the GPU's
/// result) against `expected` (its CPU twin's) and asserts the relative error is within `tol_rel`.
pub fn check(what: &str, got: &[f32], expected: &[f32], tol_rel: f64) {
    let (_, rel) = compare(what, got, expected);
    assert!(
        rel <= tol_rel,
        "{what}: max relative error {rel:.3e} exceeds {tol_rel:.1e}"
    );
}

/// Glorot initialisation plus uniform noise of amplitude `scale` on every parameter (biases and class biases
/// too), so that no gradient or sampling path is trivially zero. Alignment padding stays zero.
pub fn perturbed_params(net: &Network, seed: u64, scale: f32) -> Vec<f32> {
    let mut params = net.init_params(seed);
    let noise = random_vec(net.param_len(), seed ^ 0xABCD);
    for (i, _) in net.params.tensors.iter().enumerate() {
        let off = net.params.tensors[i].cpu_offset;
        for (j, w) in net.params.cpu_mut(&mut params, i).iter_mut().enumerate() {
            *w += scale * noise[off + j];
        }
    }
    params
}

/// One device per kernel version this adapter can run (`raster` needs fixed-size subgroups), each labelled. Under
/// CI=true a missing adapter fails; elsewhere the list is empty and the tests skip.
pub fn devices() -> Vec<(String, Gpu)> {
    let mut out = Vec::new();
    let Some(default) = gpu_for_tests_with(None) else {
        return out;
    };
    let raster = default.kernels.subgroup.is_some();
    drop(default);
    if raster {
        out.push((
            "raster".to_string(),
            gpu_for_tests_with(Some("raster")).expect("raster device"),
        ));
    } else {
        eprintln!("NOTE: this adapter has no fixed-size subgroups: the raster kernels are not tested here");
    }
    out.push((
        "tiled".to_string(),
        gpu_for_tests_with(Some("tiled")).expect("tiled device"),
    ));
    out
}

/// Compares two samplers image by image up to the first pixel where the drawn images differ (after that the
/// conditioning differs). A difference is allowed only where |u − p| is within float tolerance: such near-ties
/// are counted and reported. Images of `pixels` pixels.
pub fn compare_samplers(
    what: &str,
    a: &Samples,
    b: &Samples,
    pixels: usize,
    (key, first, start): (u32, u32, usize),
) -> usize {
    let count = a.images.len() / pixels;
    let mut max_dp = 0.0f32;
    let mut ties = 0;
    for i in 0..count {
        for q in start..pixels {
            let (pa, pb) = (a.probs[i * pixels + q], b.probs[i * pixels + q]);
            max_dp = max_dp.max((pa - pb).abs());
            assert!((pa - pb).abs() < 1e-4, "{what}: image {i} pixel {q}: p {pa} vs {pb}");
            if a.images[i * pixels + q] != b.images[i * pixels + q] {
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

/// [`check`] for sums of many products in f32 (weight gradients): prints the same errors, and asserts each element's
/// absolute error is within 2^-20 of `magnitude`, the sum of the absolute values of its terms (from the CPU twin
/// on |inputs|), which bounds the rounding error of any summation order where the result itself may cancel to
/// almost nothing.
pub fn check_sum(what: &str, got: &[f32], expected: &[f32], magnitude: &[f32]) {
    compare(what, got, expected);
    let bound = 2f64.powi(-20);
    let mut worst = 0.0f64;
    for (i, ((&g, &e), &m)) in got.iter().zip(expected).zip(magnitude).enumerate() {
        let err = (g as f64 - e as f64).abs();
        let ratio = err / (m as f64).max(1e-30);
        worst = worst.max(ratio);
        assert!(
            err <= bound * m as f64,
            "{what}: element {i}: |{g} − {e}| = {err:.3e} exceeds 2^-20 of the terms' magnitude {m:.3e}"
        );
    }
    eprintln!("{what:<64} worst error / Σ|terms| = {worst:.2e} (bound {bound:.2e})");
}

/// The name `tests/cli.rs` uses for [`check`].
#[allow(unused_imports)]
pub use self::check as assert_close;
