//! One function per WGSL entry point: it packs the kernel's uniform block, picks its dispatch shape and appends the
//! dispatch to a [`Program`]. The shader files in `shaders/` document layouts and bindings; the CPU twin of each
//! kernel has the same name in `cpu.rs`.

use super::buffers::{pad4, View};
use super::record::Program;
use super::Gpu;
use crate::model::{Conv, HEIGHT, PIXELS, WIDTH};
use anyhow::Result;
use std::sync::Arc;

/// How a kernel reaches each storage binding (1, 2, ...; binding 0 is always the uniform block).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
    /// A read-only window bound as a uniform buffer (at most `max_uniform_buffer_binding_size` bytes).
    Uniform,
}
use Access::{Read, ReadWrite as Rw};

/// A compiled entry point with its explicit bind-group layout (explicit, so the uniform can use dynamic offsets).
pub struct Pipeline {
    pub name: String,
    pub storage: Vec<Access>,
    pub layout: wgpu::BindGroupLayout,
    pub pipeline: wgpu::ComputePipeline,
}

/// The WGSL sources, compiled into the binary so it runs from any directory.
fn source(file: &str) -> &'static str {
    match file {
        "conv" => include_str!("../../shaders/conv.wgsl"),
        "wgrad" => include_str!("../../shaders/wgrad.wgsl"),
        "reduce" => include_str!("../../shaders/reduce.wgsl"),
        "elementwise" => include_str!("../../shaders/elementwise.wgsl"),
        "bce" => include_str!("../../shaders/bce.wgsl"),
        "adam" => include_str!("../../shaders/adam.wgsl"),
        "sample" => include_str!("../../shaders/sample.wgsl"),
        "conv_pixel" => include_str!("../../shaders/conv_pixel.wgsl"),
        _ => panic!("no shader {file}"),
    }
}

/// Tuning knobs substituted into the kernels' `const` declarations.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Tuning {
    /// Output rows (positions) per invocation of `conv_forward`.
    pub conv_rows: u32,
    /// Output vec4 columns per invocation of `conv_forward`.
    pub conv_cols: u32,
    /// Positions per chunk of the weight-gradient reduction.
    pub wgrad_chunk: usize,
    /// Row groups (4 scalar rows each) per invocation of `conv_backward_weight`.
    pub wgrad_row_groups: u32,
}

impl Tuning {
    /// Per-adapter choice. CPU rasterisers (lavapipe) gain from register blocking; discrete GPUs want many threads.
    pub fn for_gpu(gpu: &Gpu) -> Tuning {
        let rows = std::env::var("PIXELCNN_CONV_ROWS").ok().and_then(|v| v.parse().ok());
        let cols = std::env::var("PIXELCNN_CONV_COLS").ok().and_then(|v| v.parse().ok());
        let chunk = std::env::var("PIXELCNN_WGRAD_CHUNK").ok().and_then(|v| v.parse().ok());
        let rg = std::env::var("PIXELCNN_WGRAD_RG").ok().and_then(|v| v.parse().ok());
        if gpu.is_software() {
            Tuning {
                conv_rows: rows.unwrap_or(4),
                conv_cols: cols.unwrap_or(32),
                wgrad_chunk: chunk.unwrap_or(1568),
                wgrad_row_groups: rg.unwrap_or(4),
            }
        } else {
            Tuning {
                conv_rows: rows.unwrap_or(4),
                conv_cols: cols.unwrap_or(32),
                wgrad_chunk: chunk.unwrap_or(392),
                wgrad_row_groups: rg.unwrap_or(4),
            }
        }
    }
}

impl Gpu {
    /// The pipeline for `entry` in `shaders/<file>.wgsl`, compiled once per process (per tuning).
    pub fn pipeline(&self, file: &str, entry: &str, storage: &[Access]) -> Result<Arc<Pipeline>> {
        self.pipeline_with(file, entry, storage, &[])
    }

