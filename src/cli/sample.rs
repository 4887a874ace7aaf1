//! `pixelcnn sample` and `pixelcnn complete`.

use super::{parse_temperature, styled_bar, DataArgs};
use crate::device::Device;
use crate::inspect::animation;
use crate::inspect::{score, user_image};
use crate::model::Network;
use crate::sampling::{self, ClassRequest, CompleteRequest, StreamRequest};
use crate::{checkpoint, fsio, grid, image_out};
use anyhow::{bail, ensure, Result};
use clap::Args;
use image::GrayImage;
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
    /// Class to sample (a name of the model's classes, like `sneaker`, or a label number; repeat for several,
    /// taken in turn), or `all` for a grid with one labelled row per class. Conditional models only; default: an
    /// even mix of classes.
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
    /// Also write an animated GIF of the grid as it is drawn: the sampler draws every image pixel by pixel in
    /// raster order; undrawn pixels are grey; the finished grid (the PNG's pixels exactly) is held at the end.
    #[arg(long, value_name = "FILE.gif")]
    animate: Option<PathBuf>,
    /// Pixels drawn between two frames of --animate: the default is one frame per image row (28 for 28×28
    /// images), 1 is one frame per pixel (785 frames for 28×28: a big file).
    #[arg(long, value_name = "PIXELS", value_parser = clap::value_parser!(u64).range(1..=65_536))]
    frames: Option<u64>,
    #[arg(long)]
    json: bool,
}

impl SampleArgs {
    pub fn run(self) -> Result<()> {
        let count = self.count as usize;
        let path = sampling::model_path(self.checkpoint.as_deref())?;
        image_out::check_image_output(&self.out, &[&path])?;
        if let Some(dir) = &self.save_each {
            fsio::check_output_dir(dir)?;
        }
        let ck = checkpoint::load(&path)?;
        let net = Network::new(ck.config);
        let names = &ck.meta.class_names;
        let request = sampling::class_request(&net, names, &self.classes, count)?;
        let total = request.total;
        let grid = total <= MAX_GRID_IMAGES;
        if !grid && self.save_each.is_none() {
            bail!("a grid of {total} images is too big (at most {MAX_GRID_IMAGES}); pass --save-each DIR to write each image on its own");
        }
        if grid {
            grid::check_canvas(self.layout(&net, &request), net.image(), self.scale, grid::DEFAULT_GAP)?;
        }
        let steps = self.check_animation(&path, &net, names, &request, grid)?;
        if let Some(note) = ck.weights_note().filter(|_| !self.raw_weights) {
            eprintln!("note: {note}");
        }
        let (kept, seconds) = self.draw(&net, ck.weights(self.raw_weights), &request, grid)?;
        if grid {
            self.write_grid(&net, names, &kept, &request)?;
        }
        if let (Some(gif), Some(steps)) = (&self.animate, &steps) {
            let pixels = net.pixels();
            let bytes = animation::encode_gif(steps, |k| {
                self.render(&net, names, &animation::partial_images(&kept, k, pixels), &request)
            })?;
            fsio::write_atomic(gif, &bytes)?;
        }
        self.report(total, grid, seconds);
        Ok(())
    }

    /// With --animate: checks the file and the animation's size before sampling; returns the frames' pixel counts.
    fn check_animation(
        &self,
        model: &std::path::Path,
        net: &Network,
        names: &[String],
        request: &ClassRequest,
        grid: bool,
    ) -> Result<Option<Vec<usize>>> {
        let Some(gif) = &self.animate else {
            ensure!(self.frames.is_none(), "--frames is for --animate");
            return Ok(None);
        };
        ensure!(
            gif.extension().is_some_and(|e| e.eq_ignore_ascii_case("gif")),
            "--animate writes a GIF: give it a file name ending in .gif (got {})",
            gif.display()
        );
        ensure!(
            grid,
            "--animate animates the grid, and there is no grid above {MAX_GRID_IMAGES} images"
        );
        fsio::check_output(gif, &[model, &self.out])?;
        ensure!(
            gif.as_path() != self.out.as_path(),
            "--animate and --out name the same file"
        );
        let per_frame = self.frames.map_or(net.width(), |f| f as usize);
        let steps = animation::frame_steps(per_frame, net.pixels());
        let blank = self.render(net, names, &vec![grid::HIDDEN; request.total * net.pixels()], request)?;
        animation::check_size(blank.width() as u64, blank.height() as u64, steps.len())?;
        Ok(Some(steps))
    }

