//! The network on the GPU, layer by layer: one `*_forward` / `*_backward` pair per layer kind, matching the
//! match arms of `cpu::forward` and `cpu::backward` one to one, and the passes that fuse or assign buffers.
//!
//! * [`GpuModel`]: parameters, gradients and Adam moments in the GPU layout of the parameter table, and the tap
//!   table every conv kernel reads its (dy, dx) from.
//! * [`Pass`]: the buffers of one forward (and backward) pass, and its geometry (every pixel of a batch, one pixel
//!   or one row of the sampler's caches).
//! * [`fuse_residuals`]: the fusion pass — a conv whose output only feeds an Add computes the Add in its epilogue;
//!   [`fuse_gates`] then has a conv compute the Gate that reads its result too (where the kernels can).
//! * [`GradientSlots`]: the gradient buffers of a backward pass, assigned by a rule that holds for any DAG.

use super::buffers::{Tensor, View};
use super::kernels::class_bias::{self, ClassBiasAdd, ClassBiasBackward};
use super::kernels::conv::{self, ConvBackwardData, ConvBackwardWeight, ConvForward, ConvInput, ConvShape, Epilogue};
use super::kernels::elementwise::{self, Dropout, Gate, ReluBackward};
use super::kernels::prelude::Rows;
use super::record::Program;
use super::Gpu;
use crate::cpu::AdamState;
use crate::model::{Activation, Layer, Network};
use anyhow::Result;

/// Parameters, gradients and Adam moments on the GPU (the GPU layout of the network's parameter table), and the
/// tap table.
pub struct GpuModel {
    pub net: Network,
    pub params: Tensor,
    pub grads: Tensor,
    pub m: Tensor,
    pub v: Tensor,
    /// `(dy, dx)` of every live tap of every conv, in conv order (i32 pairs).
    pub taps: Tensor,
    /// The Polyak average of the parameters, when the run keeps one (uploaded with the optimizer state).
    pub ema: Option<Tensor>,
    pub shapes: Vec<ConvShape>,
}

impl GpuModel {
    pub fn new(gpu: &Gpu, net: &Network, params: &[f32]) -> Result<GpuModel> {
        let table = &net.params;
        let mut taps: Vec<i32> = Vec::new();
        let mut shapes = Vec::new();
        for (l, layer) in net.layers.iter().enumerate() {
            if let Layer::Conv { conv, input } = *layer {
                let c = &net.convs[conv];
                let shape = ConvShape::of(c, net.act_groups[input], net.act_groups[l + 1], taps.len() / 2);
                shapes.push((conv, shape));
                taps.extend(c.taps.iter().flat_map(|t| [t.dy, t.dx]));
            }
        }
        shapes.sort_by_key(|s| s.0);
        let taps_tensor = gpu.tensor("taps", taps.len())?;
        gpu.write_bytes(&taps_tensor, 0, bytemuck::cast_slice(&taps));
        let p = gpu.tensor("params", table.gpu_len)?;
        gpu.write(&p, 0, &table.to_gpu(params));
        Ok(GpuModel {
            net: net.clone(),
            params: p,
            grads: gpu.tensor("grads", table.gpu_len)?,
            m: gpu.tensor("adam.m", table.gpu_len)?,
            v: gpu.tensor("adam.v", table.gpu_len)?,
            taps: taps_tensor,
            ema: None,
            shapes: shapes.into_iter().map(|s| s.1).collect(),
        })
    }

    /// Whether layer `l` is a conv whose kernel on this device can compute the gate that follows it in its epilogue
    /// ([`conv::gate_fusable`]): the `gate_fusable` rule of [`fuse_gates`].
    pub fn gate_fusable(&self, gpu: &Gpu, l: usize) -> bool {
        match self.net.layers[l] {
            Layer::Conv { conv, .. } => conv::gate_fusable(gpu, &self.shapes[conv]),
            _ => false,
        }
    }

    /// Parameter tensor `i` of the table inside a GPU-layout vector (`params`, `grads`, `m` or `v`).
    pub fn tensor(&self, of: &Tensor, i: usize) -> View {
        let t = &self.net.params.tensors[i];
        of.slice(t.gpu_offset, t.gpu_len())
    }

    /// Every parameter (the vector without its tail), as Adam updates it.
    pub fn all_params(&self) -> View {
        self.params.slice(0, self.net.params.gpu_len)
    }

