//! Whole training steps on the GPU against the CPU reference, determinism, and buffer-limit errors.

mod common;
use common::*;
use pixelcnn::cpu::{self, AdamConfig, AdamState};
use pixelcnn::gpu::gpu_for_tests;
use pixelcnn::gpu::trainer::{GpuModel, Trainer};
use pixelcnn::model::{Config, Network};

#[test]
fn three_adam_steps_match_cpu() {
    let Some(gpu) = gpu_for_tests() else { return };
    let net = Network::new(Config { filters: 6, blocks: 2 });
    let cfg = AdamConfig::default();
    let start = perturbed_params(&net, 1, 0.05);
    let batches: Vec<Vec<u8>> = (0..3).map(|i| random_images(3, 10 + i)).collect();

    let mut params = start.clone();
    let mut adam = AdamState::new(net.param_len);
    let mut first_grads = None;
    for (i, b) in batches.iter().enumerate() {
        let x: Vec<f32> = b.iter().map(|&v| v as f32).collect();
        if i == 0 {
            let acts = cpu::forward(&net, &params, &x, 3);
            let (_, d_logits) = cpu::bce_loss_grad(&acts[net.logits_act()], &x);
            first_grads = Some(cpu::backward(&net, &params, &acts, d_logits, 3).0);
        }
        cpu::train_step(&net, &mut params, &mut adam, &cfg, &x, 3);
    }

    let model = GpuModel::new(&gpu, &net, &start).unwrap();
    let mut trainer = Trainer::new(&gpu, model, cfg, 3).unwrap();
    for (i, b) in batches.iter().enumerate() {
        trainer.step(&gpu, b, i as u64 + 1).unwrap();
        if i == 0 {
            let g = trainer.model.download_grads(&gpu).unwrap();
            assert_close(
                "step 1 gradient (all parameters)",
                &g,
                first_grads.as_ref().unwrap(),
                1e-4,
            );
        }
    }
    let gpu_params = trainer.model.download_params(&gpu).unwrap();
    let gpu_adam = trainer.model.download_adam(&gpu, 3).unwrap();
    // Adam divides by √v, so parameter updates carry the gradients' relative error; compare the updates.
    let upd = |p: &[f32]| p.iter().zip(&start).map(|(a, b)| a - b).collect::<Vec<f32>>();
    assert_close(
        "3 Adam steps: parameter updates",
        &upd(&gpu_params),
        &upd(&params),
        1e-3,
    );
    assert_close("3 Adam steps: parameters", &gpu_params, &params, 1e-5);
    assert_close("3 Adam steps: first moments", &gpu_adam.m, &adam.m, 1e-3);
    assert_close("3 Adam steps: second moments", &gpu_adam.v, &adam.v, 1e-3);
    // The running NLL the GPU accumulated equals the CPU's per-image NLLs of the three batches (before each update).
    let total = trainer.read_running_nll(&gpu).unwrap();
    let mut p = start.clone();
    let mut a = AdamState::new(net.param_len);
    let mut cpu_total = 0.0f64;
    for b in &batches {
        let x: Vec<f32> = b.iter().map(|&v| v as f32).collect();
        cpu_total += cpu::train_step(&net, &mut p, &mut a, &cfg, &x, 3)
            .iter()
            .map(|&v| v as f64)
            .sum::<f64>();
    }
    let rel = (total - cpu_total).abs() / cpu_total;
    eprintln!("running NLL: gpu {total:.4} cpu {cpu_total:.4} rel err {rel:.2e}");
    assert!(rel < 1e-5);
}

#[test]
fn gpu_training_is_bitwise_deterministic() {
    let Some(gpu) = gpu_for_tests() else { return };
    let net = Network::new(Config { filters: 8, blocks: 1 });
    let start = perturbed_params(&net, 2, 0.05);
    let run = || {
        let model = GpuModel::new(&gpu, &net, &start).unwrap();
        let mut trainer = Trainer::new(&gpu, model, AdamConfig::default(), 4).unwrap();
        for s in 0..3 {
            trainer.step(&gpu, &random_images(4, 20 + s), s + 1).unwrap();
        }
        // A smaller final batch exercises a second recorded program.
        trainer.step(&gpu, &random_images(2, 30), 4).unwrap();
        let params = trainer.model.download_params(&gpu).unwrap();
        let adam = trainer.model.download_adam(&gpu, 4).unwrap();
        (params, adam)
    };
    let (p1, a1) = run();
    let (p2, a2) = run();
    assert_ne!(p1, start, "training changed nothing");
    assert!(
        p1.iter().zip(&p2).all(|(a, b)| a.to_bits() == b.to_bits()),
        "two GPU runs differ"
    );
    assert_eq!(a1, a2);
    eprintln!("two GPU runs of 4 steps: {} parameters bitwise identical", p1.len());
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
