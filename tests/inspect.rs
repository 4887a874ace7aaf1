//! The inspection tools against the model's definition: receptive fields of both architectures (inside the causal
//! region, the plain network's blind spot, the gated network's full field), the premise of `sample --animate`
//! (a sampler stopped after k pixel steps holds the first k pixels of the finished images), and scoring.

mod common;

use common::perturbed_params;
use common::PIXELS;
use pixelcnn::cpu::SampleSpec;
use pixelcnn::device::Device;
use pixelcnn::inspect::receptive_field::{receptive_field, ReceptiveField, Region};
use pixelcnn::inspect::score;
use pixelcnn::model::{Config, Network};

/// Columns of the 28×28 images most of these tests use.
const WIDTH: usize = 28;

fn field(config: Config, pixel: (usize, usize), seed: u64) -> ReceptiveField {
    let net = Network::new(config);
    let params = net.init_params(seed);
    receptive_field(&net, &params, pixel, 8, seed).unwrap()
}

/// Every pixel of the mask lies before the target in raster order (and nothing is a leak).
fn assert_inside_causal_region(f: &ReceptiveField, what: &str) {
    let q = f.causal_pixels();
    for p in 0..PIXELS {
        assert!(
            !f.mask[p] || p < q,
            "{what}: the logit at {:?} depends on later pixel {p}",
            f.pixel
        );
    }
    assert_eq!(f.count(Region::Leak), 0, "{what}");
}

const PIXELS_TO_PROBE: [(usize, usize); 5] = [(12, 10), (1, 1), (5, 20), (27, 27), (20, 3)];

#[test]
fn the_plain_network_sees_only_the_past_and_has_a_blind_spot() {
    for config in [Config::pixelcnn(4, 4), Config::pixelcnn(6, 3).conditional()] {
        for &(r, c) in &PIXELS_TO_PROBE {
            let f = field(config, (r, c), 1);
            let what = format!("{} at ({r}, {c})", config.describe());
            assert_inside_causal_region(&f, &what);
            assert!(f.count(Region::Depends) > 0, "{what}: sees nothing");
            // conv_in's 7×7 reach: three columns right on the row above, three left on its own row.
            if c + 3 < WIDTH {
                assert!(f.mask[(r - 1) * WIDTH + c + 3], "{what}: does not see x[r−1, c+3]");
            }
            if c >= 3 {
                assert!(f.mask[r * WIDTH + c - 3], "{what}: does not see x[r, c−3]");
            }
            if c + 5 < WIDTH {
                let probe = (r - 1) * WIDTH + c + 5;
                assert!(!f.mask[probe], "{what}: sees its blind spot x[r−1, c+5]");
                // Three rows up the field reaches column c + 5, so x[r−1, c+5] lies inside its bounding box.
                if r >= 3 {
                    assert_eq!(f.regions[probe], Region::BlindSpot, "{what}:\n{}", f.text_map());
                }
            }
        }
    }
}

#[test]
fn the_gated_network_has_no_blind_spot_and_a_deep_one_sees_the_whole_past() {
    for config in [Config::gated(4, 3), Config::gated(4, 3).conditional()] {
        for &(r, c) in &PIXELS_TO_PROBE {
            let f = field(config, (r, c), 2);
            let what = format!("{} at ({r}, {c})", config.describe());
            assert_inside_causal_region(&f, &what);
            assert_eq!(f.count(Region::BlindSpot), 0, "{what}:\n{}", f.text_map());
            if c + 5 < WIDTH {
                assert!(f.mask[(r - 1) * WIDTH + c + 5], "{what}: does not see x[r−1, c+5]");
            }
        }
    }
    // L gated layers reach L + 3 rows up and L + 2 columns either side: 13 layers at (2, 14) see every earlier
    // pixel, and the mask is the whole causal region. At (14, 14) 12 layers do.
    for (layers, pixel) in [(13, (2, 14)), (12, (14, 14))] {
        let f = field(Config::gated(2, layers), pixel, 3);
        let q = f.causal_pixels();
        assert_eq!(
            f.count(Region::Depends),
            q,
            "gated L={layers} at {pixel:?}:\n{}",
            f.text_map()
        );
        assert!((0..PIXELS).all(|p| f.mask[p] == (p < q)));
    }
    // The plain network of the same depth does not: its blind spot remains.
    let f = field(Config::pixelcnn(8, 12), (14, 14), 3);
    assert!(f.count(Region::BlindSpot) >= 50, "{}", f.text_map());
    assert!(!f.mask[13 * WIDTH + 19], "{}", f.text_map());
}

