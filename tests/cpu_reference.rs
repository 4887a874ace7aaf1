//! The CPU reference checked against first principles: finite differences for every gradient (of the seed's
//! network and of a tiny gated conditional net), causality of both architectures (and a test that the causality
//! check can see a leak), the blind spot that only the plain net has, class conditioning, Adam against a hand
//! computation in f64, training, the two samplers against each other, the initialisation, and the numerics of the
//! loss.
//!
//! The GPU kernels are tested against `cpu.rs`, so these tests are what ultimately ties both backends to the maths.

mod common;
use common::*;
use pixelcnn::cpu::{self, AdamConfig, AdamState, SampleSpec};
use pixelcnn::model::{Activation, Config, Layer, Network, Tap};

/// Columns of the 28×28 images most of these tests use.
const WIDTH: usize = 28;
use pixelcnn::rng::{self, SplitMix64};

/// Which entries of the flat parameter vector belong to a parameter tensor (the rest is alignment padding).
fn in_tensors(net: &Network) -> Vec<bool> {
    let mut inside = vec![false; net.param_len()];
    for t in &net.params.tensors {
        inside[t.cpu_offset..][..t.cpu_len()].fill(true);
    }
    inside
}

/// Uniform values in [0, 1): a non-binary input image.
fn random_unit(n: usize, seed: u64) -> Vec<f32> {
    random_vec(n, seed).iter().map(|v| (v + 1.0) * 0.5).collect()
}

fn as_f32(images: &[u8]) -> Vec<f32> {
    images.iter().map(|&v| v as f32).collect()
}

/// Binary cross-entropy from a logit in f64 (the same stable form as the reference).
fn bce_f64(z: f64, x: f64) -> f64 {
    z.max(0.0) - z * x + (-z.abs()).exp().ln_1p()
}

/// The logits of an independent f64 forward pass, written from the definition rather than from `cpu.rs`:
/// `out[p, co] = act(bias[co] + class_bias[y, co] + Σ_taps Σ_ci in[p + (dy, dx), ci] · w[tap, ci, co])`, zero
/// outside the image; gates `tanh(z[:C] + cb) · σ(z[C:] + cb)`; adds; ReLUs.
///
/// Finite differences of the f32 reference are limited twice over: f32 rounding of the loss forces steps of
/// 1e-3 or so, and steps that large push some of the thousands of ReLU pre-activations across zero, whose kinks
/// then bend the difference quotient by several percent on individual entries. In f64 a step of 1e-6 is precise
/// and crosses essentially no kink, so every entry can be checked tightly. `gradient_check_...` first checks that
/// this forward agrees with `cpu::forward`, so the gradient it differentiates is the reference's.
fn logits_f64(net: &Network, params: &[f64], images: &[f64], labels: Option<&[u8]>, batch: usize) -> Vec<f64> {
    let (height, width, pixels) = (net.config.height, net.width(), net.pixels());
    let table = &net.params;
    let tensor = |i: usize| &params[table.tensors[i].cpu_offset..][..table.tensors[i].cpu_len()];
    let class_row = |cb: Option<usize>, b: usize, c: usize| -> Vec<f64> {
        match (cb, labels) {
            (Some(cb), Some(l)) if net.config.is_conditional() => tensor(cb)[l[b] as usize * c..][..c].to_vec(),
            _ => vec![0.0; c],
        }
    };
    let mut acts: Vec<Vec<f64>> = vec![images.to_vec()];
    for layer in &net.layers {
        let out = match *layer {
            Layer::Conv { conv, input } => {
                let c = &net.convs[conv];
                let (w, bias) = (tensor(c.weight), tensor(c.bias));
                let (cin, cout) = (c.cin, c.cout);
                let x = &acts[input];
                let mut out = vec![0.0; batch * pixels * cout];
                for b in 0..batch {
                    let cb = class_row(c.class_bias, b, cout);
                    for y in 0..height {
                        for xx in 0..width {
                            let row = &mut out[(b * pixels + y * width + xx) * cout..][..cout];
                            for co in 0..cout {
                                row[co] = bias[co] + cb[co];
                            }
                            for (t, tap) in c.taps.iter().enumerate() {
                                let (sy, sx) = (y as i32 + tap.dy, xx as i32 + tap.dx);
                                if sy < 0 || sy >= height as i32 || sx < 0 || sx >= width as i32 {
                                    continue;
                                }
                                let src = b * pixels + sy as usize * width + sx as usize;
                                for ci in 0..cin {
                                    for co in 0..cout {
                                        row[co] += x[src * cin + ci] * w[(t * cin + ci) * cout + co];
                                    }
                                }
                            }
                            if c.act == Activation::Relu {
                                row.iter_mut().for_each(|v| *v = v.max(0.0));
                            }
                        }
                    }
                }
                out
            }
            Layer::Add { a, b } => acts[a].iter().zip(&acts[b]).map(|(a, b)| a + b).collect(),
            Layer::Gate { input, class_bias } => {
                let c2 = net.act_channels[input];
                let h = c2 / 2;
                let z = &acts[input];
                let mut out = vec![0.0; batch * pixels * h];
                for b in 0..batch {
                    let cb = class_row(class_bias, b, c2);
                    for p in 0..pixels {
                        let at = (b * pixels + p) * c2;
                        for c in 0..h {
                            let t = (z[at + c] + cb[c]).tanh();
                            let s = 1.0 / (1.0 + (-(z[at + h + c] + cb[h + c])).exp());
                            out[(b * pixels + p) * h + c] = t * s;
                        }
                    }
                }
                out
            }
            Layer::Relu { input } => acts[input].iter().map(|v| v.max(0.0)).collect(),
            // The reference's forward (which this mirrors) drops nothing outside training.
            Layer::Dropout { input } => acts[input].clone(),
        };
        acts.push(out);
    }
    acts.pop().unwrap()
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&v| v as f64).collect()
}

