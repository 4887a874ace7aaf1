//! Every WGSL kernel against its CPU twin (`cpu.rs`, same name), on fresh random inputs, including channel counts
//! and position counts that are not multiples of the tile sizes. Prints max absolute and relative errors.
//! Under CI=true a missing GPU adapter fails these tests; elsewhere they are skipped with a note.

mod common;
use common::*;
use pixelcnn::cpu;
use pixelcnn::gpu::buffers::{pad4, pad_channels, unpad_channels, GpuParamLayout};
use pixelcnn::gpu::kernels;
use pixelcnn::gpu::record::Program;
use pixelcnn::gpu::{gpu_for_tests, Gpu};
use pixelcnn::model::{Config, Layer, Network, PIXELS};

/// Small networks whose convs cover every kernel shape, with channel counts that are not multiples of 4.
fn test_nets() -> Vec<Network> {
    vec![
        Network::new(Config { filters: 6, blocks: 1 }),
        Network::new(Config { filters: 10, blocks: 1 }),
    ]
}

fn run(gpu: &Gpu, mut p: Program) {
    p.finish(gpu);
    p.submit(gpu);
    gpu.wait().unwrap();
}

#[test]
fn conv_kernels_match_cpu() {
    let Some(gpu) = gpu_for_tests() else { return };
    for net in test_nets() {
        let params = random_vec(net.param_len, 11);
        let layout = GpuParamLayout::new(&net);
        let gparams = gpu.upload("params", &layout.pack(&net, &params)).unwrap();
        for (ci, c) in net.convs.iter().enumerate() {
            let batch = 3;
            let positions = batch * PIXELS;
            let block = net.block(&params, ci);
            let w = gparams.slice(layout.offsets[ci], layout.lens[ci]);
            let input = random_vec(positions * c.cin, 100 + ci as u64);
            let dz = random_vec(positions * c.cout, 200 + ci as u64);
            let g_in = gpu.upload("in", &pad_channels(&input, c.cin)).unwrap();
            let g_dz = gpu.upload("dz", &pad_channels(&dz, c.cout)).unwrap();
            let g_out = gpu.tensor("out", positions * pad4(c.cout)).unwrap();
            let g_dx = gpu
                .upload("dx", &pad_channels(&random_vec(positions * c.cin, 7), c.cin))
                .unwrap();
            let g_wt = gpu.tensor("wt", kernels::transposed_len(c)).unwrap();
            let g_partial = gpu
                .tensor("partial", kernels::wgrad_partial_len(&gpu, c, positions))
                .unwrap();
            let g_grads = gpu.tensor("grads", layout.total).unwrap();
            let grad_block = g_grads.slice(layout.offsets[ci], layout.lens[ci]);

            let mut p = Program::new();
            kernels::conv_forward(&gpu, &mut p, c, w.clone(), g_in.view(), g_out.view(), positions, None).unwrap();
            kernels::transpose_weights(&gpu, &mut p, c, w.clone(), g_wt.view()).unwrap();
            kernels::conv_backward_data(&gpu, &mut p, c, g_wt.view(), g_dz.view(), g_dx.view(), positions, false)
                .unwrap();
            kernels::conv_backward_weight(
                &gpu,
                &mut p,
                c,
                g_in.view(),
                g_dz.view(),
                g_partial.view(),
                grad_block,
                positions,
            )
            .unwrap();
            run(&gpu, p);

            let name = format!(
                "F={} {} ({}→{}, {} taps)",
                net.config.filters,
                c.name,
                c.cin,
                c.cout,
                c.taps.len()
            );
            let out = unpad_channels(&gpu.read(&g_out).unwrap(), c.cout);
            assert_close(
                &format!("conv_forward {name}"),
                &out,
                &cpu::conv_forward(c, block, &input, batch),
                1e-4,
            );
            let dx = unpad_channels(&gpu.read(&g_dx).unwrap(), c.cin);
            assert_close(
                &format!("conv_backward_data {name}"),
                &dx,
                &cpu::conv_backward_data(c, block, &dz, batch),
                1e-4,
            );
            let dw = layout.unpack(&net, &gpu.read(&g_grads).unwrap());
            assert_close(
                &format!("conv_backward_weight {name}"),
                net.block(&dw, ci),
                &cpu::conv_backward_weight(c, &input, &dz, batch),
                1e-4,
            );
        }
    }
}

