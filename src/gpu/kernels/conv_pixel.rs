//! One conv at one pixel of every image (`shaders/conv_pixel.wgsl`): the incremental sampler's step on CPU
//! rasterisers (the `conv_pixel` version of the pixel kernels). Both GEMM operands come through 64 KiB uniform
//! windows, in up to [`MAX_SEGMENTS`] runs of taps per dispatch. CPU twin: `cpu::conv_pixel`.

use super::prelude::flags;
use super::{Access, Bindings, Family, Launch, Uniform};
use crate::gpu::buffers::View;
use crate::gpu::record::{Label, Program};
use crate::gpu::versions::PixelVersion;
use crate::gpu::Gpu;
use crate::model::{HEIGHT, WIDTH};
use anyhow::Result;

pub const FAMILY: Family = Family {
    name: "conv_pixel",
    source: include_str!("../../../shaders/conv_pixel.wgsl"),
    prepend: &[],
    uniforms: &[PixelParams::layout],
};

uniform_struct! {
    /// `PixelParams` of conv_pixel.wgsl.
    pub struct PixelParams {
        pub rows: u32,
        pub cin4: u32,
        pub cout4: u32,
        pub flags: u32,
        pub pixel: u32,
        pub bias_stride: u32,
        pub _pad0: u32,
        pub _pad1: u32,
        /// Taps of segment s at `taps[s]` (0: unused).
        pub taps: [u32; 8],
    }
}

/// The buffers of `conv_pixel`: three storage bindings, then an input and a weight window per segment (WGSL has
/// no arrays of uniform buffers in wgpu, so the template repeats the segment's bindings).
#[derive(Clone, Debug)]
pub struct PixelViews {
    pub bias: View,
    pub output: View,
    pub residual: View,
    /// (input window, weight window) of each segment, at bindings 4 + 2s and 5 + 2s.
    pub windows: Vec<(View, View)>,
}

impl Bindings for PixelViews {
    fn table(&self) -> Vec<(u32, Access)> {
        let mut t = vec![(1, Access::Read), (2, Access::ReadWrite), (3, Access::Read)];
        for s in 0..self.windows.len() as u32 {
            t.push((4 + 2 * s, Access::Uniform));
            t.push((5 + 2 * s, Access::Uniform));
        }
        t
    }

    fn views(self) -> Vec<View> {
        let mut v = vec![self.bias, self.output, self.residual];
        for (input, weight) in self.windows {
            v.push(input);
            v.push(weight);
        }
        v
    }
}

/// Bytes of each uniform window `conv_pixel` binds (its WGSL arrays are this big; buffers carry this much tail).
pub const WINDOW_BYTES: usize = 65536;

/// Words of tail every tensor that `conv_pixel` reads through a window needs.
pub const WINDOW_TAIL: usize = WINDOW_BYTES / 4;

/// Most segments `conv_pixel` is compiled with (a masked 3×3 conv over 128 images has 5 runs of one tap).
pub const MAX_SEGMENTS: usize = 5;

/// A run of taps for one `conv_pixel` segment: `taps` consecutive live taps from `tap0`, all on one kernel row and
/// inside the image, whose input pixels start at `first_pixel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapRun {
    pub tap0: usize,
    pub taps: usize,
    pub first_pixel: usize,
}

/// Why `conv_pixel` cannot serve a conv, if it cannot.
pub fn conv_pixel_unfit(
    gpu: &Gpu,
    shape: &super::conv::ConvShape,
    weight: &View,
    input: &View,
    rows: usize,
) -> Option<String> {
    if gpu.kernels.pixel != PixelVersion::ConvPixel {
        return Some("the device's pixel kernels are not conv_pixel".into());
    }
    let sg = gpu.kernels.subgroup? as usize;
    let tap_bytes = shape.cin4 * 4 * shape.cout4 * 16;
    let pixel_bytes = rows * shape.cin4 * 16;
    let align = gpu.limits.min_uniform_buffer_offset_alignment as usize;
    let checks = [
        (
            (gpu.limits.max_uniform_buffer_binding_size as usize) >= WINDOW_BYTES,
            "64 KiB uniform windows do not fit the adapter",
        ),
        (tap_bytes <= WINDOW_BYTES, "one tap's weights exceed a window"),
        (pixel_bytes <= WINDOW_BYTES, "one pixel's inputs exceed a window"),
        (rows.is_multiple_of(sg), "the images are not a multiple of the subgroup"),
        (
            pixel_bytes.is_multiple_of(align) && tap_bytes.is_multiple_of(align),
            "windows would be misaligned",
        ),
        (
            (weight.offset * 4).is_multiple_of(align) && (input.offset * 4).is_multiple_of(align),
            "buffers are misaligned",
        ),
        (
            weight.offset + weight.len + WINDOW_TAIL <= weight.tensor.len
                && input.offset + input.len + WINDOW_TAIL <= input.tensor.len,
            "buffers lack the window tail",
        ),
    ];
    checks.iter().find(|(ok, _)| !ok).map(|(_, why)| why.to_string())
}