/// Central difference of `f` with respect to `v[i]`.
fn central_difference(v: &mut [f64], i: usize, eps: f64, mut f: impl FnMut(&[f64]) -> f64) -> f64 {
    let orig = v[i];
    v[i] = orig + eps;
    let f_plus = f(v);
    v[i] = orig - eps;
    let f_minus = f(v);
    v[i] = orig;
    (f_plus - f_minus) / (2.0 * eps)
}

/// Compares the reference's (f32) gradient with a numerical one, prints the errors, and asserts agreement to what
/// f32 accumulation permits: cosine similarity > 0.99999, relative L2 error < 1e-4, and on every single entry
/// |error| ≤ 1e-3 · |numerical| + 1e-4 · max |numerical| (the second term covers entries that are small because
/// of cancellation, where the f32 sums lose relative accuracy).
fn check_gradient(what: &str, analytic: &[f32], numeric: &[f64]) {
    assert_eq!(analytic.len(), numeric.len());
    let scale = numeric.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    // All-zero gradients on both sides would pass every check below without testing anything.
    assert!(
        scale > 1e-7,
        "{what}: numerical gradient is zero everywhere ({scale:.3e}); the check tests nothing"
    );
    let (mut dot, mut na, mut nn, mut diff2) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let (mut max_abs, mut max_rel, mut worst) = (0.0f64, 0.0f64, 0.0f64);
    for (&a, &n) in analytic.iter().zip(numeric) {
        let a = a as f64;
        dot += a * n;
        na += a * a;
        nn += n * n;
        diff2 += (a - n) * (a - n);
        let abs = (a - n).abs();
        max_abs = max_abs.max(abs);
        max_rel = max_rel.max(abs / n.abs().max(1e-3 * scale));
        worst = worst.max(abs / (1e-3 * n.abs() + 1e-4 * scale));
    }
    let cosine = dot / (na.sqrt() * nn.sqrt()).max(1e-300);
    let rel_l2 = diff2.sqrt() / nn.sqrt();
    eprintln!(
        "{what:<24} n={:<5} max|grad|={scale:.3e}  max abs err={max_abs:.3e}  max rel err={max_rel:.3e}  \
         rel L2={rel_l2:.3e}  cos={cosine:.9}",
        analytic.len()
    );
    assert!(
        cosine > 0.99999,
        "{what}: cosine similarity {cosine} between analytic and numerical gradients"
    );
    assert!(rel_l2 < 1e-4, "{what}: relative L2 error {rel_l2:.3e}");
    assert!(
        worst <= 1.0,
        "{what}: an entry is off by {worst:.2}× the tolerance (max abs err {max_abs:.3e})"
    );
}

