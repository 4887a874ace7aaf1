//! Colour pictures for the inspection commands: an RGB canvas with filled cells, text in the embedded DejaVu Sans
//! ([`crate::plot::FONT`]), a perceptual colour map and its colour bar, written atomically in the format the file's
//! extension names ([`crate::image_out::write_image`]).

use anyhow::{anyhow, Result};
use image::{Rgb, RgbImage};
use std::path::Path;

pub type Colour = [u8; 3];

pub const BLACK: Colour = [0, 0, 0];
pub const WHITE: Colour = [255, 255, 255];
/// Background of the pictures (around the maps and behind the text).
pub const PAPER: Colour = [250, 250, 247];
pub const INK: Colour = [25, 25, 25];

/// Text size in pixels used by the legends and captions.
pub const TEXT_SIZE: f32 = 14.0;

/// A drawing surface: an RGB image plus the font.
pub struct Canvas {
    pub image: RgbImage,
    font: ab_glyph::FontRef<'static>,
}

impl Canvas {
    pub fn new(width: u32, height: u32, background: Colour) -> Result<Canvas> {
        Ok(Canvas {
            image: RgbImage::from_pixel(width.max(1), height.max(1), Rgb(background)),
            font: font()?,
        })
    }

    /// Fills the rectangle at (x, y) of size w × h, clipped to the canvas.
    pub fn fill(&mut self, x: u32, y: u32, w: u32, h: u32, colour: Colour) {
        let (cw, ch) = self.image.dimensions();
        for yy in y..(y + h).min(ch) {
            for xx in x..(x + w).min(cw) {
                self.image.put_pixel(xx, yy, Rgb(colour));
            }
        }
    }

    /// Draws `text` with its top-left corner near (x, y), `size` pixels high; returns its width.
    pub fn text(&mut self, x: f32, y: f32, text: &str, size: f32, colour: Colour) -> f32 {
        use ab_glyph::{Font, PxScale, ScaleFont};
        let scale = PxScale::from(size);
        let scaled = self.font.as_scaled(scale);
        let baseline = y + scaled.ascent();
        let mut pen = x;
        let (cw, ch) = self.image.dimensions();
        for c in text.chars() {
            let id = self.font.glyph_id(c);
            let glyph = id.with_scale_and_position(scale, ab_glyph::point(pen, baseline));
            pen += scaled.h_advance(id);
            let Some(outline) = self.font.outline_glyph(glyph) else {
                continue;
            };
            let b = outline.px_bounds();
            let image = &mut self.image;
            outline.draw(|gx, gy, coverage| {
                let (px, py) = (b.min.x as i64 + gx as i64, b.min.y as i64 + gy as i64);
                if px >= 0 && py >= 0 && (px as u32) < cw && (py as u32) < ch {
                    let p = image.get_pixel_mut(px as u32, py as u32);
                    let a = coverage.clamp(0.0, 1.0);
                    for (v, &c) in p.0.iter_mut().zip(&colour) {
                        *v = (*v as f32 * (1.0 - a) + c as f32 * a).round() as u8;
                    }
                }
            });
        }
        pen - x
    }

    /// A legend entry: a swatch of `colour` (with a thin dark border) and `label` right of it; returns the
    /// entry's height.
    pub fn legend_entry(&mut self, x: u32, y: u32, colour: Colour, label: &str) -> u32 {
        let s = TEXT_SIZE as u32;
        self.fill(x, y, s, s, INK);
        self.fill(x + 1, y + 1, s - 2, s - 2, colour);
        self.text((x + s + 6) as f32, y as f32 - 1.0, label, TEXT_SIZE, INK);
        s + 6
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        crate::image_out::write_image(path, image::DynamicImage::ImageRgb8(self.image.clone()))
    }
}

/// The embedded font.
pub fn font() -> Result<ab_glyph::FontRef<'static>> {
    ab_glyph::FontRef::try_from_slice(crate::plot::FONT).map_err(|e| anyhow!("the embedded font: {e}"))
}

/// The width in pixels of `text` at `size`.
pub fn text_width(text: &str, size: f32) -> Result<f32> {
    use ab_glyph::{Font, PxScale, ScaleFont};
    let font = font()?;
    let scaled = font.as_scaled(PxScale::from(size));
    Ok(text.chars().map(|c| scaled.h_advance(font.glyph_id(c))).sum())
}