    /// Parameters in the CPU layout.
    pub fn download_params(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let n = self.net.params.gpu_len;
        Ok(self.net.params.to_cpu(&gpu.read_range(&self.params, 0, n)?))
    }

    /// Uploads the optimizer state: Adam's moments, and the parameters' average when it has one.
    pub fn upload_adam(&mut self, gpu: &Gpu, adam: &AdamState) -> Result<()> {
        gpu.write(&self.m, 0, &self.net.params.to_gpu(&adam.m));
        gpu.write(&self.v, 0, &self.net.params.to_gpu(&adam.v));
        self.ema = match &adam.ema {
            Some(ema) => Some(gpu.upload("ema", &self.net.params.to_gpu(ema))?),
            None => None,
        };
        Ok(())
    }

    /// The optimizer state in the CPU layout (the step count is the host's).
    pub fn download_adam(&self, gpu: &Gpu, step: u64) -> Result<AdamState> {
        let ema = match &self.ema {
            Some(t) => Some(self.net.params.to_cpu(&gpu.read(t)?)),
            None => None,
        };
        Ok(AdamState {
            m: self.net.params.to_cpu(&gpu.read(&self.m)?),
            v: self.net.params.to_cpu(&gpu.read(&self.v)?),
            step,
            ema,
        })
    }

    /// Gradients of the last step, in the CPU layout (for tests).
    pub fn download_grads(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        Ok(self.net.params.to_cpu(&gpu.read(&self.grads)?))
    }
}

/// How the forward pass runs each layer after [`fuse_residuals`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fused {
    /// The layer runs as itself.
    Itself,
    /// A conv that also computes the Add layer `add` in its epilogue (`acts[add + 1] = conv + acts[other]`); it
    /// writes its own output too only if `keep_output`.
    WithResidual {
        add: usize,
        other: usize,
        keep_output: bool,
    },
    /// A conv that also computes the Gate layer `gate` in its epilogue ([`fuse_gates`], where
    /// [`conv::gate_fusable`]), after the Add layer `residual.0` with `acts[residual.1]` if any: the gated output
    /// goes to `acts[gate + 1]`, and the pre-gate sum (the Add's output, or the conv's own) only if `keep_pre`.
    Gated {
        residual: Option<(usize, usize)>,
        gate: usize,
        keep_pre: bool,
    },
    /// An Add or a Gate computed by an earlier conv's epilogue.
    Done,
}

/// The fusion pass: every conv whose output feeds nothing but one Add, whose other input is already computed
/// when the conv runs, computes that Add in its epilogue. In training (`keep_masks`) a ReLU conv still writes its
/// own output, which the backward pass needs for the ReLU's mask.
pub fn fuse_residuals(net: &Network, keep_masks: bool) -> Vec<Fused> {
    fuse_residuals_where(net, keep_masks, &|conv_out, _, other| other < conv_out)
}

/// [`fuse_residuals`] with the rule for when a conv may take its Add over: `ready(conv output, Add output, the
/// Add's other input)` (a whole forward pass: the other input comes from an earlier layer; the sampler adds its
/// schedules, see `sampler::pixel_fusion`).
pub fn fuse_residuals_where(
    net: &Network,
    keep_masks: bool,
    ready: &dyn Fn(usize, usize, usize) -> bool,
) -> Vec<Fused> {
    let consumers = net.consumers();
    let mut plan = vec![Fused::Itself; net.layers.len()];
    for (l, layer) in net.layers.iter().enumerate() {
        let Layer::Conv { conv, .. } = *layer else { continue };
        let out = l + 1;
        let [m] = consumers[out][..] else { continue };
        let Layer::Add { a, b } = net.layers[m] else { continue };
        let other = if a == out { b } else { a };
        if other == out || !ready(out, m + 1, other) || plan[m] != Fused::Itself {
            continue;
        }
        let keep_output = keep_masks && net.convs[conv].act == Activation::Relu;
        plan[l] = Fused::WithResidual {
            add: m,
            other,
            keep_output,
        };
        plan[m] = Fused::Done;
    }
    plan
}

