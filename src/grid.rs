//! Lays out images of one shape (samples, completions; `height × width` bytes each, in raster order) as greyscale
//! PNG grids.
//!
//! Pixel encoding, decided per image:
//! - If every byte of the image is 0, 1 or 2 it is a *binary* image: 0 is drawn black (0), 1 white (255) and
//!   [`HIDDEN`] (2) mid-grey (128). Value 2 marks pixels hidden from the model, e.g. the occluded half of an
//!   image in a completion grid.
//! - Otherwise (some byte is above 2) the image is *grey* and every byte is drawn as-is, 0 black to 255 white.
//!
//! The rule can misread a grey image whose bytes are all 0..=2 (an almost black picture), which would then be
//! stretched to full contrast; grey images in this crate are probabilities scaled to 0..=255, so that does not
//! happen in practice, and it keeps the call sites free of a format flag.
//!
//! Cells are upscaled by nearest neighbour (`scale` output pixels per image pixel) and separated by `gap`
//! output pixels of dark grey, also around the border, so that black cells stand out from each other.

use crate::model::ImageShape;
use anyhow::{bail, Result};
use image::{GrayImage, Luma};
use std::path::Path;

/// Value of a hidden (occluded) pixel in a binary image.
pub const HIDDEN: u8 = 2;
/// Output pixels per image pixel used by the commands unless told otherwise.
pub const DEFAULT_SCALE: u32 = 4;
/// Output pixels between cells (and around the border) unless told otherwise.
pub const DEFAULT_GAP: u32 = 2;

/// Grey level of gaps, borders and empty padding cells: darker than hidden pixels, lighter than black ink.
const GAP_GREY: u8 = 64;
/// Grey level of hidden pixels in binary images.
const HIDDEN_GREY: u8 = 128;

/// The largest canvas drawn, in pixels (256 Mi pixels, as many bytes of 8-bit grey): bigger grids are refused up
/// front, before any sampling, rather than failing to allocate at the end.
pub const MAX_CANVAS_PIXELS: u64 = 1 << 28;

/// The shape of a grid to draw, for [`check_canvas`].
#[derive(Clone, Copy, Debug)]
pub enum Layout {
    /// `n` images in a roughly square grid ([`grid_columns`]).
    Square(usize),
    /// `rows` rows of at most `cols` cells, with a text label left of each row when `labelled`.
    Rows { rows: usize, cols: usize, labelled: bool },
}

/// Refuses a grid of `shape` images that would exceed [`MAX_CANVAS_PIXELS`] at `scale` and `gap`, saying how big
/// it would be.
pub fn check_canvas(layout: Layout, shape: ImageShape, scale: u32, gap: u32) -> Result<()> {
    let (rows, cols, labelled) = match layout {
        Layout::Square(n) => (n.div_ceil(grid_columns(n)), grid_columns(n), false),
        Layout::Rows { rows, cols, labelled } => (rows, cols, labelled),
    };
    let (cell_w, cell_h) = (shape.width as u64 * scale as u64, shape.height as u64 * scale as u64);
    let (rows, cols, gap) = (rows.max(1) as u64, cols.max(1) as u64, gap as u64);
    // A label margin is at most about 4 cells wide (the longest class name at 0.4 cell per glyph height); long class
    // names of a data set of its own can be wider: the margin is then checked again once measured.
    let margin = if labelled { 4 * cell_h + 3 * gap.max(2) } else { 0 };
    let width = cols * cell_w + (cols + 1) * gap + margin;
    let height = rows * cell_h + (rows + 1) * gap;
    if width.saturating_mul(height) > MAX_CANVAS_PIXELS {
        bail!(
            "the grid would be {width}×{height} pixels, more than {} million: use a smaller --scale (now {scale}) or fewer images",
            MAX_CANVAS_PIXELS / 1_000_000
        );
    }
    Ok(())
}

/// Number of columns for a roughly square grid of `n` images: ceil(sqrt(n)), at least 1.
pub fn grid_columns(n: usize) -> usize {
    let mut cols = 1;
    // Integer search instead of f64 sqrt: exact for every n, and n is small.
    while cols * cols < n {
        cols += 1;
    }
    cols
}