#[test]
fn six_dilated_gated_layers_see_every_earlier_pixel() {
    // Layer 0's 7-wide kernel and dilations 1, 2, 4, 8, 16 reach 34 rows up and 34 columns either side, and every
    // offset in between is a sum of distinct dilations: at every pixel of a 28×28 image, the whole past and
    // nothing else. Without dilation the same six layers leave most of it out of reach.
    let dilated = Config::gated(2, 6).dilated(5);
    for pixel in [(14, 14), (27, 27), (27, 0), (0, 27), (1, 0), (13, 26), (20, 3)] {
        let f = field(dilated, pixel, 4);
        let q = f.causal_pixels();
        let what = format!("{} at {pixel:?}", dilated.describe());
        assert_inside_causal_region(&f, &what);
        assert_eq!(f.count(Region::Depends), q, "{what}:\n{}", f.text_map());
        assert_eq!(f.count(Region::BlindSpot) + f.count(Region::Unreached), 0, "{what}");
    }
    let f = field(Config::gated(2, 6), (27, 27), 4);
    assert!(f.count(Region::Unreached) > 500, "{}", f.text_map());
    // On a non-square image of 16 rows and 20 columns: four dilations (1, 2, 4, 8) reach 3 + 15 = 18 columns to
    // the left, one short of the first column from the last; the fifth (16) reaches it.
    let f = field(Config::gated(2, 5).dilated(4).with_shape(16, 20), (15, 19), 5);
    assert_eq!(f.count(Region::Unreached), 16, "{}", f.text_map());
    let f = field(Config::gated(2, 6).dilated(5).with_shape(16, 20), (15, 19), 5);
    assert_eq!(f.count(Region::Depends), 15 * 20 + 19, "{}", f.text_map());
}

#[test]
fn the_first_pixel_depends_on_nothing() {
    for config in [Config::pixelcnn(4, 2), Config::gated(4, 2).conditional()] {
        let f = field(config, (0, 0), 0);
        assert!(f.mask.iter().all(|&m| !m), "{}", config.describe());
        assert_eq!(f.causal_pixels(), 0);
        assert_eq!(f.regions[0], Region::Target);
        assert_eq!(f.count(Region::Later), PIXELS - 1);
    }
}

#[test]
fn a_leaky_network_is_reported() {
    // A plain network whose first conv also reads the pixel it predicts (mask B instead of A).
    let mut net = Network::new(Config::pixelcnn(4, 1));
    let c = net.convs.iter_mut().find(|c| c.name == "conv_in").unwrap();
    let (ky, kx) = (c.taps[0].ky as i32 - c.taps[0].dy, c.taps[0].kx as i32 - c.taps[0].dx);
    c.taps.push(pixelcnn::model::Tap {
        ky: ky as usize,
        kx: kx as usize,
        dy: 0,
        dx: 0,
    });
    // Re-lay out the parameter table for the extra tap.
    let mut cpu_len = 0;
    for t in &mut net.params.tensors {
        if let pixelcnn::model::ParamKind::Weight { conv: 0 } = t.kind {
            t.dims[0] = (t.dims[0].0 + 1, t.dims[0].1 + 1);
        }
        t.cpu_offset = cpu_len;
        cpu_len += t.cpu_len().next_multiple_of(pixelcnn::model::PARAM_ALIGN);
    }
    net.params.cpu_len = cpu_len;
    let params = perturbed_params(&net, 1, 0.1);
    let f = receptive_field(&net, &params, (10, 10), 4, 0).unwrap();
    assert!(f.count(Region::Leak) > 0, "{}", f.text_map());
    assert!(f.text_map().contains('!'));
}

