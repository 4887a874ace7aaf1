//! `pixelcnn receptive-field`: which input pixels can change the model's prediction at one pixel.
//!
//! The map comes from the model's own backward pass, the CPU reference's [`cpu::backward`] (the one every GPU
//! kernel is tested against, and whose input gradient `tests/cpu_reference.rs` checks by finite differences):
//! the gradient of the logit at (R, C) with respect to every input pixel, for several inputs at once. A pixel is
//! in the receptive field when its gradient is non-zero for at least one of them. Several varied inputs (see
//! [`probe_inputs`]; each with its own class for a conditional model) are used because a ReLU that happens to be
//! off for one input hides the paths behind it; a pixel whose taps never connect to (R, C) gets an exactly zero
//! gradient from every input, because the backward pass adds nothing there. (A tiny random network can be dead
//! for every input: a head whose few ReLU units all have negative weights passes no gradient at all; the map is
//! then empty, and honestly so.)
//!
//! Regions of the map (each pixel is in exactly one):
//! * the target (R, C) itself;
//! * `depends`: the receptive field (the mask);
//! * `blind spot`: earlier pixels (in raster order) inside the field's bounding box — rows and columns that it
//!   reaches elsewhere — that the prediction does not depend on. The plain network's masked 3×3 convolutions grow
//!   the field up and to the left but reach only 3 columns right of C on row R − 1 whatever the depth, leaving the
//!   triangle above and to the right of the target unseen (e.g. x[R − 1, C + 5]); the Gated PixelCNN has none;
//! * `unreached`: the rest of the causal region (earlier pixels), too far for this depth;
//! * `later`: pixels at or after (R, C) in raster order, which a causal model must never see. A non-zero gradient
//!   there would be a causality bug, and is reported as a leak.

use super::draw::{self, Canvas, Colour, INK, PAPER, TEXT_SIZE};
use crate::cpu;
use crate::model::{ImageShape, Network};
use crate::rng::SplitMix64;
use anyhow::{ensure, Result};
use std::path::Path;

/// Random inputs the gradient is accumulated over, unless told otherwise.
pub const DEFAULT_INPUTS: usize = 8;

/// What a pixel of the map is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Region {
    Target,
    Depends,
    BlindSpot,
    Unreached,
    Later,
    /// A later pixel (or the target) with a non-zero gradient: a causality bug.
    Leak,
}

impl Region {
    pub fn colour(self) -> Colour {
        match self {
            Region::Target => [214, 39, 40],
            Region::Depends => [255, 215, 90],
            Region::BlindSpot => [31, 158, 214],
            Region::Unreached => [92, 96, 110],
            Region::Later => [28, 28, 32],
            Region::Leak => [255, 0, 255],
        }
    }

    /// The character of the text map.
    pub fn symbol(self) -> char {
        match self {
            Region::Target => 'X',
            Region::Depends => '#',
            Region::BlindSpot => 'o',
            Region::Unreached => '.',
            Region::Later => ' ',
            Region::Leak => '!',
        }
    }
}

/// The receptive field of the logit at `pixel`.
#[derive(Clone, Debug)]
pub struct ReceptiveField {
    /// (row, column).
    pub pixel: (usize, usize),
    /// The model's images.
    pub image: ImageShape,
    /// Inputs the gradient was accumulated over.
    pub inputs: usize,
    /// Whether each input pixel can change the logit (non-zero gradient for some input), raster order.
    pub mask: Vec<bool>,
    /// Mean |gradient| over the inputs, raster order.
    pub magnitude: Vec<f32>,
    /// The region of each pixel, raster order.
    pub regions: Vec<Region>,
}

impl ReceptiveField {
    pub fn count(&self, r: Region) -> usize {
        self.regions.iter().filter(|&&x| x == r).count()
    }

    /// The pixels before the target in raster order: R · W + C.
    pub fn causal_pixels(&self) -> usize {
        self.pixel.0 * self.image.width + self.pixel.1
    }