/// The colour of `t` in [0, 1] (clamped; NaN is 0) on a magma-like map: black, purple, red, orange, pale yellow.
/// Its brightness rises monotonically, so the picture also reads in grey.
pub fn magma(t: f64) -> Colour {
    const STOPS: [Colour; 6] = [
        [0, 0, 4],
        [59, 15, 112],
        [140, 41, 129],
        [222, 73, 104],
        [254, 159, 109],
        [252, 253, 191],
    ];
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let x = t * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    std::array::from_fn(|k| (STOPS[i][k] as f64 * (1.0 - f) + STOPS[i + 1][k] as f64 * f).round() as u8)
}

/// A vertical colour bar of [`magma`] at (x, y), `w` × `h`, `max` at the top, with tick labels every
/// [`tick_step`] from 0 (the last one with `unit`) to its right; returns the total width used.
pub fn colour_bar(canvas: &mut Canvas, x: u32, y: u32, w: u32, h: u32, max: f64, unit: &str) -> u32 {
    canvas.fill(x, y, w, h, INK);
    let inner = h.saturating_sub(2).max(1);
    for row in 0..inner {
        let t = 1.0 - row as f64 / (inner - 1).max(1) as f64;
        canvas.fill(x + 1, y + 1 + row, w.saturating_sub(2), 1, magma(t));
    }
    let mut widest = 0.0f32;
    let step = tick_step(max);
    let ticks = (max / step + 1e-9).floor() as usize;
    for k in 0..=ticks {
        let v = step * k as f64;
        let ty = y as f32 + (1.0 - v / max) as f32 * (h as f32 - 1.0) - TEXT_SIZE / 2.0;
        canvas.fill(x + w, (ty + TEXT_SIZE / 2.0) as u32, 4, 1, INK);
        let label = if k == ticks {
            format!("{} {unit}", tick(v))
        } else {
            tick(v)
        };
        widest = widest.max(canvas.text((x + w + 6) as f32, ty, &label, TEXT_SIZE, INK));
    }
    w + 6 + widest.ceil() as u32
}

/// The distance between ticks for a scale from 0 to `max`: 1, 2 or 5 times a power of ten, giving at most 6
/// intervals.
pub fn tick_step(max: f64) -> f64 {
    let max = if max.is_finite() && max > 0.0 { max } else { 1.0 };
    let mut p = 10f64.powf((max / 6.0).log10().floor());
    loop {
        for m in [1.0, 2.0, 5.0] {
            if max / (m * p) <= 6.0 {
                return m * p;
            }
        }
        p *= 10.0;
    }
}

/// A short tick label: integers without decimals, else two significant decimals.
fn tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magma_is_monotone_in_brightness_and_clamped() {
        let lum = |c: Colour| 0.2126 * c[0] as f64 + 0.7152 * c[1] as f64 + 0.0722 * c[2] as f64;
        let mut last = -1.0;
        for i in 0..=100 {
            let l = lum(magma(i as f64 / 100.0));
            assert!(l > last, "brightness must rise at {i}");
            last = l;
        }
        assert_eq!(magma(-1.0), magma(0.0));
        assert_eq!(magma(2.0), magma(1.0));
        assert_eq!(magma(f64::NAN), magma(0.0));
    }

    #[test]
    fn tick_steps_are_round() {
        for (max, step) in [
            (1.0, 0.2),
            (5.0, 1.0),
            (6.0, 1.0),
            (7.0, 2.0),
            (13.0, 5.0),
            (40.0, 10.0),
            (0.0, 0.2),
        ] {
            assert!((tick_step(max) - step).abs() < 1e-12, "max {max}: {}", tick_step(max));
        }
    }

    #[test]
    fn text_is_drawn_and_clipped() {
        let mut c = Canvas::new(60, 20, WHITE).unwrap();
        let w = c.text(2.0, 2.0, "Ag", TEXT_SIZE, BLACK);
        assert!(w > 10.0 && w < 40.0, "{w}");
        assert!(c.image.pixels().any(|p| p.0[0] < 128), "some ink");
        // Text past the edges is clipped, not a panic.
        c.text(50.0, 15.0, "clipped text", 30.0, BLACK);
        c.fill(55, 15, 100, 100, BLACK);
    }
}