/// The gate pass, after a residual plan: a conv (on its own, or with the Add it took over) whose result feeds a Gate
/// computed in the same pass (`together(conv output, gate output)`: always in training, the same schedule in the
/// sampler) also computes that Gate in its epilogue, conv_forward's GATE variant, where `gate_fusable(l)` says conv
/// layer l's kernel can. The pre-gate result is still written when `keep_pre` (training: the gate's backward reads
/// it) or when anything else reads it.
pub fn fuse_gates(
    net: &Network,
    plan: &mut [Fused],
    keep_pre: bool,
    together: &dyn Fn(usize, usize) -> bool,
    gate_fusable: &dyn Fn(usize) -> bool,
) {
    let consumers = net.consumers();
    for l in 0..net.layers.len() {
        let residual = match (&net.layers[l], plan[l]) {
            (Layer::Conv { .. }, Fused::Itself) => None,
            (
                Layer::Conv { .. },
                Fused::WithResidual {
                    add,
                    other,
                    keep_output: false,
                },
            ) => Some((add, other)),
            _ => continue,
        };
        let z = residual.map_or(l + 1, |(add, _)| add + 1);
        let gate = consumers[z].iter().copied().find(|&g| {
            matches!(net.layers[g], Layer::Gate { .. }) && together(l + 1, g + 1) && plan[g] == Fused::Itself
        });
        if let Some(g) = gate.filter(|_| gate_fusable(l)) {
            plan[l] = Fused::Gated {
                residual,
                gate: g,
                keep_pre: keep_pre || consumers[z].len() > 1,
            };
            plan[g] = Fused::Done;
        }
    }
}

/// The buffers of one pass.
pub struct Pass<'a> {
    pub model: &'a GpuModel,
    /// Every activation's buffer; `acts[0]` holds the images (u8 bytes when `bytes`, else vec4 floats).
    pub acts: &'a [View],
    pub bytes: bool,
    /// One u32 label per image (conditional models).
    pub labels: Option<View>,
    /// Per layer: the per-image bias table of a conditional conv or gate (from [`class_tables`]).
    pub tables: &'a [Option<View>],
    /// The rows of this pass.
    pub rows: Rows,
    /// Images of the pass (the batch, or the sampler's padded count).
    pub images: usize,
    /// A training pass: the buffer holding the step's dropout key (dropout layers drop units). None: dropout
    /// layers pass their input through (evaluation, sampling).
    pub dropout_key: Option<View>,
}

impl Pass<'_> {
    fn net(&self) -> &Network {
        &self.model.net
    }

    fn c4(&self, act: usize) -> usize {
        self.net().gpu_channels(act) / 4
    }

    fn conv_input(&self, act: usize) -> ConvInput {
        if act == 0 && self.bytes {
            ConvInput::Bytes(self.acts[0].clone())
        } else {
            ConvInput::Floats(self.acts[act].clone())
        }
    }
}

/// Words of the per-image bias table of layer `l` (conditional convs and gates), if it has one.
pub fn table_len(net: &Network, l: usize, images: usize) -> Option<usize> {
    match net.layers[l] {
        Layer::Conv { conv, .. } => net.convs[conv].class_bias.map(|_| images * net.gpu_channels(l + 1)),
        Layer::Gate { input, class_bias } => class_bias.map(|_| images * net.gpu_channels(input)),
        _ => None,
    }
    .filter(|_| net.config.is_conditional())
}

/// Records the per-image bias tables `[bias +] class_bias[labels[i]]` of every conditional conv and gate.
pub fn class_tables(gpu: &Gpu, p: &mut Program, pass: &Pass) -> Result<()> {
    let (m, net) = (pass.model, pass.net());
    for (l, layer) in net.layers.iter().enumerate() {
        let Some(table) = pass.tables[l].clone() else { continue };
        let labels = pass.labels.clone().expect("a conditional model needs labels");
        match *layer {
            Layer::Conv { conv, .. } => {
                let c = &net.convs[conv];
                let cb = m.tensor(&m.params, c.class_bias.expect("table without class bias"));
                let bias = m.tensor(&m.params, c.bias);
                let op = ClassBiasAdd {
                    bias: Some(bias),
                    class_bias: cb,
                    labels,
                    out: table,
                    images: pass.images,
                    c4: pass.c4(l + 1),
                    classes: net.config.classes,
                };
                class_bias::class_bias_add(gpu, p, op)?;
            }
            Layer::Gate { input, class_bias } => {
                let cb = m.tensor(&m.params, class_bias.expect("table without class bias"));
                let op = ClassBiasAdd {
                    bias: None,
                    class_bias: cb,
                    labels,
                    out: table,
                    images: pass.images,
                    c4: pass.c4(input),
                    classes: net.config.classes,
                };
                class_bias::class_bias_add(gpu, p, op)?;
            }
            _ => unreachable!("only convs and gates have class biases"),
        }
    }
    Ok(())
}

