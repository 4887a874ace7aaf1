//! `pixelcnn sample` and `pixelcnn complete`.

use super::{parse_temperature, styled_bar, DataArgs};
use anyhow::{bail, Result};
use clap::Args;
use pixelcnn::model::{Network, CLASS_NAMES, PIXELS};
use pixelcnn::sampling::{self, ClassRequest, CompleteRequest, StreamRequest};
use pixelcnn::train::Device;
use pixelcnn::{checkpoint, grid, util};
use std::path::PathBuf;
use std::time::Instant;

/// Grids above this many images are not drawn (use --save-each).
const MAX_GRID_IMAGES: usize = 4096;

#[derive(Args)]
pub struct SampleArgs {
    /// Checkpoint (.safetensors); default: the shipped model in assets/.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Number of images (with --class all: images per class).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    count: u64,
    /// Class to sample (name like `sneaker` or number 0–9; repeat for several, taken in turn), or `all` for a
    /// grid with one labelled row per class. Conditional models only; default: an even mix of classes.
    #[arg(long = "class")]
    classes: Vec<String>,
    /// Seed of the random draws: the same seed gives the same images.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Draw each pixel with p = σ(logit / T): 1 (the default) samples the model itself; below 1 the images are
    /// sharper and cleaner but less varied (0.8 is a common choice), above 1 noisier.
    #[arg(long, default_value_t = 1.0, value_parser = parse_temperature)]
    temperature: f64,
    /// Output grid (⌈√count⌉ columns); the extension picks the format: .png, .jpg/.jpeg, .bmp or .gif.
    #[arg(long, default_value = "samples.png")]
    out: PathBuf,
    /// Upscaling factor of the grid (nearest neighbour).
    #[arg(long, default_value_t = grid::DEFAULT_SCALE, value_parser = clap::value_parser!(u32).range(1..=64))]
    scale: u32,
    /// Use the original algorithm (a full forward pass per pixel) instead of the incremental sampler.
    #[arg(long)]
    naive: bool,
    #[arg(long, value_enum, default_value_t = Device::Gpu)]
    device: Device,
    /// Also write each image as its own PNG into this directory (needed above 4,096 images, whose grid is
    /// skipped; sampling then streams in chunks with bounded memory).
    #[arg(long)]
    save_each: Option<PathBuf>,
    /// Use a training checkpoint's raw parameters, not the Polyak average it keeps (`train --ema`).
    #[arg(long)]
    raw_weights: bool,
    #[arg(long)]
    json: bool,
}

impl SampleArgs {
    pub fn run(self) -> Result<()> {
        let count = self.count as usize;
        let path = sampling::model_path(self.checkpoint.as_deref())?;
        util::check_image_output(&self.out, &[&path])?;
        if let Some(dir) = &self.save_each {
            util::check_output_dir(dir)?;
        }
        let ck = checkpoint::load(&path)?;
        let net = Network::new(ck.config);
        let request = sampling::class_request(&net, &self.classes, count)?;
        let total = request.total;
        let grid = total <= MAX_GRID_IMAGES;
        if !grid && self.save_each.is_none() {
            bail!("a grid of {total} images is too big (at most {MAX_GRID_IMAGES}); pass --save-each DIR to write each image on its own");
        }
        if grid {
            grid::check_canvas(self.layout(&request), self.scale, grid::DEFAULT_GAP)?;
        }
        let (kept, seconds) = self.draw(&net, ck.weights(self.raw_weights), &request, grid)?;
        if grid {
            self.write_grid(&kept, &request)?;
        }
        self.report(total, grid, seconds);
        Ok(())
    }

    /// Samples the images, writing each one with --save-each; returns them (kept only for a grid) and the
    /// seconds it took.
    fn draw(&self, net: &Network, params: &[f32], request: &ClassRequest, keep: bool) -> Result<(Vec<u8>, f64)> {
        let pb = styled_bar(sampling::progress_units(request.total), "sampling", "{percent}%");
        let t = Instant::now();
        let mut kept: Vec<u8> = Vec::new();
        let job = StreamRequest {
            device: self.device,
            count: request.total,
            seed: self.seed,
            labels: request.labels.as_deref(),
            naive: self.naive,
            temperature: self.temperature as f32,
        };
        sampling::sample_streaming(
            net,
            params,
            job,
            |k| pb.inc(k as u64),
            |start, s| {
                if let Some(dir) = &self.save_each {
                    for (i, img) in s.images.chunks(PIXELS).enumerate() {
                        grid::write_image_png(&dir.join(format!("sample_{:06}.png", start + i)), img, self.scale)?;
                    }
                }
                if keep {
                    kept.extend_from_slice(&s.images);
                }
                Ok(())
            },
        )?;
        let seconds = t.elapsed().as_secs_f64();
        pb.finish_and_clear();
        Ok((kept, seconds))
    }

