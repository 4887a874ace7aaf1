//! The convolution family: `conv_forward`, `conv_backward_data` and `conv_backward_weight` over live taps, in two
//! versions that share one interface (`shaders/conv_common.wgsl`: uniform block, bindings, forward epilogue):
//! `shaders/conv_raster.wgsl` (subgroup register tiles for CPU rasterisers) and `shaders/conv_tiled.wgsl`
//! (workgroup-memory tiles for GPUs). The device's [`ConvVersion`] picks one. CPU twins: `cpu::conv_forward`,
//! `cpu::conv_backward_data`, `cpu::conv_backward_weight`.

use super::prelude::{flags, Geometry, Rows};
use super::reduce::{self, ReduceChunks};
use super::{Family, Launch, Uniform, UniformAt};
use crate::gpu::buffers::View;
use crate::gpu::record::{Label, Program};
use crate::gpu::versions::ConvVersion;
use crate::gpu::Gpu;
use crate::model::PARAM_ALIGN;
use anyhow::Result;

/// The interface of the two conv families, prepended (after the prelude) to both.
pub const CONV_COMMON: &str = include_str!("../../../shaders/conv_common.wgsl");

pub const RASTER: Family = Family {
    name: "conv_raster",
    source: include_str!("../../../shaders/conv_raster.wgsl"),
    prepend: &[CONV_COMMON],
    uniforms: &[ConvParams::layout, Geometry::layout],
};

pub const TILED: Family = Family {
    name: "conv_tiled",
    source: include_str!("../../../shaders/conv_tiled.wgsl"),
    prepend: &[CONV_COMMON],
    uniforms: &[ConvParams::layout, Geometry::layout],
};

uniform_struct! {
    /// `ConvParams` of conv_common.wgsl.
    pub struct ConvParams {
        pub geo: Geometry,
        pub cin4: u32,
        pub cout4: u32,
        pub tap0: u32,
        pub n_taps: u32,
        pub chunk: u32,
        pub n_chunks: u32,
        pub loss_scale: f32,
        pub _pad0: u32,
    }
}

bindings! {
    /// The buffers of `conv_forward`.
    pub struct ConvForwardViews {
        input: 1 Read,
        weight: 2 Read,
        bias: 3 Read,
        taps: 4 Read,
        output: 5 ReadWrite,
        /// The residual, or LOSS's target image bytes.
        aux_in: 6 Read,
        /// The residual sum, or LOSS's per-pixel loss.
        aux_out: 7 ReadWrite,
        /// GATE's per-image class-bias table.
        gate_bias: 12 Read,
        /// GATE's gated output.
        gate_out: 13 ReadWrite,
    }
}

bindings! {
    /// The buffers of `conv_backward_data` (the WGSL reads dz through its `input` binding).
    pub struct ConvBackwardDataViews {
        dz: 1 Read,
        weight: 2 Read,
        taps: 4 Read,
        dx: 5 ReadWrite,
        /// The ReLU output whose mask applies (any buffer when unused).
        mask: 6 Read,
    }
}

bindings! {
    /// The buffers of `conv_backward_weight`.
    pub struct ConvBackwardWeightViews {
        input: 1 Read,
        taps: 4 Read,
        dz: 8 Read,
        partial: 9 ReadWrite,
    }
}

/// The geometry of one conv on the GPU: padded channel vec4s and where its taps sit in the tap table.
#[derive(Clone, Debug)]
pub struct ConvShape {
    pub cin4: usize,
    pub cout4: usize,
    pub tap0: usize,
    pub n_taps: usize,
    pub relu: bool,
    /// `blocks.0.masked 128→64 3x3 (5 taps)`, for profiles.
    pub name: String,
    /// Multiply-adds per output row (live taps × input channels × output channels), for profiles.
    pub macs_per_row: f64,
}

impl ConvShape {
    /// The uniform block of one of the three conv entries over `geo`'s rows: the shape's fields, and zeros
    /// elsewhere (callers set the entry's own fields).
    fn params(&self, geo: Geometry) -> ConvParams {
        ConvParams {
            geo,
            cin4: self.cin4 as u32,
            cout4: self.cout4 as u32,
            tap0: self.tap0 as u32,
            n_taps: self.n_taps as u32,
            ..Default::default()
        }
    }