/// Checks every element of every parameter tensor of `net` and the input gradient against central differences of
/// the independent f64 forward.
fn gradient_check(net: &Network, labels: Option<&[u8]>, seed: u64) {
    let pixels = net.pixels();
    let batch = 2;
    let params = perturbed_params(net, seed, 0.1);
    let images = as_f32(&random_images_of(batch, pixels, seed + 1));
    let n = (batch * pixels) as f64;

    // The f64 forward computes what the reference computes.
    let acts = cpu::forward(net, &params, &images, labels, batch);
    let logits = &acts[net.logits_act()];
    let logits64: Vec<f32> = logits_f64(net, &to_f64(&params), &to_f64(&images), labels, batch)
        .iter()
        .map(|&v| v as f32)
        .collect();
    check("logits: f64 forward vs cpu::forward", &logits64, logits, 1e-4);

    // Analytic gradient of the mean BCE loss.
    let (_, d_logits) = cpu::bce_loss_grad(logits, &images, pixels);
    let (grads, _) = cpu::backward(net, &params, &acts, labels, d_logits, batch);

    // Every element of every tensor: the tiny networks have a few hundred parameters, two forwards each.
    let eps = 1e-6;
    let x64 = to_f64(&images);
    let loss = |p: &[f64]| {
        logits_f64(net, p, &x64, labels, batch)
            .iter()
            .zip(&x64)
            .map(|(&z, &x)| bce_f64(z, x))
            .sum::<f64>()
            / n
    };
    let mut p64 = to_f64(&params);
    for (i, t) in net.params.tensors.iter().enumerate() {
        if !net.tensor_is_used(i) {
            // A tensor nothing reads (the last gated layer's vertical class bias) must get no gradient at all.
            assert!(
                net.params.cpu(&grads, i).iter().all(|&g| g == 0.0),
                "{}: unused but has a gradient",
                t.name
            );
            eprintln!("{:<24} unused by the network: gradient exactly zero", t.name);
            continue;
        }
        let numeric: Vec<f64> = (t.cpu_offset..t.cpu_offset + t.cpu_len())
            .map(|j| central_difference(&mut p64, j, eps, loss))
            .collect();
        check_gradient(&t.name, net.params.cpu(&grads, i), &numeric);
    }
    // Padding between tensors is not a parameter: it must get no gradient.
    let inside = in_tensors(net);
    assert!(
        grads.iter().zip(&inside).all(|(&g, &inside)| inside || g == 0.0),
        "padding received a gradient"
    );

    // Input gradient of L(x) = Σ_p logits(x)[p] · r[p] at a non-binary x: backward with d_logits = r. (The loss
    // itself uses the input as its target too, so its input gradient is not what backward returns.)
    let x = random_unit(batch * pixels, seed + 2);
    let r = random_vec(batch * pixels, seed + 3);
    let acts = cpu::forward(net, &params, &x, labels, batch);
    let (_, d_input) = cpu::backward(net, &params, &acts, labels, r.clone(), batch);
    let r64 = to_f64(&r);
    let projected = |x: &[f64]| {
        logits_f64(net, &p64, x, labels, batch)
            .iter()
            .zip(&r64)
            .map(|(z, r)| z * r)
            .sum::<f64>()
    };
    let mut x64 = to_f64(&x);
    let numeric: Vec<f64> = (0..x.len())
        .map(|j| central_difference(&mut x64, j, eps, projected))
        .collect();
    check_gradient("input", &d_input, &numeric);
}

#[test]
fn gradient_check_every_parameter_tensor_and_input() {
    gradient_check(&Network::new(Config::pixelcnn(4, 1)), None, 1);
}

#[test]
fn gradient_check_every_tensor_of_a_gated_conditional_net() {
    // Labels 3 and 7: those rows of every class-bias table get gradients, the others exactly zero.
    gradient_check(&Network::new(Config::gated(3, 2).conditional()), Some(&[3, 7]), 31);
}

#[test]
fn gradient_check_a_conditional_pixelcnn() {
    gradient_check(&Network::new(Config::pixelcnn(4, 1).conditional()), Some(&[9, 0]), 41);
}

#[test]
fn gradient_check_a_dilated_gated_net_on_non_square_images() {
    // 5 rows of 7 columns, dilations 1 and 2 (taps 2 and 4 pixels away fall outside the image at its edges),
    // 3 classes.
    let config = Config::gated(3, 3).dilated(2).with_classes(3).with_shape(5, 7);
    gradient_check(&Network::new(config), Some(&[2, 0]), 51);
}

/// Backpropagates a one-hot at logit (r, c) of image 1 in a batch of 2, for each position, and counts input pixels
/// whose gradient is not exactly zero although the logit must not see them: every pixel of image 0, and pixels of
/// image 1 at raster index ≥ r·28 + c. Returns the leak count and, per position, whether some pixel the logit may
/// see has a non-zero gradient (so that a network that passes no gradient at all cannot look causal).
fn causality_leaks(net: &Network, params: &[f32], positions: &[(usize, usize)]) -> (usize, Vec<bool>) {
    let batch = 2;
    let x = random_unit(batch * PIXELS, 21);
    let labels = [4u8, 6];
    let labels = net.config.is_conditional().then_some(&labels[..]);
    let acts = cpu::forward(net, params, &x, labels, batch);
    let mut leaks = 0;
    let mut sees_past = Vec::new();
    for &(r, c) in positions {
        let q = r * WIDTH + c;
        let mut d_logits = vec![0.0; batch * PIXELS];
        d_logits[PIXELS + q] = 1.0;
        let (_, d_input) = cpu::backward(net, params, &acts, labels, d_logits, batch);
        let leaked = d_input[..PIXELS]
            .iter()
            .chain(&d_input[PIXELS + q..])
            .filter(|&&g| g != 0.0)
            .count();
        let earlier = d_input[PIXELS..PIXELS + q].iter().filter(|&&g| g != 0.0).count();
        eprintln!("logit ({r:>2},{c:>2}): {leaked} leaking pixels, {earlier} earlier pixels with non-zero gradient");
        leaks += leaked;
        sees_past.push(earlier > 0);
    }
    (leaks, sees_past)
}