    /// The pipeline for `entry` with the kernel's `const NAME: u32 = ...;` declarations replaced by `consts`
    /// (tile sizes), compiled once per distinct set.
    pub fn pipeline_with(
        &self,
        file: &str,
        entry: &str,
        storage: &[Access],
        consts: &[(&str, u32)],
    ) -> Result<Arc<Pipeline>> {
        let mut name = format!("{file}:{entry}");
        for (c, v) in consts {
            name.push_str(&format!(" {c}={v}"));
        }
        if let Some(p) = self.pipelines.lock().unwrap().get(&name) {
            return Ok(p.clone());
        }
        let mut src = String::new();
        let segments = consts.iter().find(|(c, _)| *c == "SEGMENTS").map_or(1, |&(_, v)| v);
        for line in expand_segments(source(file), segments).lines() {
            match consts
                .iter()
                .find(|(c, _)| line.starts_with(&format!("const {c}: u32 =")))
            {
                Some((c, v)) => src.push_str(&format!("const {c}: u32 = {v}u;")),
                None => src.push_str(line),
            }
            src.push('\n');
        }
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&name),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: None,
            },
            count: None,
        }];
        for (i, a) in storage.iter().enumerate() {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match a {
                        Access::Uniform => wgpu::BufferBindingType::Uniform,
                        _ => wgpu::BufferBindingType::Storage { read_only: *a == Read },
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let layout = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(&name),
            entries: &entries,
        });
        let pipeline_layout = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&name),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&name),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        let p = Arc::new(Pipeline {
            name: name.clone(),
            storage: storage.to_vec(),
            layout,
            pipeline,
        });
        self.pipelines.lock().unwrap().insert(name, p.clone());
        Ok(p)
    }
}