/// Forward of a conv layer: `acts[l + 1] = act(conv(acts[input]) + bias)`, with the fused residual of `fused`,
/// or the loss epilogue.
pub fn conv_forward(
    gpu: &Gpu,
    p: &mut Program,
    pass: &Pass,
    l: usize,
    fused: Fused,
    loss: Option<Epilogue>,
) -> Result<()> {
    let (m, net) = (pass.model, pass.net());
    let Layer::Conv { conv, input } = net.layers[l] else {
        unreachable!("conv_forward on a non-conv layer")
    };
    let c = &net.convs[conv];
    let shape = &m.shapes[conv];
    let weight = m.tensor(&m.params, c.weight);
    let (bias, per_image_bias) = match &pass.tables[l] {
        Some(t) => (t.clone(), true),
        None => (m.tensor(&m.params, c.bias), false),
    };
    let epilogue = match (loss, fused) {
        (Some(e), _) => e,
        (
            None,
            Fused::WithResidual {
                add,
                other,
                keep_output,
            },
        ) => Epilogue::Residual {
            residual: pass.acts[other].clone(),
            sum_out: pass.acts[add + 1].clone(),
            keep_output,
        },
        (
            None,
            Fused::Gated {
                residual,
                gate,
                keep_pre,
            },
        ) => {
            let pre = residual.map_or(l + 1, |(add, _)| add + 1);
            Epilogue::Gate {
                residual: residual.map(|(_, other)| pass.acts[other].clone()),
                pre_gate: keep_pre.then(|| pass.acts[pre].clone()),
                table: pass.tables[gate].clone(),
                gated: pass.acts[gate + 1].clone(),
            }
        }
        _ => Epilogue::Plain,
    };
    let op = ConvForward {
        input: pass.conv_input(input),
        weight,
        bias,
        per_image_bias,
        taps: m.taps.view(),
        output: pass.acts[l + 1].clone(),
        epilogue,
    };
    conv::conv_forward(gpu, p, shape, op, pass.rows)
}

/// Forward of an Add layer: `acts[l + 1] = acts[a] + acts[b]`.
pub fn add_forward(gpu: &Gpu, p: &mut Program, pass: &Pass, l: usize) -> Result<()> {
    let Layer::Add { a, b } = pass.net().layers[l] else {
        unreachable!("add_forward on a non-add layer")
    };
    elementwise::add(
        gpu,
        p,
        pass.acts[a].clone(),
        pass.acts[b].clone(),
        pass.acts[l + 1].clone(),
        pass.c4(l + 1),
        pass.rows,
    )
}

/// Forward of a Gate layer: `acts[l + 1] = tanh(z[:C] + β) · σ(z[C:] + β)`.
pub fn gate_forward(gpu: &Gpu, p: &mut Program, pass: &Pass, l: usize) -> Result<()> {
    let Layer::Gate { input, .. } = pass.net().layers[l] else {
        unreachable!("gate_forward on a non-gate layer")
    };
    let gate = Gate {
        z: pass.acts[input].clone(),
        bias: pass.tables[l].clone(),
        half4: pass.c4(l + 1),
    };
    elementwise::gate_forward(gpu, p, gate, pass.acts[l + 1].clone(), pass.rows)
}

/// Forward of a ReLU layer: `acts[l + 1] = max(acts[input], 0)`.
pub fn relu_forward(gpu: &Gpu, p: &mut Program, pass: &Pass, l: usize) -> Result<()> {
    let Layer::Relu { input } = pass.net().layers[l] else {
        unreachable!("relu_forward on a non-relu layer")
    };
    elementwise::relu_forward(
        gpu,
        p,
        pass.acts[input].clone(),
        pass.acts[l + 1].clone(),
        pass.c4(l + 1),
        pass.rows,
    )
}

/// Forward of a Dropout layer: in a training pass `acts[l + 1] = acts[input] · keep / (1 − rate)` with the step's
/// masks, else a copy of its input.
pub fn dropout_forward(gpu: &Gpu, p: &mut Program, pass: &Pass, l: usize) -> Result<()> {
    let Layer::Dropout { input } = pass.net().layers[l] else {
        unreachable!("dropout_forward on a non-dropout layer")
    };
    let (x, out, c4) = (pass.acts[input].clone(), pass.acts[l + 1].clone(), pass.c4(l + 1));
    match &pass.dropout_key {
        Some(key) => {
            let op = Dropout {
                x,
                out,
                key: key.clone(),
                c4,
                percent: pass.net().config.dropout,
                accumulate: false,
            };
            elementwise::dropout(gpu, p, op, pass.rows)
        }
        None => elementwise::accumulate(gpu, p, x, out, c4, false, pass.rows),
    }
}

