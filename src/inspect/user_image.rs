//! A user's own image, made into what a model sees: a binarized image of the model's shape, prepared the way the
//! model's training images were.
//!
//! The steps, in order:
//! 1. Read the file (a regular file of at most [`MAX_IMAGE_BYTES`]: a FIFO or a device is refused before
//!    anything is read) and decode it (PNG, JPEG, GIF — its first frame — or BMP; the format is found from the
//!    contents, not the name). An unreadable file, a file that is no such image, and an image without pixels are
//!    errors naming the file; so is an image that declares more than [`MAX_DECODED_PIXELS`] pixels, refused from its
//!    header before anything is decoded.
//! 2. Luminance: a colour image becomes grey with the `image` crate's Rec. 709 weights
//!    (0.2126 R + 0.7152 G + 0.0722 B, on the stored sRGB values); 16-bit and float images are scaled to 8 bits.
//! 3. Inversion, v → 255 − v, when the model was trained on inverted images (`train --invert`, for dark drawings
//!    on a light background), and once more with `--invert`. Fashion-MNIST shows light garments on black, and its
//!    models invert nothing unless asked.
//! 4. Transparency: transparent pixels become background (black after step 3): v → v · alpha / 255.
//! 5. Size: an image of the model's size is used as it is. Any other size is refused unless `--resize` asks for a
//!    resize: then the image is padded with background to the model's aspect ratio, centred (so that its shape is
//!    not stretched), and resized with the `image` crate's `Triangle` filter (bilinear; when shrinking, the kernel
//!    widens to cover every source pixel, so it averages like a box filter would and small details are not
//!    dropped).
//! 6. Binarize with the model's threshold, as its training data was: v / 255 ≥ threshold → 1 (the default 0.33
//!    makes 84 → 0 and 85 → 1, exactly the seed's rule for Fashion-MNIST).

use crate::model::ImageShape;
use anyhow::{bail, Context, Result};
use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, ImageReader, Luma};
use std::io::Cursor;
use std::path::{Path, PathBuf};

/// The largest image file read.
pub const MAX_IMAGE_BYTES: u64 = 256 << 20;
/// The most pixels an image may declare (a 16,384 × 16,384 image): larger ones are refused from their header.
pub const MAX_DECODED_PIXELS: u64 = 1 << 28;

/// How to make a user's image into what a model sees.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preparation {
    /// The model's images.
    pub shape: ImageShape,
    /// The model's binarization threshold (grey / 255 ≥ threshold → 1).
    pub threshold: f64,
    /// Invert the greys (the model's own inversion, combined with `--invert`).
    pub invert: bool,
    /// Pad and resize an image of another size (`--resize`) instead of refusing it.
    pub resize: bool,
}