const CAUSALITY_POSITIONS: [(usize, usize); 6] = [(0, 0), (0, 5), (5, 0), (13, 14), (27, 27), (20, 3)];

fn assert_causal(net: &Network) {
    let params = perturbed_params(net, 5, 0.1);
    let (leaks, sees_past) = causality_leaks(net, &params, &CAUSALITY_POSITIONS);
    assert_eq!(
        leaks,
        0,
        "{}: a logit depends on its own pixel, a later one, or another image",
        net.config.describe()
    );
    for (&(r, c), &seen) in CAUSALITY_POSITIONS.iter().zip(&sees_past) {
        if (r, c) != (0, 0) {
            assert!(seen, "logit ({r},{c}) has zero gradient wrt every earlier pixel");
        }
    }
}

#[test]
fn causality_gradient_of_logit_wrt_later_pixels_is_zero() {
    assert_causal(&Network::new(Config::pixelcnn(6, 2)));
    assert_causal(&Network::new(Config::gated(4, 3)));
    assert_causal(&Network::new(Config::gated(8, 2).conditional()));
}

/// Adds the centre tap (0, 0) to conv `name`: it then reads the very pixel its logits predict.
fn with_centre_tap(mut net: Network, name: &str) -> Network {
    let c = net.convs.iter_mut().find(|c| c.name == name).expect("conv");
    assert!(c.taps.iter().all(|t| (t.dy, t.dx) != (0, 0)));
    let (ky, kx) = (c.taps[0].ky as i32 - c.taps[0].dy, c.taps[0].kx as i32 - c.taps[0].dx);
    c.taps.push(Tap {
        ky: ky as usize,
        kx: kx as usize,
        dy: 0,
        dx: 0,
    });
    // The tensor grew by one tap: rebuild the parameter table's offsets the way Network::new lays them out.
    let table = &mut net.params;
    let (mut cpu_len, mut gpu_len) = (0, 0);
    for t in &mut table.tensors {
        if let pixelcnn::model::ParamKind::Weight { conv } = t.kind {
            if net.convs[conv].name == name {
                t.dims[0] = (t.dims[0].0 + 1, t.dims[0].1 + 1);
            }
        }
        t.cpu_offset = cpu_len;
        t.gpu_offset = gpu_len;
        cpu_len += t.cpu_len().next_multiple_of(pixelcnn::model::PARAM_ALIGN);
        gpu_len += t.gpu_len().next_multiple_of(pixelcnn::model::PARAM_ALIGN);
    }
    table.cpu_len = cpu_len;
    table.gpu_len = gpu_len;
    net
}

#[test]
fn causality_test_detects_a_leaky_mask() {
    // conv_in with mask B, and a gated net whose first horizontal conv sees its own pixel.
    for net in [
        with_centre_tap(Network::new(Config::pixelcnn(6, 2)), "conv_in"),
        with_centre_tap(Network::new(Config::gated(4, 2)), "layers.0.h"),
    ] {
        let params = perturbed_params(&net, 5, 0.1);
        let (leaks, _) = causality_leaks(&net, &params, &CAUSALITY_POSITIONS);
        assert!(
            leaks > 0,
            "{}: the causality check did not notice a conv reading the centre pixel",
            net.config.describe()
        );
    }
}

/// The gradient of logit (r, q) of image 0 with respect to every input pixel.
fn logit_gradient(net: &Network, params: &[f32], r: usize, q: usize) -> Vec<f32> {
    let x = random_unit(PIXELS, 23);
    let labels = [2u8];
    let labels = net.config.is_conditional().then_some(&labels[..]);
    let acts = cpu::forward(net, params, &x, labels, 1);
    let mut d = vec![0.0; PIXELS];
    d[r * WIDTH + q] = 1.0;
    cpu::backward(net, params, &acts, labels, d, 1).1
}

#[test]
fn the_plain_net_has_a_blind_spot_and_the_gated_net_does_not() {
    let (r, q) = (12, 10);
    let probe = (r - 1) * WIDTH + q + 5;
    let plain = Network::new(Config::pixelcnn(6, 4));
    let g = logit_gradient(&plain, &perturbed_params(&plain, 3, 0.1), r, q);
    eprintln!("pixelcnn: d logit({r},{q}) / d x[{}, {}] = {}", r - 1, q + 5, g[probe]);
    assert_eq!(g[probe], 0.0, "the plain net sees into its blind spot");
    assert!(
        g[(r - 1) * WIDTH + q + 3] != 0.0,
        "the plain net should see x[r-1, q+3] (conv_in's reach)"
    );
    let gated = Network::new(Config::gated(4, 3));
    let g = logit_gradient(&gated, &perturbed_params(&gated, 3, 0.1), r, q);
    eprintln!("gated L=3: d logit({r},{q}) / d x[{}, {}] = {}", r - 1, q + 5, g[probe]);
    assert!(g[probe] != 0.0, "the gated net (L = 3) does not see x[r-1, q+5]");
}