/// One layer's forward, by kind (the match of `cpu::forward`).
#[deny(clippy::wildcard_enum_match_arm)]
pub fn layer_forward(
    gpu: &Gpu,
    p: &mut Program,
    pass: &Pass,
    l: usize,
    fused: Fused,
    loss: Option<Epilogue>,
) -> Result<()> {
    match (&pass.net().layers[l], fused) {
        (_, Fused::Done) => Ok(()),
        (Layer::Conv { .. }, _) => conv_forward(gpu, p, pass, l, fused, loss),
        (Layer::Add { .. }, _) => add_forward(gpu, p, pass, l),
        (Layer::Gate { .. }, _) => gate_forward(gpu, p, pass, l),
        (Layer::Relu { .. }, _) => relu_forward(gpu, p, pass, l),
        (Layer::Dropout { .. }, _) => dropout_forward(gpu, p, pass, l),
    }
}

/// The forward pass over every layer, in order, with the fusion plan `fused`; `loss` is the epilogue of the last
/// layer (the logits conv), if any.
pub fn record_forward(
    gpu: &Gpu,
    p: &mut Program,
    pass: &Pass,
    fused: &[Fused],
    mut loss: Option<Epilogue>,
) -> Result<()> {
    class_tables(gpu, p, pass)?;
    let last = pass.net().layers.len() - 1;
    for (l, &f) in fused.iter().enumerate() {
        layer_forward(gpu, p, pass, l, f, if l == last { loss.take() } else { None })?;
    }
    Ok(())
}

/// Where a gradient contribution goes: activation `act`'s gradient buffer, added to what it holds if `accumulate`.
#[derive(Clone, Debug)]
struct Target {
    view: View,
    accumulate: bool,
}

/// The gradient buffers of a backward pass. Activation a's buffer holds dL/da, except for the output of a ReLU
/// conv, whose buffer holds the gradient of its pre-activation: [a > 0] · dL/da, so every contribution to it is
/// masked as it is written (masking is linear, so contributions can be masked one by one). The rule, for any DAG:
/// walking the layers backwards, an activation gets a buffer at its first contribution (later ones accumulate) and
/// frees it once its producer's backward has read it; an Add may hand its output's buffer on to one input that
/// has no other contribution yet and no mask, instead of copying. Buffers are pooled by size.
pub struct GradientSlots {
    /// The pool: tensors sized for the trainer's largest batch, reused across programs.
    pool: Vec<(Tensor, usize)>,
    free: Vec<usize>,
    slot_of: Vec<Option<usize>>,
    written: Vec<bool>,
    max_positions: usize,
}

impl GradientSlots {
    pub fn new(net: &Network, max_positions: usize) -> GradientSlots {
        GradientSlots {
            pool: Vec::new(),
            free: Vec::new(),
            slot_of: vec![None; net.act_channels.len()],
            written: vec![false; net.act_channels.len()],
            max_positions,
        }
    }

    /// Starts recording a new backward pass (the pool's tensors are kept).
    fn reset(&mut self) {
        self.free = (0..self.pool.len()).collect();
        self.slot_of.iter_mut().for_each(|s| *s = None);
        self.written.iter_mut().for_each(|w| *w = false);
    }

    /// Bytes of the pool.
    pub fn bytes(&self) -> u64 {
        self.pool.iter().map(|(t, _)| t.bytes()).sum()
    }

    fn view(&self, slot: usize, positions: usize, channels: usize) -> View {
        self.pool[slot].0.slice(0, positions * channels)
    }

    /// The buffer of activation `a` for a contribution (allocating one at the first), and whether to accumulate.
    fn target(&mut self, gpu: &Gpu, net: &Network, a: usize, positions: usize) -> Result<Target> {
        let ch = net.gpu_channels(a);
        let slot = match self.slot_of[a] {
            Some(s) => s,
            None => {
                let s = self.take(gpu, ch)?;
                self.slot_of[a] = Some(s);
                s
            }
        };
        let accumulate = std::mem::replace(&mut self.written[a], true);
        Ok(Target {
            view: self.view(slot, positions, ch),
            accumulate,
        })
    }

