//! Image output: the formats outputs can be written in (chosen by the file's extension), the checks made before any
//! work, and atomic writes of encoded images.

use crate::fsio::{check_output, write_atomic};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// The image formats outputs can be written in, by file extension.
pub const IMAGE_EXTENSIONS: &str = ".png, .jpg, .jpeg, .bmp or .gif";

/// The image format an output's extension names (case-insensitive): `.png`, `.jpg`/`.jpeg`, `.bmp`, `.gif`.
pub fn image_format(path: &Path) -> Result<image::ImageFormat> {
    let Some(ext) = path.extension() else {
        bail!(
            "{} has no file extension to choose the image format by; name it {IMAGE_EXTENSIONS}",
            path.display()
        );
    };
    Ok(match ext.to_string_lossy().to_ascii_lowercase().as_str() {
        "png" => image::ImageFormat::Png,
        "jpg" | "jpeg" => image::ImageFormat::Jpeg,
        "bmp" => image::ImageFormat::Bmp,
        "gif" => image::ImageFormat::Gif,
        other => bail!(
            "{}: .{other} is not an image format pixelcnn writes; name it {IMAGE_EXTENSIONS}",
            path.display()
        ),
    })
}

/// [`check_output`] for an image, and its format from the extension ([`image_format`]): both before any work.
pub fn check_image_output(out: &Path, inputs: &[&Path]) -> Result<image::ImageFormat> {
    check_output(out, inputs)?;
    image_format(out)
}

/// Encodes `image` in the format `path`'s extension names and writes it atomically.
pub fn write_image(path: &Path, image: image::DynamicImage) -> Result<()> {
    let format = image_format(path)?;
    // GIF holds RGB(A) frames only (a palette of their colours, exact up to 256 of them).
    let image = match (&image, format) {
        (image::DynamicImage::ImageLuma8(_), image::ImageFormat::Gif) => {
            image::DynamicImage::ImageRgb8(image.to_rgb8())
        }
        _ => image,
    };
    let mut bytes = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut bytes), format)
        .with_context(|| format!("encoding {} as {format:?}", path.display()))?;
    write_atomic(path, &bytes)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn image_formats_by_extension() {
        assert_eq!(image_format(Path::new("a.PNG")).unwrap(), image::ImageFormat::Png);
        assert_eq!(image_format(Path::new("a.jpeg")).unwrap(), image::ImageFormat::Jpeg);
        assert_eq!(image_format(Path::new("a.jpg")).unwrap(), image::ImageFormat::Jpeg);
        assert_eq!(image_format(Path::new("a.bmp")).unwrap(), image::ImageFormat::Bmp);
        assert_eq!(image_format(Path::new("a.gif")).unwrap(), image::ImageFormat::Gif);
        for bad in ["a.txt", "a", "a.tiff"] {
            let err = image_format(Path::new(bad)).unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains(".png"), "{err}");
        }
    }
}