#[test]
fn transpose_weights_matches_host_transpose() {
    let Some(gpu) = gpu_for_tests() else { return };
    let net = Network::new(Config { filters: 10, blocks: 1 });
    let params = random_vec(net.param_len, 5);
    let layout = GpuParamLayout::new(&net);
    let packed = layout.pack(&net, &params);
    let gparams = gpu.upload("params", &packed).unwrap();
    for (ci, c) in net.convs.iter().enumerate() {
        let g_wt = gpu.tensor("wt", kernels::transposed_len(c)).unwrap();
        let mut p = Program::new();
        kernels::transpose_weights(
            &gpu,
            &mut p,
            c,
            gparams.slice(layout.offsets[ci], layout.lens[ci]),
            g_wt.view(),
        )
        .unwrap();
        run(&gpu, p);
        let (cin, cout) = (pad4(c.cin), pad4(c.cout));
        let block = &packed[layout.offsets[ci]..];
        let mut expected = vec![0.0; kernels::transposed_len(c)];
        for t in 0..c.taps.len() {
            for i in 0..cin {
                for o in 0..cout {
                    expected[(t * cout + o) * cin + i] = block[(t * cin + i) * cout + o];
                }
            }
        }
        let got = gpu.read(&g_wt).unwrap();
        assert_eq!(&got[..expected.len()], &expected[..], "transpose_weights {}", c.name);
    }
}

#[test]
fn elementwise_kernels_match_cpu() {
    let Some(gpu) = gpu_for_tests() else { return };
    let (batch, channels) = (2, 6);
    let n = batch * PIXELS * channels;
    let (a, b) = (random_vec(n, 1), random_vec(n, 2));
    let ga = gpu.upload("a", &pad_channels(&a, channels)).unwrap();
    let gb = gpu.upload("b", &pad_channels(&b, channels)).unwrap();
    let sum = gpu.tensor("sum", batch * PIXELS * 8).unwrap();
    let relu = gpu.tensor("relu", batch * PIXELS * 8).unwrap();
    let mut p = Program::new();
    kernels::add(
        &gpu,
        &mut p,
        ga.view(),
        gb.view(),
        sum.view(),
        channels,
        batch * PIXELS,
        None,
    )
    .unwrap();
    kernels::relu_backward(
        &gpu,
        &mut p,
        ga.view(),
        gb.view(),
        relu.view(),
        channels,
        batch * PIXELS,
    )
    .unwrap();
    run(&gpu, p);
    assert_close(
        "add",
        &unpad_channels(&gpu.read(&sum).unwrap(), channels),
        &cpu::add(&a, &b),
        1e-6,
    );
    assert_close(
        "relu_backward",
        &unpad_channels(&gpu.read(&relu).unwrap(), channels),
        &cpu::relu_backward(&a, &b),
        0.0,
    );
}

#[test]
fn bce_and_image_sums_match_cpu() {
    let Some(gpu) = gpu_for_tests() else { return };
    let batch = 5;
    let logits: Vec<f32> = random_vec(batch * PIXELS, 3).iter().map(|v| v * 8.0).collect();
    let target: Vec<f32> = random_images(batch, 4).iter().map(|&v| v as f32).collect();
    let gl = gpu.upload("logits", &pad_channels(&logits, 1)).unwrap();
    let gt = gpu.upload("target", &pad_channels(&target, 1)).unwrap();
    let grad = gpu.tensor("grad", batch * PIXELS * 4).unwrap();
    let loss = gpu.tensor("loss", batch * PIXELS).unwrap();
    let nll = gpu.tensor("nll", 8).unwrap();
    let mut p = Program::new();
    kernels::bce_loss_grad(&gpu, &mut p, gl.view(), gt.view(), grad.view(), loss.view(), batch).unwrap();
    kernels::sum_images(&gpu, &mut p, loss.view(), nll.view(), batch, false).unwrap();
    run(&gpu, p);
    let (cpu_nll, cpu_grad) = cpu::bce_loss_grad(&logits, &target);
    assert_close(
        "bce_loss_grad (gradient)",
        &unpad_channels(&gpu.read(&grad).unwrap(), 1),
        &cpu_grad,
        1e-4,
    );
    assert_close(
        "sum_images (per-image NLL)",
        &gpu.read_range(&nll, 0, batch).unwrap(),
        &cpu_nll,
        1e-4,
    );
}