    /// A free buffer of at least `channels` channels (a new one if none is free).
    fn take(&mut self, gpu: &Gpu, channels: usize) -> Result<usize> {
        if let Some(i) = self.free.iter().position(|&s| self.pool[s].1 >= channels) {
            return Ok(self.free.swap_remove(i));
        }
        let t = gpu.tensor(&format!("gradient {}", self.pool.len()), self.max_positions * channels)?;
        self.pool.push((t, channels));
        Ok(self.pool.len() - 1)
    }

    /// The complete gradient of activation `a` (its producer is being processed).
    fn complete(&self, net: &Network, a: usize, positions: usize) -> View {
        let s = self.slot_of[a].expect("every activation feeds the loss");
        self.view(s, positions, net.gpu_channels(a))
    }

    /// `a`'s producer has read its gradient: its buffer is free again.
    fn release(&mut self, a: usize) {
        if let Some(s) = self.slot_of[a].take() {
            self.free.push(s);
        }
    }
}

/// Scratch buffers of a backward pass.
pub struct BackwardScratch {
    /// Per-chunk partial sums of the weight gradients.
    pub partial: Tensor,
    /// Per-image sums for the class-bias gradients.
    pub image_sums: Tensor,
}

/// The backward state: the pass, its gradient buffers and scratch.
pub struct Backward<'a, 'b> {
    pub pass: &'a Pass<'b>,
    pub slots: &'a mut GradientSlots,
    pub scratch: &'a BackwardScratch,
}

impl Backward<'_, '_> {
    fn positions(&self) -> usize {
        self.pass.rows.rows()
    }

    /// Whether activation a's buffer holds a pre-activation gradient (a is a ReLU conv's output).
    fn masked(&self, a: usize) -> bool {
        a > 0
            && matches!(self.pass.net().layers[a - 1], Layer::Conv { conv, .. }
                if self.pass.net().convs[conv].act == Activation::Relu)
    }

    /// Adds `src` (dL/da) to activation a's gradient, masked if a's buffer needs it.
    fn contribute(&mut self, gpu: &Gpu, p: &mut Program, a: usize, src: View) -> Result<()> {
        let net = self.pass.net();
        let t = self.slots.target(gpu, net, a, self.positions())?;
        let c4 = net.gpu_channels(a) / 4;
        if self.masked(a) {
            let op = ReluBackward {
                y: self.pass.acts[a].clone(),
                dy: src,
                out: t.view,
                c4,
                accumulate: t.accumulate,
            };
            elementwise::relu_backward(gpu, p, op, self.pass.rows)
        } else {
            elementwise::accumulate(gpu, p, src, t.view, c4, t.accumulate, self.pass.rows)
        }
    }

    /// The gradient of a class-bias table from the pre-activation gradient `grad` of `channels4` vec4s.
    fn class_bias_grad(&self, gpu: &Gpu, p: &mut Program, tensor: usize, grad: View, c4: usize) -> Result<()> {
        let m = self.pass.model;
        let labels = self.pass.labels.clone().expect("a conditional model needs labels");
        let images = self.pass.images;
        let sums = self.scratch.image_sums.slice(0, images * c4 * 4);
        let op = ClassBiasBackward {
            grad,
            labels,
            sums,
            out: m.tensor(&m.grads, tensor),
            images,
            c4,
            classes: self.pass.net().config.classes,
            image: self.pass.rows.image,
        };
        class_bias::class_bias_backward(gpu, p, op)
    }
}