    /// An H × W array of 0/1 rows of `f` applied to each pixel.
    pub fn rows(&self, f: impl Fn(usize) -> bool) -> Vec<Vec<u8>> {
        let (height, width) = (self.image.height, self.image.width);
        (0..height)
            .map(|r| (0..width).map(|c| f(r * width + c) as u8).collect())
            .collect()
    }

    /// The map as text, one line per image row (`X` the target, `#` depends, `o` blind spot, `.` earlier but out of
    /// reach, space later, `!` a leak).
    pub fn text_map(&self) -> String {
        let mut s = String::new();
        let width = self.image.width;
        for r in 0..self.image.height {
            let line: String = (0..width).map(|c| self.regions[r * width + c].symbol()).collect();
            s.push_str(line.trim_end());
            s.push('\n');
        }
        s
    }
}

/// Parses `R,C` (0-based row and column) for `--pixel`; whether it lies inside the model's images is checked
/// against the model ([`check_pixel`]).
pub fn parse_pixel(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("--pixel wants ROW,COLUMN, two numbers from 0 separated by a comma (got {s:?})");
    let (r, c) = s.split_once(',').ok_or_else(bad)?;
    let r: i64 = r.trim().parse().map_err(|_| bad())?;
    let c: i64 = c.trim().parse().map_err(|_| bad())?;
    if r < 0 || c < 0 {
        return Err(bad());
    }
    Ok((r as usize, c as usize))
}

/// Refuses a `pixel` outside images of `image`'s shape, naming the ranges.
pub fn check_pixel(pixel: (usize, usize), image: ImageShape) -> Result<()> {
    ensure!(
        pixel.0 < image.height && pixel.1 < image.width,
        "--pixel {},{} is outside the model's {image} image: the row must be 0–{} and the column 0–{}",
        pixel.0,
        pixel.1,
        image.height - 1,
        image.width - 1
    );
    Ok(())
}

/// The inputs the gradient is taken at, seeded by `seed`: all ones, then in turn random binary images (densities
/// from 0.2 to 0.8), random grey values in (0, 1] and random values in [−1, 1]. The last are no images, but the
/// network is a function of any real input, and inputs of both signs switch on ReLUs that images cannot.
pub fn probe_inputs(count: usize, pixels: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed ^ 0x0F1E_1D5E);
    let mut x = Vec::with_capacity(count * pixels);
    for k in 0..count {
        let density = 0.2 + 0.6 * ((k / 3) % 4) as f64 / 3.0;
        for _ in 0..pixels {
            let u = rng.next_f64();
            let v = match (k, k % 3) {
                (0, _) => 1.0,
                (_, 1) => (u < density) as u8 as f32,
                (_, 2) => (1.0 - u) as f32,
                _ => (2.0 * u - 1.0) as f32,
            };
            x.push(v);
        }
    }
    x
}

/// The receptive field of the logit at `pixel` (row, column) of `net` with `params`, accumulated over `inputs`
/// probe inputs (see [`probe_inputs`]); a conditional model gets class k mod classes for input k.
pub fn receptive_field(
    net: &Network,
    params: &[f32],
    pixel: (usize, usize),
    inputs: usize,
    seed: u64,
) -> Result<ReceptiveField> {
    let image = net.image();
    check_pixel(pixel, image)?;
    ensure!(inputs >= 1, "at least one input is needed");
    let (pixels, width) = (image.pixels(), image.width);
    let q = pixel.0 * width + pixel.1;
    let x = probe_inputs(inputs, pixels, seed);
    let labels: Vec<u8> = (0..inputs).map(|k| (k % net.config.classes.max(1)) as u8).collect();
    let labels = net.config.is_conditional().then_some(&labels[..]);
    let acts = cpu::forward(net, params, &x, labels, inputs);
    let mut d_logits = vec![0.0f32; inputs * pixels];
    for k in 0..inputs {
        d_logits[k * pixels + q] = 1.0;
    }
    let (_, d_input) = cpu::backward(net, params, &acts, labels, d_logits, inputs);
    let mut mask = vec![false; pixels];
    let mut magnitude = vec![0.0f32; pixels];
    for k in 0..inputs {
        for (p, &g) in d_input[k * pixels..][..pixels].iter().enumerate() {
            mask[p] |= g != 0.0;
            magnitude[p] += g.abs() / inputs as f32;
        }
    }
    Ok(ReceptiveField {
        pixel,
        image,
        inputs,
        regions: regions(&mask, q, width),
        mask,
        magnitude,
    })
}

