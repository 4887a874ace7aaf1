//! The Bernoulli draw of one pixel of every image (`shaders/sample.wgsl`). CPU twin: `cpu::sample_pixel`.

use super::prelude::image_consts;
use super::{groups64, Family, Launch, Uniform};
use crate::gpu::record::{Label, Program};
use crate::gpu::Gpu;
use crate::model::ImageShape;
use anyhow::Result;

pub const FAMILY: Family = Family {
    name: "sample",
    source: include_str!("../../../shaders/sample.wgsl"),
    prepend: &[],
    uniforms: &[SampleParams::layout],
};

uniform_struct! {
    /// `SampleParams` of sample.wgsl.
    pub struct SampleParams {
        pub count: u32,
        pub pixel: u32,
        pub key: u32,
        pub first_image: u32,
        pub stride: u32,
        pub temperature: f32,
        pub _pad1: u32,
        pub _pad2: u32,
    }
}

bindings! {
    /// The buffers of `sample_pixel`.
    pub struct SampleViews {
        logits: 1 Read,
        image: 2 ReadWrite,
        probs: 3 ReadWrite,
    }
}

/// Which pixel of which images, and the draws' key.
#[derive(Clone, Copy, Debug)]
pub struct SamplePixel {
    pub count: usize,
    pub pixel: usize,
    pub key: u32,
    pub first_image: u32,
    /// 0: logits and image are image-major; else position-major with `stride` images per position.
    pub stride: usize,
    /// p = σ(logit / temperature).
    pub temperature: f32,
    pub image: ImageShape,
}

/// Draws pixel `op.pixel` of `op.count` images from their logits, writing the image and the probability.
pub fn sample_pixel(gpu: &Gpu, p: &mut Program, views: SampleViews, op: SamplePixel) -> Result<()> {
    Launch {
        family: FAMILY.name,
        entry: "sample_pixel",
        consts: &image_consts(op.image),
        views,
        uniform: SampleParams {
            count: op.count as u32,
            pixel: op.pixel as u32,
            key: op.key,
            first_image: op.first_image,
            stride: op.stride as u32,
            temperature: op.temperature,
            ..Default::default()
        },
        workgroups: groups64(op.count),
        label: Label::default(),
    }
    .record(gpu, p)?;
    Ok(())
}
