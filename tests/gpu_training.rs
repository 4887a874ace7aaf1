//! Whole training steps on the GPU against the CPU reference, on both kernel versions and both architectures
//! (conditional too, and at image sizes other than 28×28: 8×8, 16×20 and 64×64), determinism, and buffer-limit
//! errors.

mod common;
use common::*;
use pixelcnn::cpu::{self, AdamConfig, AdamState};
use pixelcnn::gpu::gpu_for_tests;
use pixelcnn::gpu::layers::GpuModel;
use pixelcnn::gpu::trainer::Trainer;
use pixelcnn::gpu::Gpu;
use pixelcnn::model::{Config, Network};

fn three_adam_steps(gpu: &Gpu, version: &str, config: Config) {
    let net = Network::new(config);
    // A short decay, so that three steps move the Polyak average visibly.
    let cfg = AdamConfig {
        ema_decay: 0.7,
        ..AdamConfig::default()
    };
    let start = perturbed_params(&net, 1, 0.05);
    let pixels = config.pixels();
    let batches: Vec<Vec<u8>> = (0..3).map(|i| random_images_of(3, pixels, 10 + i)).collect();
    let labels: Vec<Vec<u8>> = (0..3)
        .map(|i| random_labels_of(3, config.classes.max(1), 20 + i))
        .collect();
    let label = |i: usize| config.is_conditional().then_some(&labels[i][..]);
    let what = format!("[{version}] {}", config.describe());

    let mut params = start.clone();
    let mut adam = AdamState::for_run(&start, &cfg);
    let mut first_grads = None;
    // Dropout's masks (networks that have it) come from the run's seed and the step.
    let seed = 77;
    for (i, b) in batches.iter().enumerate() {
        let x: Vec<f32> = b.iter().map(|&v| v as f32).collect();
        if i == 0 {
            let key = (config.dropout > 0).then(|| pixelcnn::rng::dropout_key(seed, 1));
            let acts = cpu::forward_training(&net, &params, &x, label(0), 3, key);
            let (_, d_logits) = cpu::bce_loss_grad(&acts[net.logits_act()], &x, pixels);
            first_grads = Some(cpu::backward_training(&net, &params, &acts, label(0), d_logits, 3, key).0);
        }
        cpu::train_step(&net, &mut params, &mut adam, &cfg, &x, label(i), 3, seed);
    }

    let mut model = GpuModel::new(gpu, &net, &start).unwrap();
    model.upload_adam(gpu, &AdamState::for_run(&start, &cfg)).unwrap();
    let mut trainer = Trainer::new(gpu, model, cfg, 3).unwrap();
    trainer.dropout_seed = seed;
    for (i, b) in batches.iter().enumerate() {
        trainer.step(gpu, b, label(i), i as u64 + 1).unwrap();
        if i == 0 {
            let g = trainer.model.download_grads(gpu).unwrap();
            check(
                &format!("{what} step 1 gradient (all parameters)"),
                &g,
                first_grads.as_ref().unwrap(),
                1e-4,
            );
        }
    }
    let gpu_params = trainer.model.download_params(gpu).unwrap();
    let gpu_adam = trainer.model.download_adam(gpu, 3).unwrap();
    // Adam divides by √v, so parameter updates carry the gradients' relative error; compare the updates.
    let upd = |p: &[f32]| p.iter().zip(&start).map(|(a, b)| a - b).collect::<Vec<f32>>();
    check(
        &format!("{what} 3 Adam steps: parameter updates"),
        &upd(&gpu_params),
        &upd(&params),
        1e-3,
    );
    check(&format!("{what} 3 Adam steps: parameters"), &gpu_params, &params, 1e-5);
    check(
        &format!("{what} 3 Adam steps: first moments"),
        &gpu_adam.m,
        &adam.m,
        1e-3,
    );
    check(
        &format!("{what} 3 Adam steps: second moments"),
        &gpu_adam.v,
        &adam.v,
        1e-3,
    );
    let (gpu_ema, cpu_ema) = (
        gpu_adam.ema.expect("GPU average"),
        adam.ema.clone().expect("CPU average"),
    );
    check(&format!("{what} 3 steps: Polyak average"), &gpu_ema, &cpu_ema, 1e-5);
    assert_ne!(cpu_ema, params, "the average should lag the parameters");
    // Evaluating the average (swapped in for the parameters, and back) equals the CPU's NLL under the average, and
    // leaves the parameters as they were.
    let images = random_images_of(3, pixels, 40);
    let x: Vec<f32> = images.iter().map(|&v| v as f32).collect();
    let got = trainer.evaluate_average(gpu, &images, label(0), |_| {}).unwrap();
    check(
        &format!("{what} NLL under the average"),
        &got,
        &cpu::image_nll(&net, &cpu_ema, &x, label(0), 3),
        1e-4,
    );
    assert_eq!(
        trainer.model.download_params(gpu).unwrap(),
        gpu_params,
        "evaluating the average moved the parameters"
    );
    // The running NLL the GPU accumulated equals the CPU's per-image NLLs of the three batches (before each update).
    let total = trainer.read_running_nll(gpu).unwrap();
    let mut p = start.clone();
    let mut a = AdamState::for_run(&start, &cfg);
    let mut cpu_total = 0.0f64;
    for (i, b) in batches.iter().enumerate() {
        let x: Vec<f32> = b.iter().map(|&v| v as f32).collect();
        cpu_total += cpu::train_step(&net, &mut p, &mut a, &cfg, &x, label(i), 3, seed)
            .iter()
            .map(|&v| v as f64)
            .sum::<f64>();
    }
    let rel = (total - cpu_total).abs() / cpu_total;
    eprintln!("{what} running NLL: gpu {total:.4} cpu {cpu_total:.4} rel err {rel:.2e}");
    assert!(rel < 1e-5);
}