    /// The profile label of `entry` on `rows` rows (or positions) with this shape.
    fn label(&self, gpu: &Gpu, entry: &str, rows: f64) -> Label {
        Label {
            what: format!("{entry} {:?} {}", gpu.kernels.conv, self.name).to_lowercase(),
            flops: 2.0 * self.macs_per_row * rows,
        }
    }

    /// The shape of `conv` on the GPU with `in_groups` / `out_groups` channel groups, its taps at `tap0` of the
    /// tap table.
    pub fn of(conv: &crate::model::Conv, in_groups: usize, out_groups: usize, tap0: usize) -> ConvShape {
        let c4 = |c: usize, g: usize| g * crate::model::pad4(c / g) / 4;
        ConvShape {
            cin4: c4(conv.cin, in_groups),
            cout4: c4(conv.cout, out_groups),
            tap0,
            n_taps: conv.taps.len(),
            relu: conv.act == crate::model::Activation::Relu,
            name: format!(
                "{} {}→{} {}x{} ({} taps)",
                conv.name,
                conv.cin,
                conv.cout,
                conv.kernel[0],
                conv.kernel[1],
                conv.taps.len()
            ),
            macs_per_row: (conv.taps.len() * conv.cin * conv.cout) as f64,
        }
    }
}

/// What a conv reads as its input.
#[derive(Clone, Debug)]
pub enum ConvInput {
    /// An activation `[positions, cin4]` of vec4s.
    Floats(View),
    /// The u8 images themselves (cin4 = 1), 4 pixels per word.
    Bytes(View),
}

impl ConvInput {
    /// The view, and whether it holds bytes (the BYTES variant).
    fn split(self) -> (View, bool) {
        match self {
            ConvInput::Floats(v) => (v, false),
            ConvInput::Bytes(v) => (v, true),
        }
    }
}

/// What a forward conv does after its sum.
#[derive(Clone, Debug)]
pub enum Epilogue {
    /// `output = act(sum + bias)`.
    Plain,
    /// Also `sum_out = act(...) + residual` (a fused residual add); `keep_output = false` skips the plain output.
    Residual {
        residual: View,
        sum_out: View,
        keep_output: bool,
    },
    /// A gated unit follows (the raster version only, where [`gate_fusable`]): with z = act(sum + bias)
    /// [+ `residual`], `pre_gate` (if any) gets z and `gated` gets tanh(z₁ + β₁) · σ(z₂ + β₂) over z's two halves,
    /// β the gate's per-image class-bias `table` (or none). The conv's own `output` is unused.
    Gate {
        residual: Option<View>,
        pre_gate: Option<View>,
        table: Option<View>,
        gated: View,
    },
    /// The logits conv: per-pixel BCE against `target` (u8 images) into `loss`; `output` gets the gradient of the
    /// mean BCE (scaled by `scale`) when `grad`, else the logit.
    Loss {
        target: View,
        loss: View,
        grad: bool,
        scale: f32,
    },
}

/// The operands of a forward conv.
#[derive(Clone, Debug)]
pub struct ConvForward {
    pub input: ConvInput,
    pub weight: View,
    /// `[cout4]`, or a per-image table `[images, cout4]` when `per_image_bias`.
    pub bias: View,
    pub per_image_bias: bool,
    pub taps: View,
    pub output: View,
    pub epilogue: Epilogue,
}

/// The operands of `dx (+)= [mask ·] conv^T(dz)`.
#[derive(Clone, Debug)]
pub struct ConvBackwardData {
    pub weight: View,
    pub taps: View,
    pub dz: View,
    pub dx: View,
    /// The conv's input activation when it is a ReLU output (the gradient then goes through that ReLU).
    pub mask: Option<View>,
    /// Add to what `dx` holds.
    pub accumulate: bool,
}

/// The operands of a conv's weight and bias gradients.
#[derive(Clone, Debug)]
pub struct ConvBackwardWeight {
    pub input: ConvInput,
    pub taps: View,
    pub dz: View,
    /// Scratch for the per-chunk partial sums ([`wgrad_partial_len`] words).
    pub partial: View,
    pub grad_weight: View,
    pub grad_bias: View,
}