/// Classifies every pixel given the mask (of images `width` wide) and the target's raster index `q` (see the
/// module documentation).
pub fn regions(mask: &[bool], q: usize, width: usize) -> Vec<Region> {
    let (tr, tc) = (q / width, q % width);
    // The bounding box of the field and the target.
    let (mut r0, mut c0, mut c1) = (tr, tc, tc);
    for (p, _) in mask.iter().enumerate().filter(|(p, &m)| m && *p < q) {
        r0 = r0.min(p / width);
        c0 = c0.min(p % width);
        c1 = c1.max(p % width);
    }
    (0..mask.len())
        .map(|p| {
            let (r, c) = (p / width, p % width);
            match (p.cmp(&q), mask[p]) {
                (std::cmp::Ordering::Less, true) => Region::Depends,
                (std::cmp::Ordering::Less, false) if r >= r0 && c >= c0 && c <= c1 => Region::BlindSpot,
                (std::cmp::Ordering::Less, false) => Region::Unreached,
                (_, true) => Region::Leak,
                (std::cmp::Ordering::Equal, false) => Region::Target,
                (std::cmp::Ordering::Greater, false) => Region::Later,
            }
        })
        .collect()
}

/// Draws the map (each image pixel a `scale` × `scale` cell, thin lines between cells) under a title (the model)
/// and a second line (where its weights come from), with a legend and counts; writes it in the format of the
/// file's extension (PNG, JPEG, BMP or GIF).
pub fn write_image(path: &Path, field: &ReceptiveField, title: &str, source: &str, scale: u32) -> Result<()> {
    draw_map(field, title, source, scale)?.write(path)
}

