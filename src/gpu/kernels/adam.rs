//! The Adam update (`shaders/adam.wgsl`), Keras semantics, over the whole flat parameter vector in one dispatch,
//! and the Polyak average of the parameters after it. CPU twins: `cpu::adam_update`, `cpu::ema_update`.

use super::{groups64, Family, Launch, Uniform};
use crate::gpu::record::{Label, Program};
use crate::gpu::Gpu;
use anyhow::Result;

pub const FAMILY: Family = Family {
    name: "adam",
    source: include_str!("../../../shaders/adam.wgsl"),
    prepend: &[],
    uniforms: &[AdamParams::layout],
};

uniform_struct! {
    /// `AdamParams` of adam.wgsl.
    pub struct AdamParams {
        pub n4: u32,
        pub lr_t: f32,
        pub beta1: f32,
        pub beta2: f32,
        pub eps: f32,
        pub ema_rate: f32,
        pub _pad1: u32,
        pub _pad2: u32,
    }
}

bindings! {
    /// The buffers of `adam_update`: the GPU parameter layout throughout.
    pub struct AdamViews {
        params: 1 ReadWrite,
        grads: 2 Read,
        m: 3 ReadWrite,
        v: 4 ReadWrite,
    }
}

bindings! {
    /// The buffers of `ema_update`.
    pub struct EmaViews {
        params: 1 ReadWrite,
        ema: 5 ReadWrite,
    }
}

/// `ema ← ema − (1 − decay) · (ema − θ)` over the whole parameter vector (after the step's Adam update).
pub fn ema_update(gpu: &Gpu, p: &mut Program, views: EmaViews, decay: f64) -> Result<usize> {
    let n4 = views.params.len / 4;
    Launch {
        family: FAMILY.name,
        entry: "ema_update",
        consts: &[],
        views,
        uniform: AdamParams {
            n4: n4 as u32,
            ema_rate: (1.0 - decay) as f32,
            ..Default::default()
        },
        workgroups: groups64(n4),
        label: Label::default(),
    }
    .record(gpu, p)
}

/// Adam's uniform block for `n4` vec4s and a step size `lr_t`.
pub fn adam_uniform(n4: usize, lr_t: f32, cfg: &crate::cpu::AdamConfig) -> AdamParams {
    AdamParams {
        n4: n4 as u32,
        lr_t,
        beta1: cfg.beta1 as f32,
        beta2: cfg.beta2 as f32,
        eps: cfg.eps as f32,
        ..Default::default()
    }
}

/// One Adam update of the whole parameter vector; returns the dispatch index so the step size can be rewritten
/// with [`adam_uniform`].
pub fn adam_update(
    gpu: &Gpu,
    p: &mut Program,
    views: AdamViews,
    lr_t: f32,
    cfg: &crate::cpu::AdamConfig,
) -> Result<usize> {
    let n4 = views.params.len / 4;
    Launch {
        family: FAMILY.name,
        entry: "adam_update",
        consts: &[],
        views,
        uniform: adam_uniform(n4, lr_t, cfg),
        workgroups: groups64(n4),
        label: Label::default(),
    }
    .record(gpu, p)
}