/// Appends the pipeline constants conv_common.wgsl fixes per layer rather than per dispatch (see its FLAGS): the
/// `flags` bits, whether the bias is a per-image table, the rows' order and image shape, and on the raster version
/// how the weight of the shape's taps is read (see WEIGHT_UNIFORM; the tiled version keeps storage, as a GPU
/// serialises uniform loads at divergent addresses). Returns the weight's uniform bindings and their views (none
/// for storage).
fn layer_consts(
    gpu: &Gpu,
    consts: &mut Vec<(&'static str, u32)>,
    flags: u32,
    per_image_bias: bool,
    rows: Rows,
    weight: &View,
    shape: &ConvShape,
) -> Vec<(u32, View)> {
    consts.extend([("FLAGS", flags), ("BIAS_TABLE", per_image_bias as u32)]);
    consts.extend(rows.consts());
    if gpu.kernels.conv != ConvVersion::Raster {
        return Vec::new();
    }
    let Some((taps_per_window, windows)) = weight_windows(gpu, weight, shape.n_taps) else {
        return Vec::new();
    };
    consts.extend([("WEIGHT_UNIFORM", 1), ("WEIGHT_VEC4S", (windows[0].len / 4) as u32)]);
    if windows.len() > 1 {
        consts.extend([
            ("WEIGHT_WINDOWS", windows.len() as u32),
            ("TAPS_PER_WINDOW", taps_per_window as u32),
        ]);
        for (name, view) in ["WEIGHT_VEC4S_1", "WEIGHT_VEC4S_2"].into_iter().zip(&windows[1..]) {
            consts.push((name, (view.len / 4) as u32));
        }
    }
    WEIGHT_BINDINGS.into_iter().zip(windows).collect()
}

/// The bindings of a weight's uniform windows 0, 1 and 2 (conv_common.wgsl).
const WEIGHT_BINDINGS: [u32; 3] = [2, 10, 11];

/// The uniform windows a raster conv reads `weight` (`n_taps` taps) through, with the taps per window: the whole
/// weight when it fits one uniform binding; else as many whole taps per window as fit, when that takes at most the
/// device's `weight_windows` (and at most three) and every window starts where a binding may (the uniform offset
/// alignment, and the 256 bytes every view keeps). None (storage) otherwise.
fn weight_windows(gpu: &Gpu, weight: &View, n_taps: usize) -> Option<(usize, Vec<View>)> {
    let max_bytes = gpu.limits.max_uniform_buffer_binding_size as usize;
    if weight.len * 4 <= max_bytes {
        return Some((n_taps, vec![weight.clone()]));
    }
    if n_taps == 0 || !weight.len.is_multiple_of(n_taps) {
        return None;
    }
    let tap_words = weight.len / n_taps;
    let taps_per_window = max_bytes / (tap_words * 4);
    if taps_per_window == 0 {
        return None;
    }
    let window_words = taps_per_window * tap_words;
    let align = (gpu.limits.min_uniform_buffer_offset_alignment as usize).max(PARAM_ALIGN * 4);
    let windows = n_taps.div_ceil(taps_per_window);
    let max_windows = (gpu.kernels.tuning.weight_windows as usize).min(WEIGHT_BINDINGS.len());
    if windows > max_windows || !(window_words * 4).is_multiple_of(align) {
        return None;
    }
    let window = |w: usize| {
        let start = w * window_words;
        weight
            .tensor
            .slice(weight.offset + start, window_words.min(weight.len - start))
    };
    Some((taps_per_window, (0..windows).map(window).collect()))
}

/// Whether this device's conv_forward can compute the gated unit that follows `shape` in its epilogue (the GATE
/// variant): the raster version, with every output column in one column block of at most the tuned TN.
pub fn gate_fusable(gpu: &Gpu, shape: &ConvShape) -> bool {
    gpu.kernels.conv == ConvVersion::Raster
        && shape.cout4.is_multiple_of(2)
        && shape.cout4 <= gpu.kernels.tuning.conv_tn as usize
}

/// The family of the device's conv version, its constants, and workgroups for `rows` rows × `cols4` output vec4
/// columns (conv_forward and conv_backward_data).
/// `whole_row`: one column block of every column (TN = cols4; the GATE epilogue), which [`gate_fusable`] allows.
fn row_kernel(
    gpu: &Gpu,
    rows: usize,
    cols4: usize,
    whole_row: bool,
) -> (&'static str, Vec<(&'static str, u32)>, usize) {
    let t = &gpu.kernels.tuning;
    match gpu.kernels.conv {
        ConvVersion::Raster => {
            let sg = gpu.kernels.subgroup.expect("raster kernels have a subgroup size") as usize;
            let tn = if whole_row {
                cols4
            } else {
                super::pow2_at_most(cols4, t.conv_tn as usize)
            };
            // Few rows (the sampler's single pixel of a few dozen images): no more rows per lane than fill them.
            let tm = super::pow2_at_most(rows.div_ceil(sg), t.conv_tm as usize);
            let groups = rows.div_ceil(tm * sg) * cols4.div_ceil(tn);
            (
                RASTER.name,
                vec![("SG", sg as u32), ("TM", tm as u32), ("TN", tn as u32)],
                groups,
            )
        }
        ConvVersion::Tiled => (TILED.name, vec![], rows.div_ceil(64) * cols4.div_ceil(16)),
    }
}

