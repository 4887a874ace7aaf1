//! Every WGSL kernel against its CPU twin (`cpu.rs`, same name): one test per kernel family (`src/gpu/kernels/`),
//! on both kernel versions (`raster` and `tiled`) where the family has two, on fresh random inputs with channel and
//! position counts that are not multiples of the tile sizes, and on tap sets that are not raster prefixes of a
//! square kernel. Every comparison goes through `common::check`, which prints the max absolute and relative
//! errors. Under CI=true a missing GPU adapter fails these tests; elsewhere they are skipped with a note.

mod common;
use common::*;
use pixelcnn::cpu;
use pixelcnn::gpu::buffers::{pad_groups, unpad_groups, Tensor};
use pixelcnn::gpu::kernels::adam::{self, AdamViews};
use pixelcnn::gpu::kernels::class_bias::{self, ClassBiasAdd, ClassBiasBackward};
use pixelcnn::gpu::kernels::conv::{
    self, ConvBackwardData, ConvBackwardWeight, ConvForward, ConvInput, ConvShape, Epilogue,
};
use pixelcnn::gpu::kernels::elementwise::{self, Gate, ReluBackward};
use pixelcnn::gpu::kernels::prelude::Rows;
use pixelcnn::gpu::kernels::reduce::{self, ReduceChunks};
use pixelcnn::gpu::kernels::sample::{self, SamplePixel, SampleViews};
use pixelcnn::gpu::record::Program;
use pixelcnn::gpu::Gpu;
use pixelcnn::model::{channel_dims, from_padded, to_padded, Activation, Conv, ImageShape, Mask};

fn run(gpu: &Gpu, mut p: Program) {
    p.finish(gpu);
    p.submit(gpu);
    gpu.wait().unwrap();
}

/// A conv under test: the conv, its channel groups, and whether its input is the u8 image.
struct Case {
    conv: Conv,
    groups: (usize, usize),
    bytes: bool,
}

fn square(name: &str, cin: usize, cout: usize, k: usize, mask: Mask, act: Activation) -> Conv {
    let c = (k / 2) as i32;
    let offsets: Vec<(i32, i32)> = (0..k * k)
        .filter(|&i| mask.keeps(k, i / k, i % k))
        .map(|i| ((i / k) as i32 - c, (i % k) as i32 - c))
        .collect();
    Conv::with_taps(name, cin, cout, &offsets, act)
}

/// Every kernel shape of both architectures, and a scattered tap set that is no raster prefix of any kernel.
fn cases() -> Vec<Case> {
    let relu = Activation::Relu;
    let id = Activation::Identity;
    let vertical: Vec<(i32, i32)> = (-3..=0).flat_map(|dy| (-3..=3).map(move |dx| (dy, dx))).collect();
    vec![
        Case {
            conv: square("masked A 7x7 from bytes", 1, 10, 7, Mask::A, relu),
            groups: (1, 1),
            bytes: true,
        },
        Case {
            conv: square("masked A 7x7", 3, 6, 7, Mask::A, relu),
            groups: (1, 1),
            bytes: false,
        },
        Case {
            conv: square("1x1", 6, 10, 1, Mask::None, relu),
            groups: (1, 1),
            bytes: false,
        },
        Case {
            conv: square("masked B 3x3", 10, 5, 3, Mask::B, relu),
            groups: (1, 1),
            bytes: false,
        },
        // 5 taps × 132 × 36 padded channels: 95 KiB of weights, more than a uniform binding holds (64 KiB on
        // lavapipe), in taps of 18.6 KiB that no uniform window can start at, so the raster kernels read this
        // one from storage (the small ones fit one uniform binding: WEIGHT_UNIFORM).
        Case {
            conv: square(
                "masked B 3x3, weight beyond a uniform binding",
                130,
                35,
                3,
                Mask::B,
                relu,
            ),
            groups: (1, 1),
            bytes: false,
        },
        // 5 taps × 112 × 60 channels: 131 KiB of weights in taps of 26 KiB, which the raster kernels on lavapipe
        // read through three uniform windows of two, two and one taps (WEIGHT_WINDOWS).
        Case {
            conv: square(
                "masked B 3x3, weight in three uniform windows",
                112,
                60,
                3,
                Mask::B,
                relu,
            ),
            groups: (1, 1),
            bytes: false,
        },
        Case {
            conv: Conv::with_taps("vertical 4x7 (2 groups out)", 6, 10, &vertical, id),
            groups: (1, 2),
            bytes: false,
        },
        Case {
            conv: Conv::with_taps("horizontal 1x4, 3 live", 6, 10, &[(0, -3), (0, -2), (0, -1)], id),
            groups: (1, 2),
            bytes: false,
        },
        Case {
            conv: Conv::with_taps("shifted 1x1 (-1, 0)", 10, 10, &[(-1, 0)], id),
            groups: (2, 2),
            bytes: false,
        },
        Case {
            conv: Conv::with_taps(
                "scattered taps",
                7,
                9,
                &[(-2, 1), (0, -1), (-1, -3), (1, 2), (0, 0)],
                relu,
            ),
            groups: (1, 1),
            bytes: false,
        },
        // Other image shapes (the HEIGHT, WIDTH and PIXELS pipeline constants): a dilated gated vertical conv on
        // 16×20 images, taps reaching past the image's edges; the first layer's bytes on 5×7 images (35 pixels: an
        // image straddles the byte words); and 4×5 images (20 pixels), so small that a raster lane's rows span three
        // images (the per-image bias table's other path).
        Case {
            conv: Conv::with_taps(
                "vertical 2x3 dilated 8 on 16x20",
                6,
                10,
                &[(-8, -8), (-8, 0), (-8, 8), (0, -8), (0, 0), (0, 8)],
                id,
            )
            .on(ImageShape::new(16, 20)),
            groups: (1, 2),
            bytes: false,
        },
        Case {
            conv: square("masked A 7x7 from bytes on 5x7", 1, 6, 7, Mask::A, relu).on(ImageShape::new(5, 7)),
            groups: (1, 1),
            bytes: true,
        },
        Case {
            conv: square("masked B 3x3 on 4x5", 5, 7, 3, Mask::B, relu).on(ImageShape::new(4, 5)),
            groups: (1, 1),
            bytes: false,
        },
    ]
}

/// CPU-layout activations [positions, C] → the GPU layout with `groups` channel groups.
fn gpu_act(x: &[f32], c: usize, groups: usize) -> Vec<f32> {
    pad_groups(x, c, groups)
}

