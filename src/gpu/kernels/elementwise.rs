//! The layers and gradients that are not convolutions (`shaders/elementwise.wgsl`): residual add, gradient
//! accumulation, ReLU, the gated unit and dropout, forward and backward. CPU twins of the same names in `cpu.rs`.

use super::prelude::{flags, Geometry, Rows};
use super::{groups64, Family, Launch, Uniform};
use crate::gpu::buffers::View;
use crate::gpu::record::{Label, Program};
use crate::gpu::Gpu;
use anyhow::Result;

pub const FAMILY: Family = Family {
    name: "elementwise",
    source: include_str!("../../../shaders/elementwise.wgsl"),
    prepend: &[],
    uniforms: &[EltParams::layout, Geometry::layout],
};

uniform_struct! {
    /// `EltParams` of elementwise.wgsl.
    pub struct EltParams {
        pub geo: Geometry,
        pub c4: u32,
        pub bias_stride: u32,
        pub _pad0: u32,
        pub _pad1: u32,
    }
}

bindings! {
    /// The buffers of every elementwise entry point (unused ones bind a dummy).
    pub struct EltViews {
        a: 1 Read,
        b: 2 Read,
        output: 3 ReadWrite,
        c_in: 4 Read,
    }
}

/// One entry point of elementwise.wgsl over `c4` output vec4 columns at `rows`.
struct Elementwise {
    entry: &'static str,
    views: EltViews,
    c4: usize,
    flags: u32,
    bias_stride: usize,
    /// Dropout's rate in percent (the DROP_PERCENT pipeline constant; only the `dropout` entry reads it).
    drop_percent: u8,
}

impl Elementwise {
    fn record(self, gpu: &Gpu, p: &mut Program, rows: Rows) -> Result<()> {
        let mut consts = vec![("FLAGS", self.flags)];
        consts.extend(rows.consts());
        if self.entry == "dropout" {
            consts.push(("DROP_PERCENT", self.drop_percent as u32));
        }
        Launch {
            family: FAMILY.name,
            entry: self.entry,
            // Pipeline constants, not uniforms: see elementwise.wgsl's FLAGS.
            consts: &consts,
            views: self.views,
            uniform: EltParams {
                geo: rows.geo,
                c4: self.c4 as u32,
                bias_stride: self.bias_stride as u32,
                ..Default::default()
            },
            workgroups: groups64(rows.rows() * self.c4),
            label: Label {
                what: format!("{} {}", self.entry, self.c4 * 4),
                flops: 0.0,
            },
        }
        .record(gpu, p)?;
        Ok(())
    }
}

fn views(gpu: &Gpu, a: View, b: Option<View>, output: View, c_in: Option<View>) -> EltViews {
    EltViews {
        a,
        b: b.unwrap_or_else(|| gpu.dummy.view()),
        output,
        c_in: c_in.unwrap_or_else(|| gpu.dummy.view()),
    }
}

fn accumulate_flag(acc: bool) -> u32 {
    if acc {
        flags::ACCUMULATE
    } else {
        0
    }
}

/// `out = a + b` over `c4` vec4 columns at `rows`.
pub fn add(gpu: &Gpu, p: &mut Program, a: View, b: View, out: View, c4: usize, rows: Rows) -> Result<()> {
    Elementwise {
        entry: "add",
        views: views(gpu, a, Some(b), out, None),
        c4,
        flags: 0,
        bias_stride: 0,
        drop_percent: 0,
    }
    .record(gpu, p, rows)
}

/// `out (+)= src`: a gradient reaching an activation.
pub fn accumulate(gpu: &Gpu, p: &mut Program, src: View, out: View, c4: usize, acc: bool, rows: Rows) -> Result<()> {
    Elementwise {
        entry: "accumulate",
        views: views(gpu, src, None, out, None),
        c4,
        flags: accumulate_flag(acc),
        bias_stride: 0,
        drop_percent: 0,
    }
    .record(gpu, p, rows)
}