/// Repeats each block between `//@segments {` and `//@segments }` once per segment s < `segments`, replacing `$s`
/// by s, `$in` by 4 + 2s and `$w` by 5 + 2s (the binding numbers of segment s's windows; see conv_pixel.wgsl).
pub fn expand_segments(src: &str, segments: u32) -> String {
    let mut out = String::new();
    let mut block: Option<Vec<&str>> = None;
    for line in src.lines() {
        match (line.trim(), block.as_mut()) {
            ("//@segments {", None) => block = Some(Vec::new()),
            ("//@segments }", Some(lines)) => {
                for s in 0..segments {
                    for l in lines.iter() {
                        let l = l
                            .replace("$in", &(4 + 2 * s).to_string())
                            .replace("$w", &(5 + 2 * s).to_string())
                            .replace("$s", &s.to_string());
                        out.push_str(&l);
                        out.push('\n');
                    }
                }
                block = None;
            }
            (_, Some(lines)) => lines.push(line),
            (_, None) => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    assert!(block.is_none(), "unterminated //@segments block");
    out
}

fn words(w: &[u32]) -> Vec<u8> {
    bytemuck::cast_slice(w).to_vec()
}

/// "No fixed pixel": rows are positions.
const ALL_PIXELS: u32 = u32::MAX;

const RELU: u32 = 1;
const BIAS: u32 = 2;
const ACCUMULATE: u32 = 4;
const NEGATE_TAPS: u32 = 8;
const RESIDUAL: u32 = 16;

/// The `conv_forward` pipeline for `cols4` output vec4 columns, and its workgroup count for `rows` rows: whole
/// workgroups of 64 · TM rows per column block of TN, with TN the largest power of two ≤ min(cols4, tuning).
fn conv_pipeline(gpu: &Gpu, rows: usize, cols4: usize) -> Result<(Arc<Pipeline>, usize)> {
    let t = Tuning::for_gpu(gpu);
    let mut tn = 1;
    while tn * 2 <= cols4.min(t.conv_cols as usize) {
        tn *= 2;
    }
    let pipe = gpu.pipeline_with(
        "conv",
        "conv_forward",
        &[Read, Read, Rw],
        &[("TM", t.conv_rows), ("TN", tn as u32)],
    )?;
    Ok((pipe, rows.div_ceil(64 * t.conv_rows as usize) * cols4.div_ceil(tn)))
}

fn groups64(invocations: usize) -> usize {
    invocations.div_ceil(64)
}

/// `out = act(conv(input) + bias)` at `rows` positions (all positions, or image `r` at `pixel` in the sampler's
/// position-major layout). At a single pixel on adapters that suit it this is [`conv_pixel`], else
/// [`conv_forward_tiled`].
#[allow(clippy::too_many_arguments)]
pub fn conv_forward(
    gpu: &Gpu,
    p: &mut Program,
    conv: &Conv,
    weight: View,
    input: View,
    output: View,
    rows: usize,
    pixel: Option<usize>,
) -> Result<()> {
    if let Some(q) = pixel {
        if try_conv_pixel(gpu, p, conv, &weight, &input, None, &output, rows, q)? {
            return Ok(());
        }
    }
    conv_forward_tiled(gpu, p, conv, weight, input, output, rows, pixel)
}

/// `out = [residual +] act(conv(input) + bias)` at pixel `q` of `rows` images (position-major) with
/// [`conv_pixel`], if the adapter and the buffers suit it. Records nothing and returns false where they do not: the
/// caller then falls back to [`conv_forward_tiled`] (and, with a residual, a separate [`add`]).
#[allow(clippy::too_many_arguments)]
pub fn try_conv_pixel(
    gpu: &Gpu,
    p: &mut Program,
    conv: &Conv,
    weight: &View,
    input: &View,
    residual: Option<View>,
    output: &View,
    rows: usize,
    q: usize,
) -> Result<bool> {
    let Some(sg) = gpu.pixel_subgroup() else {
        return Ok(false);
    };
    let Some(runs) = pixel_runs(gpu, conv, weight, input, rows, q, sg, WINDOW_BYTES) else {
        return Ok(false);
    };
    conv_pixel(
        gpu,
        p,
        conv,
        weight,
        input,
        residual,
        output.clone(),
        rows,
        q,
        sg,
        &runs,
    )?;
    Ok(true)
}

/// `conv_forward` with the register-tiled kernel of conv.wgsl (any adapter, any number of rows).
#[allow(clippy::too_many_arguments)]
pub fn conv_forward_tiled(
    gpu: &Gpu,
    p: &mut Program,
    conv: &Conv,
    weight: View,
    input: View,
    output: View,
    rows: usize,
    pixel: Option<usize>,
) -> Result<()> {
    let (cin4, cout4) = (pad4(conv.cin) / 4, pad4(conv.cout) / 4);
    let flags = BIAS | if conv.relu { RELU } else { 0 };
    let bias_row = conv.taps.len() * cin4 * 4;
    let u = [
        rows as u32,
        cin4 as u32,
        cout4 as u32,
        conv.taps.len() as u32,
        conv.kernel as u32,
        flags,
        pixel.map_or(ALL_PIXELS, |q| q as u32),
        bias_row as u32,
    ];
    let (pipe, groups) = conv_pipeline(gpu, rows, cout4)?;
    p.dispatch(pipe, vec![input, weight, output], &words(&u), groups);
    Ok(())
}

/// Bytes of each uniform window `conv_pixel` binds (its WGSL arrays are this big; buffers carry this much tail).
pub const WINDOW_BYTES: usize = 65536;

/// Floats of tail every tensor that `conv_pixel` reads through a window needs.
pub const WINDOW_TAIL: usize = WINDOW_BYTES / 4;

/// A run of taps for one `conv_pixel` dispatch: `taps` consecutive live taps from `tap0`, all on one kernel row and
/// inside the image, whose input pixels start at `first_pixel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapRun {
    pub tap0: usize,
    pub taps: usize,
    pub first_pixel: usize,
}

/// Splits `conv` at pixel `q` into [`TapRun`]s whose input and weight windows fit `max_bytes` and start where the
/// adapter can bind them. An empty list means every tap reads the zero padding (the output is act(bias)). None if
/// the kernel cannot serve this conv here (a single tap's window too big, misaligned, or rows not a multiple of
/// the subgroup): the caller falls back to [`conv_forward_tiled`].
#[allow(clippy::too_many_arguments)]
pub fn pixel_runs(
    gpu: &Gpu,
    conv: &Conv,
    block: &View,
    input: &View,
    rows: usize,
    q: usize,
    subgroup: u32,
    max_bytes: usize,
) -> Option<Vec<TapRun>> {
    let (cin4, cout4) = (pad4(conv.cin) / 4, pad4(conv.cout) / 4);
    let tap_bytes = cin4 * 4 * cout4 * 16;
    let pixel_bytes = rows * cin4 * 16;
    let align = gpu.limits.min_uniform_buffer_offset_alignment as usize;
    let fits = gpu.limits.max_uniform_buffer_binding_size as usize >= WINDOW_BYTES
        && max_bytes <= WINDOW_BYTES
        && tap_bytes <= max_bytes
        && pixel_bytes <= max_bytes
        && rows.is_multiple_of(subgroup as usize)
        && pixel_bytes.is_multiple_of(align)
        && (block.offset * 4).is_multiple_of(align)
        && tap_bytes.is_multiple_of(align)
        && (input.offset * 4).is_multiple_of(align)
        && block.offset + block.len + WINDOW_TAIL <= block.tensor.len
        && input.offset + input.len + WINDOW_TAIL <= input.tensor.len;
    if !fits {
        return None;
    }
    let per_run = (max_bytes / tap_bytes).min(max_bytes / pixel_bytes);
    let (y, x) = ((q / WIDTH) as i32, (q % WIDTH) as i32);
    let mut runs: Vec<TapRun> = Vec::new();
    for (t, tap) in conv.taps.iter().enumerate() {
        let (ty, tx) = (y + tap.dy, x + tap.dx);
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
    Some(runs)
}

/// Segments (tap runs) one `conv_pixel` dispatch takes: two uniform windows each, plus the parameter block.
pub fn pixel_segments(gpu: &Gpu) -> usize {
    let uniforms = gpu.limits.max_uniform_buffers_per_shader_stage as usize;
    (uniforms.saturating_sub(1) / 2).clamp(1, MAX_SEGMENTS)
}

/// Most segments `conv_pixel` is compiled with (a masked 3×3 conv over 128 images has 5 runs of one tap).
pub const MAX_SEGMENTS: usize = 5;

/// `out = [residual +] act(conv(input) + bias)` at pixel `q` of `rows` images (position-major buffers) with the
/// `conv_pixel` kernel: [`pixel_segments`] runs of taps per dispatch, dispatches chained through `out`.
#[allow(clippy::too_many_arguments)]
pub fn conv_pixel(
    gpu: &Gpu,
    p: &mut Program,
    conv: &Conv,
    block: &View,
    input: &View,
    residual: Option<View>,
    output: View,
    rows: usize,
    q: usize,
    subgroup: u32,
    runs: &[TapRun],
) -> Result<()> {
    let (cin4, cout4) = (pad4(conv.cin) / 4, pad4(conv.cout) / 4);
    let tap_len = cin4 * 4 * cout4 * 4;
    let pixel_len = rows * cin4 * 4;
    let bias_at = conv.taps.len() * tap_len / 4;
    let sg = subgroup as usize;
    let groups = rows.div_ceil(sg) * cout4.div_ceil(sg);
    let segments = pixel_segments(gpu);
    let pipe = gpu.pipeline_with(
        "conv_pixel",
        "conv_pixel",
        &[[Read, Rw, Read].as_slice(), &vec![Access::Uniform; 2 * segments]].concat(),
        &[("SG", subgroup), ("SEGMENTS", segments as u32)],
    )?;
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
        let mut flags = if first { BIAS } else { ACCUMULATE };
        if last && conv.relu {
            flags |= RELU;
        }
        if last && residual.is_some() {
            flags |= RESIDUAL;
        }
        let mut u = vec![
            rows as u32,
            cin4 as u32,
            cout4 as u32,
            flags,
            q as u32,
            bias_at as u32,
            0,
            0,
        ];
        let mut taps = [0u32; 8];
        let mut views = vec![
            block.clone(),
            output.clone(),
            residual.clone().unwrap_or_else(|| block.clone()),
        ];
        for (s, taps) in taps.iter_mut().enumerate().take(segments) {
            // Unused segments (no taps) bind the first run's windows again.
            let run = chunk.get(s).unwrap_or(&chunk[0]);
            *taps = if s < chunk.len() { run.taps as u32 } else { 0 };
            views.push(window(input, run.first_pixel * pixel_len));
            views.push(window(block, run.tap0 * tap_len));
        }
        u.extend_from_slice(&taps);
        p.dispatch(pipe.clone(), views, &words(&u), groups);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
/// Backward-data of a conv through its transposed block `wt`: `dx (+)= conv^T(dz)`, over all positions.
pub fn conv_backward_data(
    gpu: &Gpu,
    p: &mut Program,
    conv: &Conv,
    wt: View,
    dz: View,
    dx: View,
    positions: usize,
    accumulate: bool,
) -> Result<()> {
    let (cin4, cout4) = (pad4(conv.cin) / 4, pad4(conv.cout) / 4);
    let flags = NEGATE_TAPS | if accumulate { ACCUMULATE } else { 0 };
    // The forward kernel with the roles of the channel counts swapped.
    let u = [
        positions as u32,
        cout4 as u32,
        cin4 as u32,
        conv.taps.len() as u32,
        conv.kernel as u32,
        flags,
        ALL_PIXELS,
        0,
    ];
    let (pipe, groups) = conv_pipeline(gpu, positions, cin4)?;
    p.dispatch(pipe, vec![dz, wt, dx], &words(&u), groups);
    Ok(())
}

/// Floats in the transposed block of `conv` (no bias row).
pub fn transposed_len(conv: &Conv) -> usize {
    conv.taps.len() * pad4(conv.cout) * pad4(conv.cin)
}

/// `wt[t, co, ci] = w[t, ci, co]` for the live taps.
pub fn transpose_weights(gpu: &Gpu, p: &mut Program, conv: &Conv, w: View, wt: View) -> Result<()> {
    let (cin4, cout4) = (pad4(conv.cin) / 4, pad4(conv.cout) / 4);
    let u = [
        0,
        cin4 as u32,
        cout4 as u32,
        conv.taps.len() as u32,
        conv.kernel as u32,
        0,
        ALL_PIXELS,
        0,
    ];
    let pipe = gpu.pipeline("conv", "transpose_weights", &[Read, Read, Rw])?;
    p.dispatch(
        pipe,
        vec![w.clone(), w, wt],
        &words(&u),
        groups64(transposed_len(conv) / 4),
    );
    Ok(())
}

/// Chunks the weight-gradient reduction uses for `positions` positions.
pub fn wgrad_chunks(gpu: &Gpu, positions: usize) -> (usize, usize) {
    let chunk = Tuning::for_gpu(gpu).wgrad_chunk;
    (chunk, positions.div_ceil(chunk))
}

/// Floats of the partial-sum buffer the weight gradient of `conv` needs.
pub fn wgrad_partial_len(gpu: &Gpu, conv: &Conv, positions: usize) -> usize {
    let (_, n_chunks) = wgrad_chunks(gpu, positions);
    n_chunks * (conv.taps.len() * pad4(conv.cin) + 1) * pad4(conv.cout)
}

/// The gradient of a conv's packed block, in two deterministic passes: per-chunk partial sums, then their sum.
#[allow(clippy::too_many_arguments)]
pub fn conv_backward_weight(
    gpu: &Gpu,
    p: &mut Program,
    conv: &Conv,
    input: View,
    dz: View,
    partial: View,
    grad: View,
    positions: usize,
) -> Result<()> {
    let (cin4, cout4) = (pad4(conv.cin) / 4, pad4(conv.cout) / 4);
    let (chunk, n_chunks) = wgrad_chunks(gpu, positions);
    let u = [
        positions as u32,
        cin4 as u32,
        cout4 as u32,
        conv.taps.len() as u32,
        conv.kernel as u32,
        chunk as u32,
        n_chunks as u32,
        0,
    ];
    // One lane per output vec4 column (up to 64), RG row groups per lane.
    let wgn = cout4.next_power_of_two().min(64);
    let rg = Tuning::for_gpu(gpu).wgrad_row_groups as usize;
    let row_groups = conv.taps.len() * cin4 + 1;
    let consts = [("WGN", wgn as u32), ("RG", rg as u32)];
    let pipe = gpu.pipeline_with("wgrad", "conv_backward_weight", &[Read, Read, Rw], &consts)?;
    let groups = n_chunks * row_groups.div_ceil(rg) * cout4.div_ceil(wgn);
    p.dispatch(pipe, vec![input, dz, partial.clone()], &words(&u), groups);
    let len4 = (conv.taps.len() * cin4 * 4 + 1) * cout4;
    reduce_chunks(gpu, p, partial, grad, len4, n_chunks, false)
}

/// `out[i] (+)= Σ_c in[c · len4 + i]` over vec4s.
pub fn reduce_chunks(
    gpu: &Gpu,
    p: &mut Program,
    input: View,
    output: View,
    len4: usize,
    n_chunks: usize,
    accumulate: bool,
) -> Result<()> {
    let u = [len4 as u32, n_chunks as u32, accumulate as u32, 0];
    let pipe = gpu.pipeline("reduce", "reduce_chunks", &[Read, Rw])?;
    p.dispatch(pipe, vec![input, output], &words(&u), groups64(len4));
    Ok(())
}

/// Per-image sums of the per-pixel losses: `out[i] (+)= Σ_q loss[i · 784 + q]`.
pub fn sum_images(gpu: &Gpu, p: &mut Program, loss: View, output: View, images: usize, accumulate: bool) -> Result<()> {
    let len4 = images.div_ceil(4);
    let u = [len4 as u32, images as u32, accumulate as u32, 0];
    let pipe = gpu.pipeline("reduce", "sum_images", &[Read, Rw])?;
    p.dispatch(pipe, vec![loss, output], &words(&u), groups64(len4));
    Ok(())
}

/// `out = a + b` over `channels` channels at `rows` positions (all, or image `r` at `pixel`).
#[allow(clippy::too_many_arguments)]
pub fn add(
    gpu: &Gpu,
    p: &mut Program,
    a: View,
    b: View,
    output: View,
    channels: usize,
    rows: usize,
    pixel: Option<usize>,
) -> Result<()> {
    let c4 = pad4(channels) / 4;
    let u = [rows as u32, c4 as u32, pixel.map_or(ALL_PIXELS, |q| q as u32), 0];
    let pipe = gpu.pipeline("elementwise", "add", &[Read, Read, Rw])?;
    p.dispatch(pipe, vec![a, b, output], &words(&u), groups64(rows * c4));
    Ok(())
}

/// `dz = dy · [y > 0]` over `channels` channels at `positions` positions.
pub fn relu_backward(
    gpu: &Gpu,
    p: &mut Program,
    y: View,
    dy: View,
    dz: View,
    channels: usize,
    positions: usize,
) -> Result<()> {
    let c4 = pad4(channels) / 4;
    let u = [positions as u32, c4 as u32, ALL_PIXELS, 0];
    let pipe = gpu.pipeline("elementwise", "relu_backward", &[Read, Read, Rw])?;
    p.dispatch(pipe, vec![y, dy, dz], &words(&u), groups64(positions * c4));
    Ok(())
}

/// Per-pixel BCE from logits and its gradient `(σ(z) − x) / (images · 784)`.
pub fn bce_loss_grad(
    gpu: &Gpu,
    p: &mut Program,
    logits: View,
    target: View,
    grad: View,
    loss: View,
    images: usize,
) -> Result<()> {
    let positions = images * PIXELS;
    let scale = 1.0f32 / positions as f32;
    let u = [positions as u32, scale.to_bits(), 0, 0];
    let pipe = gpu.pipeline("bce", "bce_loss_grad", &[Read, Read, Rw, Rw])?;
    p.dispatch(pipe, vec![logits, target, grad, loss], &words(&u), groups64(positions));
    Ok(())
}

/// Adam's uniform block for a step size `lr_t`.
pub fn adam_uniform(n4: usize, lr_t: f32, cfg: &crate::cpu::AdamConfig) -> Vec<u8> {
    let u = [
        n4 as u32,
        lr_t.to_bits(),
        (cfg.beta1 as f32).to_bits(),
        (cfg.beta2 as f32).to_bits(),
        (cfg.eps as f32).to_bits(),
        0,
        0,
        0,
    ];
    words(&u)
}

/// One Adam update of the whole parameter vector; returns the dispatch index so the step size can be rewritten.
#[allow(clippy::too_many_arguments)]
pub fn adam_update(
    gpu: &Gpu,
    p: &mut Program,
    params: View,
    grads: View,
    m: View,
    v: View,
    lr_t: f32,
    cfg: &crate::cpu::AdamConfig,
) -> Result<usize> {
    let n4 = params.len / 4;
    let pipe = gpu.pipeline("adam", "adam_update", &[Rw, Read, Rw, Rw])?;
    Ok(p.dispatch(
        pipe,
        vec![params, grads, m, v],
        &adam_uniform(n4, lr_t, cfg),
        groups64(n4),
    ))
}

/// Draws pixel `pixel` of `count` images from their logits, writing the image and the probability. `stride` 0:
/// logits and image are image-major; else position-major with `stride` images per position.
#[allow(clippy::too_many_arguments)]
pub fn sample_pixel(
    gpu: &Gpu,
    p: &mut Program,
    logits: View,
    image: View,
    probs: View,
    count: usize,
    pixel: usize,
    key: u32,
    first_image: u32,
    stride: usize,
) -> Result<()> {
    let u = [count as u32, pixel as u32, key, first_image, stride as u32, 0, 0, 0];
    let pipe = gpu.pipeline("sample", "sample_pixel", &[Read, Rw, Rw])?;
    p.dispatch(pipe, vec![logits, image, probs], &words(&u), groups64(count));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::expand_segments;

    #[test]
    fn expand_segments_repeats_blocks_with_binding_numbers() {
        let src = "a\n  //@segments {\nvar in_$s @binding($in) w @binding($w)\n  //@segments }\nb\n";
        let want = "a\nvar in_0 @binding(4) w @binding(5)\nvar in_1 @binding(6) w @binding(7)\nb\n";
        assert_eq!(expand_segments(src, 2), want);
        assert_eq!(expand_segments("x\n", 3), "x\n");
    }
}