#[test]
fn three_adam_steps_match_cpu() {
    for (version, gpu) in devices() {
        for config in [
            Config::pixelcnn(6, 2),
            Config::pixelcnn(6, 1).conditional(),
            Config::gated(5, 3),
            Config::gated(6, 2).conditional(),
            // Dropout: the GPU's masks are the CPU's, step by step.
            Config::gated(5, 3).dilated(2).with_dropout(50),
            Config::pixelcnn(6, 2).with_dropout(20),
        ] {
            three_adam_steps(&gpu, &version, config);
        }
    }
}

/// Images other than 28×28, square and not, small enough that a lane's rows span more than two images (8×8) and
/// large enough that an image spans many workgroups (64×64): both architectures, conditional (with a class count
/// other than 10) and not. On the device's default kernel version only: every pipeline is built anew for each image
/// shape, and the kernel families' own tests run both versions at other shapes.
#[test]
fn three_adam_steps_match_cpu_at_other_sizes() {
    let Some((version, gpu)) = devices().into_iter().next() else {
        return;
    };
    for (h, w) in [(8, 8), (16, 20), (64, 64)] {
        for config in [
            Config::pixelcnn(4, 1),
            Config::pixelcnn(4, 1).with_classes(3),
            Config::gated(5, 2).dilated(2),
            Config::gated(4, 2).dilated(2).with_classes(7),
        ] {
            three_adam_steps(&gpu, &version, config.with_shape(h, w));
        }
    }
}

