//! A user's own image, made into what the model sees: a binarized 28×28 Fashion-MNIST-like image.
//!
//! The steps, in order:
//! 1. Read the file (a regular file of at most [`MAX_IMAGE_BYTES`]: a FIFO or a device is refused before
//!    anything is read) and decode it (PNG, JPEG, GIF — its first frame — or BMP; the format is found from the
//!    contents, not the name). An unreadable file, a file that is no such image, and an image without pixels are
//!    errors naming the file.
//! 2. Luminance: a colour image becomes grey with the `image` crate's Rec. 709 weights
//!    (0.2126 R + 0.7152 G + 0.0722 B, on the stored sRGB values); 16-bit and float images are scaled to 8 bits.
//! 3. `--invert` (optional): v → 255 − v, for dark drawings on a light background. Fashion-MNIST shows light
//!    garments on black, and nothing is inverted unless asked.
//! 4. Transparency: transparent pixels become background (black after step 3): v → v · alpha / 255.
//! 5. A non-square image is padded to a square with background, centred, so that its shape is not stretched
//!    (Fashion-MNIST's garments are centred in a square frame too).
//! 6. Resize to 28×28 with the `image` crate's `Triangle` filter (bilinear; when shrinking, the kernel widens to
//!    cover every source pixel, so it averages like a box filter would and small details are not dropped). An
//!    image that is already 28×28 is not resampled at all.
//! 7. Binarize exactly like the data ([`crate::data::binarize`]): v < 85 (i.e. v / 256 < 0.33) → 0, else 1.

use crate::data::{binarize, IMAGE_SIZE, PIXELS};
use anyhow::{bail, Context, Result};
use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, ImageReader, Luma};
use std::io::Cursor;
use std::path::{Path, PathBuf};

/// The largest image file read.
pub const MAX_IMAGE_BYTES: u64 = 256 << 20;

/// A user's image, prepared.
#[derive(Clone, Debug)]
pub struct UserImage {
    pub path: PathBuf,
    /// The file's own size.
    pub width: u32,
    pub height: u32,
    /// The 28×28 grey image after steps 2–6 (row-major, 0–255).
    pub grey: Vec<u8>,
    /// The 28×28 binarized image (0/1), what the model sees.
    pub binary: Vec<u8>,
}

impl UserImage {
    /// The pixels that are 1.
    pub fn ones(&self) -> usize {
        self.binary.iter().filter(|&&v| v == 1).count()
    }

    /// The file name for captions (the last path component).
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string())
    }
}

/// Reads and prepares the image at `path` (see the module documentation).
pub fn load(path: &Path, invert: bool) -> Result<UserImage> {
    let bytes = crate::fsio::read_regular(path, "image", MAX_IMAGE_BYTES)?;
    let image = decode(path, &bytes)?;
    let (width, height) = (image.width(), image.height());
    let grey = prepare(&image, invert);
    let binary = grey.iter().map(|&v| binarize(v)).collect();
    Ok(UserImage {
        path: path.to_path_buf(),
        width,
        height,
        grey,
        binary,
    })
}

/// Loads every path in turn; the first failure is the error.
pub fn load_all(paths: &[PathBuf], invert: bool) -> Result<Vec<UserImage>> {
    paths.iter().map(|p| load(p, invert)).collect()
}

/// Decodes `bytes` (the contents of `path`) as an image of a format found from the contents.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<DynamicImage> {
    let shown = path.display();
    if bytes.is_empty() {
        bail!("{shown} is empty (0 bytes), not an image");
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .with_context(|| format!("reading {shown}"))?;
    let Some(format) = reader.format() else {
        bail!("{shown} is not an image pixelcnn can read: its contents are not PNG, JPEG, GIF or BMP");
    };
    let image = reader.decode().map_err(|e| {
        anyhow::anyhow!(
            "{shown} is not a readable {} image: {e}",
            format.extensions_str().first().unwrap_or(&"").to_uppercase()
        )
    })?;
    if image.width() == 0 || image.height() == 0 {
        bail!("{shown} has no pixels ({}×{})", image.width(), image.height());
    }
    Ok(image)
}

