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
    // Logits chosen so that p sweeps (0, 1) across images; pixel 300 of each image is drawn. Both layouts: the
    // naive sampler's image-major buffers (stride 0) and the incremental one's position-major (80 per pixel).
    let q = 300;
    for stride in [0, 80] {
        let at = |i: usize| if stride == 0 { i * PIXELS + q } else { q * stride + i };
        let positions = count.max(stride) * PIXELS;
        let mut logits = vec![0.0f32; positions];
        for i in 0..count {
            logits[at(i)] = (i as f32 - 35.0) / 8.0;
        }
        let gl = gpu.upload("logits", &pad_channels(&logits, 1)).unwrap();
        let image = gpu.tensor("image", positions * 4).unwrap();
        let probs = gpu.tensor("probs", count * PIXELS).unwrap();
        let mut p = Program::new();
        kernels::sample_pixel(
            &gpu,
            &mut p,
            gl.view(),
            image.view(),
            probs.view(),
            count,
            q,
            key,
            5,
            stride,
        )
        .unwrap();
        run(&gpu, p);
        let img = unpad_channels(&gpu.read(&image).unwrap(), 1);
        let pr = gpu.read(&probs).unwrap();
        let mut ones = 0;
        for i in 0..count {
            let pc = cpu::sigmoid(logits[at(i)]);
            assert!((pr[i * PIXELS + q] - pc).abs() < 1e-6, "stride {stride} image {i}: p");
            let expected = cpu::sample_pixel(key, 5 + i as u32, q as u32, pc);
            let u = pixelcnn::rng::sample_uniform(key, 5 + i as u32, q as u32);
            if (u - pc).abs() > 1e-5 {
                assert_eq!(img[at(i)] as u8, expected, "stride {stride} image {i}: u={u} p={pc}");
            }
            ones += expected as usize;
        }
        assert!(ones > 10 && ones < 60, "draws look degenerate: {ones} ones of {count}");
    }
}

/// Image-major `[count, 784, c]` values as the sampler's position-major `[784, rows, c4]` (zero padding).
fn to_position_major(x: &[f32], count: usize, rows: usize, c: usize) -> Vec<f32> {
    let c4 = pad4(c);
    let mut out = vec![0.0; PIXELS * rows * c4];
    for i in 0..count {
        for q in 0..PIXELS {
            out[(q * rows + i) * c4..][..c].copy_from_slice(&x[(i * PIXELS + q) * c..][..c]);
        }
    }
    out
}

#[test]
fn conv_pixel_matches_cpu() {
    let Some(gpu) = gpu_for_tests() else { return };
    // 13 images padded to 16 per position; pixels in the first row (taps in the padding), at the left and right
    // edges, and inside. The runs come from the real 64 KiB windows (a whole conv in one dispatch) and from tiny
    // ones (one tap per run, so a 7×7 conv takes several dispatches chained through the output, the last adding
    // the residual).
    let (count, rows) = (13, 16);
    let pixels = [0usize, 1, 27, 28, 29, 300, 419, 783];
    let sg = gpu.pixel_subgroup();
    match sg {
        Some(sg) => eprintln!(
            "conv_pixel: subgroups of {sg}, {} segments per dispatch",
            kernels::pixel_segments(&gpu)
        ),
        None => eprintln!(
            "NOTE: {} has no fixed-size subgroups: conv_pixel is not used there; testing the tiled path only",
            gpu.adapter_name()
        ),
    }
    for net in test_nets() {
        let params = random_vec(net.param_len, 21);
        let layout = GpuParamLayout::new(&net);
        let gparams = gpu.tensor("params", layout.total + kernels::WINDOW_TAIL).unwrap();
        gpu.write(&gparams, 0, &layout.pack(&net, &params));
        for (ci, c) in net.convs.iter().enumerate() {
            let block = net.block(&params, ci);
            let w = gparams.slice(layout.offsets[ci], layout.lens[ci]);
            let input = random_vec(count * PIXELS * c.cin, 300 + ci as u64);
            let residual = random_vec(count * PIXELS * c.cout, 400 + ci as u64);
            let len_in = PIXELS * rows * pad4(c.cin);
            let g_in = gpu.tensor("in", len_in + kernels::WINDOW_TAIL).unwrap();
            gpu.write(&g_in, 0, &to_position_major(&input, count, rows, c.cin));
            let g_res = gpu
                .upload("residual", &to_position_major(&residual, count, rows, c.cout))
                .unwrap();
            let (mut want, mut want_res) = (vec![0.0; count * PIXELS * c.cout], vec![0.0; count * PIXELS * c.cout]);
            for &q in &pixels {
                cpu::conv_pixel(c, block, &input, None, &mut want, count, q);
                cpu::conv_pixel(c, block, &input, Some(&residual), &mut want_res, count, q);
            }
            let pick = |x: &[f32]| -> Vec<f32> {
                let c4 = pad4(c.cout);
                let mut v = Vec::new();
                for &q in &pixels {
                    for i in 0..count {
                        v.extend_from_slice(&x[(q * rows + i) * c4..][..c.cout]);
                    }
                }
                v
            };
            // (name, window bytes (None: tiled kernel), fused residual)
            let mut variants: Vec<(&str, Option<usize>, bool)> = vec![("tiled", None, false)];
            if sg.is_some() {
                variants.push(("64 KiB windows", Some(kernels::WINDOW_BYTES), false));
                let one_tap = pad4(c.cin) * pad4(c.cout) * 4;
                let one_tap = one_tap.max(rows * pad4(c.cin) * 4);
                variants.push(("one tap per run, residual", Some(one_tap), true));
            }
            for (variant, max_bytes, with_residual) in variants {
                let g_out = gpu
                    .upload("out", &vec![f32::NAN; PIXELS * rows * pad4(c.cout)])
                    .unwrap();
                let (g_in_v, g_out_v) = (g_in.slice(0, len_in), g_out.view());
                let mut p = Program::new();
                for &q in &pixels {
                    match (max_bytes, sg) {
                        (Some(max), Some(sg)) => {
                            let runs = kernels::pixel_runs(&gpu, c, &w, &g_in_v, rows, q, sg, max)
                                .expect("conv_pixel serves the test convs");
                            let res = with_residual.then(|| g_res.view());
                            kernels::conv_pixel(&gpu, &mut p, c, &w, &g_in_v, res, g_out_v.clone(), rows, q, sg, &runs)
                                .unwrap();
                        }
                        _ => kernels::conv_forward_tiled(
                            &gpu,
                            &mut p,
                            c,
                            w.clone(),
                            g_in_v.clone(),
                            g_out_v.clone(),
                            rows,
                            Some(q),
                        )
                        .unwrap(),
                    }
                }
                let dispatches = p.len();
                run(&gpu, p);
                let got = gpu.read(&g_out).unwrap();
                let what = format!(
                    "conv_pixel {} F={} ({variant}, {dispatches} dispatches for {} pixels)",
                    c.name,
                    net.config.filters,
                    pixels.len()
                );
                let want = if with_residual { &want_res } else { &want };
                let want = to_position_major(want, count, rows, c.cout);
                assert_close(&what, &pick(&got), &pick(&want), 1e-4);
            }
        }
    }
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