/// Backward of a conv layer: the weight and bias gradients (and the class bias's) from dz = the gradient buffer of
/// its output, and the gradient of its input (except the image).
pub fn conv_backward(gpu: &Gpu, p: &mut Program, bw: &mut Backward, l: usize) -> Result<()> {
    let (pass, positions) = (bw.pass, bw.positions());
    let (m, net) = (pass.model, pass.net());
    let Layer::Conv { conv, input } = net.layers[l] else {
        unreachable!("conv_backward on a non-conv layer")
    };
    let c = &net.convs[conv];
    let shape = &m.shapes[conv];
    let dz = bw.slots.complete(net, l + 1, positions);
    let partial = bw
        .scratch
        .partial
        .slice(0, conv::wgrad_partial_len(gpu, shape, positions));
    let op = ConvBackwardWeight {
        input: pass.conv_input(input),
        taps: m.taps.view(),
        dz: dz.clone(),
        partial,
        grad_weight: m.tensor(&m.grads, c.weight),
        grad_bias: m.tensor(&m.grads, c.bias),
    };
    conv::conv_backward_weight(gpu, p, shape, op, pass.rows)?;
    if let (Some(cb), Some(_)) = (c.class_bias, &pass.tables[l]) {
        bw.class_bias_grad(gpu, p, cb, dz.clone(), shape.cout4)?;
    }
    if input != 0 {
        let mask = bw.masked(input).then(|| pass.acts[input].clone());
        let t = bw.slots.target(gpu, net, input, positions)?;
        let op = ConvBackwardData {
            weight: m.tensor(&m.params, c.weight),
            taps: m.taps.view(),
            dz,
            dx: t.view,
            mask,
            accumulate: t.accumulate,
        };
        conv::conv_backward_data(gpu, p, shape, op, pass.rows)?;
    }
    bw.slots.release(l + 1);
    Ok(())
}

/// Backward of an Add layer: both inputs receive the output's gradient. One input that has no gradient yet and no
/// mask takes the output's buffer over; the others get a (masked) copy or sum.
pub fn add_backward(gpu: &Gpu, p: &mut Program, bw: &mut Backward, l: usize) -> Result<()> {
    let net = bw.pass.net();
    let Layer::Add { a, b } = net.layers[l] else {
        unreachable!("add_backward on a non-add layer")
    };
    let out = l + 1;
    let dout = bw.slots.complete(net, out, bw.positions());
    let can_take = |bw: &Backward, x: usize| bw.slots.slot_of[x].is_none() && !bw.masked(x);
    let taker = [b, a].into_iter().find(|&x| can_take(bw, x) && a != b);
    for x in [b, a] {
        if Some(x) != taker {
            bw.contribute(gpu, p, x, dout.clone())?;
        }
    }
    match taker {
        Some(x) => {
            bw.slots.slot_of[x] = bw.slots.slot_of[out].take();
            bw.slots.written[x] = true;
        }
        None => bw.slots.release(out),
    }
    Ok(())
}

/// Backward of a Gate layer: dz from the gate's input and output gradient; the class bias's gradient from dz.
pub fn gate_backward(gpu: &Gpu, p: &mut Program, bw: &mut Backward, l: usize) -> Result<()> {
    let (pass, positions) = (bw.pass, bw.positions());
    let net = pass.net();
    let Layer::Gate { input, class_bias } = net.layers[l] else {
        unreachable!("gate_backward on a non-gate layer")
    };
    let dout = bw.slots.complete(net, l + 1, positions);
    let half4 = net.gpu_channels(l + 1) / 4;
    let table = pass.tables[l].clone();
    // The gate writes dz straight into its input's buffer when that holds nothing yet and needs no mask (then the
    // class-bias gradient reads dz there, before anything else adds to it); otherwise into a free buffer first.
    let direct = bw.slots.slot_of[input].is_none() && !bw.masked(input);
    let (dz, scratch) = if direct {
        (bw.slots.target(gpu, net, input, positions)?.view, None)
    } else {
        let s = bw.slots.take(gpu, 2 * half4 * 4)?;
        (bw.slots.view(s, positions, 2 * half4 * 4), Some(s))
    };
    let gate = Gate {
        z: pass.acts[input].clone(),
        bias: table.clone(),
        half4,
    };
    elementwise::gate_backward(gpu, p, gate, dout, dz.clone(), pass.rows)?;
    if let (Some(cb), Some(_)) = (class_bias, &table) {
        bw.class_bias_grad(gpu, p, cb, dz.clone(), 2 * half4)?;
    }
    if let Some(s) = scratch {
        bw.contribute(gpu, p, input, dz)?;
        bw.slots.free.push(s);
    }
    bw.slots.release(l + 1);
    Ok(())
}

/// Backward of a ReLU layer: `d input (+)= [out > 0] · d out` (which is also the input's own mask, if it has one).
pub fn relu_backward(gpu: &Gpu, p: &mut Program, bw: &mut Backward, l: usize) -> Result<()> {
    let (pass, positions) = (bw.pass, bw.positions());
    let net = pass.net();
    let Layer::Relu { input } = net.layers[l] else {
        unreachable!("relu_backward on a non-relu layer")
    };
    let dout = bw.slots.complete(net, l + 1, positions);
    let t = bw.slots.target(gpu, net, input, positions)?;
    let c4 = net.gpu_channels(input) / 4;
    let op = ReluBackward {
        y: pass.acts[l + 1].clone(),
        dy: dout,
        out: t.view,
        c4,
        accumulate: t.accumulate,
    };
    elementwise::relu_backward(gpu, p, op, pass.rows)?;
    bw.slots.release(l + 1);
    Ok(())
}