#[test]
fn adam_matches_cpu() {
    let Some(gpu) = gpu_for_tests() else { return };
    let n = 1000;
    let cfg = cpu::AdamConfig::default();
    let (mut params, grads) = (random_vec(n, 1), random_vec(n, 2));
    let mut m: Vec<f32> = random_vec(n, 3).iter().map(|v| v * 0.1).collect();
    let mut v: Vec<f32> = random_vec(n, 4).iter().map(|v| v.abs() * 0.01).collect();
    let (gp, gg, gm, gv) = (
        gpu.upload("p", &params).unwrap(),
        gpu.upload("g", &grads).unwrap(),
        gpu.upload("m", &m).unwrap(),
        gpu.upload("v", &v).unwrap(),
    );
    let lr_t = cfg.step_size(3);
    let mut p = Program::new();
    kernels::adam_update(&gpu, &mut p, gp.view(), gg.view(), gm.view(), gv.view(), lr_t, &cfg).unwrap();
    run(&gpu, p);
    cpu::adam_update(&mut params, &grads, &mut m, &mut v, lr_t, &cfg);
    assert_close("adam_update (params)", &gpu.read(&gp).unwrap(), &params, 1e-6);
    assert_close("adam_update (m)", &gpu.read(&gm).unwrap(), &m, 1e-6);
    assert_close("adam_update (v)", &gpu.read(&gv).unwrap(), &v, 1e-6);
}

#[test]
fn sample_pixel_draws_the_cpu_uniforms() {
    let Some(gpu) = gpu_for_tests() else { return };
    let count = 70;
    let key = pixelcnn::rng::sample_key(1234);
    // Logits chosen so that p sweeps (0, 1) across images; pixel 300 of each image is drawn.
    let q = 300;
    let mut logits = vec![0.0f32; count * PIXELS];
    for i in 0..count {
        logits[i * PIXELS + q] = (i as f32 - 35.0) / 8.0;
    }
    let gl = gpu.upload("logits", &pad_channels(&logits, 1)).unwrap();
    let image = gpu.tensor("image", count * PIXELS * 4).unwrap();
    let probs = gpu.tensor("probs", count * PIXELS).unwrap();
    let mut p = Program::new();
    kernels::sample_pixel(&gpu, &mut p, gl.view(), image.view(), probs.view(), count, q, key, 5).unwrap();
    run(&gpu, p);
    let img = unpad_channels(&gpu.read(&image).unwrap(), 1);
    let pr = gpu.read(&probs).unwrap();
    let mut ones = 0;
    for i in 0..count {
        let pc = cpu::sigmoid(logits[i * PIXELS + q]);
        assert!((pr[i * PIXELS + q] - pc).abs() < 1e-6);
        let expected = cpu::sample_pixel(key, 5 + i as u32, q as u32, pc);
        let u = pixelcnn::rng::sample_uniform(key, 5 + i as u32, q as u32);
        if (u - pc).abs() > 1e-5 {
            assert_eq!(img[i * PIXELS + q] as u8, expected, "image {i}: u={u} p={pc}");
        }
        ones += expected as usize;
    }
    assert!(ones > 10 && ones < 60, "draws look degenerate: {ones} ones of {count}");
}

#[test]
fn forward_and_eval_match_cpu() {
    let Some(gpu) = gpu_for_tests() else { return };
    let net = Network::new(Config { filters: 6, blocks: 2 });
    let params = net.init_params(9);
    let images = random_images(5, 8);
    let model = pixelcnn::gpu::trainer::GpuModel::new(&gpu, &net, &params).unwrap();
    let mut trainer = pixelcnn::gpu::trainer::Trainer::new(&gpu, model, cpu::AdamConfig::default(), 3).unwrap();
    let nll = trainer.evaluate(&gpu, &images, |_| {}).unwrap();
    let x: Vec<f32> = images.iter().map(|&v| v as f32).collect();
    let cpu_nll = cpu::image_nll(&net, &params, &x, 5);
    assert_close("eval: per-image NLL (batches of 3 + 2)", &nll, &cpu_nll, 1e-4);
    // The last batch held images 3 and 4: compare every activation of that pass.
    let acts = cpu::forward(&net, &params, &x[3 * PIXELS..], 2);
    for (i, layer) in net.layers.iter().enumerate() {
        let what = match layer {
            Layer::Conv { conv, .. } => format!("forward activation {} ({})", i + 1, net.convs[*conv].name),
            Layer::Add { .. } => format!("forward activation {} (residual add)", i + 1),
        };
        assert_close(&what, &trainer.read_act(&gpu, i + 1, 2).unwrap(), &acts[i + 1], 1e-4);
    }
}