/// `out = max(x, 0)`.
pub fn relu_forward(gpu: &Gpu, p: &mut Program, x: View, out: View, c4: usize, rows: Rows) -> Result<()> {
    Elementwise {
        entry: "relu_forward",
        views: views(gpu, x, None, out, None),
        c4,
        flags: 0,
        bias_stride: 0,
        drop_percent: 0,
    }
    .record(gpu, p, rows)
}

/// The operands of `out (+)= dy · [y > 0]`.
#[derive(Clone, Debug)]
pub struct ReluBackward {
    /// The ReLU's output.
    pub y: View,
    pub dy: View,
    pub out: View,
    pub c4: usize,
    pub accumulate: bool,
}

pub fn relu_backward(gpu: &Gpu, p: &mut Program, op: ReluBackward, rows: Rows) -> Result<()> {
    Elementwise {
        entry: "relu_backward",
        views: views(gpu, op.y, Some(op.dy), op.out, None),
        c4: op.c4,
        flags: accumulate_flag(op.accumulate),
        bias_stride: 0,
        drop_percent: 0,
    }
    .record(gpu, p, rows)
}

/// The operands of the gate `out = tanh(z[:h] + β) · σ(z[h:] + β)` with `h` = `half4` vec4s and β a per-image
/// table `[images, 2·half4]`, and of its gradient.
#[derive(Clone, Debug)]
pub struct Gate {
    pub z: View,
    pub bias: Option<View>,
    pub half4: usize,
}

impl Gate {
    fn flags(&self) -> u32 {
        if self.bias.is_some() {
            flags::BIAS
        } else {
            0
        }
    }
}

/// `out = tanh(z[:h] + β) · σ(z[h:] + β)`.
pub fn gate_forward(gpu: &Gpu, p: &mut Program, gate: Gate, out: View, rows: Rows) -> Result<()> {
    let fl = gate.flags();
    Elementwise {
        entry: "gate_forward",
        views: views(gpu, gate.z, gate.bias, out, None),
        c4: gate.half4,
        flags: fl,
        bias_stride: 2 * gate.half4,
        drop_percent: 0,
    }
    .record(gpu, p, rows)
}

/// `dz (+)=` the gradient of [`gate_forward`] with respect to z, from `dout`.
pub fn gate_backward(gpu: &Gpu, p: &mut Program, gate: Gate, dout: View, dz: View, rows: Rows) -> Result<()> {
    let fl = gate.flags();
    Elementwise {
        entry: "gate_backward",
        views: views(gpu, gate.z, gate.bias, dz, Some(dout)),
        c4: gate.half4,
        flags: fl,
        bias_stride: 2 * gate.half4,
        drop_percent: 0,
    }
    .record(gpu, p, rows)
}

/// The operands of inverted dropout `out (+)= x · keep / (1 − rate)` (see elementwise.wgsl's `dropout`).
#[derive(Clone, Debug)]
pub struct Dropout {
    pub x: View,
    pub out: View,
    /// A buffer whose first word is the step's key (`rng::dropout_key`).
    pub key: View,
    pub c4: usize,
    /// The rate in percent (`Config::dropout`).
    pub percent: u8,
    pub accumulate: bool,
}

/// Dropout's forward, or its backward (the same mask and scale on the gradient), on image-major `rows`.
pub fn dropout(gpu: &Gpu, p: &mut Program, op: Dropout, rows: Rows) -> Result<()> {
    anyhow::ensure!(
        rows.geo.order == super::prelude::IMAGE_MAJOR,
        "dropout runs in training passes, whose rows are image-major"
    );
    Elementwise {
        entry: "dropout",
        views: views(gpu, op.x, None, op.out, Some(op.key)),
        c4: op.c4,
        flags: accumulate_flag(op.accumulate),
        bias_stride: 0,
        drop_percent: op.percent,
    }
    .record(gpu, p, rows)
}