/// A user's image, prepared.
#[derive(Clone, Debug)]
pub struct UserImage {
    pub path: PathBuf,
    /// The file's own size.
    pub width: u32,
    pub height: u32,
    /// The grey image of the model's shape after steps 2–5 (row-major, 0–255).
    pub grey: Vec<u8>,
    /// The binarized image (0/1), what the model sees.
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

/// A grey level (0–255) binarized with `threshold`: grey / 255 ≥ threshold.
pub fn binarize(grey: u8, threshold: f64) -> u8 {
    u8::from(grey as f64 / 255.0 >= threshold)
}

/// Reads and prepares the image at `path` (see the module documentation).
pub fn load(path: &Path, prep: Preparation) -> Result<UserImage> {
    let bytes = crate::fsio::read_regular(path, "image", MAX_IMAGE_BYTES)?;
    let image = decode(path, &bytes)?;
    let (width, height) = (image.width(), image.height());
    let grey = prepare(path, &image, prep)?;
    let binary = grey.iter().map(|&v| binarize(v, prep.threshold)).collect();
    Ok(UserImage {
        path: path.to_path_buf(),
        width,
        height,
        grey,
        binary,
    })
}

/// Loads every path in turn; the first failure is the error.
pub fn load_all(paths: &[PathBuf], prep: Preparation) -> Result<Vec<UserImage>> {
    paths.iter().map(|p| load(p, prep)).collect()
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
    let format_name = format.extensions_str().first().unwrap_or(&"").to_uppercase();
    // The size the header declares, before anything is decoded (a decompression bomb is refused here).
    let (w, h) = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .with_context(|| format!("reading {shown}"))?
        .into_dimensions()
        .map_err(|e| anyhow::anyhow!("{shown} is not a readable {format_name} image: {e}"))?;
    if w as u64 * h as u64 > MAX_DECODED_PIXELS {
        bail!(
            "{shown} declares {w}×{h} pixels, more than the {} million pixels pixelcnn decodes",
            MAX_DECODED_PIXELS / 1_000_000
        );
    }
    let image = reader
        .decode()
        .map_err(|e| anyhow::anyhow!("{shown} is not a readable {format_name} image: {e}"))?;
    if image.width() == 0 || image.height() == 0 {
        bail!("{shown} has no pixels ({}×{})", image.width(), image.height());
    }
    Ok(image)
}

/// Steps 2–5: luminance, inversion, transparency, and the size (see the module documentation).
pub fn prepare(path: &Path, image: &DynamicImage, prep: Preparation) -> Result<Vec<u8>> {
    let la = image.to_luma_alpha8();
    let (w, h) = la.dimensions();
    let (mw, mh) = (prep.shape.width as u32, prep.shape.height as u32);
    if (w, h) != (mw, mh) && !prep.resize {
        bail!(
            "{} is {w}×{h} pixels (width × height), but the model takes {mw}×{mh} images; pass --resize to pad it to \
             the model's aspect ratio and resize it (triangle filter)",
            path.display()
        );
    }
    // Padded to the model's aspect ratio: the smallest canvas of that ratio holding the image, centred.
    let (cw, ch) = if (w as u64) * (mh as u64) >= (h as u64) * (mw as u64) {
        (w, ((w as u64 * mh as u64).div_ceil(mw as u64)) as u32)
    } else {
        (((h as u64 * mw as u64).div_ceil(mh as u64)) as u32, h)
    };
    let (x0, y0) = ((cw - w) / 2, (ch - h) / 2);
    let mut canvas = GrayImage::from_pixel(cw, ch, Luma([0]));
    for (x, y, p) in la.enumerate_pixels() {
        let [l, a] = p.0;
        let v = if prep.invert { 255 - l } else { l };
        let v = (v as u32 * a as u32 + 127) / 255;
        canvas.put_pixel(x + x0, y + y0, Luma([v as u8]));
    }
    let small = if (cw, ch) == (mw, mh) {
        canvas
    } else {
        image::imageops::resize(&canvas, mw, mh, FilterType::Triangle)
    };
    let out = small.into_raw();
    debug_assert_eq!(out.len(), prep.shape.pixels());
    Ok(out)
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

    const PIXELS: usize = 784;

    fn prep(invert: bool, resize: bool) -> Preparation {
        Preparation {
            shape: ImageShape::DEFAULT,
            threshold: 0.33,
            invert,
            resize,
        }
    }

    #[test]
    fn a_28x28_grey_image_is_binarized_exactly_like_the_data() {
        let raw: Vec<u8> = (0..PIXELS).map(|i| (i * 37 % 256) as u8).collect();
        let img = DynamicImage::ImageLuma8(GrayImage::from_raw(28, 28, raw.clone()).unwrap());
        let decoded = decode(Path::new("x.png"), &png_bytes(&img)).unwrap();
        let grey = prepare(Path::new("x.png"), &decoded, prep(false, false)).unwrap();
        assert_eq!(grey, raw, "no resampling at 28×28");
        let binary: Vec<u8> = grey.iter().map(|&v| binarize(v, 0.33)).collect();
        assert_eq!(binary, raw.iter().map(|&v| u8::from(v >= 85)).collect::<Vec<_>>());
        // The default threshold is the seed's rule over every grey level: 84 → 0 and 85 → 1.
        for v in 0..=255u8 {
            assert_eq!(binarize(v, 0.33), crate::data::binarize(v), "grey {v}");
        }
        let inverted = prepare(Path::new("x.png"), &decoded, prep(true, false)).unwrap();
        assert!(inverted.iter().zip(&raw).all(|(&i, &r)| i == 255 - r));
    }

    #[test]
    fn another_size_is_refused_unless_resize_is_asked_for() {
        let img = DynamicImage::ImageLuma8(GrayImage::from_pixel(30, 28, Luma([200])));
        let err = prepare(Path::new("dir/big.png"), &img, prep(false, false))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dir/big.png") && err.contains("30×28") && err.contains("--resize"),
            "{err}"
        );
        assert_eq!(
            prepare(Path::new("b.png"), &img, prep(false, true)).unwrap().len(),
            PIXELS
        );
        // A non-square model: a 16-row, 20-column image fits as it is; a square one is padded left and right.
        let wide = Preparation {
            shape: ImageShape::new(16, 20),
            ..prep(false, true)
        };
        let fits = DynamicImage::ImageLuma8(GrayImage::from_pixel(20, 16, Luma([255])));
        assert!(prepare(Path::new("f.png"), &fits, wide)
            .unwrap()
            .iter()
            .all(|&v| v == 255));
        let square = DynamicImage::ImageLuma8(GrayImage::from_pixel(16, 16, Luma([255])));
        let out = prepare(Path::new("s.png"), &square, wide).unwrap();
        assert_eq!((out[0], out[10], out[19]), (0, 255, 0), "{out:?}");
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
        let grey = prepare(Path::new("c.png"), &DynamicImage::ImageRgba8(img), prep(false, true)).unwrap();
        assert_eq!(grey.len(), PIXELS);
        // Padded to 40×40 centred (rows 10..30 hold the image), then shrunk ×0.7: the top and bottom rows are
        // background, the green (luminance 0.7152 · 255 = 182) left half is bright, the transparent right half dark.
        assert_eq!(grey[0], 0);
        assert_eq!(grey[27 * 28 + 5], 0);
        assert!((170..=190).contains(&grey[14 * 28 + 5]), "{}", grey[14 * 28 + 5]);
        assert_eq!(grey[14 * 28 + 22], 0);
    }

