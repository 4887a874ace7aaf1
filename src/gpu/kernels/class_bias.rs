//! Class conditioning (`shaders/class_bias.wgsl`): the per-image bias table a conditional conv or gate reads, and
//! the deterministic per-class gradient sum. CPU twins: `cpu::class_bias_add`, `cpu::image_sums`,
//! `cpu::class_bias_backward`.

use super::prelude::{flags, image_consts};
use super::{groups64, Family, Launch, Uniform};
use crate::gpu::buffers::View;
use crate::gpu::record::{Label, Program};
use crate::gpu::Gpu;
use crate::model::ImageShape;
use anyhow::Result;

pub const FAMILY: Family = Family {
    name: "class_bias",
    source: include_str!("../../../shaders/class_bias.wgsl"),
    prepend: &[],
    uniforms: &[ClassParams::layout],
};

uniform_struct! {
    /// `ClassParams` of class_bias.wgsl.
    pub struct ClassParams {
        pub images: u32,
        pub c4: u32,
        pub classes: u32,
        pub flags: u32,
    }
}

bindings! {
    /// The buffers of every class_bias entry point (unused ones bind a dummy).
    pub struct ClassViews {
        /// The bias (class_bias_add), the gradient (image_sums) or the per-image sums (class_bias_backward).
        a: 1 Read,
        class_bias: 2 Read,
        labels: 3 Read,
        output: 4 ReadWrite,
    }
}

/// One entry point over `n` invocations; `image` sets the image shape's pipeline constants where the entry maps
/// pixels (image_sums).
fn launch(
    gpu: &Gpu,
    p: &mut Program,
    entry: &'static str,
    views: ClassViews,
    u: ClassParams,
    n: usize,
    image: Option<ImageShape>,
) -> Result<()> {
    let consts = image.map(image_consts);
    Launch {
        family: FAMILY.name,
        entry,
        consts: consts.as_ref().map_or(&[][..], |c| &c[..]),
        views,
        uniform: u,
        workgroups: groups64(n),
        label: Label::default(),
    }
    .record(gpu, p)?;
    Ok(())
}

/// The operands of the per-image bias table `out[i] = [bias +] class_bias[labels[i]]`.
#[derive(Clone, Debug)]
pub struct ClassBiasAdd {
    pub bias: Option<View>,
    pub class_bias: View,
    pub labels: View,
    pub out: View,
    pub images: usize,
    pub c4: usize,
    /// Rows of the class-bias table (labels are below this).
    pub classes: usize,
}

pub fn class_bias_add(gpu: &Gpu, p: &mut Program, op: ClassBiasAdd) -> Result<()> {
    let u = ClassParams {
        images: op.images as u32,
        c4: op.c4 as u32,
        classes: op.classes as u32,
        flags: if op.bias.is_some() { flags::BIAS } else { 0 },
    };
    let views = ClassViews {
        a: op.bias.unwrap_or_else(|| gpu.dummy.view()),
        class_bias: op.class_bias,
        labels: op.labels,
        output: op.out,
    };
    launch(gpu, p, "class_bias_add", views, u, op.images * op.c4, None)
}

/// The operands of a class-bias gradient from a pre-activation gradient `grad` (image-major
/// `[images · pixels, c4]`).
#[derive(Clone, Debug)]
pub struct ClassBiasBackward {
    pub grad: View,
    pub labels: View,
    /// Scratch: per-image sums `[images, c4]`.
    pub sums: View,
    pub out: View,
    pub images: usize,
    pub c4: usize,
    pub classes: usize,
    pub image: ImageShape,
}

/// Per-image sums into `sums`, then per-class sums in image order into `out` — deterministic.
pub fn class_bias_backward(gpu: &Gpu, p: &mut Program, op: ClassBiasBackward) -> Result<()> {
    let classes = op.classes;
    let u = ClassParams {
        images: op.images as u32,
        c4: op.c4 as u32,
        classes: classes as u32,
        flags: 0,
    };
    let sums = ClassViews {
        a: op.grad,
        class_bias: gpu.dummy.view(),
        labels: op.labels.clone(),
        output: op.sums.clone(),
    };
    launch(gpu, p, "image_sums", sums, u, op.images * op.c4, Some(op.image))?;
    let per_class = ClassViews {
        a: op.sums,
        class_bias: gpu.dummy.view(),
        labels: op.labels,
        output: op.out,
    };
    launch(gpu, p, "class_bias_backward", per_class, u, classes * op.c4, None)
}