/// The picture [`write_image`] writes.
pub fn draw_map(field: &ReceptiveField, title: &str, source: &str, scale: u32) -> Result<Canvas> {
    let margin = 12u32;
    let (map_w, map_h) = (field.image.width as u32 * scale, field.image.height as u32 * scale);
    let (r, c) = field.pixel;
    let subtitle = format!("what its prediction at row {r}, column {c} can see");
    let mut entries = vec![
        (Region::Target, format!("the pixel predicted, ({r}, {c})")),
        (
            Region::Depends,
            format!("pixels it depends on: {}", field.count(Region::Depends)),
        ),
        (
            Region::BlindSpot,
            format!("blind spot (in reach, never seen): {}", field.count(Region::BlindSpot)),
        ),
        (
            Region::Unreached,
            format!("earlier pixels out of reach: {}", field.count(Region::Unreached)),
        ),
        (Region::Later, "later pixels (never seen)".to_string()),
    ];
    if field.count(Region::Leak) > 0 {
        entries.push((
            Region::Leak,
            format!("LEAK: later pixels it depends on: {}", field.count(Region::Leak)),
        ));
    }
    let mut widest = draw::text_width(title, TEXT_SIZE + 1.0)?
        .max(draw::text_width(&subtitle, TEXT_SIZE)?)
        .max(draw::text_width(source, TEXT_SIZE)?);
    for (_, label) in &entries {
        widest = widest.max(draw::text_width(label, TEXT_SIZE)? + TEXT_SIZE + 6.0);
    }
    let line = TEXT_SIZE as u32 + 6;
    let width = map_w.max(widest.ceil() as u32) + 2 * margin;
    let map_y = margin + 3 * line + 4;
    let height = map_y + map_h + margin + entries.len() as u32 * line + margin;
    let mut canvas = Canvas::new(width, height, PAPER)?;
    canvas.text(margin as f32, margin as f32 - 2.0, title, TEXT_SIZE + 1.0, INK);
    canvas.text(margin as f32, (margin + line) as f32, source, TEXT_SIZE, [90, 90, 90]);
    canvas.text(margin as f32, (margin + 2 * line) as f32, &subtitle, TEXT_SIZE, INK);
    let map_x = margin + (width - 2 * margin - map_w) / 2;
    canvas.fill(map_x - 1, map_y - 1, map_w + 2, map_h + 2, INK);
    let lines = scale >= 6;
    let image_width = field.image.width;
    for p in 0..field.image.pixels() {
        let (x, y) = (
            map_x + (p % image_width) as u32 * scale,
            map_y + (p / image_width) as u32 * scale,
        );
        let colour = field.regions[p].colour();
        if lines {
            let edge = colour.map(|v| (v as f32 * 0.8) as u8);
            canvas.fill(x, y, scale, scale, edge);
            canvas.fill(x, y, scale - 1, scale - 1, colour);
        } else {
            canvas.fill(x, y, scale, scale, colour);
        }
    }
    let mut y = map_y + map_h + margin;
    for (region, label) in &entries {
        y += canvas.legend_entry(margin, y, region.colour(), label);
    }
    Ok(canvas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixels_parse_and_out_of_range_is_refused() {
        assert_eq!(parse_pixel("3,4"), Ok((3, 4)));
        assert_eq!(parse_pixel(" 27 , 0 "), Ok((27, 0)));
        for bad in ["-1,2", "3", "a,b", "3,4,5", ""] {
            let e = parse_pixel(bad).unwrap_err();
            assert!(e.contains("--pixel"), "{bad}: {e}");
        }
        let square = ImageShape::DEFAULT;
        assert!(check_pixel((27, 27), square).is_ok());
        for bad in [(30, 3), (3, 28)] {
            let e = check_pixel(bad, square).unwrap_err().to_string();
            assert!(e.contains("outside the model's 28×28 image"), "{e}");
        }
        // A non-square model: 16 rows of 20 columns.
        assert!(check_pixel((15, 19), ImageShape::new(16, 20)).is_ok());
        assert!(check_pixel((16, 0), ImageShape::new(16, 20)).is_err());
    }

    #[test]
    fn regions_of_a_hand_made_mask() {
        // Target (2, 5); depends on (1, 4) and (0, 9): the box is rows 0–2, columns 4–9.
        const WIDTH: usize = 28;
        const PIXELS: usize = 784;
        let q = 2 * WIDTH + 5;
        let mut mask = vec![false; PIXELS];
        mask[WIDTH + 4] = true;
        mask[9] = true;
        let r = regions(&mask, q, WIDTH);
        assert_eq!(r[q], Region::Target);
        assert_eq!(r[WIDTH + 4], Region::Depends);
        assert_eq!(r[WIDTH + 9], Region::BlindSpot);
        assert_eq!(r[2 * WIDTH + 4], Region::BlindSpot);
        assert_eq!(r[2 * WIDTH + 3], Region::Unreached);
        assert_eq!(r[WIDTH + 10], Region::Unreached);
        assert_eq!(r[2 * WIDTH + 6], Region::Later);
        assert_eq!(r[3 * WIDTH], Region::Later);
        mask[3 * WIDTH] = true;
        mask[q] = true;
        let r = regions(&mask, q, WIDTH);
        assert_eq!((r[3 * WIDTH], r[q]), (Region::Leak, Region::Leak));
        // Pixel (0, 0): nothing is earlier, nothing is depended on.
        let r = regions(&[false; PIXELS], 0, WIDTH);
        assert_eq!(r[0], Region::Target);
        assert!(r[1..].iter().all(|&x| x == Region::Later));
    }
}
