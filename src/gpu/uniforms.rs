//! The kernels' uniform blocks: `#[repr(C)]` structs that mirror the WGSL structs of `shaders/` field by field
//! (a test compares their sizes and offsets with naga's layout of the WGSL), and the flag bits of the prelude.

use bytemuck::{Pod, Zeroable};

/// Flag bits of a kernel's `flags` field; `shaders/prelude.wgsl` declares the same `FLAG_*` constants (a test
/// checks that both sides agree). Each bit has one meaning in every kernel.
pub mod flags {
    /// Apply max(·, 0) to the result.
    pub const RELU: u32 = 1;
    /// Add the result to what the output already holds.
    pub const ACCUMULATE: u32 = 2;
    /// Also write result + residual (a fused residual add).
    pub const RESIDUAL: u32 = 4;
    /// Multiply the result by [y > 0] (the gradient through a ReLU whose output is y).
    pub const MASK: u32 = 8;
    /// Loss epilogue: write the gradient of the mean BCE instead of the logit.
    pub const LOSS_GRAD: u32 = 16;
    /// Add the bias (conv_pixel: only its first dispatch of a conv does; gates and class tables: there is one).
    pub const BIAS: u32 = 32;
    /// Skip the plain output (only the fused sum is needed).
    pub const NO_OUTPUT: u32 = 64;

    /// Every flag with its WGSL name, for the agreement test.
    pub const ALL: [(&str, u32); 7] = [
        ("FLAG_RELU", RELU),
        ("FLAG_ACCUMULATE", ACCUMULATE),
        ("FLAG_RESIDUAL", RESIDUAL),
        ("FLAG_MASK", MASK),
        ("FLAG_LOSS_GRAD", LOSS_GRAD),
        ("FLAG_BIAS", BIAS),
        ("FLAG_NO_OUTPUT", NO_OUTPUT),
    ];
}

/// `Geometry` (prelude.wgsl): how a kernel's rows map to (image, pixel) and buffer positions.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Geometry {
    pub rows: u32,
    pub images: u32,
    pub first_pixel: u32,
    pub order: u32,
}

/// `Geometry::order` values.
pub const IMAGE_MAJOR: u32 = 0;
pub const POSITION_MAJOR: u32 = 1;

impl Geometry {
    /// Every pixel of `images` images, image-major (training, evaluation, the naive sampler).
    pub fn image_major(images: usize) -> Geometry {
        Geometry {
            rows: (images * crate::model::PIXELS) as u32,
            images: images as u32,
            first_pixel: 0,
            order: IMAGE_MAJOR,
        }
    }

    /// Pixels `first_pixel .. first_pixel + pixels` of `images` images stored position-major (the sampler).
    pub fn position_major(images: usize, first_pixel: usize, pixels: usize) -> Geometry {
        Geometry {
            rows: (images * pixels) as u32,
            images: images as u32,
            first_pixel: first_pixel as u32,
            order: POSITION_MAJOR,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows as usize
    }
}

/// `ConvParams` of conv_raster.wgsl and conv_tiled.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ConvParams {
    pub geo: Geometry,
    pub cin4: u32,
    pub cout4: u32,
    pub tap0: u32,
    pub n_taps: u32,
    pub flags: u32,
    pub bias_stride: u32,
    pub chunk: u32,
    pub n_chunks: u32,
    pub loss_scale: f32,
    pub _pad: [u32; 3],
}

/// `PixelParams` of conv_pixel.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct PixelParams {
    pub rows: u32,
    pub cin4: u32,
    pub cout4: u32,
    pub flags: u32,
    pub pixel: u32,
    pub bias_stride: u32,
    pub _pad: [u32; 2],
    /// Taps of segment s at `taps[s]` (0: unused).
    pub taps: [u32; 8],
}

/// `EltParams` of elementwise.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct EltParams {
    pub geo: Geometry,
    pub c4: u32,
    pub flags: u32,
    pub bias_stride: u32,
    pub _pad: u32,
}

/// `ClassParams` of class_bias.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ClassParams {
    pub images: u32,
    pub c4: u32,
    pub classes: u32,
    pub flags: u32,
}

/// `ReduceParams` of reduce.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ReduceParams {
    pub len: u32,
    pub n_chunks: u32,
    pub flags: u32,
    pub split: u32,
}

/// `AdamParams` of adam.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct AdamParams {
    pub n4: u32,
    pub lr_t: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub _pad: [u32; 3],
}

/// `SampleParams` of sample.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct SampleParams {
    pub count: u32,
    pub pixel: u32,
    pub key: u32,
    pub first_image: u32,
    pub stride: u32,
    pub _pad: [u32; 3],
}

/// `NetParams` of pixel_net.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct NetParams {
    pub q0: u32,
    pub npos: u32,
    pub images: u32,
    pub n_ops: u32,
    pub ops_at: u32,
    pub key: u32,
    pub first_image: u32,
    pub _pad: u32,
}

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// Bytes of one uniform slot of a [`Program`](super::record::Program): the largest block.
pub const UNIFORM_BYTES: usize = max(
    max(
        max(size_of::<ConvParams>(), size_of::<PixelParams>()),
        max(size_of::<EltParams>(), size_of::<ClassParams>()),
    ),
    max(
        max(size_of::<ReduceParams>(), size_of::<AdamParams>()),
        max(size_of::<SampleParams>(), size_of::<NetParams>()),
    ),
);

/// Every uniform struct with its WGSL family and name, for the layout test.
pub fn mirrored() -> Vec<(&'static str, &'static str, usize)> {
    vec![
        ("conv_raster", "ConvParams", size_of::<ConvParams>()),
        ("conv_tiled", "ConvParams", size_of::<ConvParams>()),
        ("conv_pixel", "PixelParams", size_of::<PixelParams>()),
        ("elementwise", "EltParams", size_of::<EltParams>()),
        ("class_bias", "ClassParams", size_of::<ClassParams>()),
        ("reduce", "ReduceParams", size_of::<ReduceParams>()),
        ("adam", "AdamParams", size_of::<AdamParams>()),
        ("sample", "SampleParams", size_of::<SampleParams>()),
        ("pixel_net", "NetParams", size_of::<NetParams>()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_agree_with_the_prelude() {
        let prelude = super::super::shader::PRELUDE;
        for (name, value) in flags::ALL {
            let decl = format!("const {name}: u32 = {value}u;");
            assert!(prelude.contains(&decl), "prelude.wgsl lacks `{decl}`");
        }
        let declared = prelude.matches("const FLAG_").count();
        assert_eq!(
            declared,
            flags::ALL.len(),
            "prelude.wgsl declares flags that Rust does not mirror"
        );
        let bits: Vec<u32> = flags::ALL.iter().map(|f| f.1).collect();
        assert!(bits.iter().all(|b| b.is_power_of_two()));
        assert_eq!(
            bits.iter().fold(0, |a, b| a | b).count_ones() as usize,
            bits.len(),
            "two flags share a bit"
        );
    }
}
