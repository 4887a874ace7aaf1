//! The whole network at one pixel per dispatch (`shaders/pixel_net.wgsl`): the incremental sampler's step on
//! GPUs (the `net` version of the pixel kernels). One workgroup per image walks a layer program the host writes
//! from the network description ([`net_program`]). CPU twin: `cpu::sample_incremental`, which computes the same
//! layers at the same positions.

use super::prelude::{flags, image_consts};
use super::{Family, Launch, Uniform};
use crate::gpu::record::{Label, Program};
use crate::gpu::Gpu;
use crate::model::{Activation, ImageShape, Layer, Network, Schedule};
use anyhow::{ensure, Result};

pub const FAMILY: Family = Family {
    name: "pixel_net",
    source: include_str!("../../../shaders/pixel_net.wgsl"),
    prepend: &[],
    uniforms: &[NetParams::layout],
};

uniform_struct! {
    /// `NetParams` of pixel_net.wgsl.
    pub struct NetParams {
        pub q0: u32,
        pub npos: u32,
        pub images: u32,
        pub n_ops: u32,
        pub ops_at: u32,
        pub key: u32,
        pub first_image: u32,
        pub temperature: f32,
    }
}

bindings! {
    /// The buffers of `pixel_net`.
    pub struct NetViews {
        /// The layer program (a 64 KiB uniform window).
        program: 1 Uniform,
        /// Every activation's cache, one buffer.
        acts: 2 ReadWrite,
        params: 3 Read,
        taps: 4 Read,
        labels: 5 Read,
        probs: 6 ReadWrite,
    }
}

/// One step of `pixel_net`: ops `u.ops_at ..` (`u.n_ops` of them) at positions q0 .. q0 + npos of `u.images` images
/// of `image`'s shape.
pub fn pixel_net(gpu: &Gpu, p: &mut Program, views: NetViews, u: NetParams, image: ImageShape) -> Result<()> {
    Launch {
        family: FAMILY.name,
        entry: "pixel_net",
        consts: &image_consts(image),
        views,
        uniform: u,
        workgroups: u.images as usize,
        label: Label {
            what: format!("pixel_net {} positions", u.npos),
            flops: 0.0,
        },
    }
    .record(gpu, p)?;
    Ok(())
}

/// Bytes of the layer program's uniform window (pixel_net.wgsl's `program` array).
pub const PROGRAM_BYTES: usize = 65536;

/// pixel_net's op kinds (pixel_net.wgsl).
const OP_CONV: u32 = 0;
const OP_ADD: u32 = 1;
const OP_GATE: u32 = 2;
const OP_RELU: u32 = 3;
const OP_SAMPLE: u32 = 4;
const OP_COPY: u32 = 5;
const NONE: u32 = u32::MAX;

/// The program `pixel_net` walks: every activation's (base, C4) in the shared cache, then the ops of the
/// pixel-scheduled layers followed by the draw, then the ops of the row-scheduled layers, then those of the
/// ahead-scheduled ones.
pub struct NetProgram {
    pub words: Vec<[u32; 4]>,
    /// vec4s of the shared activation cache.
    pub cache_len4: usize,
    pub pixel_ops: (usize, usize),
    pub row_ops: (usize, usize),
    pub ahead_ops: (usize, usize),
}

/// The layer program of `net` for `rows` images per position.
pub fn net_program(net: &Network, rows: usize) -> Result<NetProgram> {
    let mut words = Vec::new();
    let mut base = 0;
    for a in 0..net.act_channels.len() {
        let c4 = net.gpu_channels(a) / 4;
        words.push([base as u32, c4 as u32, 0, 0]);
        base += net.pixels() * rows * c4;
    }
    let schedule = net.schedule();
    let t = &net.params.tensors;
    let off = |i: usize| (t[i].gpu_offset / 4) as u32;
    let ops = |which: Schedule, words: &mut Vec<[u32; 4]>| {
        let at = words.len();
        let mut tap0 = 0;
        for (l, layer) in net.layers.iter().enumerate() {
            let out = (l + 1) as u32;
            let op = match *layer {
                Layer::Conv { conv, input } => {
                    let c = &net.convs[conv];
                    let relu = if c.act == Activation::Relu { flags::RELU } else { 0 };
                    let cb = c.class_bias.filter(|_| net.config.is_conditional()).map_or(NONE, off);
                    let (cin4, cout4) = (net.gpu_channels(input) / 4, net.gpu_channels(l + 1) / 4);
                    let op = [
                        [OP_CONV, input as u32, NONE, out],
                        [off(c.weight), off(c.bias), cin4 as u32, cout4 as u32],
                        [tap0, c.taps.len() as u32, relu, cb],
                    ];
                    tap0 += c.taps.len() as u32;
                    op
                }
                Layer::Add { a, b } => [[OP_ADD, a as u32, b as u32, out], [0; 4], [0, 0, 0, NONE]],
                Layer::Gate { input, class_bias } => {
                    let cb = class_bias.filter(|_| net.config.is_conditional()).map_or(NONE, off);
                    [[OP_GATE, input as u32, NONE, out], [0; 4], [0, 0, 0, cb]]
                }
                Layer::Relu { input } => [[OP_RELU, input as u32, NONE, out], [0; 4], [0, 0, 0, NONE]],
                // Sampling uses the whole network: dropout is a copy.
                Layer::Dropout { input } => [[OP_COPY, input as u32, NONE, out], [0; 4], [0, 0, 0, NONE]],
            };
            if schedule[l + 1] == which {
                words.extend(op);
            }
        }
        if which == Schedule::Pixel {
            words.extend([[OP_SAMPLE, net.logits_act() as u32, NONE, 0], [0; 4], [0, 0, 0, NONE]]);
        }
        (at, (words.len() - at) / 3)
    };
    let pixel_ops = ops(Schedule::Pixel, &mut words);
    let row_ops = ops(Schedule::Row, &mut words);
    let ahead_ops = ops(Schedule::Ahead, &mut words);
    ensure!(
        words.len() <= PROGRAM_BYTES / 16,
        "the network's layer program ({} entries) does not fit pixel_net's 64 KiB program",
        words.len()
    );
    Ok(NetProgram {
        words,
        cache_len4: base,
        pixel_ops,
        row_ops,
        ahead_ops,
    })
}