#[test]
fn the_class_changes_a_conditional_net_only() {
    let x = as_f32(&random_images(2, 61));
    for (config, conditional) in [
        (Config::pixelcnn(4, 1).conditional(), true),
        (Config::gated(3, 2).conditional(), true),
        (Config::pixelcnn(4, 1), false),
        (Config::gated(3, 2), false),
    ] {
        let net = Network::new(config);
        let params = perturbed_params(&net, 62, 0.1);
        let a = cpu::forward(&net, &params, &x, Some(&[1, 5]), 2);
        let b = cpu::forward(&net, &params, &x, Some(&[8, 5]), 2);
        let (la, lb) = (&a[net.logits_act()], &b[net.logits_act()]);
        let changed = la[..PIXELS].iter().zip(&lb[..PIXELS]).filter(|(a, b)| a != b).count();
        eprintln!(
            "{}: {changed} of 784 logits of image 0 change with its class",
            config.describe()
        );
        assert_eq!(
            la[PIXELS..],
            lb[PIXELS..],
            "image 1 kept its class: its logits must not change"
        );
        if conditional {
            assert!(
                changed > 100,
                "{}: the class barely changes the logits",
                config.describe()
            );
        } else {
            assert_eq!(
                changed,
                0,
                "{}: an unconditional net depends on the label",
                config.describe()
            );
        }
    }
}

#[test]
fn adam_step_matches_hand_computation() {
    let cfg = AdamConfig::default();
    assert_eq!((cfg.lr, cfg.beta1, cfg.beta2, cfg.eps), (5e-4, 0.9, 0.999, 1e-7));

    // The folded bias correction of the first step, from the formula.
    let expected = 5e-4 * (1.0f64 - 0.999).sqrt() / (1.0 - 0.9);
    let got = cfg.step_size(1) as f64;
    eprintln!("step_size(1) = {got:.6e}, formula {expected:.6e}");
    assert!(
        (got - expected).abs() <= 1e-6 * expected,
        "step_size(1) = {got}, expected {expected}"
    );
    assert!((expected - 1.5811e-4).abs() < 1e-8);

    // Gradients per step for five parameters: ordinary, negative, zero, tiny (√v ≪ ε, so ε shapes the step), and
    // one whose sign flips between steps.
    let theta0 = [0.5f32, -0.25, 0.125, 1.0, -2.0];
    let grads = [
        [0.1f32, -0.3, 0.0, 1e-8, 2.0],
        [0.2, -0.1, 0.0, 1e-8, -1.5],
        [-0.05, 0.4, 0.0, 1e-8, 0.7],
    ];
    let mut params = theta0.to_vec();
    let mut adam = AdamState::new(params.len());
    let mut theta: Vec<f64> = theta0.iter().map(|&v| v as f64).collect();
    let mut m = vec![0.0f64; theta.len()];
    let mut v = vec![0.0f64; theta.len()];
    let (b1, b2, eps, lr) = (0.9f64, 0.999f64, 1e-7f64, 5e-4f64);
    for (step, g) in grads.iter().enumerate() {
        let t = (step + 1) as i32;
        adam.step += 1;
        cpu::adam_update(&mut params, g, &mut adam.m, &mut adam.v, cfg.step_size(adam.step), &cfg);

        let lr_t = lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
        for i in 0..theta.len() {
            let g = g[i] as f64;
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            theta[i] -= lr_t * m[i] / (v[i].sqrt() + eps);
        }
        for i in 0..theta.len() {
            // Compare the moments relatively and the total change of θ relatively: θ itself is O(1) while a step is
            // O(lr), so comparing θ directly would hide an error in the step.
            let close = |a: f64, b: f64, tol: f64| (a - b).abs() <= tol * b.abs().max(1e-30);
            assert!(
                close(adam.m[i] as f64, m[i], 1e-5),
                "step {t}, m[{i}]: {} vs {}",
                adam.m[i],
                m[i]
            );
            // 1 − β2 is formed in f32 (as in Keras and the WGSL kernel): 1 − 0.999f32 is 1.3e-5 away from 1e-3.
            assert!(
                close(adam.v[i] as f64, v[i], 3e-5),
                "step {t}, v[{i}]: {} vs {}",
                adam.v[i],
                v[i]
            );
            let moved = params[i] as f64 - theta0[i] as f64;
            let expected = theta[i] - theta0[i] as f64;
            // θ is stored in f32: its rounding (half an ulp per step) limits how precisely the change can be known.
            let tol = 1e-4 * expected.abs() + 4.0 * f32::EPSILON as f64 * theta0[i].abs() as f64;
            eprintln!("step {t} θ[{i}]: moved {moved:+.9e}, hand {expected:+.9e}");
            assert!(
                (moved - expected).abs() <= tol,
                "step {t}, θ[{i}] moved {moved:e}, expected {expected:e}"
            );
        }
    }
    // The zero-gradient parameter does not move; the tiny-gradient one does, by less than a full step (ε matters).
    assert_eq!(params[2], theta0[2]);
    assert!(params[3] != theta0[3] && (theta[3] - theta0[3] as f64).abs() < 0.5 * lr);
}