    /// A PNG whose header declares `w` × `h` grey pixels, with one tiny IDAT: decodable only by reading far past it.
    fn lying_png(w: u32, h: u32) -> Vec<u8> {
        use std::io::Write;
        let chunk = |out: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
            let mut crc = flate2::Crc::new();
            crc.update(kind);
            crc.update(data);
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            out.extend_from_slice(kind);
            out.extend_from_slice(data);
            out.extend_from_slice(&crc.sum().to_be_bytes());
        };
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = w.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &ihdr);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&[0; 17]).unwrap();
        chunk(&mut out, b"IDAT", &z.finish().unwrap());
        chunk(&mut out, b"IEND", &[]);
        out
    }

    #[test]
    fn a_decompression_bomb_is_refused_from_its_header() {
        let bomb = lying_png(100_000, 100_000);
        assert!(bomb.len() < 200);
        let err = decode(Path::new("dir/bomb.png"), &bomb).unwrap_err().to_string();
        assert!(err.contains("dir/bomb.png") && err.contains("100000×100000"), "{err}");
        // A header within the limit is decoded (and this one is then found truncated).
        let err = decode(Path::new("dir/short.png"), &lying_png(64, 64))
            .unwrap_err()
            .to_string();
        assert!(err.contains("dir/short.png") && !err.contains("declares"), "{err}");
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
        let err = load(Path::new("/no/such/file.png"), prep(false, false)).unwrap_err();
        assert!(format!("{err:#}").contains("/no/such/file.png"), "{err:#}");
    }
}