/// Renders `images` row by row into a grid with `cols` columns (a `cols` of 0 is taken as 1).
/// The last row may be partly empty; empty cells are drawn in the gap colour. An empty `images` gives one
/// empty cell, so the result is always a valid, non-empty image.
///
/// # Panics
/// If an image is not `shape.pixels()` bytes long or `scale` is 0; [`write_grid_png`] checks both and returns an
/// error instead.
pub fn render_grid(images: &[&[u8]], shape: ImageShape, cols: usize, scale: u32, gap: u32) -> GrayImage {
    let cols = cols.max(1);
    let rows = images.len().div_ceil(cols).max(1);
    let mut canvas = blank_canvas(rows, cols, shape, scale, gap);
    for (i, image) in images.iter().enumerate() {
        draw_cell(&mut canvas, image, shape, i / cols, i % cols, scale, gap);
    }
    canvas
}

/// Renders rows of cells, each row its own list (e.g. original | occluded | completion 1 | completion 2 ...).
/// Every row is as wide as the longest; the missing cells of shorter rows are drawn in the gap colour.
///
/// # Panics
/// If an image is not `shape.pixels()` bytes long or `scale` is 0; [`write_rows_png`] checks both and returns an
/// error instead.
pub fn render_rows(rows: &[Vec<&[u8]>], shape: ImageShape, scale: u32, gap: u32) -> GrayImage {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut canvas = blank_canvas(rows.len().max(1), cols, shape, scale, gap);
    for (r, row) in rows.iter().enumerate() {
        for (c, image) in row.iter().enumerate() {
            draw_cell(&mut canvas, image, shape, r, c, scale, gap);
        }
    }
    canvas
}

/// Renders rows of cells (see [`render_rows`]) with a text label left of each row (e.g. the class of the row).
pub fn render_labelled_rows(
    rows: &[Vec<&[u8]>],
    labels: &[&str],
    shape: ImageShape,
    scale: u32,
    gap: u32,
) -> Result<GrayImage> {
    use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
    let font = FontRef::try_from_slice(crate::plot::FONT).map_err(|e| anyhow::anyhow!("the embedded font: {e}"))?;
    // Glyphs 0.4 of a 28-pixel cell high, whatever the images' height, so that labels of small images stay legible.
    let size = PxScale::from((shape.height.max(28) as f32 * scale as f32 * 0.4).max(10.0));
    let scaled = font.as_scaled(size);
    let width_of = |s: &str| s.chars().map(|c| scaled.h_advance(font.glyph_id(c))).sum::<f32>();
    let margin = labels.iter().map(|l| width_of(l)).fold(0.0f32, f32::max).ceil() as u32 + 3 * gap.max(2);
    let grid = render_rows(rows, shape, scale, gap);
    let total = (grid.width() as u64 + margin as u64) * grid.height() as u64;
    if total > MAX_CANVAS_PIXELS {
        bail!(
            "the grid with its labels would be {}×{} pixels, more than {} million: use a smaller --scale or fewer images",
            grid.width() as u64 + margin as u64,
            grid.height(),
            MAX_CANVAS_PIXELS / 1_000_000
        );
    }
    let mut canvas = GrayImage::from_pixel(grid.width() + margin, grid.height(), Luma([GAP_GREY]));
    image::imageops::replace(&mut canvas, &grid, margin as i64, 0);
    let cell = shape.height as u32 * scale;
    for (r, label) in labels.iter().enumerate() {
        let baseline =
            gap as f32 + r as f32 * (cell + gap) as f32 + (cell as f32 + scaled.ascent() + scaled.descent()) / 2.0;
        let mut x = 2.0 * gap.max(2) as f32;
        for c in label.chars() {
            let id = font.glyph_id(c);
            let glyph = id.with_scale_and_position(size, ab_glyph::point(x, baseline));
            x += scaled.h_advance(id);
            if let Some(outline) = font.outline_glyph(glyph) {
                let b = outline.px_bounds();
                outline.draw(|gx, gy, coverage| {
                    let (px, py) = (b.min.x as i64 + gx as i64, b.min.y as i64 + gy as i64);
                    if px >= 0 && py >= 0 && (px as u32) < margin && (py as u32) < canvas.height() {
                        let v = GAP_GREY as f32 + coverage.min(1.0) * (255.0 - GAP_GREY as f32);
                        let p = canvas.get_pixel_mut(px as u32, py as u32);
                        p.0[0] = p.0[0].max(v as u8);
                    }
                });
            }
        }
    }
    Ok(canvas)
}