#[test]
fn gpu_training_is_bitwise_deterministic() {
    for (version, gpu) in devices() {
        for config in [
            Config::pixelcnn(8, 1),
            Config::gated(6, 2).conditional(),
            Config::gated(6, 2).with_dropout(30),
        ] {
            let net = Network::new(config);
            let start = perturbed_params(&net, 2, 0.05);
            let labels = random_labels(4, 9);
            let l = |n: usize| config.is_conditional().then_some(&labels[..n]);
            let run = || {
                let model = GpuModel::new(&gpu, &net, &start).unwrap();
                let mut trainer = Trainer::new(&gpu, model, AdamConfig::default(), 4).unwrap();
                for s in 0..3 {
                    trainer.step(&gpu, &random_images(4, 20 + s), l(4), s + 1).unwrap();
                }
                // A smaller final batch exercises a second recorded program.
                trainer.step(&gpu, &random_images(2, 30), l(2), 4).unwrap();
                let params = trainer.model.download_params(&gpu).unwrap();
                let adam = trainer.model.download_adam(&gpu, 4).unwrap();
                (params, adam)
            };
            let (p1, a1) = run();
            let (p2, a2) = run();
            assert_ne!(p1, start, "training changed nothing");
            assert!(
                p1.iter().zip(&p2).all(|(a, b)| a.to_bits() == b.to_bits()),
                "[{version}] {}: two GPU runs differ",
                config.describe()
            );
            assert_eq!(a1, a2);
            eprintln!(
                "[{version}] {}: two GPU runs of 4 steps: {} parameters bitwise identical",
                config.describe(),
                p1.len()
            );
        }
    }
}

#[test]
fn oversized_batch_is_a_clear_error() {
    let Some(gpu) = gpu_for_tests() else { return };
    let net = Network::new(Config::default());
    let model = GpuModel::new(&gpu, &net, &net.init_params(0)).unwrap();
    let err = match Trainer::new(&gpu, model, AdamConfig::default(), 1 << 20) {
        Ok(_) => panic!("a batch of 2^20 images cannot fit a storage binding"),
        Err(e) => format!("{e:#}"),
    };
    eprintln!("{err}");
    assert!(err.contains("--batch-size"), "{err}");
}

#[test]
fn evaluation_and_every_activation_match_cpu() {
    for (version, gpu) in devices() {
        for config in [Config::pixelcnn(6, 2), Config::gated(5, 2).conditional()] {
            let net = Network::new(config);
            let params = perturbed_params(&net, 9, 0.05);
            let images = random_images(5, 8);
            let labels = random_labels(5, 7);
            let l = config.is_conditional().then_some(&labels[..]);
            let model = GpuModel::new(&gpu, &net, &params).unwrap();
            let mut trainer = Trainer::new(&gpu, model, AdamConfig::default(), 3).unwrap();
            let nll = trainer.evaluate(&gpu, &images, l, |_| {}).unwrap();
            let x: Vec<f32> = images.iter().map(|&v| v as f32).collect();
            let cpu_nll = cpu::image_nll(&net, &params, &x, l, 5);
            check(
                &format!(
                    "[{version}] {} eval: per-image NLL (batches of 3 + 2)",
                    config.describe()
                ),
                &nll,
                &cpu_nll,
                1e-4,
            );
            // A training step keeps every activation it needs; compare those of its forward pass (images 0..3).
            trainer.step(&gpu, &images[..3 * 784], l.map(|l| &l[..3]), 1).unwrap();
            let acts = cpu::forward(&net, &params, &x[..3 * 784], l.map(|l| &l[..3]), 3);
            let fused = pixelcnn::gpu::layers::fuse_residuals(&net, true);
            #[allow(clippy::needless_range_loop)]
            for a in 1..net.logits_act() {
                let written = match fused.get(a - 1) {
                    Some(pixelcnn::gpu::layers::Fused::WithResidual { keep_output, .. }) => *keep_output,
                    _ => true,
                };
                if written {
                    let what = format!(
                        "[{version}] {} activation {} ({})",
                        config.describe(),
                        a,
                        net.act_names[a]
                    );
                    // WGSL's tanh and exp are not correctly rounded: the gated net's activations get 5e-4.
                    let tol = if config.arch == pixelcnn::model::Arch::Gated {
                        5e-4
                    } else {
                        1e-4
                    };
                    check(&what, &trainer.read_act(&gpu, a, 3).unwrap(), &acts[a], tol);
                }
            }
        }
    }
}