/// `out = act(conv(input) + bias)` at `rows`, with the epilogue `op.epilogue`.
pub fn conv_forward(gpu: &Gpu, p: &mut Program, shape: &ConvShape, op: ConvForward, rows: Rows) -> Result<()> {
    let gate = matches!(op.epilogue, Epilogue::Gate { .. });
    anyhow::ensure!(
        !gate || gate_fusable(gpu, shape),
        "{}: this device's conv kernels cannot fuse its gate",
        shape.name
    );
    let (family, mut consts, workgroups) = row_kernel(gpu, rows.rows(), shape.cout4, gate);
    let (input, bytes) = op.input.split();
    consts.push(("BYTES", bytes as u32));
    consts.push(("LOSS", matches!(op.epilogue, Epilogue::Loss { .. }) as u32));
    consts.push(("GATE", gate as u32));
    let mut fl = if shape.relu { flags::RELU } else { 0 };
    let mut loss_scale = 0.0;
    let mut output = op.output;
    let (mut gate_bias, mut gate_out) = (gpu.dummy.view(), gpu.dummy_rw.view());
    let (aux_in, aux_out) = match op.epilogue {
        Epilogue::Plain => (gpu.dummy.view(), gpu.dummy_rw.view()),
        Epilogue::Residual {
            residual,
            sum_out,
            keep_output,
        } => {
            fl |= flags::RESIDUAL | if keep_output { 0 } else { flags::NO_OUTPUT };
            (residual, sum_out)
        }
        Epilogue::Gate {
            residual,
            pre_gate,
            table,
            gated,
        } => {
            fl |= if residual.is_some() { flags::RESIDUAL } else { 0 };
            fl |= if pre_gate.is_some() { 0 } else { flags::NO_OUTPUT };
            fl |= if table.is_some() { flags::BIAS } else { 0 };
            output = pre_gate.unwrap_or_else(|| gpu.dummy_rw.view());
            gate_bias = table.unwrap_or_else(|| gpu.dummy.view());
            gate_out = gated;
            (residual.unwrap_or_else(|| gpu.dummy.view()), gpu.dummy_rw.view())
        }
        Epilogue::Loss {
            target,
            loss,
            grad,
            scale,
        } => {
            fl |= if grad { flags::LOSS_GRAD } else { 0 };
            loss_scale = scale;
            (target, loss)
        }
    };
    let uniform = layer_consts(gpu, &mut consts, fl, op.per_image_bias, rows, &op.weight, shape);
    Launch {
        family,
        entry: "conv_forward",
        consts: &consts,
        views: UniformAt {
            views: ConvForwardViews {
                input,
                weight: op.weight,
                bias: op.bias,
                taps: op.taps,
                output,
                aux_in,
                aux_out,
                gate_bias,
                gate_out,
            },
            uniform,
        },
        uniform: ConvParams {
            loss_scale,
            ..shape.params(rows.geo)
        },
        workgroups,
        label: shape.label(gpu, "conv_forward", rows.rows() as f64),
    }
    .record(gpu, p)?;
    Ok(())
}

/// `dx (+)= [mask ·] conv^T(dz)` at `rows` (positions of the conv's input), reading the weight in place.
pub fn conv_backward_data(
    gpu: &Gpu,
    p: &mut Program,
    shape: &ConvShape,
    op: ConvBackwardData,
    rows: Rows,
) -> Result<()> {
    let (family, mut consts, workgroups) = row_kernel(gpu, rows.rows(), shape.cin4, false);
    consts.push(("BYTES", 0));
    consts.push(("LOSS", 0));
    let fl = if op.accumulate { flags::ACCUMULATE } else { 0 } | if op.mask.is_some() { flags::MASK } else { 0 };
    let uniform = layer_consts(gpu, &mut consts, fl, false, rows, &op.weight, shape);
    Launch {
        family,
        entry: "conv_backward_data",
        consts: &consts,
        views: UniformAt {
            views: ConvBackwardDataViews {
                dz: op.dz,
                weight: op.weight,
                taps: op.taps,
                dx: op.dx,
                mask: op.mask.unwrap_or_else(|| gpu.dummy.view()),
            },
            uniform,
        },
        uniform: shape.params(rows.geo),
        workgroups,
        label: shape.label(gpu, "conv_backward_data", rows.rows() as f64),
    }
    .record(gpu, p)?;
    Ok(())
}