/// Writes rows with labels (see [`render_labelled_rows`]) as a PNG, atomically.
pub fn write_labelled_rows_png(
    path: &Path,
    rows: &[Vec<&[u8]>],
    labels: &[&str],
    shape: ImageShape,
    scale: u32,
    gap: u32,
) -> Result<()> {
    check_inputs(rows.iter().flatten().copied(), shape, scale)?;
    check_canvas(rows_layout(rows, true), shape, scale, gap)?;
    write_png(path, render_labelled_rows(rows, labels, shape, scale, gap)?)
}

/// Renders a grid (see [`render_grid`]) and writes it as a PNG, atomically.
pub fn write_grid_png(
    path: &Path,
    images: &[&[u8]],
    shape: ImageShape,
    cols: usize,
    scale: u32,
    gap: u32,
) -> Result<()> {
    check_inputs(images.iter().copied(), shape, scale)?;
    let cols = cols.max(1);
    let rows = images.len().div_ceil(cols);
    check_canvas(
        Layout::Rows {
            rows,
            cols,
            labelled: false,
        },
        shape,
        scale,
        gap,
    )?;
    write_png(path, render_grid(images, shape, cols, scale, gap))
}

/// Writes a single image as a PNG scaled by `scale`, without border (for `--save-each`).
pub fn write_image_png(path: &Path, image: &[u8], shape: ImageShape, scale: u32) -> Result<()> {
    check_inputs(std::iter::once(image), shape, scale)?;
    write_png(path, render_grid(&[image], shape, 1, scale, 0))
}

/// Renders rows of cells (see [`render_rows`]) and writes them as a PNG, atomically.
pub fn write_rows_png(path: &Path, rows: &[Vec<&[u8]>], shape: ImageShape, scale: u32, gap: u32) -> Result<()> {
    check_inputs(rows.iter().flatten().copied(), shape, scale)?;
    check_canvas(rows_layout(rows, false), shape, scale, gap)?;
    write_png(path, render_rows(rows, shape, scale, gap))
}

fn rows_layout(rows: &[Vec<&[u8]>], labelled: bool) -> Layout {
    Layout::Rows {
        rows: rows.len(),
        cols: rows.iter().map(Vec::len).max().unwrap_or(0),
        labelled,
    }
}

/// A canvas for `rows` x `cols` cells of `shape` images, filled with the gap colour.
fn blank_canvas(rows: usize, cols: usize, shape: ImageShape, scale: u32, gap: u32) -> GrayImage {
    assert!(scale > 0, "grid scale must be at least 1");
    let (cell_w, cell_h) = (shape.width as u32 * scale, shape.height as u32 * scale);
    let width = cols as u32 * cell_w + (cols as u32 + 1) * gap;
    let height = rows as u32 * cell_h + (rows as u32 + 1) * gap;
    GrayImage::from_pixel(width, height, Luma([GAP_GREY]))
}

/// Draws `image` into the cell at (`row`, `col`) of a canvas made by [`blank_canvas`].
fn draw_cell(canvas: &mut GrayImage, image: &[u8], shape: ImageShape, row: usize, col: usize, scale: u32, gap: u32) {
    assert_eq!(
        image.len(),
        shape.pixels(),
        "grid images must be {shape} = {} bytes",
        shape.pixels()
    );
    let (cell_w, cell_h) = (shape.width as u32 * scale, shape.height as u32 * scale);
    let x0 = gap + col as u32 * (cell_w + gap);
    let y0 = gap + row as u32 * (cell_h + gap);
    let binary = image.iter().all(|&v| v <= HIDDEN);
    for (i, &value) in image.iter().enumerate() {
        let grey = if binary { binary_grey(value) } else { value };
        let (x, y) = ((i % shape.width) as u32 * scale, (i / shape.width) as u32 * scale);
        for dy in 0..scale {
            for dx in 0..scale {
                canvas.put_pixel(x0 + x + dx, y0 + y + dy, Luma([grey]));
            }
        }
    }
}