    /// The grid's layout: one labelled row per class for `--class all`, else a square.
    fn layout(&self, request: &ClassRequest) -> grid::Layout {
        if request.per_class {
            grid::Layout::Rows {
                rows: CLASS_NAMES.len(),
                cols: self.count as usize,
                labelled: true,
            }
        } else {
            grid::Layout::Square(request.total)
        }
    }

    fn write_grid(&self, images: &[u8], request: &ClassRequest) -> Result<()> {
        let cells: Vec<&[u8]> = images.chunks(PIXELS).collect();
        if request.per_class {
            let rows: Vec<Vec<&[u8]>> = cells.chunks(self.count as usize).map(|r| r.to_vec()).collect();
            grid::write_labelled_rows_png(&self.out, &rows, &CLASS_NAMES, self.scale, grid::DEFAULT_GAP)
        } else {
            let columns = grid::grid_columns(request.total);
            grid::write_grid_png(&self.out, &cells, columns, self.scale, grid::DEFAULT_GAP)
        }
    }

    fn report(&self, total: usize, grid: bool, seconds: f64) {
        let out = &self.out;
        if self.json {
            println!(
                "{}",
                serde_json::json!({"count": total, "seconds": seconds, "out": grid.then_some(out), "save_each": self.save_each})
            );
        } else if grid {
            eprintln!("wrote {} ({total} images, {seconds:.2} s)", out.display());
        } else {
            eprintln!(
                "wrote {total} images into {} ({seconds:.2} s; no grid above {MAX_GRID_IMAGES} images)",
                self.save_each.as_ref().expect("no grid without --save-each").display()
            );
        }
    }
}

#[derive(Args)]
pub struct CompleteArgs {
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Number of test images (the first ones of the test split).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    count: u64,
    /// Rows kept from each image (0–28).
    #[arg(long, default_value_t = 14, value_parser = clap::value_parser!(u64).range(0..=28))]
    rows: u64,
    /// Completions per image.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    samples: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Draw each pixel with p = σ(logit / T) (see `sample --temperature`).
    #[arg(long, default_value_t = 1.0, value_parser = parse_temperature)]
    temperature: f64,
    /// Output grid; the extension picks the format: .png, .jpg/.jpeg, .bmp or .gif.
    #[arg(long, default_value = "completions.png")]
    out: PathBuf,
    #[arg(long, default_value_t = grid::DEFAULT_SCALE, value_parser = clap::value_parser!(u32).range(1..=64))]
    scale: u32,
    #[arg(long, value_enum, default_value_t = Device::Gpu)]
    device: Device,
    /// Use a training checkpoint's raw parameters, not the Polyak average it keeps (`train --ema`).
    #[arg(long)]
    raw_weights: bool,
    #[arg(long)]
    json: bool,
}

impl CompleteArgs {
    pub fn run(self) -> Result<()> {
        let req = CompleteRequest {
            device: self.device,
            count: self.count as usize,
            rows: self.rows as usize,
            samples: self.samples as usize,
            seed: self.seed,
            temperature: self.temperature as f32,
        };
        let (count, rows, samples, out) = (req.count, req.rows, req.samples, &self.out);
        let path = sampling::model_path(self.checkpoint.as_deref())?;
        util::check_image_output(out, &[&path])?;
        let ck = checkpoint::load(&path)?;
        let ds = self.data.load()?;
        let net = Network::new(ck.config);
        // Each row: the original, the occluded input and the completions.
        let layout = grid::Layout::Rows {
            rows: count,
            cols: 2 + samples,
            labelled: false,
        };
        grid::check_canvas(layout, self.scale, grid::DEFAULT_GAP)?;
        let pb = styled_bar(sampling::progress_units(count * samples), "completing", "{percent}%");
        let t = Instant::now();
        let c = sampling::complete(&net, ck.weights(self.raw_weights), &ds.test, req, |k| pb.inc(k as u64))?;
        let seconds = t.elapsed().as_secs_f64();
        pb.finish_and_clear();
        grid::write_rows_png(out, &c.grid_rows(), self.scale, grid::DEFAULT_GAP)?;
        if self.json {
            println!(
                "{}",
                serde_json::json!({"count": count, "rows": rows, "samples": samples, "seconds": seconds, "out": out})
            );
        } else {
            eprintln!(
                "wrote {} ({count} images × {samples} completions of the bottom {} rows, {seconds:.2} s)",
                out.display(),
                28 - rows
            );
        }
        Ok(())
    }
}