/// Steps 2–6: luminance, inversion, transparency, square padding and the resize to 28×28.
pub fn prepare(image: &DynamicImage, invert: bool) -> Vec<u8> {
    let la = image.to_luma_alpha8();
    let (w, h) = la.dimensions();
    let side = w.max(h);
    let (x0, y0) = ((side - w) / 2, (side - h) / 2);
    let mut square = GrayImage::from_pixel(side, side, Luma([0]));
    for (x, y, p) in la.enumerate_pixels() {
        let [l, a] = p.0;
        let v = if invert { 255 - l } else { l };
        let v = (v as u32 * a as u32 + 127) / 255;
        square.put_pixel(x + x0, y + y0, Luma([v as u8]));
    }
    let n = IMAGE_SIZE as u32;
    let small = if side == n {
        square
    } else {
        image::imageops::resize(&square, n, n, FilterType::Triangle)
    };
    let out = small.into_raw();
    debug_assert_eq!(out.len(), PIXELS);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgba, RgbaImage};

    fn png_bytes(image: &DynamicImage) -> Vec<u8> {
        let mut v = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut v), image::ImageFormat::Png)
            .unwrap();
        v
    }

    #[test]
    fn a_28x28_grey_image_is_binarized_exactly_like_the_data() {
        let raw: Vec<u8> = (0..PIXELS).map(|i| (i * 37 % 256) as u8).collect();
        let img = DynamicImage::ImageLuma8(GrayImage::from_raw(28, 28, raw.clone()).unwrap());
        let decoded = decode(Path::new("x.png"), &png_bytes(&img)).unwrap();
        let grey = prepare(&decoded, false);
        assert_eq!(grey, raw, "no resampling at 28×28");
        let binary: Vec<u8> = grey.iter().map(|&v| binarize(v)).collect();
        assert_eq!(binary, raw.iter().map(|&v| u8::from(v >= 85)).collect::<Vec<_>>());
        // 84 → 0 and 85 → 1, as the data.
        assert_eq!((binarize(84), binarize(85)), (0, 1));
        let inverted = prepare(&decoded, true);
        assert!(inverted.iter().zip(&raw).all(|(&i, &r)| i == 255 - r));
    }

    #[test]
    fn colour_alpha_padding_and_resizing() {
        // A 40×20 colour image: a pure green bar on the left half, transparent red on the right half.
        let mut img = RgbaImage::from_pixel(40, 20, Rgba([255, 0, 0, 0]));
        for y in 0..20 {
            for x in 0..20 {
                img.put_pixel(x, y, Rgba([0, 255, 0, 255]));
            }
        }
        let grey = prepare(&DynamicImage::ImageRgba8(img), false);
        assert_eq!(grey.len(), PIXELS);
        // Padded to 40×40 centred (rows 10..30 hold the image), then shrunk ×0.7: the top and bottom rows are
        // background, the green (luminance 0.7152 · 255 = 182) left half is bright, the transparent right half dark.
        assert_eq!(grey[0], 0);
        assert_eq!(grey[27 * 28 + 5], 0);
        assert!((170..=190).contains(&grey[14 * 28 + 5]), "{}", grey[14 * 28 + 5]);
        assert_eq!(grey[14 * 28 + 22], 0);
    }

    #[test]
    fn bad_files_are_errors_naming_the_file() {
        let p = Path::new("dir/shoe.png");
        for (bytes, word) in [
            (&b""[..], "empty"),
            (&b"this is text, not a picture\n"[..], "not an image"),
            (&b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR broken"[..], "not a readable PNG"),
        ] {
            let err = decode(p, bytes).unwrap_err().to_string();
            assert!(err.contains("dir/shoe.png") && err.contains(word), "{err}");
        }
        let err = load(Path::new("/no/such/file.png"), false).unwrap_err();
        assert!(format!("{err:#}").contains("/no/such/file.png"), "{err:#}");
    }
}