#[test]
fn a_gpu_sampler_stopped_after_k_steps_holds_the_finished_prefix() {
    // The premise of `sample --animate`: frame k shows the finished images' first k pixels.
    let Some(_) = pixelcnn::gpu::gpu_for_tests() else {
        return;
    };
    for config in [Config::pixelcnn(4, 2), Config::gated(4, 2).conditional()] {
        let net = Network::new(config);
        let params = perturbed_params(&net, 4, 0.1);
        let labels: Vec<u8> = (0..5).collect();
        let spec = SampleSpec {
            count: 5,
            key: pixelcnn::rng::sample_key(9),
            first_image: 0,
            labels: config.is_conditional().then_some(&labels[..]),
            init: None,
            start_pixel: 0,
            temperature: 1.0,
        };
        let sampler = pixelcnn::gpu::sampler::Sampler::new(&net, &params).unwrap();
        let run = |max_steps| {
            let req = pixelcnn::gpu::sampler::SampleRequest {
                spec,
                naive: false,
                max_steps,
            };
            sampler.sample(req, |_| {}).unwrap().images
        };
        let finished = run(None);
        for k in [28, 200, 393] {
            let partial = run(Some(k));
            for i in 0..5 {
                assert_eq!(
                    partial[i * PIXELS..][..k],
                    finished[i * PIXELS..][..k],
                    "{}: image {i} after {k} steps",
                    config.describe()
                );
            }
        }
    }
}

#[test]
fn scores_agree_between_devices() {
    let Some(_) = pixelcnn::gpu::gpu_for_tests() else {
        return;
    };
    let net = Network::new(Config::gated(4, 2).conditional());
    let params = perturbed_params(&net, 6, 0.1);
    let images = common::random_images(3, 8);
    let cpu_s = score::pixel_scores(Device::Cpu, &net, &params, &images, |_| {}).unwrap();
    let gpu_s = score::pixel_scores(Device::Gpu, &net, &params, &images, |_| {}).unwrap();
    for i in 0..3 {
        let (a, b) = (score::image_score(&cpu_s, i), score::image_score(&gpu_s, i));
        assert!(
            (a.nll_nats - b.nll_nats).abs() < 1e-5 * a.nll_nats,
            "{} vs {}",
            a.nll_nats,
            b.nll_nats
        );
        let worst = a
            .surprise
            .iter()
            .zip(&b.surprise)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-4, "per-pixel surprise differs by {worst}");
        // The GPU's logits are the ones its NLL was summed from.
        let total: f64 = b.surprise.iter().sum();
        assert!(
            (total - b.nll_nats).abs() < 1e-4 * b.nll_nats,
            "{total} vs {}",
            b.nll_nats
        );
    }
}

/// What the README says of the models in assets/, checked on their trained weights: the seed's plain network
/// (assets/plain-fashion.safetensors, shipped until 2026-12-06) depends at the last pixel on 143 of the 783 pixels
/// before it; the two shipped models, gated and dilated 1–16 (Fashion-MNIST: 8 layers, conditional; binarized MNIST:
/// 15 layers), depend on every earlier pixel at (14, 14) and at (27, 27), with no blind spot.
#[test]
fn the_shipped_models_see_what_the_readme_says() {
    let load = |name: &str| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("assets")
            .join(name);
        let ck = pixelcnn::checkpoint::load(&path).unwrap();
        let net = Network::new(ck.config);
        (ck.weights(false).to_vec(), net)
    };
    let (params, net) = load("plain-fashion.safetensors");
    let f = receptive_field(&net, &params, (27, 27), 8, 1).unwrap();
    assert_eq!(f.count(Region::Depends), 143, "{}", f.text_map());
    assert_eq!(f.count(Region::Unreached), 783 - 143, "{}", f.text_map());
    for (name, config) in [
        ("pixelcnn.safetensors", Config::gated(32, 8).dilated(5).conditional()),
        ("binarized-mnist.safetensors", Config::gated(32, 15).dilated(5)),
    ] {
        let (params, net) = load(name);
        assert_eq!(net.config, config, "{name}");
        for pixel in [(14, 14), (27, 27)] {
            let f = receptive_field(&net, &params, pixel, 8, 1).unwrap();
            let what = format!("{name} at {pixel:?}");
            assert_inside_causal_region(&f, &what);
            assert_eq!(f.count(Region::Depends), f.causal_pixels(), "{what}:\n{}", f.text_map());
            assert_eq!(f.count(Region::BlindSpot) + f.count(Region::Unreached), 0, "{what}");
        }
    }
}