#[test]
fn training_reduces_loss_on_cpu() {
    let net = Network::new(Config::pixelcnn(4, 1));
    let batch = 4;
    let mut params = net.init_params(7);
    let mut adam = AdamState::new(net.param_len());
    let cfg = AdamConfig::default();
    let images = as_f32(&random_images(batch, 8));
    let mean = |nll: &[f32]| nll.iter().map(|&v| v as f64).sum::<f64>() / (batch * PIXELS) as f64;

    let mut losses = Vec::new();
    for _ in 0..30 {
        losses.push(mean(&cpu::train_step(
            &net,
            &mut params,
            &mut adam,
            &cfg,
            &images,
            None,
            batch,
            0,
        )));
    }
    let last = mean(&cpu::image_nll(&net, &params, &images, None, batch));
    eprintln!("mean BCE per pixel: first {:.5}, after 30 steps {last:.5}", losses[0]);
    eprintln!(
        "trajectory: {:?}",
        losses.iter().map(|l| format!("{l:.4}")).collect::<Vec<_>>()
    );
    assert_eq!(adam.step, 30);
    assert!(last.is_finite());
    assert!(
        last < losses[0] - 0.005,
        "loss {:.5} → {last:.5}: not clearly lower",
        losses[0]
    );
}

/// Compares two samplers' outputs image by image in raster order. Up to the first pixel where the images differ,
/// the probabilities must agree to 1e-5; a differing pixel is only allowed where the draw was a near tie
/// (|u − p| < 1e-5), and after it the image's two runs legitimately diverge, so comparison stops there.
/// Returns the number of images that diverged.
fn compare_samples(
    naive: &cpu::Samples,
    incremental: &cpu::Samples,
    key: u32,
    first_image: u32,
    start_pixel: usize,
    pixels: usize,
) -> usize {
    let mut diverged = 0;
    let mut max_dp = 0.0f32;
    for (i, (a, b)) in naive
        .probs
        .chunks(pixels)
        .zip(incremental.probs.chunks(pixels))
        .enumerate()
    {
        for q in 0..start_pixel {
            assert!(
                a[q].is_nan() && b[q].is_nan(),
                "image {i}: known pixel {q} has a probability"
            );
        }
        for q in start_pixel..pixels {
            let dp = (a[q] - b[q]).abs();
            max_dp = max_dp.max(dp);
            assert!(
                dp <= 1e-5,
                "image {i} pixel {q}: p = {} (naive) vs {} (incremental)",
                a[q],
                b[q]
            );
            let at = i * pixels + q;
            if naive.images[at] != incremental.images[at] {
                let u = rng::sample_uniform(key, first_image + i as u32, q as u32);
                eprintln!("image {i} pixel {q}: draws differ at a near tie, u = {u}, p = {}", a[q]);
                assert!(
                    (u - a[q]).abs() < 1e-5,
                    "image {i} pixel {q}: draws differ although u = {u}, p = {}",
                    a[q]
                );
                diverged += 1;
                break;
            }
        }
    }
    eprintln!("max |p_naive − p_incremental| = {max_dp:.3e}, images diverged at near ties: {diverged}");
    diverged
}

fn samplers_agree(net: &Network, labels: Option<&[u8]>, seed: u64) {
    let (width, pixels) = (net.width(), net.pixels());
    let params = perturbed_params(net, seed, 0.05);
    let count = 3;
    let key = rng::sample_key(42);
    let first_image = 5;
    let spec = SampleSpec {
        count,
        key,
        first_image,
        labels,
        init: None,
        start_pixel: 0,
        temperature: 1.0,
    };
    let naive = cpu::sample_naive(net, &params, spec);
    let incremental = cpu::sample_incremental(net, &params, spec);
    let diverged = compare_samples(&naive, &incremental, key, first_image, 0, pixels);
    assert!(diverged <= 1, "{diverged} of {count} images diverged");
    // Samples that are all zeros or all ones would make the comparison weak.
    let ones = naive.images.iter().filter(|&&v| v == 1).count();
    assert!(
        ones > 50 && ones < count * pixels - 50,
        "{ones} ones in {count} samples"
    );

    // Completion: the top half is given, the rest is sampled; the given pixels must come back unchanged.
    let start = net.config.height / 2 * width;
    let init = random_images_of(count, pixels, 10);
    let spec = SampleSpec {
        init: Some(&init),
        start_pixel: start,
        temperature: 1.0,
        ..spec
    };
    let naive = cpu::sample_naive(net, &params, spec);
    let incremental = cpu::sample_incremental(net, &params, spec);
    for (what, s) in [("naive", &naive), ("incremental", &incremental)] {
        for i in 0..count {
            let r = i * pixels..i * pixels + start;
            assert_eq!(s.images[r.clone()], init[r], "{what}: image {i} changed a given pixel");
        }
    }
    let diverged = compare_samples(&naive, &incremental, key, first_image, start, pixels);
    assert!(diverged <= 1, "{diverged} of {count} completions diverged");
}