    /// The grid of `images` as [`Self::write_grid`] draws it (the same render functions, so the same pixels).
    fn render(&self, net: &Network, names: &[String], images: &[u8], request: &ClassRequest) -> Result<GrayImage> {
        let cells: Vec<&[u8]> = images.chunks(net.pixels()).collect();
        if request.per_class {
            let rows: Vec<Vec<&[u8]>> = cells.chunks(self.count as usize).map(|r| r.to_vec()).collect();
            let labels: Vec<&str> = names.iter().map(String::as_str).collect();
            grid::render_labelled_rows(&rows, &labels, net.image(), self.scale, grid::DEFAULT_GAP)
        } else {
            let columns = grid::grid_columns(request.total);
            Ok(grid::render_grid(
                &cells,
                net.image(),
                columns,
                self.scale,
                grid::DEFAULT_GAP,
            ))
        }
    }

    /// Samples the images, writing each one with --save-each; returns them (kept only for a grid) and the
    /// seconds it took.
    fn draw(&self, net: &Network, params: &[f32], request: &ClassRequest, keep: bool) -> Result<(Vec<u8>, f64)> {
        let pb = styled_bar(sampling::progress_units(net, request.total), "sampling", "{percent}%");
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
                    for (i, img) in s.images.chunks(net.pixels()).enumerate() {
                        let file = dir.join(format!("sample_{:06}.png", start + i));
                        grid::write_image_png(&file, img, net.image(), self.scale)?;
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
    fn layout(&self, net: &Network, request: &ClassRequest) -> grid::Layout {
        if request.per_class {
            grid::Layout::Rows {
                rows: net.config.classes,
                cols: self.count as usize,
                labelled: true,
            }
        } else {
            grid::Layout::Square(request.total)
        }
    }

    fn write_grid(&self, net: &Network, names: &[String], images: &[u8], request: &ClassRequest) -> Result<()> {
        let cells: Vec<&[u8]> = images.chunks(net.pixels()).collect();
        if request.per_class {
            let rows: Vec<Vec<&[u8]>> = cells.chunks(self.count as usize).map(|r| r.to_vec()).collect();
            let labels: Vec<&str> = names.iter().map(String::as_str).collect();
            grid::write_labelled_rows_png(&self.out, &rows, &labels, net.image(), self.scale, grid::DEFAULT_GAP)
        } else {
            let columns = grid::grid_columns(request.total);
            grid::write_grid_png(&self.out, &cells, net.image(), columns, self.scale, grid::DEFAULT_GAP)
        }
    }

    fn report(&self, total: usize, grid: bool, seconds: f64) {
        let out = &self.out;
        if self.json {
            println!(
                "{}",
                serde_json::json!({"count": total, "seconds": seconds, "out": grid.then_some(out), "save_each": self.save_each, "animation": self.animate})
            );
        } else if grid {
            eprintln!("wrote {} ({total} images, {seconds:.2} s)", out.display());
            if let Some(gif) = &self.animate {
                eprintln!("wrote {} (the grid as it is drawn)", gif.display());
            }
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
    /// Complete your own images instead of test images (PNG, JPEG, GIF or BMP; prepared as `pixelcnn score
    /// --help` describes). Repeat for several.
    #[arg(long = "image", value_name = "IMAGE", conflicts_with = "count")]
    images: Vec<PathBuf>,
    /// With --image: pad an image of another size than the model's to its aspect ratio and resize it (triangle
    /// filter), instead of refusing it.
    #[arg(long, requires = "images")]
    resize: bool,
    /// Class to condition on (a class-conditional model; a name of its classes, like `sneaker`, or a label
    /// number). Default: each test image's own label; for --image, the class the model finds most likely given
    /// the kept rows.
    #[arg(long)]
    class: Option<String>,
    /// Rows kept from each image (0 to the image's height; default: half of it, 14 for 28×28 images).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=256))]
    rows: Option<u64>,
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

/// The class a user's image is completed in, and how likely the model found it given the kept rows (None when
/// --class chose it).
struct Chosen {
    file: PathBuf,
    class: Option<usize>,
    probability: Option<f64>,
}

impl CompleteArgs {
    pub fn run(self) -> Result<()> {
        let out = &self.out;
        let path = sampling::model_path(self.checkpoint.as_deref())?;
        let mut inputs: Vec<&std::path::Path> = self.images.iter().map(PathBuf::as_path).collect();
        inputs.push(&path);
        image_out::check_image_output(out, &inputs)?;
        let ck = checkpoint::load(&path)?;
        let net = Network::new(ck.config);
        let conditional = net.config.is_conditional();
        let class = match &self.class {
            Some(c) => {
                ensure!(
                    conditional,
                    "--class needs a class-conditional model; this one ({}) is unconditional",
                    net.config.describe()
                );
                Some(crate::model::parse_class(c, &ck.meta.class_names)?)
            }
            None => None,
        };
        let rows = self.rows.map_or(net.config.height / 2, |r| r as usize);
        ensure!(
            rows <= net.config.height,
            "--rows {rows}: the model's images have {} rows, so keep 0–{0}",
            net.config.height
        );
        let wanted = if self.images.is_empty() {
            self.count as usize
        } else {
            self.images.len()
        };
        // Each row: the original, the occluded input and the completions.
        let layout = grid::Layout::Rows {
            rows: wanted,
            cols: 2 + self.samples as usize,
            labelled: false,
        };
        grid::check_canvas(layout, net.image(), self.scale, grid::DEFAULT_GAP)?;
        let (split, chosen) = if self.images.is_empty() {
            let ds = self.data.load_for_model(&ck.meta, &ck.config, &path)?;
            let mut split = ds.test.take((self.count as usize).min(ds.test.len()));
            ensure!(
                split.len() == self.count as usize,
                "the test split has only {} images",
                ds.test.len()
            );
            if let Some(y) = class {
                split.labels.fill(y as u8);
            }
            (split, None)
        } else {
            let (split, chosen) = self.user_images(&net, &ck, class, rows)?;
            (split, Some(chosen))
        };
        let req = CompleteRequest {
            device: self.device,
            count: split.len(),
            rows,
            samples: self.samples as usize,
            seed: self.seed,
            temperature: self.temperature as f32,
        };
        let (count, samples) = (req.count, req.samples);
        let pb = styled_bar(
            sampling::progress_units(&net, count * samples),
            "completing",
            "{percent}%",
        );
        let t = Instant::now();
        let c = sampling::complete(&net, ck.weights(self.raw_weights), &split, req, |k| pb.inc(k as u64))?;
        let seconds = t.elapsed().as_secs_f64();
        pb.finish_and_clear();
        grid::write_rows_png(out, &c.grid_rows(), net.image(), self.scale, grid::DEFAULT_GAP)?;
        let names = &ck.meta.class_names;
        let images_json = chosen.as_ref().map(|ch| {
            ch.iter()
                .map(|c| {
                    serde_json::json!({
                        "file": c.file,
                        "class": c.class.map(|y| &names[y]),
                        "class_probability_given_kept_rows": c.probability,
                    })
                })
                .collect::<Vec<_>>()
        });
        if self.json {
            println!(
                "{}",
                serde_json::json!({"count": count, "rows": rows, "samples": samples, "seconds": seconds, "out": out,
                    "class": class.map(|y| &names[y]), "images": images_json})
            );
            return Ok(());
        }
        for c in chosen.iter().flatten() {
            match (c.class, c.probability) {
                (Some(y), Some(p)) => eprintln!(
                    "{}: completed as {} (p(class | kept rows) = {p:.2}{})",
                    c.file.display(),
                    names[y],
                    if rows == 0 {
                        "; nothing is kept with --rows 0, so every class is equally likely: pass --class"
                    } else {
                        ""
                    }
                ),
                (Some(y), None) => eprintln!("{}: completed as {}", c.file.display(), names[y]),
                _ => {}
            }
        }
        eprintln!(
            "wrote {} ({count} images × {samples} completions of the bottom {} rows, {seconds:.2} s)",
            out.display(),
            net.config.height - rows
        );
        Ok(())
    }

    /// The user's images as a split, each labelled with the class it is completed in: --class, or (conditional
    /// models) argmax_y p(y | the kept rows).
    fn user_images(
        &self,
        net: &Network,
        ck: &checkpoint::Checkpoint,
        class: Option<usize>,
        rows: usize,
    ) -> Result<(crate::data::Split, Vec<Chosen>)> {
        let params = ck.weights(self.raw_weights);
        let prep = user_image::Preparation {
            shape: net.image(),
            threshold: ck.meta.threshold,
            invert: ck.meta.invert != self.data.invert,
            resize: self.resize,
        };
        let imgs = user_image::load_all(&self.images, prep)?;
        let binary: Vec<u8> = imgs.iter().flat_map(|i| i.binary.iter().copied()).collect();
        let mut chosen: Vec<Chosen> = imgs
            .iter()
            .map(|i| Chosen {
                file: i.path.clone(),
                class,
                probability: None,
            })
            .collect();
        if net.config.is_conditional() && class.is_none() {
            let scores = score::pixel_scores(self.device, net, params, &binary, |_| {})?;
            for (i, c) in chosen.iter_mut().enumerate() {
                let post = score::class_posterior(&scores, i, rows * net.width());
                let best = (0..post.len())
                    .max_by(|&a, &b| post[a].total_cmp(&post[b]).then(b.cmp(&a)))
                    .expect("a conditional model has classes");
                c.class = Some(best);
                c.probability = Some(post[best]);
            }
        }
        let labels = chosen.iter().map(|c| c.class.unwrap_or(0) as u8).collect();
        let split = crate::data::Split {
            images: binary,
            labels,
            pixels: net.pixels(),
        };
        Ok((split, chosen))
    }
}
