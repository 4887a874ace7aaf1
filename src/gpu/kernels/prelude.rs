//! The host's half of `shaders/prelude.wgsl`, which the host prepends to every family: the flag bits and the
//! row ↔ position [`Geometry`] every row-parallel kernel takes in its uniform block, and the image shape's
//! pipeline constants.

use crate::model::ImageShape;

/// Flag bits of a kernel's `flags` uniform field, or of its `FLAGS` pipeline constant (the conv and elementwise
/// families); `shaders/prelude.wgsl` declares the same `FLAG_*` constants (a test checks that both sides agree).
/// Each bit has one meaning in every kernel.
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
    /// Add the bias (gates and class tables: there is one).
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

/// The shared prelude, prepended to every family.
pub const PRELUDE: &str = include_str!("../../../shaders/prelude.wgsl");

uniform_struct! {
    /// `Geometry` (prelude.wgsl): how a kernel's rows map to (image, pixel) and buffer positions.
    pub struct Geometry {
        pub rows: u32,
        pub images: u32,
        pub first_pixel: u32,
        pub order: u32,
    }
}

/// The pipeline constants `HEIGHT`, `WIDTH` and `PIXELS` of prelude.wgsl for images of `image`'s shape: every
/// kernel that maps rows to pixels takes them (constants, not uniforms, so that its divisions by them compile to
/// multiplications).
pub fn image_consts(image: ImageShape) -> [(&'static str, u32); 3] {
    [
        ("HEIGHT", image.height as u32),
        ("WIDTH", image.width as u32),
        ("PIXELS", image.pixels() as u32),
    ]
}

/// The rows of a dispatch: how they map to (image, pixel) and buffer positions (a uniform, [`Geometry`]), and the
/// images' shape (pipeline constants, [`image_consts`]). Every row-parallel launch takes one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rows {
    pub geo: Geometry,
    pub image: ImageShape,
}

impl Rows {
    /// Every pixel of `images` images, image-major (training, evaluation, the naive sampler).
    pub fn image_major(image: ImageShape, images: usize) -> Rows {
        Rows {
            geo: Geometry::image_major(images, image.pixels()),
            image,
        }
    }

    /// Pixels `first_pixel .. first_pixel + pixels` of `images` images stored position-major (the sampler).
    pub fn position_major(image: ImageShape, images: usize, first_pixel: usize, pixels: usize) -> Rows {
        Rows {
            geo: Geometry::position_major(images, first_pixel, pixels),
            image,
        }
    }

    pub fn rows(&self) -> usize {
        self.geo.rows()
    }

    /// The pipeline constants of these rows: their order and the image shape.
    pub fn consts(&self) -> [(&'static str, u32); 4] {
        let [h, w, p] = image_consts(self.image);
        [("ORDER", self.geo.order), h, w, p]
    }
}

/// `Geometry::order` values.
pub const IMAGE_MAJOR: u32 = 0;
pub const POSITION_MAJOR: u32 = 1;

impl Geometry {
    /// Every pixel of `images` images of `pixels` pixels, image-major (training, evaluation, the naive sampler).
    pub fn image_major(images: usize, pixels: usize) -> Geometry {
        Geometry {
            rows: (images * pixels) as u32,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_agree_with_the_prelude() {
        for (name, value) in flags::ALL {
            let decl = format!("const {name}: u32 = {value}u;");
            assert!(PRELUDE.contains(&decl), "prelude.wgsl lacks `{decl}`");
        }
        let declared = PRELUDE.matches("const FLAG_").count();
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
