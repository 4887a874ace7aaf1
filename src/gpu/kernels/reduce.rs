//! Deterministic sums (`shaders/reduce.wgsl`): `reduce_chunks`, the second pass of every weight gradient, and
//! `sum_images`, each image's NLL from the per-pixel losses. CPU twins: `cpu::reduce_chunks` (through
//! `cpu::conv_backward_weight`) and `cpu::sum_images`.

use super::prelude::{flags, image_consts};
use super::{groups64, Family, Launch, Uniform};
use crate::gpu::buffers::View;
use crate::gpu::record::{Label, Program};
use crate::gpu::Gpu;
use crate::model::ImageShape;
use anyhow::Result;

pub const FAMILY: Family = Family {
    name: "reduce",
    source: include_str!("../../../shaders/reduce.wgsl"),
    prepend: &[],
    uniforms: &[ReduceParams::layout],
};

uniform_struct! {
    /// `ReduceParams` of reduce.wgsl.
    pub struct ReduceParams {
        pub len: u32,
        pub n_chunks: u32,
        pub flags: u32,
        pub split: u32,
    }
}

bindings! {
    /// The buffers of `reduce_chunks`.
    pub struct ReduceChunksViews {
        input: 1 Read,
        out0: 2 ReadWrite,
        out1: 3 ReadWrite,
    }
}

bindings! {
    /// The buffers of `sum_images`.
    pub struct SumImagesViews {
        input: 1 Read,
        out0: 2 ReadWrite,
    }
}

/// `out0 ‖ out1 = Σ_c input[c · len4 + i]` over vec4s, the first `split` vec4s into out0.
#[derive(Clone, Debug)]
pub struct ReduceChunks {
    pub input: View,
    pub out0: View,
    pub out1: View,
    pub len4: usize,
    pub split: usize,
    pub n_chunks: usize,
}

pub fn reduce_chunks(gpu: &Gpu, p: &mut Program, op: ReduceChunks) -> Result<()> {
    Launch {
        family: FAMILY.name,
        entry: "reduce_chunks",
        consts: &[],
        views: ReduceChunksViews {
            input: op.input,
            out0: op.out0,
            out1: op.out1,
        },
        uniform: ReduceParams {
            len: op.len4 as u32,
            n_chunks: op.n_chunks as u32,
            flags: 0,
            split: op.split as u32,
        },
        workgroups: groups64(op.len4),
        label: Label::default(),
    }
    .record(gpu, p)?;
    Ok(())
}

/// Per-image sums of the per-pixel losses of images of `image`'s shape: `output[i] (+)= Σ_q loss[i · pixels + q]`.
pub fn sum_images(
    gpu: &Gpu,
    p: &mut Program,
    loss: View,
    output: View,
    images: usize,
    image: ImageShape,
    accumulate: bool,
) -> Result<()> {
    let len4 = images.div_ceil(4);
    Launch {
        family: FAMILY.name,
        entry: "sum_images",
        consts: &image_consts(image),
        views: SumImagesViews {
            input: loss,
            out0: output,
        },
        uniform: ReduceParams {
            len: len4 as u32,
            n_chunks: images as u32,
            flags: if accumulate { flags::ACCUMULATE } else { 0 },
            split: 0,
        },
        workgroups: groups64(len4),
        label: Label::default(),
    }
    .record(gpu, p)?;
    Ok(())
}