/// Splits a conv at pixel `q` into [`TapRun`]s whose input and weight windows fit `max_bytes`. An empty list means
/// every tap reads the zero padding (the output is act(bias)). Call [`conv_pixel_unfit`] first.
pub fn pixel_runs(shape: &super::conv::ConvShape, rows: usize, q: usize, max_bytes: usize) -> Vec<TapRun> {
    let tap_bytes = shape.cin4 * 4 * shape.cout4 * 16;
    let pixel_bytes = rows * shape.cin4 * 16;
    let per_run = (max_bytes / tap_bytes).min(max_bytes / pixel_bytes);
    let (y, x) = ((q / WIDTH) as i32, (q % WIDTH) as i32);
    let mut runs: Vec<TapRun> = Vec::new();
    for (t, &(dy, dx)) in shape.taps.iter().enumerate() {
        let (ty, tx) = (y + dy, x + dx);
        if ty < 0 || ty >= HEIGHT as i32 || tx < 0 || tx >= WIDTH as i32 {
            continue;
        }
        let pixel = ty as usize * WIDTH + tx as usize;
        match runs.last_mut() {
            Some(r) if r.tap0 + r.taps == t && r.first_pixel + r.taps == pixel && r.taps < per_run => r.taps += 1,
            _ => runs.push(TapRun {
                tap0: t,
                taps: 1,
                first_pixel: pixel,
            }),
        }
    }
    runs
}

/// Segments (tap runs) one `conv_pixel` dispatch takes: two uniform windows each.
pub fn pixel_segments(gpu: &Gpu) -> usize {
    let uniforms = gpu.limits.max_uniform_buffers_per_shader_stage as usize;
    (uniforms.saturating_sub(1) / 2).clamp(1, MAX_SEGMENTS)
}

/// The operands of `out = [residual +] act(conv(input) + bias)` at pixel `q` of `rows` images (position-major).
#[derive(Clone, Debug)]
pub struct ConvPixel<'a> {
    pub weight: &'a View,
    /// `[cout4]`, or a per-image table `[rows, cout4]` when `per_image_bias`.
    pub bias: View,
    pub per_image_bias: bool,
    pub input: &'a View,
    pub residual: Option<View>,
    pub output: View,
    pub rows: usize,
    pub q: usize,
}

/// [`ConvPixel`] with the `conv_pixel` kernel over `runs` (from [`pixel_runs`]): [`pixel_segments`] runs of
/// taps per dispatch, dispatches chained through the output.
pub fn conv_pixel(
    gpu: &Gpu,
    p: &mut Program,
    shape: &super::conv::ConvShape,
    op: ConvPixel,
    runs: &[TapRun],
) -> Result<()> {
    let sg = gpu.kernels.subgroup.expect("conv_pixel has a subgroup size");
    let (cin4, cout4, rows) = (shape.cin4, shape.cout4, op.rows);
    let tap_len = cin4 * 4 * cout4 * 4;
    let pixel_len = rows * cin4 * 4;
    let workgroups = rows.div_ceil(sg as usize) * cout4.div_ceil(sg as usize);
    let segments = pixel_segments(gpu);
    // With every tap in the zero padding one dispatch over no taps still writes act(bias).
    let empty = [TapRun {
        tap0: 0,
        taps: 0,
        first_pixel: 0,
    }];
    let runs = if runs.is_empty() { &empty[..] } else { runs };
    let window = |v: &View, offset: usize| View {
        tensor: v.tensor.clone(),
        offset: v.offset + offset,
        len: WINDOW_TAIL,
    };
    let dispatches = runs.len().div_ceil(segments);
    for (d, chunk) in runs.chunks(segments).enumerate() {
        let (first, last) = (d == 0, d + 1 == dispatches);
        let mut fl = if first { flags::BIAS } else { flags::ACCUMULATE };
        if last && shape.relu {
            fl |= flags::RELU;
        }
        if last && op.residual.is_some() {
            fl |= flags::RESIDUAL;
        }
        let mut u = PixelParams {
            rows: rows as u32,
            cin4: cin4 as u32,
            cout4: cout4 as u32,
            flags: fl,
            pixel: op.q as u32,
            bias_stride: if op.per_image_bias { cout4 as u32 } else { 0 },
            ..Default::default()
        };
        let mut windows = Vec::with_capacity(segments);
        for s in 0..segments {
            // Unused segments (no taps) bind the first run's windows again.
            let run = chunk.get(s).unwrap_or(&chunk[0]);
            u.taps[s] = if s < chunk.len() { run.taps as u32 } else { 0 };
            windows.push((
                window(op.input, run.first_pixel * pixel_len),
                window(op.weight, run.tap0 * tap_len),
            ));
        }
        let taps: usize = chunk.iter().map(|r| r.taps).sum();
        Launch {
            family: FAMILY.name,
            entry: "conv_pixel",
            consts: &[("SG", sg), ("SEGMENTS", segments as u32)],
            views: PixelViews {
                bias: op.bias.clone(),
                output: op.output.clone(),
                residual: op.residual.clone().unwrap_or_else(|| gpu.dummy.view()),
                windows,
            },
            uniform: u,
            workgroups,
            label: Label {
                what: format!("conv_pixel {}", shape.name),
                flops: 2.0 * taps as f64 * (cin4 * cout4 * 16 * rows) as f64,
            },
        }
        .record(gpu, p)?;
    }
    Ok(())
}
