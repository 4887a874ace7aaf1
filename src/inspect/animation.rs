//! `sample --animate`: the sample grid as it is drawn, as an animated GIF.
//!
//! Every sampler draws the pixels of an image in raster order, and a drawn pixel never changes: pixel q is drawn
//! from p(x_q | x_<q) with the uniform number u(seed, image, q), so the first k pixels of the finished image are
//! exactly what the sampler held after k steps (`tests/inspect.rs` checks this against the GPU sampler stopped
//! after k steps). The frames are therefore the finished images with every pixel from k on shown as
//! undrawn (the grids' mid-grey, [`crate::grid::HIDDEN`]), for k = 0, K, 2K, …, H·W; the last frame is the finished
//! grid, drawn by the same function as the PNG grid, so its pixels equal the PNG's.

use crate::grid::HIDDEN;
use anyhow::{ensure, Context, Result};
use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, Frame, GrayImage, RgbaImage};

/// How long the finished grid is held before the animation loops, in milliseconds.
pub const HOLD_MS: u32 = 2500;
/// The animation of the drawing lasts about this long (each frame at least [`MIN_FRAME_MS`]).
pub const DRAWING_MS: u32 = 2400;
/// Browsers show GIF delays below 20 ms as 100 ms; no frame is shorter than this.
pub const MIN_FRAME_MS: u32 = 20;
/// Canvas pixels over all frames above which an animation is refused (it would take minutes and gigabytes).
pub const MAX_ANIMATION_PIXELS: u64 = 1 << 31;

/// The pixel counts after which a frame of images of `pixels` pixels is shown: 0, k, 2k, …, and always `pixels`
/// (the finished images). Commands show one image row per frame unless told otherwise.
pub fn frame_steps(pixels_per_frame: usize, pixels: usize) -> Vec<usize> {
    let k = pixels_per_frame.clamp(1, pixels);
    let mut steps: Vec<usize> = (0..pixels).step_by(k).collect();
    steps.push(pixels);
    steps
}

/// The images (`pixels` bytes each) as the sampler held them after `drawn` pixel steps: pixels before `drawn` as
/// in the finished images, the rest [`HIDDEN`] (drawn grey).
pub fn partial_images(images: &[u8], drawn: usize, pixels: usize) -> Vec<u8> {
    let mut out = images.to_vec();
    for img in out.chunks_mut(pixels) {
        img[drawn.min(pixels)..].fill(HIDDEN);
    }
    out
}

/// The delay of each drawing frame: [`DRAWING_MS`] spread over the frames, in whole centiseconds, at least
/// [`MIN_FRAME_MS`].
pub fn frame_delay_ms(frames: usize) -> u32 {
    let per = DRAWING_MS / frames.max(1) as u32;
    (per / 10 * 10).max(MIN_FRAME_MS)
}

/// Refuses an animation of `frames` frames of `width` × `height` that GIF cannot hold or that would be huge.
pub fn check_size(width: u64, height: u64, frames: usize) -> Result<()> {
    ensure!(
        width <= u16::MAX as u64 && height <= u16::MAX as u64,
        "the animation would be {width}×{height} pixels, larger than a GIF can be (65,535 on a side): use a smaller --scale or fewer images"
    );
    let total = width * height * frames as u64;
    ensure!(
        total <= MAX_ANIMATION_PIXELS,
        "the animation would be {frames} frames of {width}×{height} pixels ({} million pixels in all, at most {}): use a larger --frames, a smaller --scale or fewer images",
        total / 1_000_000,
        MAX_ANIMATION_PIXELS / 1_000_000
    );
    Ok(())
}

/// Encodes an animated GIF, looping forever, of the grey frames that `render(k)` draws for each k of
/// `steps` (each frame is rendered, converted and encoded in turn, so memory holds one frame); the last frame
/// is held for [`HOLD_MS`]. Every frame of a grey image has at most 256 colours, so the GIF's palettes are exact.
pub fn encode_gif(steps: &[usize], mut render: impl FnMut(usize) -> Result<GrayImage>) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut bytes, 10);
        encoder.set_repeat(Repeat::Infinite).context("encoding the GIF")?;
        let delay = frame_delay_ms(steps.len().saturating_sub(1));
        for (i, &k) in steps.iter().enumerate() {
            let grey = render(k)?;
            let rgba = RgbaImage::from_fn(grey.width(), grey.height(), |x, y| {
                let v = grey.get_pixel(x, y).0[0];
                image::Rgba([v, v, v, 255])
            });
            let ms = if i + 1 == steps.len() { HOLD_MS } else { delay };
            let frame = Frame::from_parts(rgba, 0, 0, Delay::from_numer_denom_ms(ms, 1));
            encoder.encode_frame(frame).context("encoding a GIF frame")?;
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::AnimationDecoder;

    #[test]
    fn steps_cover_the_image_and_end_finished() {
        assert_eq!(frame_steps(28, 784).len(), 29);
        assert_eq!(frame_steps(28, 784)[..3], [0, 28, 56]);
        assert_eq!(*frame_steps(28, 784).last().unwrap(), 784);
        assert_eq!(frame_steps(1, 784).len(), 785);
        assert_eq!(frame_steps(784, 784), vec![0, 784]);
        assert_eq!(frame_steps(100, 784).last(), Some(&784));
        assert_eq!(frame_steps(100, 784)[7], 700);
        // 16×20 images, a row per frame: 17 frames ending at 320.
        assert_eq!(frame_steps(20, 320).len(), 17);
        assert_eq!(frame_steps(20, 320)[16], 320);
    }

    #[test]
    fn partial_images_keep_the_drawn_prefix_only() {
        const PIXELS: usize = 6 * 9;
        let finished: Vec<u8> = (0..2 * PIXELS).map(|i| (i % 3 == 0) as u8).collect();
        let p = partial_images(&finished, 30, PIXELS);
        for img in 0..2 {
            let (a, b) = (&p[img * PIXELS..][..PIXELS], &finished[img * PIXELS..][..PIXELS]);
            assert_eq!(a[..30], b[..30]);
            assert!(a[30..].iter().all(|&v| v == HIDDEN));
        }
        assert_eq!(partial_images(&finished, PIXELS, PIXELS), finished);
    }

    #[test]
    fn the_gif_decodes_with_every_frame_exact() {
        let steps = frame_steps(200, 784);
        let render = |k: usize| -> Result<GrayImage> {
            Ok(GrayImage::from_fn(30, 20, |x, y| {
                image::Luma([((x * 7 + y * 3 + k as u32) % 256) as u8])
            }))
        };
        let bytes = encode_gif(&steps, render).unwrap();
        let frames = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(bytes))
            .unwrap()
            .into_frames()
            .collect_frames()
            .unwrap();
        assert_eq!(frames.len(), steps.len());
        for (f, &k) in frames.iter().zip(&steps) {
            let want = render(k).unwrap();
            let got = image::DynamicImage::ImageRgba8(f.buffer().clone()).to_luma8();
            assert_eq!(got, want, "frame after {k} pixels");
        }
        let (n, d) = frames.last().unwrap().delay().numer_denom_ms();
        assert_eq!(n / d, HOLD_MS);
    }

    #[test]
    fn oversized_animations_are_refused() {
        assert!(check_size(458, 458, 29).is_ok());
        assert!(check_size(70_000, 10, 2).unwrap_err().to_string().contains("65,535"));
        assert!(check_size(20_000, 20_000, 785)
            .unwrap_err()
            .to_string()
            .contains("--frames"));
    }
}