#[test]
fn conv_family_matches_cpu_on_every_version() {
    for (version, gpu) in devices() {
        for case in cases() {
            let c = &case.conv;
            let (gin, gout) = case.groups;
            let batch = 3;
            let positions = batch * c.image.pixels();
            let shape = ConvShape::of(c, gin, gout, 0);
            let t = c.taps.len();
            let mut wdims = vec![(t, t)];
            wdims.extend(channel_dims(c.cin, gin));
            wdims.extend(channel_dims(c.cout, gout));
            let weight = random_vec(t * c.cin * c.cout, 11);
            let bias = random_vec(c.cout, 12);
            let g_w = gpu.upload("weight", &to_padded(&wdims, &weight)).unwrap();
            let g_b = gpu
                .upload("bias", &to_padded(&channel_dims(c.cout, gout), &bias))
                .unwrap();
            let taps: Vec<i32> = c.taps.iter().flat_map(|t| [t.dy, t.dx]).collect();
            let g_taps = gpu.tensor("taps", taps.len()).unwrap();
            gpu.write_bytes(&g_taps, 0, bytemuck::cast_slice(&taps));
            let (cin_g, cout_g) = (shape.cin4 * 4, shape.cout4 * 4);
            let images = random_images_of(batch, c.image.pixels(), 13);
            let input: Vec<f32> = if case.bytes {
                images.iter().map(|&v| v as f32).collect()
            } else {
                random_vec(positions * c.cin, 14)
            };
            let g_in: Tensor = if case.bytes {
                let t = gpu.tensor("in bytes", positions.div_ceil(4)).unwrap();
                gpu.write_bytes(&t, 0, &images);
                t
            } else {
                gpu.upload("in", &gpu_act(&input, c.cin, gin)).unwrap()
            };
            let conv_input = || {
                if case.bytes {
                    ConvInput::Bytes(g_in.view())
                } else {
                    ConvInput::Floats(g_in.view())
                }
            };
            let dz = random_vec(positions * c.cout, 15);
            let g_dz = gpu.upload("dz", &gpu_act(&dz, c.cout, gout)).unwrap();
            let residual = random_vec(positions * c.cout, 16);
            let g_res = gpu.upload("residual", &gpu_act(&residual, c.cout, gout)).unwrap();
            let labels = random_labels(batch, 17);
            let table = random_vec(batch * c.cout, 18);
            let g_table = gpu.upload("per-image bias", &pad_groups(&table, c.cout, gout)).unwrap();
            let out = || gpu.upload("out", &vec![f32::NAN; positions * cout_g]).unwrap();
            let (g_out, g_out_tab, g_out_res, g_sum) = (out(), out(), out(), out());
            let old_dx = random_vec(positions * c.cin, 19);
            let mask_src = random_vec(positions * c.cin, 20);
            let g_dx = gpu.tensor("dx", positions * cin_g).unwrap();
            let g_dx_acc = gpu.upload("dx acc", &gpu_act(&old_dx, c.cin, gin)).unwrap();
            let g_mask = gpu.upload("mask", &gpu_act(&mask_src, c.cin, gin)).unwrap();
            let g_partial = gpu
                .tensor("partial", conv::wgrad_partial_len(&gpu, &shape, positions))
                .unwrap();
            let g_gw = gpu.tensor("grad w", wdims.iter().map(|d| d.1).product()).unwrap();
            let g_gb = gpu.tensor("grad b", cout_g).unwrap();
            let geo = Rows::image_major(c.image, batch);
            let fwd = |output: &Tensor, bias: &Tensor, per_image: bool, epilogue: Epilogue| ConvForward {
                input: conv_input(),
                weight: g_w.view(),
                bias: bias.view(),
                per_image_bias: per_image,
                taps: g_taps.view(),
                output: output.view(),
                epilogue,
            };
            let mut p = Program::new();
            conv::conv_forward(&gpu, &mut p, &shape, fwd(&g_out, &g_b, false, Epilogue::Plain), geo).unwrap();
            conv::conv_forward(
                &gpu,
                &mut p,
                &shape,
                fwd(&g_out_tab, &g_table, true, Epilogue::Plain),
                geo,
            )
            .unwrap();
            let res = Epilogue::Residual {
                residual: g_res.view(),
                sum_out: g_sum.view(),
                keep_output: true,
            };
            conv::conv_forward(&gpu, &mut p, &shape, fwd(&g_out_res, &g_b, false, res), geo).unwrap();
            if !case.bytes {
                let bwd = |dx: &Tensor, mask: Option<&Tensor>, accumulate: bool| ConvBackwardData {
                    weight: g_w.view(),
                    taps: g_taps.view(),
                    dz: g_dz.view(),
                    dx: dx.view(),
                    mask: mask.map(Tensor::view),
                    accumulate,
                };
                conv::conv_backward_data(&gpu, &mut p, &shape, bwd(&g_dx, None, false), geo).unwrap();
                conv::conv_backward_data(&gpu, &mut p, &shape, bwd(&g_dx_acc, Some(&g_mask), true), geo).unwrap();
            }
            let op = ConvBackwardWeight {
                input: conv_input(),
                taps: g_taps.view(),
                dz: g_dz.view(),
                partial: g_partial.view(),
                grad_weight: g_gw.view(),
                grad_bias: g_gb.view(),
            };
            conv::conv_backward_weight(&gpu, &mut p, &shape, op, geo).unwrap();
            run(&gpu, p);

            let name = format!("[{version}] {} ({}→{}, {} taps)", c.name, c.cin, c.cout, t);
            let read = |t: &Tensor, ch: usize, g: usize| {
                unpad_groups(&gpu.read(t).unwrap()[..positions * (ch / g).div_ceil(4) * 4 * g], ch, g)
            };
            let want = cpu::conv_forward(c, &weight, &bias, &input, batch);
            check(
                &format!("conv_forward {name}"),
                &read(&g_out, c.cout, gout),
                &want,
                1e-4,
            );
            let want_tab = cpu::conv_forward(c, &weight, &table, &input, batch);
            check(
                &format!("conv_forward per-image bias {name}"),
                &read(&g_out_tab, c.cout, gout),
                &want_tab,
                1e-4,
            );
            check(
                &format!("conv_forward residual: output {name}"),
                &read(&g_out_res, c.cout, gout),
                &want,
                1e-4,
            );
            check(
                &format!("conv_forward residual: sum {name}"),
                &read(&g_sum, c.cout, gout),
                &cpu::add(&want, &residual),
                1e-4,
            );
            let _ = &labels;
            if !case.bytes {
                let want_dx = cpu::conv_backward_data(c, &weight, &dz, batch);
                check(
                    &format!("conv_backward_data {name}"),
                    &read(&g_dx, c.cin, gin),
                    &want_dx,
                    1e-4,
                );
                let mut acc = old_dx.clone();
                let masked = cpu::relu_backward(&mask_src, &want_dx);
                acc.iter_mut().zip(&masked).for_each(|(a, m)| *a += m);
                check(
                    &format!("conv_backward_data mask+accumulate {name}"),
                    &read(&g_dx_acc, c.cin, gin),
                    &acc,
                    1e-4,
                );
            }
            let (want_w, want_b) = cpu::conv_backward_weight(c, &input, &dz, batch);
            // The weight gradient sums thousands of products in f32 (in chunks, then over chunks): its error is
            // bounded by the sum of the magnitudes of its terms, Σ|x|·|dz|, not by the size of the result, which
            // cancellation can make small. The bound allows 2^-20 of that sum, far above the f32 rounding of any
            // summation order (about 2^-24 · √n; 2^-24 to 2^-23 observed) and far below what a wrong tap or row would give.
            let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
            let (mag_w, mag_b) = cpu::conv_backward_weight(c, &abs(&input), &abs(&dz), batch);
            let got_w = from_padded(&wdims, &gpu.read(&g_gw).unwrap()[..wdims.iter().map(|d| d.1).product()]);
            check_sum(&format!("conv_backward_weight {name}"), &got_w, &want_w, &mag_w);
            let got_b = from_padded(&channel_dims(c.cout, gout), &gpu.read(&g_gb).unwrap()[..cout_g]);
            check_sum(&format!("conv_backward_weight bias {name}"), &got_b, &want_b, &mag_b);
        }
        if version == "raster" {
            // Both ways of reading the weight were among the variants checked above.
            for entry in ["conv_forward", "conv_backward_data"] {
                let uniform = |v: &pixelcnn::gpu::kernels::Variant| {
                    v.consts.iter().any(|(k, x)| k == "WEIGHT_UNIFORM" && *x == 1)
                };
                let built: Vec<_> = gpu.variants().into_iter().filter(|v| v.entry == entry).collect();
                assert!(
                    built.iter().any(uniform),
                    "no {entry} variant read its weight as a uniform buffer"
                );
                assert!(
                    !built.iter().all(uniform),
                    "no {entry} variant read its weight from storage"
                );
                // Where the device reads large weights through several windows, some variant did.
                let windowed = |v: &pixelcnn::gpu::kernels::Variant| {
                    v.consts.iter().any(|(k, x)| k == "WEIGHT_WINDOWS" && *x == 3)
                };
                assert_eq!(
                    built.iter().any(windowed),
                    gpu.kernels.tuning.weight_windows == 3,
                    "{entry}: a three-window variant ran exactly where the device allows three windows"
                );
            }
        }
    }
}