#[test]
fn temperature_one_draws_the_model_itself() {
    // The network is causal, so the logit at q of the finished images is the logit each pixel was drawn from:
    // at T = 1 every probability equals σ(logit) bit for bit, and at T = 0.6 σ(logit / 0.6), sharper; the naive
    // and incremental samplers agree at T ≠ 1 too.
    let net = Network::new(Config::pixelcnn(6, 2).conditional());
    let params = perturbed_params(&net, 31, 0.05);
    let labels = [3u8, 7];
    for temperature in [1.0f32, 0.6] {
        let spec = SampleSpec {
            count: 2,
            key: rng::sample_key(5),
            first_image: 0,
            labels: Some(&labels),
            init: None,
            start_pixel: 0,
            temperature,
        };
        let s = cpu::sample_incremental(&net, &params, spec);
        let x: Vec<f32> = s.images.iter().map(|&v| v as f32).collect();
        let logits = &cpu::forward(&net, &params, &x, Some(&labels), 2)[net.logits_act()];
        for (k, (&p, &z)) in s.probs.iter().zip(logits.iter()).enumerate() {
            assert_eq!(
                p.to_bits(),
                cpu::sigmoid(z / temperature).to_bits(),
                "T {temperature}: pixel {k}"
            );
        }
        let diverged = compare_samples(&cpu::sample_naive(&net, &params, spec), &s, spec.key, 0, 0, PIXELS);
        assert!(diverged <= 1, "T {temperature}: {diverged} images diverged");
        let sharpness = s.probs.iter().map(|p| (p - 0.5).abs() as f64).sum::<f64>() / s.probs.len() as f64;
        eprintln!("T {temperature}: every p = σ(logit / T) exactly; mean |p − ½| = {sharpness:.4}");
    }
}

#[test]
fn incremental_sampler_equals_naive_on_cpu() {
    samplers_agree(&Network::new(Config::pixelcnn(6, 1)), None, 9);
    // The gated net's vertical stack is computed a row at a time (after the row is drawn), its horizontal stack
    // per pixel; with labels.
    samplers_agree(&Network::new(Config::gated(4, 2).conditional()), Some(&[1, 4, 9]), 19);
    // 16 rows of 20 columns: a dilated gated net (its vertical stack reads rows 1, 2 and 4 up) and a plain one.
    let wide = Config::gated(4, 4).dilated(3).with_classes(5).with_shape(16, 20);
    samplers_agree(&Network::new(wide), Some(&[4, 0, 2]), 29);
    samplers_agree(&Network::new(Config::pixelcnn(6, 1).with_shape(16, 20)), None, 39);
}

#[test]
fn dropout_drops_at_its_rate_and_scales_the_rest() {
    // 2,000 positions × 10 channels at rate 0.3: about 30% zeros, the rest × 1/0.7; the same key gives the same
    // mask, another key another; the mask is a function of (position, channel) through the GPU layout's vec4 index.
    let (positions, channels, rate) = (2000, 10, 0.3f32);
    let x: Vec<f32> = (0..positions * channels).map(|i| 1.0 + (i % 7) as f32).collect();
    let key = rng::dropout_key(5, 1);
    let y = cpu::dropout(&x, channels, key, rate);
    let dropped = y.iter().filter(|&&v| v == 0.0).count() as f64 / y.len() as f64;
    eprintln!("rate {rate}: dropped {dropped:.4}");
    assert!((dropped - 0.3).abs() < 0.02, "{dropped}");
    for (i, (&a, &b)) in x.iter().zip(&y).enumerate() {
        let keep = cpu::dropout_keeps(key, i / channels, i % channels, 3, rate);
        assert_eq!(b, if keep { a * (1.0 / (1.0 - rate)) } else { 0.0 }, "element {i}");
    }
    assert_eq!(cpu::dropout(&x, channels, key, rate), y);
    assert_ne!(cpu::dropout(&x, channels, rng::dropout_key(5, 2), rate), y);
    assert_ne!(cpu::dropout(&x, channels, rng::dropout_key(6, 1), rate), y);
    // A network with dropout evaluates (and samples) as the whole network: forward without a key drops nothing.
    let net = Network::new(Config::gated(4, 2).with_dropout(50));
    let params = perturbed_params(&net, 3, 0.1);
    let images = as_f32(&random_images(2, 4));
    let plain = cpu::forward(&net, &params, &images, None, 2);
    let trained = cpu::forward_training(&net, &params, &images, None, 2, Some(key));
    let d = net.act_names.iter().position(|n| n == "layers.0.dropout").unwrap();
    assert_eq!(plain[d], plain[d - 1], "evaluation passes the input through");
    assert_ne!(trained[d], plain[d], "training drops units");
}