/// Display grey level of a binary-image value (0, 1 or [`HIDDEN`]).
fn binary_grey(value: u8) -> u8 {
    match value {
        0 => 0,
        1 => 255,
        _ => HIDDEN_GREY,
    }
}

/// The checks the render functions would panic on, as errors, so that the write functions never panic.
fn check_inputs<'a>(images: impl Iterator<Item = &'a [u8]>, shape: ImageShape, scale: u32) -> Result<()> {
    if scale == 0 {
        bail!("image scale must be at least 1");
    }
    for (i, image) in images.enumerate() {
        if image.len() != shape.pixels() {
            bail!(
                "image {i} has {} bytes, expected {shape} = {}",
                image.len(),
                shape.pixels()
            );
        }
    }
    Ok(())
}

/// Encodes in the format the path's extension names (`.png`, `.jpg`/`.jpeg`, `.bmp`, `.gif`; anything else is an
/// error) in memory, then writes atomically so a reader never sees a half-written file.
fn write_png(path: &Path, image: GrayImage) -> Result<()> {
    crate::image_out::write_image(path, image.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIDE: usize = 28;
    const PIXELS: usize = SIDE * SIDE;
    const SQUARE: ImageShape = ImageShape::DEFAULT;

    #[test]
    fn oversized_grids_are_refused_before_drawing() {
        // 36 images at the default scale: 6 × 6 cells of 112 pixels, far below the limit.
        check_canvas(Layout::Square(36), SQUARE, DEFAULT_SCALE, DEFAULT_GAP).unwrap();
        // The largest sample grid at the largest scale is 64 × 64 cells of 1,792 pixels: about 13 G pixels.
        let err = check_canvas(Layout::Square(4096), SQUARE, 64, DEFAULT_GAP)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--scale"), "{err}");
        // The boundary: a square of side s pixels is accepted iff s² ≤ the limit.
        let side = |cells: u64, scale: u32| cells * 28 * scale as u64 + (cells + 1) * DEFAULT_GAP as u64;
        let fits = |cells: usize, scale: u32| {
            let rows = Layout::Rows {
                rows: cells,
                cols: cells,
                labelled: false,
            };
            check_canvas(rows, SQUARE, scale, DEFAULT_GAP).is_ok()
        };
        for (cells, scale) in [(100, 5), (300, 2), (500, 1), (585, 1), (586, 1)] {
            let s = side(cells as u64, scale);
            assert_eq!(
                fits(cells, scale),
                s * s <= MAX_CANVAS_PIXELS,
                "{cells} cells at scale {scale}"
            );
        }
        // A write that would be too big is an error, not an abort.
        let dir = tempfile::tempdir().unwrap();
        let img = dot(0, 0);
        let rows: Vec<Vec<&[u8]>> = vec![vec![&img[..]; 64]; 64];
        assert!(write_rows_png(&dir.path().join("big.png"), &rows, SQUARE, 64, DEFAULT_GAP).is_err());
        assert!(!dir.path().join("big.png").exists());
    }

    /// A binary image with a single white pixel at (y, x).
    fn dot(y: usize, x: usize) -> Vec<u8> {
        let mut image = vec![0u8; PIXELS];
        image[y * SIDE + x] = 1;
        image
    }

    fn cell_size(scale: u32) -> u32 {
        SIDE as u32 * scale
    }

    #[test]
    fn columns_are_ceil_sqrt() {
        let expected = [
            (0, 1),
            (1, 1),
            (2, 2),
            (4, 2),
            (5, 3),
            (9, 3),
            (10, 4),
            (16, 4),
            (17, 5),
            (64, 8),
            (65, 9),
        ];
        for (n, cols) in expected {
            assert_eq!(grid_columns(n), cols, "n = {n}");
        }
    }

    #[test]
    fn grid_dimensions() {
        let (scale, gap) = (2, 3);
        let image = vec![0u8; PIXELS];
        // n -> (cols, rows) for a square-ish grid.
        for (n, cols, rows) in [(1u32, 1u32, 1u32), (5, 3, 2), (16, 4, 4), (17, 5, 4)] {
            let images: Vec<&[u8]> = (0..n).map(|_| image.as_slice()).collect();
            let grid = render_grid(&images, SQUARE, grid_columns(n as usize), scale, gap);
            let expect_w = cols * cell_size(scale) + (cols + 1) * gap;
            let expect_h = rows * cell_size(scale) + (rows + 1) * gap;
            assert_eq!(grid.dimensions(), (expect_w, expect_h), "n = {n}");
        }
    }

    #[test]
    fn empty_inputs_give_one_empty_cell() {
        let side = cell_size(1) + 2;
        assert_eq!(render_grid(&[], SQUARE, 0, 1, 1).dimensions(), (side, side));
        assert_eq!(render_rows(&[], SQUARE, 1, 1).dimensions(), (side, side));
    }

    #[test]
    fn pixels_land_in_the_right_cell() {
        let (scale, gap) = (3, 2);
        let cell = cell_size(scale);
        let (py, px) = (5, 7);
        let marked = dot(py, px);
        let blank = vec![0u8; PIXELS];
        // 6 images in 3 columns; the marked one is index 5, i.e. cell (row 1, col 2).
        let mut images: Vec<&[u8]> = vec![blank.as_slice(); 6];
        images[5] = &marked;
        let grid = render_grid(&images, SQUARE, 3, scale, gap);

        let x0 = gap + 2 * (cell + gap) + px as u32 * scale;
        let y0 = gap + (cell + gap) + py as u32 * scale;
        for dy in 0..scale {
            for dx in 0..scale {
                assert_eq!(grid.get_pixel(x0 + dx, y0 + dy)[0], 255);
            }
        }
        // Just outside the upscaled pixel is black ink background, not white.
        assert_eq!(grid.get_pixel(x0 + scale, y0)[0], 0);
        assert_eq!(grid.get_pixel(x0, y0 + scale)[0], 0);
        // Exactly scale*scale white pixels in the whole grid.
        let white = grid.pixels().filter(|p| p[0] == 255).count();
        assert_eq!(white, (scale * scale) as usize);
        // Border and gaps are the gap colour.
        assert_eq!(grid.get_pixel(0, 0)[0], GAP_GREY);
        assert_eq!(grid.get_pixel(gap + cell, gap + 1)[0], GAP_GREY);
    }

    #[test]
    fn non_square_images_have_non_square_cells() {
        // 3 rows of 5 pixels: pixel (2, 4) is the last one, and cells are 5 wide and 3 high.
        let shape = ImageShape::new(3, 5);
        let mut image = vec![0u8; 15];
        image[2 * 5 + 4] = 1;
        let grid = render_grid(&[&image, &image], shape, 2, 2, 1);
        assert_eq!(grid.dimensions(), (2 * 10 + 3, 6 + 2));
        assert_eq!(grid.get_pixel(1 + 8, 1 + 4)[0], 255);
        assert_eq!(grid.get_pixel(1 + 10 + 1 + 9, 1 + 5)[0], 255);
        assert_eq!(grid.pixels().filter(|p| p[0] == 255).count(), 8);
        assert!(write_grid_png(
            &tempfile::tempdir().unwrap().path().join("x.png"),
            &[&image[..14]],
            shape,
            1,
            1,
            1
        )
        .is_err());
    }

    #[test]
    fn hidden_and_grey_values() {
        let mut binary = vec![0u8; PIXELS];
        binary[0] = 1;
        binary[1] = HIDDEN;
        let mut grey = vec![0u8; PIXELS];
        grey[0] = 1; // in a grey image (some byte > 2) 1 stays almost black
        grey[1] = 200;
        let grid = render_grid(&[&binary, &grey], SQUARE, 2, 1, 0);
        assert_eq!(grid.get_pixel(0, 0)[0], 255);
        assert_eq!(grid.get_pixel(1, 0)[0], HIDDEN_GREY);
        assert_eq!(grid.get_pixel(2, 0)[0], 0);
        assert_eq!(grid.get_pixel(SIDE as u32, 0)[0], 1);
        assert_eq!(grid.get_pixel(SIDE as u32 + 1, 0)[0], 200);
    }

    #[test]
    fn rows_are_padded_to_the_longest() {
        let (scale, gap) = (1, 2);
        let a = dot(0, 0);
        let rows = vec![vec![a.as_slice()], vec![a.as_slice(), a.as_slice(), a.as_slice()]];
        let grid = render_rows(&rows, SQUARE, scale, gap);
        let cell = cell_size(scale);
        assert_eq!(grid.dimensions(), (3 * cell + 4 * gap, 2 * cell + 3 * gap));
        // Row 0: first cell drawn, the padding cells are gap colour throughout.
        assert_eq!(grid.get_pixel(gap, gap)[0], 255);
        assert_eq!(grid.get_pixel(gap + cell + gap, gap)[0], GAP_GREY);
        assert_eq!(grid.get_pixel(gap + cell + gap + 5, gap + 5)[0], GAP_GREY);
        // Row 1, col 2 drawn.
        assert_eq!(grid.get_pixel(gap + 2 * (cell + gap), gap + cell + gap)[0], 255);
    }

    #[test]
    fn png_round_trips_and_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let a = dot(3, 4);
        let b = vec![HIDDEN; PIXELS];
        let images: Vec<&[u8]> = vec![&a, &b, &a, &b, &a];
        let cols = grid_columns(images.len());
        let expected = render_grid(&images, SQUARE, cols, DEFAULT_SCALE, DEFAULT_GAP);

        let p1 = dir.path().join("grid1.png");
        let p2 = dir.path().join("grid2.png");
        write_grid_png(&p1, &images, SQUARE, cols, DEFAULT_SCALE, DEFAULT_GAP).unwrap();
        write_grid_png(&p2, &images, SQUARE, cols, DEFAULT_SCALE, DEFAULT_GAP).unwrap();
        let bytes1 = std::fs::read(&p1).unwrap();
        assert_eq!(
            bytes1,
            std::fs::read(&p2).unwrap(),
            "same input must give identical files"
        );

        let decoded = image::load_from_memory(&bytes1).unwrap().to_luma8();
        assert_eq!(decoded, expected);
    }

    #[test]
    fn single_image_and_rows_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = dot(27, 27);
        let single = dir.path().join("one.png");
        write_image_png(&single, &a, SQUARE, 2).unwrap();
        let decoded = image::load_from_memory(&std::fs::read(&single).unwrap())
            .unwrap()
            .to_luma8();
        assert_eq!(decoded.dimensions(), (56, 56));
        assert_eq!(decoded.get_pixel(55, 55)[0], 255);
        assert_eq!(decoded.get_pixel(0, 0)[0], 0);

        let rows_path = dir.path().join("rows.png");
        write_rows_png(&rows_path, &[vec![&a[..], &a[..]], vec![&a[..]]], SQUARE, 1, 1).unwrap();
        let decoded = image::load_from_memory(&std::fs::read(&rows_path).unwrap())
            .unwrap()
            .to_luma8();
        assert_eq!(
            decoded,
            render_rows(&[vec![&a[..], &a[..]], vec![&a[..]]], SQUARE, 1, 1)
        );
    }

    #[test]
    fn writes_are_atomic_and_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("grid.png");
        let a = dot(0, 0);
        write_grid_png(&path, &[&a], SQUARE, 1, 1, 1).unwrap();
        write_grid_png(&path, &[&a, &a], SQUARE, 2, 1, 1).unwrap();
        let names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["grid.png".to_string()], "no temp files may be left behind");
        let decoded = image::load_from_memory(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(decoded.width(), 2 * cell_size(1) + 3);
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.png");
        let short = vec![0u8; 10];
        let err = write_grid_png(&path, &[&short], SQUARE, 1, 1, 1).unwrap_err();
        assert!(err.to_string().contains("10 bytes"), "{err}");
        let ok = vec![0u8; PIXELS];
        assert!(write_image_png(&path, &ok, SQUARE, 0).is_err());
        assert!(write_rows_png(&path, &[vec![&ok[..], &short[..]]], SQUARE, 1, 1).is_err());
        assert!(!path.exists());
    }
}