/// Backward of a Dropout layer: its input's gradient gets `d out · keep / (1 − rate)` with the step's masks (through
/// a scratch buffer, which [`Backward::contribute`] adds in, masked where the input is a ReLU conv's output).
pub fn dropout_backward(gpu: &Gpu, p: &mut Program, bw: &mut Backward, l: usize) -> Result<()> {
    let (pass, positions) = (bw.pass, bw.positions());
    let net = pass.net();
    let Layer::Dropout { input } = net.layers[l] else {
        unreachable!("dropout_backward on a non-dropout layer")
    };
    let key = pass
        .dropout_key
        .clone()
        .ok_or_else(|| anyhow::anyhow!("a backward pass of a network with dropout needs the step's key"))?;
    let dout = bw.slots.complete(net, l + 1, positions);
    let c4 = net.gpu_channels(input) / 4;
    let s = bw.slots.take(gpu, c4 * 4)?;
    let dx = bw.slots.view(s, positions, c4 * 4);
    let op = Dropout {
        x: dout,
        out: dx.clone(),
        key,
        c4,
        percent: net.config.dropout,
        accumulate: false,
    };
    elementwise::dropout(gpu, p, op, pass.rows)?;
    bw.contribute(gpu, p, input, dx)?;
    bw.slots.free.push(s);
    bw.slots.release(l + 1);
    Ok(())
}

/// One layer's backward, by kind (the match of `cpu::backward`).
#[deny(clippy::wildcard_enum_match_arm)]
pub fn layer_backward(gpu: &Gpu, p: &mut Program, bw: &mut Backward, l: usize) -> Result<()> {
    match bw.pass.net().layers[l] {
        Layer::Conv { .. } => conv_backward(gpu, p, bw, l),
        Layer::Add { .. } => add_backward(gpu, p, bw, l),
        Layer::Gate { .. } => gate_backward(gpu, p, bw, l),
        Layer::Relu { .. } => relu_backward(gpu, p, bw, l),
        Layer::Dropout { .. } => dropout_backward(gpu, p, bw, l),
    }
}

/// The gradient buffer the loss epilogue writes dL/dlogits into, for a new backward pass.
pub fn logits_gradient(gpu: &Gpu, slots: &mut GradientSlots, net: &Network, positions: usize) -> Result<View> {
    slots.reset();
    Ok(slots.target(gpu, net, net.logits_act(), positions)?.view)
}

/// The backward pass over every layer, in reverse order (after the forward pass wrote dL/dlogits).
pub fn record_backward(gpu: &Gpu, p: &mut Program, bw: &mut Backward) -> Result<()> {
    for l in (0..bw.pass.net().layers.len()).rev() {
        layer_backward(gpu, p, bw, l)?;
    }
    Ok(())
}

/// Words of the largest per-chunk partial sum of the weight gradients over `positions` positions.
pub fn max_partial_len(gpu: &Gpu, model: &GpuModel, positions: usize) -> usize {
    model
        .shapes
        .iter()
        .map(|s| conv::wgrad_partial_len(gpu, s, positions))
        .max()
        .unwrap_or(4)
}

/// Words of the per-image sums the class-bias gradients need for `images` images.
pub fn image_sums_len(net: &Network, images: usize) -> usize {
    let widest = (0..net.act_channels.len())
        .map(|a| net.gpu_channels(a))
        .max()
        .unwrap_or(4);
    if net.config.is_conditional() {
        images * widest
    } else {
        4
    }
}

/// `labels` as the u32 words the kernels read (for `images` images, padded with class 0; a label past the
/// `classes` rows of the class-bias tables wraps, so that no kernel reads outside a table).
pub fn label_words(labels: &[u8], images: usize, classes: usize) -> Vec<u8> {
    let mut words: Vec<u32> = labels.iter().map(|&y| (y as usize % classes.max(1)) as u32).collect();
    words.resize(images.max(4), 0);
    bytemuck::cast_slice(&words).to_vec()
}

/// Positions of a batch of `images` images of `net`'s shape.
pub fn positions(net: &Network, images: usize) -> usize {
    images * net.pixels()
}