#[test]
fn init_is_glorot_uniform_and_seeded() {
    let net = Network::new(Config::pixelcnn(64, 1));
    let a = net.init_params(3);
    assert_eq!(a, net.init_params(3), "same seed, different parameters");
    let b = net.init_params(4);
    let differing = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    assert!(
        differing > a.len() / 2,
        "different seeds: only {differing} of {} values differ",
        a.len()
    );

    for c in &net.convs {
        let (weights, bias) = (net.params.cpu(&a, c.weight), net.params.cpu(&a, c.bias));
        let kk = (c.kernel[0] * c.kernel[1]) as f64;
        // Fans over the full k×k kernel, masked taps included (Keras' glorot_uniform on the whole kernel).
        let limit = (6.0 / (c.cin as f64 * kk + c.cout as f64 * kk)).sqrt();
        let max = weights.iter().fold(0.0f64, |m, &w| m.max(w.abs() as f64));
        let n = weights.len() as f64;
        let mean = weights.iter().map(|&w| w as f64).sum::<f64>() / n;
        let std = (weights.iter().map(|&w| (w as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        eprintln!(
            "{:<16} n={:<6} limit={limit:.5} max|w|={max:.5} std={std:.5} (uniform: {:.5})",
            c.name,
            weights.len(),
            limit / 3f64.sqrt()
        );
        assert!(max <= limit, "{}: |w| = {max} exceeds the glorot limit {limit}", c.name);
        assert!(bias.iter().all(|&v| v == 0.0), "{}: non-zero bias", c.name);
        if weights.len() >= 1000 {
            // Large layers: the values fill the interval (a smaller limit would also pass the bound above).
            assert!(
                max > 0.95 * limit,
                "{}: max |w| {max} far below the limit {limit}",
                c.name
            );
            let expected = limit / 3f64.sqrt();
            assert!(
                (std / expected - 1.0).abs() < 0.1,
                "{}: std {std}, expected {expected}",
                c.name
            );
        }
    }
    // Padding between tensors stays zero.
    let inside = in_tensors(&net);
    assert!(
        a.iter().zip(&inside).all(|(&v, &inside)| inside || v == 0.0),
        "non-zero padding"
    );
}

#[test]
fn bce_from_logit_is_stable() {
    // Far from zero, BCE is linear: z·(1 − x) for z → +∞ and −z·x for z → −∞.
    for z in [100.0f32, -100.0, 1e4, -1e4] {
        for x in [0.0f32, 1.0, 0.25] {
            let got = cpu::bce_from_logit(z, x);
            let asymptote = if z > 0.0 { z * (1.0 - x) } else { -z * x };
            eprintln!("bce({z:e}, {x}) = {got:e}, asymptote {asymptote:e}");
            assert!(got.is_finite(), "bce({z}, {x}) = {got}");
            assert!(
                (got - asymptote).abs() <= 1e-6 * asymptote.abs().max(1.0),
                "bce({z}, {x}) = {got}, expected {asymptote}"
            );
        }
        let (nll, grad) = cpu::bce_loss_grad(&[z; PIXELS], &[1.0; PIXELS], PIXELS);
        assert!(
            nll[0].is_finite() && grad.iter().all(|g| g.is_finite()),
            "loss or gradient not finite at z = {z}"
        );
    }

    // For moderate z, the naive formula in f64 is accurate and must agree.
    let mut rng = SplitMix64::new(11);
    let mut max_rel = 0.0f64;
    for _ in 0..1000 {
        let z = (rng.next_f64() * 30.0 - 15.0) as f32;
        let x = if rng.next_f64() < 0.5 {
            (rng.next_f64() < 0.5) as u8 as f32
        } else {
            rng.next_f64() as f32
        };
        let s = 1.0 / (1.0 + (-(z as f64)).exp());
        let naive = -(x as f64 * s.ln() + (1.0 - x as f64) * (1.0 - s).ln());
        let got = cpu::bce_from_logit(z, x) as f64;
        // The f32 form rounds terms of size |z| (e.g. max(z, 0) − z·x nearly cancels for x ≈ 1), so allow
        // a few f32 ulps of |z| on top of a relative error.
        let err = (got - naive).abs();
        max_rel = max_rel.max(err / naive);
        assert!(
            err <= 1e-5 * naive + 4.0 * f32::EPSILON as f64 * (z.abs() as f64 + 1.0),
            "bce({z}, {x}) = {got}, naive f64 {naive}"
        );
    }
    eprintln!("moderate z: max relative error against the naive f64 formula {max_rel:.3e}");
}