/// Positions per chunk and chunks of the weight-gradient reduction over `positions` positions.
pub fn wgrad_chunks(gpu: &Gpu, positions: usize) -> (usize, usize) {
    let chunk = gpu.kernels.tuning.wgrad_chunk.next_multiple_of(16);
    (chunk, positions.div_ceil(chunk))
}

/// Words of the partial-sum buffer the weight gradient of `shape` needs over `positions` positions.
pub fn wgrad_partial_len(gpu: &Gpu, shape: &ConvShape, positions: usize) -> usize {
    let (_, n_chunks) = wgrad_chunks(gpu, positions);
    n_chunks * (shape.n_taps * shape.cin4 * 4 + 1) * shape.cout4 * 4
}

/// The gradients of a conv's weight and bias, in two deterministic passes: per-chunk partial sums over the
/// positions of `rows`, then their sum in chunk order (`reduce_chunks`).
pub fn conv_backward_weight(
    gpu: &Gpu,
    p: &mut Program,
    shape: &ConvShape,
    op: ConvBackwardWeight,
    rows: Rows,
) -> Result<()> {
    let positions = rows.rows();
    let (chunk, n_chunks) = wgrad_chunks(gpu, positions);
    let (input, bytes) = op.input.split();
    let row_groups = shape.n_taps * shape.cin4 + 1;
    let t = &gpu.kernels.tuning;
    let (family, mut consts, workgroups) = match gpu.kernels.conv {
        ConvVersion::Raster => {
            let sg = gpu.kernels.subgroup.expect("raster kernels have a subgroup size");
            // Lanes own output columns: TN per lane, as few as keep every lane busy.
            let tn = super::pow2_at_most(shape.cout4.div_ceil(sg as usize), t.wgrad_tn as usize);
            // Row blocks of equal size, so that the last is not a sliver (33 groups: 3 blocks of 11, not 16+16+1).
            // With BYTES only one of each group's four accumulator rows is live, so on lavapipe's 8 lanes four
            // times the groups fit (7×7 conv_in: 19 against 25 ms; not tried with SwiftShader's shader compiler).
            let ti_max = t.wgrad_ti as usize * if bytes && sg == 8 { 4 } else { 1 };
            let ti = row_groups.div_ceil(row_groups.div_ceil(ti_max));
            let consts = vec![
                ("SG", sg),
                ("TI", ti as u32),
                ("TN", tn as u32),
                ("BYTES", bytes as u32),
                ("LOSS", 0),
            ];
            let col_blocks = shape.cout4.div_ceil(sg as usize * tn);
            (RASTER.name, consts, n_chunks * row_groups.div_ceil(ti) * col_blocks)
        }
        ConvVersion::Tiled => (
            TILED.name,
            vec![("BYTES", bytes as u32), ("LOSS", 0)],
            n_chunks * row_groups.div_ceil(16) * shape.cout4.div_ceil(8),
        ),
    };
    consts.extend(rows.consts());
    Launch {
        family,
        entry: "conv_backward_weight",
        consts: &consts,
        views: ConvBackwardWeightViews {
            input,
            taps: op.taps,
            dz: op.dz,
            partial: op.partial.clone(),
        },
        uniform: ConvParams {
            chunk: chunk as u32,
            n_chunks: n_chunks as u32,
            ..shape.params(rows.geo)
        },
        workgroups,
        label: shape.label(gpu, "conv_backward_weight", positions as f64),
    }
    .record(gpu, p)?;
    let len4 = (shape.n_taps * shape.cin4 * 4 + 1) * shape.cout4;
    reduce::reduce_chunks(
        gpu,
        p,
        ReduceChunks {
            input: op.partial,
            out0: op.grad_weight,
            out1: op.grad_bias,
            len4,
            split: len4 - shape.cout4,
            n_chunks,
        },
    )
}