/// Image-major `[count, pixels, c]` values as the sampler's position-major `[pixels, rows, c4]` (zero padding).
fn to_position_major(x: &[f32], pixels: usize, count: usize, rows: usize, c: usize, groups: usize) -> Vec<f32> {
    let padded = pad_groups(x, c, groups);
    let c4 = padded.len() / (count * pixels);
    let mut out = vec![0.0; pixels * rows * c4];
    for i in 0..count {
        for q in 0..pixels {
            out[(q * rows + i) * c4..][..c4].copy_from_slice(&padded[(i * pixels + q) * c4..][..c4]);
        }
    }
    out
}

/// The pixels the one-pixel test probes: the first row (taps in the padding), the left and right edges, inside,
/// and the last pixel.
fn probe_pixels(image: ImageShape) -> Vec<usize> {
    if image == ImageShape::DEFAULT {
        return vec![0, 1, 27, 28, 29, 300, 419, 783];
    }
    let (w, n) = (image.width, image.pixels());
    let mut v = vec![0, 1, w - 1, w, w + 1, n / 2 + 1, n - w, n - 1];
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn conv_family_at_one_pixel_matches_cpu() {
    // The incremental sampler's `layers` step: conv_forward over the rows of one pixel of the position-major
    // caches (13 images), plain and with the fused residual, at pixels in the first row (taps in the padding), at
    // the left and right edges, and inside. CPU twin: cpu::conv_pixel, the CPU sampler's single-pixel conv.
    let count = 13;
    for (version, gpu) in devices() {
        for case in cases().into_iter().filter(|c| !c.bytes) {
            let c = &case.conv;
            let pixels = probe_pixels(c.image);
            let n = c.image.pixels();
            let (gin, gout) = case.groups;
            let shape = ConvShape::of(c, gin, gout, 0);
            let t = c.taps.len();
            let mut wdims = vec![(t, t)];
            wdims.extend(channel_dims(c.cin, gin));
            wdims.extend(channel_dims(c.cout, gout));
            let weight = random_vec(t * c.cin * c.cout, 21);
            let bias = random_vec(c.cout, 22);
            let g_w = gpu.upload("weight", &to_padded(&wdims, &weight)).unwrap();
            let g_b = gpu
                .upload("bias", &to_padded(&channel_dims(c.cout, gout), &bias))
                .unwrap();
            let taps: Vec<i32> = c.taps.iter().flat_map(|t| [t.dy, t.dx]).collect();
            let g_taps = gpu.tensor("taps", taps.len()).unwrap();
            gpu.write_bytes(&g_taps, 0, bytemuck::cast_slice(&taps));
            let input = random_vec(count * n * c.cin, 300);
            let residual = random_vec(count * n * c.cout, 400);
            let g_in = gpu
                .upload("in", &to_position_major(&input, n, count, count, c.cin, gin))
                .unwrap();
            let g_res = gpu
                .upload("residual", &to_position_major(&residual, n, count, count, c.cout, gout))
                .unwrap();
            let (mut want, mut want_res) = (vec![0.0; count * n * c.cout], vec![0.0; count * n * c.cout]);
            for &q in &pixels {
                cpu::conv_pixel(c, &weight, &bias, &input, None, &mut want, count, q);
                cpu::conv_pixel(c, &weight, &bias, &input, Some(&residual), &mut want_res, count, q);
            }
            let cout_g = shape.cout4 * 4;
            let pick = |x: &[f32]| -> Vec<f32> {
                let mut v = Vec::new();
                for &q in &pixels {
                    for i in 0..count {
                        v.extend_from_slice(&x[(q * count + i) * cout_g..][..cout_g]);
                    }
                }
                v
            };
            for with_residual in [false, true] {
                let nan = vec![f32::NAN; n * count * cout_g];
                let (g_out, g_sum) = (gpu.upload("out", &nan).unwrap(), gpu.upload("sum", &nan).unwrap());
                let mut p = Program::new();
                for &q in &pixels {
                    let epilogue = if with_residual {
                        Epilogue::Residual {
                            residual: g_res.view(),
                            sum_out: g_sum.view(),
                            keep_output: false,
                        }
                    } else {
                        Epilogue::Plain
                    };
                    let op = ConvForward {
                        input: ConvInput::Floats(g_in.view()),
                        weight: g_w.view(),
                        bias: g_b.view(),
                        per_image_bias: false,
                        taps: g_taps.view(),
                        output: g_out.view(),
                        epilogue,
                    };
                    let rows = Rows::position_major(c.image, count, q, 1);
                    conv::conv_forward(&gpu, &mut p, &shape, op, rows).unwrap();
                }
                run(&gpu, p);
                let (got, w) = if with_residual {
                    (gpu.read(&g_sum).unwrap(), &want_res)
                } else {
                    (gpu.read(&g_out).unwrap(), &want)
                };
                let what = format!(
                    "[{version}] conv_forward at one pixel{}: {} ({} pixels)",
                    if with_residual { " + residual" } else { "" },
                    c.name,
                    pixels.len()
                );
                check(
                    &what,
                    &pick(&got),
                    &pick(&to_position_major(w, n, count, count, c.cout, gout)),
                    1e-4,
                );
            }
        }
    }
}

#[test]
fn conv_family_gate_epilogue_matches_cpu() {
    // The incremental sampler's fused gated layer, the raster version's GATE variant of conv_forward: a conv of 2F
    // outputs in two channel groups, then [+ residual,] the Gate [with its class-bias table], against
    // cpu::conv_forward, cpu::add and cpu::gate_forward. Over whole images (image-major) and over one image row of
    // the sampler's position-major caches, for F = 5 (padded halves) and F = 8, 13 images, dilated taps that read
    // the padding. Devices whose conv kernels cannot fuse a gate (the tiled version) are skipped.
    let (count, cin) = (13, 7);
    let mut ran = 0;
    for (version, gpu) in devices() {
        for f in [5usize, 8] {
            let offsets = [(-2, -2), (-2, 0), (-2, 2), (0, -2), (0, 0)];
            let c = Conv::with_taps("gated", cin, 2 * f, &offsets, Activation::Identity);
            let shape = ConvShape::of(&c, 1, 2, 0);
            if !conv::gate_fusable(&gpu, &shape) {
                eprintln!("[{version}] F={f}: this version does not fuse gates");
                continue;
            }
            ran += 1;
            let (n, width) = (c.image.pixels(), c.image.width);
            let positions = count * n;
            let t = offsets.len();
            let mut wdims = vec![(t, t)];
            wdims.extend(channel_dims(cin, 1));
            wdims.extend(channel_dims(2 * f, 2));
            let weight = random_vec(t * cin * 2 * f, 31);
            let bias = random_vec(2 * f, 32);
            let input = random_vec(positions * cin, 33);
            let residual = random_vec(positions * 2 * f, 34);
            let table = random_vec(count * 2 * f, 35);
            let g_w = gpu.upload("weight", &to_padded(&wdims, &weight)).unwrap();
            let g_b = gpu.upload("bias", &to_padded(&channel_dims(2 * f, 2), &bias)).unwrap();
            let taps: Vec<i32> = c.taps.iter().flat_map(|t| [t.dy, t.dx]).collect();
            let g_taps = gpu.tensor("taps", taps.len()).unwrap();
            gpu.write_bytes(&g_taps, 0, bytemuck::cast_slice(&taps));
            let g_table = gpu.upload("gate table", &pad_groups(&table, 2 * f, 2)).unwrap();
            let z = cpu::conv_forward(&c, &weight, &bias, &input, count);
            let z_res = cpu::add(&z, &residual);
            let want_gated = cpu::gate_forward(&z_res, Some(&table), f, n);
            let want_plain = cpu::gate_forward(&z, None, f, n);
            let (c4, h4) = (shape.cout4, shape.cout4 / 2);
            // Image-major (`position_major: None`) or one image row (row 5) of position-major caches.
            for row in [None, Some(5usize)] {
                let layout = |x: &[f32], ch: usize, groups: usize| match row {
                    None => pad_groups(x, ch, groups),
                    Some(_) => to_position_major(x, n, count, count, ch, groups),
                };
                let rows = match row {
                    None => Rows::image_major(c.image, count),
                    Some(r) => Rows::position_major(c.image, count, r * width, width),
                };
                let g_in = gpu.upload("in", &layout(&input, cin, 1)).unwrap();
                let g_res = gpu.upload("residual", &layout(&residual, 2 * f, 2)).unwrap();
                let nan = |len: usize| gpu.upload("out", &vec![f32::NAN; len]).unwrap();
                let (pre, gated, gated_plain) = (
                    nan(positions * c4 * 4),
                    nan(positions * h4 * 4),
                    nan(positions * h4 * 4),
                );
                let fwd = |epilogue: Epilogue| ConvForward {
                    input: ConvInput::Floats(g_in.view()),
                    weight: g_w.view(),
                    bias: g_b.view(),
                    per_image_bias: false,
                    taps: g_taps.view(),
                    output: gpu.dummy_rw.view(),
                    epilogue,
                };
                let mut p = Program::new();
                let full = Epilogue::Gate {
                    residual: Some(g_res.view()),
                    pre_gate: Some(pre.view()),
                    table: Some(g_table.view()),
                    gated: gated.view(),
                };
                conv::conv_forward(&gpu, &mut p, &shape, fwd(full), rows).unwrap();
                let bare = Epilogue::Gate {
                    residual: None,
                    pre_gate: None,
                    table: None,
                    gated: gated_plain.view(),
                };
                conv::conv_forward(&gpu, &mut p, &shape, fwd(bare), rows).unwrap();
                run(&gpu, p);
                // Back to the CPU layout, keeping only the rows of the pass (the rest of the caches stays NaN).
                let read = |t: &Tensor, ch: usize, groups: usize, want: &[f32]| -> (Vec<f32>, Vec<f32>) {
                    let all = gpu.read(t).unwrap();
                    let per = all.len() / positions;
                    let mut got = Vec::new();
                    let mut expected = Vec::new();
                    for i in 0..count {
                        let qs = match row {
                            None => 0..n,
                            Some(r) => r * width..(r + 1) * width,
                        };
                        for q in qs {
                            let at = match row {
                                None => i * n + q,
                                Some(_) => q * count + i,
                            };
                            got.extend(unpad_groups(&all[at * per..][..per], ch, groups));
                            expected.extend_from_slice(&want[(i * n + q) * ch..][..ch]);
                        }
                    }
                    (got, expected)
                };
                let what = format!(
                    "[{version}] F={f} {}",
                    if row.is_some() {
                        "one row, position-major"
                    } else {
                        "image-major"
                    }
                );
                let (got, want) = read(&pre, 2 * f, 2, &z_res);
                check(&format!("conv_forward GATE pre-gate sum {what}"), &got, &want, 1e-4);
                // WGSL's tanh and exp are not correctly rounded.
                let (got, want) = read(&gated, f, 1, &want_gated);
                check(
                    &format!("conv_forward GATE residual, class bias {what}"),
                    &got,
                    &want,
                    1e-4,
                );
                let (got, want) = read(&gated_plain, f, 1, &want_plain);
                check(&format!("conv_forward GATE bare {what}"), &got, &want, 1e-4);
            }
        }
    }
    if devices().iter().any(|(v, _)| v == "raster") {
        assert!(ran > 0, "the raster version fused no gate");
    }
}

#[test]
fn elementwise_family_matches_cpu() {
    // 28×28, and 5×7 images (35 pixels: a per-image class bias changes image at every 35th row).
    for (version, gpu) in devices() {
        for image in [ImageShape::DEFAULT, ImageShape::new(5, 7)] {
            // 3 · 784 rows × 2 vec4 columns: 4704 invocations, a part-filled last workgroup of 64.
            let (batch, channels) = (3, 6);
            let (pixels, positions) = (image.pixels(), batch * image.pixels());
            let geo = Rows::image_major(image, batch);
            let n = positions * channels;
            let (a, b) = (random_vec(n, 1), random_vec(n, 2));
            let ga = gpu.upload("a", &gpu_act(&a, channels, 1)).unwrap();
            let gb = gpu.upload("b", &gpu_act(&b, channels, 1)).unwrap();
            let c4 = 2;
            // One workgroup's worth of vec4s past the rows, which no kernel may touch.
            let out = || gpu.tensor("out", positions * 8 + 256).unwrap();
            let (sum, relu_b, relu_b_acc, relu_f, acc) = (out(), out(), out(), out(), out());
            for t in [&sum, &relu_b, &relu_f] {
                gpu.write(t, positions * 8, &[7.0; 256]);
            }
            gpu.write(&relu_b_acc, 0, &gpu_act(&b, channels, 1));
            gpu.write(&acc, 0, &gpu_act(&a, channels, 1));
            // A gate over a 2-group input of 2·5 channels (each half padded to 8), with a per-image class bias.
            let half = 5;
            let z = random_vec(positions * 2 * half, 3);
            let dout = random_vec(positions * half, 4);
            let table = random_vec(batch * 2 * half, 5);
            let gz = gpu.upload("z", &pad_groups(&z, 2 * half, 2)).unwrap();
            let gdout = gpu.upload("dout", &gpu_act(&dout, half, 1)).unwrap();
            let gtable = gpu.upload("table", &pad_groups(&table, 2 * half, 2)).unwrap();
            let (gate_out, gate_out_b) = (
                gpu.tensor("gate", positions * 8).unwrap(),
                gpu.tensor("gate b", positions * 8).unwrap(),
            );
            let (dz, dz_b) = (
                gpu.tensor("dz", positions * 16).unwrap(),
                gpu.tensor("dz b", positions * 16).unwrap(),
            );
            let mut p = Program::new();
            let relu_b_op = |out: &Tensor, accumulate: bool| ReluBackward {
                y: ga.view(),
                dy: gb.view(),
                out: out.view(),
                c4,
                accumulate,
            };
            let gate = |bias: Option<&Tensor>| Gate {
                z: gz.view(),
                bias: bias.map(Tensor::view),
                half4: 2,
            };
            elementwise::add(&gpu, &mut p, ga.view(), gb.view(), sum.view(), c4, geo).unwrap();
            elementwise::relu_backward(&gpu, &mut p, relu_b_op(&relu_b, false), geo).unwrap();
            elementwise::relu_backward(&gpu, &mut p, relu_b_op(&relu_b_acc, true), geo).unwrap();
            elementwise::relu_forward(&gpu, &mut p, ga.view(), relu_f.view(), c4, geo).unwrap();
            elementwise::accumulate(&gpu, &mut p, gb.view(), acc.view(), c4, true, geo).unwrap();
            elementwise::gate_forward(&gpu, &mut p, gate(None), gate_out.view(), geo).unwrap();
            elementwise::gate_forward(&gpu, &mut p, gate(Some(&gtable)), gate_out_b.view(), geo).unwrap();
            elementwise::gate_backward(&gpu, &mut p, gate(None), gdout.view(), dz.view(), geo).unwrap();
            elementwise::gate_backward(&gpu, &mut p, gate(Some(&gtable)), gdout.view(), dz_b.view(), geo).unwrap();
            run(&gpu, p);
            let read = |t: &Tensor, ch: usize, g: usize| {
                unpad_groups(&gpu.read(t).unwrap()[..positions * g * (ch / g).div_ceil(4) * 4], ch, g)
            };
            let v = format!("[{version}] {image}");
            for (name, t) in [("add", &sum), ("relu_backward", &relu_b), ("relu_forward", &relu_f)] {
                let past = gpu.read(t).unwrap()[positions * 8..].to_vec();
                assert!(past.iter().all(|&x| x == 7.0), "{v} {name} wrote past its rows");
            }
            check(&format!("{v} add"), &read(&sum, channels, 1), &cpu::add(&a, &b), 1e-6);
            check(
                &format!("{v} relu_backward"),
                &read(&relu_b, channels, 1),
                &cpu::relu_backward(&a, &b),
                0.0,
            );
            let twice: Vec<f32> = cpu::relu_backward(&a, &b).iter().zip(&b).map(|(r, b)| r + b).collect();
            check(
                &format!("{v} relu_backward accumulate"),
                &read(&relu_b_acc, channels, 1),
                &twice,
                1e-6,
            );
            check(
                &format!("{v} relu_forward"),
                &read(&relu_f, channels, 1),
                &cpu::relu_forward(&a),
                0.0,
            );
            check(
                &format!("{v} accumulate"),
                &read(&acc, channels, 1),
                &cpu::add(&a, &b),
                1e-6,
            );
            // WGSL's tanh and exp are not correctly rounded.
            check(
                &format!("{v} gate_forward"),
                &read(&gate_out, half, 1),
                &cpu::gate_forward(&z, None, half, pixels),
                1e-4,
            );
            check(
                &format!("{v} gate_forward class bias"),
                &read(&gate_out_b, half, 1),
                &cpu::gate_forward(&z, Some(&table), half, pixels),
                1e-4,
            );
            check(
                &format!("{v} gate_backward"),
                &read(&dz, 2 * half, 2),
                &cpu::gate_backward(&z, None, &dout, half, pixels),
                1e-4,
            );
            check(
                &format!("{v} gate_backward class bias"),
                &read(&dz_b, 2 * half, 2),
                &cpu::gate_backward(&z, Some(&table), &dout, half, pixels),
                1e-4,
            );
            // Dropout at 30% over 6 channels (2 vec4s, the last half padding), and accumulating onto b.
            let key = pixelcnn::rng::dropout_key(9, 3);
            let g_key = gpu.tensor("key", 4).unwrap();
            gpu.write_bytes(&g_key, 0, bytemuck::bytes_of(&key));
            let (drop, drop_acc) = (out(), gpu.upload("drop acc", &gpu_act(&b, channels, 1)).unwrap());
            let mut p = Program::new();
            for (o, accumulate) in [(&drop, false), (&drop_acc, true)] {
                let op = elementwise::Dropout {
                    x: ga.view(),
                    out: o.view(),
                    key: g_key.view(),
                    c4,
                    percent: 30,
                    accumulate,
                };
                elementwise::dropout(&gpu, &mut p, op, geo).unwrap();
            }
            run(&gpu, p);
            let want = cpu::dropout(&a, channels, key, 0.3);
            check(&format!("{v} dropout"), &read(&drop, channels, 1), &want, 1e-6);
            check(
                &format!("{v} dropout accumulate"),
                &read(&drop_acc, channels, 1),
                &cpu::add(&want, &b),
                1e-6,
            );
            let zeros = want.iter().filter(|&&x| x == 0.0).count() as f64 / want.len() as f64;
            assert!((zeros - 0.3).abs() < 0.03, "{v} dropout dropped {zeros}");
        }
    }
}

#[test]
fn class_bias_family_matches_cpu() {
    for (version, gpu) in devices() {
        // 7 images of 5×7 pixels, 13 classes (more than the 10 of Fashion-MNIST).
        let (images, channels, classes, image) = (7, 10, 13, ImageShape::new(5, 7));
        let c4 = 3;
        let labels = random_labels_of(images, classes, 1);
        let bias = random_vec(channels, 2);
        let table = random_vec(classes * channels, 3);
        let grad = random_vec(images * image.pixels() * channels, 4);
        let g_labels = gpu.tensor("labels", images).unwrap();
        gpu.write_bytes(
            &g_labels,
            0,
            &pixelcnn::gpu::layers::label_words(&labels, images, classes),
        );
        let g_bias = gpu.upload("bias", &gpu_act(&bias, channels, 1)).unwrap();
        let g_table = gpu.upload("class bias", &gpu_act(&table, channels, 1)).unwrap();
        let g_grad = gpu.upload("grad", &gpu_act(&grad, channels, 1)).unwrap();
        let (out, out_nb) = (
            gpu.tensor("table", images * 12).unwrap(),
            gpu.tensor("table nb", images * 12).unwrap(),
        );
        let sums = gpu.tensor("sums", images * 12).unwrap();
        let d = gpu.tensor("d class bias", classes * 12).unwrap();
        let mut p = Program::new();
        let add = |bias: Option<&Tensor>, out: &Tensor| ClassBiasAdd {
            bias: bias.map(Tensor::view),
            class_bias: g_table.view(),
            labels: g_labels.view(),
            out: out.view(),
            images,
            c4,
            classes,
        };
        class_bias::class_bias_add(&gpu, &mut p, add(Some(&g_bias), &out)).unwrap();
        class_bias::class_bias_add(&gpu, &mut p, add(None, &out_nb)).unwrap();
        let op = ClassBiasBackward {
            grad: g_grad.view(),
            labels: g_labels.view(),
            sums: sums.view(),
            out: d.view(),
            images,
            c4,
            classes,
            image,
        };
        class_bias::class_bias_backward(&gpu, &mut p, op).unwrap();
        run(&gpu, p);
        let un = |t: &Tensor, rows: usize| unpad_groups(&gpu.read(t).unwrap()[..rows * 12], channels, 1);
        check(
            &format!("[{version}] class_bias_add"),
            &un(&out, images),
            &cpu::class_bias_add(Some(&bias), &table, &labels, channels),
            0.0,
        );
        check(
            &format!("[{version}] class_bias_add (no bias)"),
            &un(&out_nb, images),
            &cpu::class_bias_add(None, &table, &labels, channels),
            0.0,
        );
        let want_sums = cpu::image_sums(&grad, channels, image.pixels());
        check(&format!("[{version}] image_sums"), &un(&sums, images), &want_sums, 1e-5);
        let want = cpu::class_bias_backward(&grad, &labels, channels, classes, image.pixels());
        check(
            &format!("[{version}] class_bias_backward"),
            &un(&d, classes),
            &want,
            1e-5,
        );
        assert!(
            want.contains(&0.0) && want.iter().any(|&v| v != 0.0),
            "some classes absent, some present"
        );
    }
}

#[test]
fn conv_family_loss_epilogue_matches_cpu() {
    for (version, gpu) in devices() {
        // 28×28 images (784 pixels: whole vec4s of losses per image), and 5×7 (35: images straddle vec4s).
        for image in [ImageShape::DEFAULT, ImageShape::new(5, 7)] {
            let batch = 5;
            let positions = batch * image.pixels();
            // The logits conv: 1×1 from 6 channels to 1, with weights large enough that logits sweep ±8.
            let c = Conv::with_taps("conv_out", 6, 1, &[(0, 0)], Activation::Identity).on(image);
            let shape = ConvShape::of(&c, 1, 1, 0);
            let weight: Vec<f32> = random_vec(6, 3).iter().map(|v| v * 3.0).collect();
            let bias = vec![0.25f32];
            let input = random_vec(positions * 6, 4);
            let target: Vec<f32> = random_images_of(batch, image.pixels(), 5)
                .iter()
                .map(|&v| v as f32)
                .collect();
            let target_bytes: Vec<u8> = target.iter().map(|&v| v as u8).collect();
            let g_w = gpu.upload("w", &to_padded(&[(1, 1), (6, 8), (1, 4)], &weight)).unwrap();
            let g_b = gpu.upload("b", &to_padded(&[(1, 4)], &bias)).unwrap();
            let g_taps = gpu.tensor("taps", 2).unwrap();
            let g_in = gpu.upload("in", &gpu_act(&input, 6, 1)).unwrap();
            let g_target = gpu.tensor("target", positions.div_ceil(4)).unwrap();
            gpu.write_bytes(&g_target, 0, &target_bytes);
            let (grad, logits) = (
                gpu.tensor("grad", positions * 4).unwrap(),
                gpu.tensor("logits", positions * 4).unwrap(),
            );
            let (loss, loss2) = (
                gpu.tensor("loss", positions).unwrap(),
                gpu.tensor("loss 2", positions).unwrap(),
            );
            let nll = gpu.tensor("nll", 8).unwrap();
            let mut p = Program::new();
            for (out, l, grad_flag) in [(&grad, &loss, true), (&logits, &loss2, false)] {
                let op = ConvForward {
                    input: ConvInput::Floats(g_in.view()),
                    weight: g_w.view(),
                    bias: g_b.view(),
                    per_image_bias: false,
                    taps: g_taps.view(),
                    output: out.view(),
                    epilogue: Epilogue::Loss {
                        target: g_target.view(),
                        loss: l.view(),
                        grad: grad_flag,
                        scale: 1.0 / positions as f32,
                    },
                };
                conv::conv_forward(&gpu, &mut p, &shape, op, Rows::image_major(image, batch)).unwrap();
            }
            reduce::sum_images(&gpu, &mut p, loss.view(), nll.view(), batch, image, false).unwrap();
            run(&gpu, p);
            let z = cpu::conv_forward(&c, &weight, &bias, &input, batch);
            let (cpu_nll, cpu_grad) = cpu::bce_loss_grad(&z, &target, image.pixels());
            let v = format!("[{version}] {image}");
            check(
                &format!("{v} conv_forward logits"),
                &unpad_groups(&gpu.read(&logits).unwrap(), 1, 1),
                &z,
                1e-5,
            );
            check(
                &format!("{v} bce_loss_grad (gradient, fused)"),
                &unpad_groups(&gpu.read(&grad).unwrap(), 1, 1),
                &cpu_grad,
                1e-4,
            );
            check(
                &format!("{v} sum_images (per-image NLL)"),
                &gpu.read_range(&nll, 0, batch).unwrap(),
                &cpu_nll,
                1e-4,
            );
        }
    }
}

#[test]
fn adam_family_matches_cpu() {
    let Some(gpu) = pixelcnn::gpu::gpu_for_tests() else {
        return;
    };
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
    let views = AdamViews {
        params: gp.view(),
        grads: gg.view(),
        m: gm.view(),
        v: gv.view(),
    };
    adam::adam_update(&gpu, &mut p, views, lr_t, &cfg).unwrap();
    run(&gpu, p);
    cpu::adam_update(&mut params, &grads, &mut m, &mut v, lr_t, &cfg);
    check("adam_update (params)", &gpu.read(&gp).unwrap(), &params, 1e-6);
    check("adam_update (m)", &gpu.read(&gm).unwrap(), &m, 1e-6);
    check("adam_update (v)", &gpu.read(&gv).unwrap(), &v, 1e-6);
    // The Polyak average after the update, from an average that differs from the parameters.
    let mut ema: Vec<f32> = random_vec(n, 5);
    let ge = gpu.upload("ema", &ema).unwrap();
    let mut p = Program::new();
    let views = adam::EmaViews {
        params: gp.view(),
        ema: ge.view(),
    };
    adam::ema_update(&gpu, &mut p, views, 0.9995).unwrap();
    run(&gpu, p);
    cpu::ema_update(&mut ema, &params, 0.9995);
    check("ema_update", &gpu.read(&ge).unwrap(), &ema, 1e-6);
}

#[test]
fn sample_family_draws_the_cpu_uniforms() {
    let Some(gpu) = pixelcnn::gpu::gpu_for_tests() else {
        return;
    };
    let count = 70;
    let key = pixelcnn::rng::sample_key(1234);
    // Logits chosen so that p sweeps (0, 1) across images; pixel 300 of each image is drawn. Both layouts: the
    // naive sampler's image-major buffers (stride 0) and the incremental one's position-major (80 per pixel).
    // At temperature 1 and 0.6: p = σ(logit / T).
    let q = 300;
    for (stride, temperature) in [(0, 1.0f32), (80, 1.0), (0, 0.6), (80, 0.6)] {
        let at = |i: usize| if stride == 0 { i * PIXELS + q } else { q * stride + i };
        let positions = count.max(stride) * PIXELS;
        let mut logits = vec![0.0f32; positions];
        for i in 0..count {
            logits[at(i)] = (i as f32 - 35.0) / 8.0;
        }
        let gl = gpu.upload("logits", &gpu_act(&logits, 1, 1)).unwrap();
        let image = gpu.tensor("image", positions * 4).unwrap();
        let probs = gpu.tensor("probs", count * PIXELS).unwrap();
        let mut p = Program::new();
        let views = SampleViews {
            logits: gl.view(),
            image: image.view(),
            probs: probs.view(),
        };
        let op = SamplePixel {
            count,
            pixel: q,
            key,
            first_image: 5,
            stride,
            temperature,
            image: ImageShape::DEFAULT,
        };
        sample::sample_pixel(&gpu, &mut p, views, op).unwrap();
        run(&gpu, p);
        let img = unpad_groups(&gpu.read(&image).unwrap(), 1, 1);
        let pr = gpu.read(&probs).unwrap();
        let mut ones = 0;
        for i in 0..count {
            let pc = cpu::sigmoid(logits[at(i)] / temperature);
            assert!(
                (pr[i * PIXELS + q] - pc).abs() < 1e-6,
                "stride {stride} T {temperature} image {i}: p"
            );
            let expected = cpu::sample_pixel(key, 5 + i as u32, q as u32, pc);
            let u = pixelcnn::rng::sample_uniform(key, 5 + i as u32, q as u32);
            if (u - pc).abs() > 1e-5 {
                assert_eq!(img[at(i)] as u8, expected, "stride {stride} image {i}: u={u} p={pc}");
            }
            ones += expected as usize;
        }
        assert!(ones > 10 && ones < 60, "draws look degenerate: {ones} ones of {count}");
        eprintln!("sample_pixel stride {stride} T {temperature}: {count} draws equal the CPU's");
    }
}

#[test]
fn reduce_family_matches_cpu() {
    let Some(gpu) = pixelcnn::gpu::gpu_for_tests() else {
        return;
    };
    // reduce_chunks: 7 chunks of 37 vec4s, split after 29 (a weight and its bias).
    let (len4, n_chunks, split) = (37, 7, 29);
    let input = random_vec(n_chunks * len4 * 4, 1);
    let g_in = gpu.upload("partials", &input).unwrap();
    let out0 = gpu.tensor("out0", split * 4).unwrap();
    let out1 = gpu.tensor("out1", (len4 - split) * 4).unwrap();
    // sum_images: 5 images of per-pixel losses, then again accumulating onto what is there (the 5×7 images of the
    // loss epilogue's test take the other path, images straddling vec4s).
    let images = 5;
    let loss: Vec<f32> = random_vec(images * PIXELS, 2).iter().map(|v| v.abs()).collect();
    let g_loss = gpu.upload("loss", &loss).unwrap();
    let (nll, nll_acc) = (gpu.tensor("nll", 8).unwrap(), gpu.upload("nll acc", &[1.0; 8]).unwrap());
    let mut p = Program::new();
    let op = ReduceChunks {
        input: g_in.view(),
        out0: out0.view(),
        out1: out1.view(),
        len4,
        split,
        n_chunks,
    };
    reduce::reduce_chunks(&gpu, &mut p, op).unwrap();
    let square = ImageShape::DEFAULT;
    reduce::sum_images(&gpu, &mut p, g_loss.view(), nll.view(), images, square, false).unwrap();
    reduce::sum_images(&gpu, &mut p, g_loss.view(), nll_acc.view(), images, square, true).unwrap();
    run(&gpu, p);
    let want = cpu::reduce_chunks(&input, len4 * 4, n_chunks);
    let mut got = gpu.read(&out0).unwrap();
    got.extend(gpu.read(&out1).unwrap());
    check("reduce_chunks", &got, &want, 1e-6);
    let want = cpu::sum_images(&loss, PIXELS);
    check("sum_images", &gpu.read_range(&nll, 0, images).unwrap(), &want, 1e-5);
    let plus_one: Vec<f32> = want.iter().map(|v| v + 1.0).collect();
    check(
        "sum_images accumulate",
        &gpu.read_range(&nll_acc, 0, images).unwrap(),
        &plus_one,
        1e-5,
    );
}

#[test]
fn pixel_net_family_matches_cpu() {
    // pixel_net runs every layer at a pixel in one dispatch; its CPU twin is the CPU's incremental sampler, which
    // computes the same layers at the same positions. Both architectures, conditional or not.
    let Some(gpu) = pixelcnn::gpu::gpu_for_tests_with(Some("pixel=net")) else {
        return;
    };
    for (i, config) in [
        pixelcnn::model::Config::pixelcnn(6, 2).conditional(),
        pixelcnn::model::Config::gated(5, 3),
        // 16×20 images, a dilated gated net with 4 classes: the HEIGHT/WIDTH/PIXELS constants of pixel_net.
        pixelcnn::model::Config::gated(4, 3)
            .dilated(2)
            .with_classes(4)
            .with_shape(16, 20),
    ]
    .into_iter()
    .enumerate()
    {
        let net = pixelcnn::model::Network::new(config);
        let params = perturbed_params(&net, 40 + i as u64, 0.1);
        let count = 5;
        let labels = random_labels_of(count, config.classes.max(1), 41);
        let spec = cpu::SampleSpec {
            count,
            key: pixelcnn::rng::sample_key(42),
            first_image: 0,
            labels: net.config.is_conditional().then_some(&labels[..]),
            init: None,
            start_pixel: 0,
            temperature: 1.0,
        };
        let model = pixelcnn::gpu::layers::GpuModel::new(&gpu, &net, &params).unwrap();
        let req = pixelcnn::gpu::sampler::SampleRequest {
            spec,
            naive: false,
            max_steps: None,
        };
        let got = pixelcnn::gpu::sampler::sample(&gpu, &model, req, |_| {}).unwrap();
        let want = cpu::sample_incremental(&net, &params, spec);
        let ties = compare_samplers(
            &format!("pixel_net {}", net.config.describe()),
            &got,
            &want,
            net.pixels(),
            (spec.key, 0, 0),
        );
        assert!(ties <= 1, "too many near-ties: {ties}");
    }
}

#[test]
fn peak_family_matches_cpu() {
    // The kernels `bench peak` times must do the work they are timed for: every chain and every load counts.
    use pixelcnn::gpu::kernels::peak::{self, PeakRun, FMA_C, FMA_M};
    let Some(gpu) = pixelcnn::gpu::gpu_for_tests() else {
        return;
    };
    for workgroup in [8, 64] {
        let (n, iters) = (1000, 7);
        let run_ = PeakRun { n, iters, workgroup };
        let out = gpu.tensor("out", n * 4).unwrap();
        let src = random_vec(n * 4 * iters, 3);
        let g_src = gpu.upload("src", &src).unwrap();
        let out2 = gpu.tensor("out 2", n * 4).unwrap();
        let mut p = Program::new();
        peak::peak(&gpu, &mut p, "fma_peak", peak::views(out.view(), g_src.view()), run_).unwrap();
        peak::peak(
            &gpu,
            &mut p,
            "read_bandwidth",
            peak::views(out2.view(), g_src.view()),
            run_,
        )
        .unwrap();
        run(&gpu, p);
        let want: Vec<f32> = (0..n as u32)
            .flat_map(|id| cpu::fma_peak(id, iters, FMA_M, FMA_C))
            .collect();
        check(
            &format!("fma_peak WG={workgroup}"),
            &gpu.read(&out).unwrap(),
            &want,
            1e-4,
        );
        check(
            &format!("read_bandwidth WG={workgroup}"),
            &gpu.read(&out2).unwrap(),
            &cpu::read_bandwidth(&src, n, iters),
            1e-5,
        );
    }
}
