//! `pixelcnn receptive-field` and `pixelcnn score`.

use super::{styled_bar, ModelArgs, ShapeArgs};
use crate::device::Device;
use crate::inspect::receptive_field::{self, Region};
use crate::inspect::score::{self, HeatmapRow};
use crate::inspect::user_image;
use crate::model::Network;
use crate::{checkpoint, image_out, sampling};
use anyhow::{ensure, Result};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct ReceptiveFieldArgs {
    /// Checkpoint to examine; default: the shipped model, or with --arch/--filters/--blocks/--layers/--conditional
    /// a fresh model with random weights (seeded by --seed).
    #[arg(long, conflicts_with_all = ["arch", "filters", "blocks", "layers", "conditional"])]
    checkpoint: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    shape: ShapeArgs,
    /// The pixel whose prediction is examined: ROW,COLUMN, 0-based (0,0 is the top-left pixel, 27,27 the
    /// bottom-right).
    #[arg(long, value_name = "ROW,COLUMN", value_parser = receptive_field::parse_pixel)]
    pixel: (usize, usize),
    /// Draw the map into this image, with a legend (.png, .jpg, .bmp or .gif). Without --out and --json the map is
    /// printed as text.
    #[arg(long, value_name = "FILE.png")]
    out: Option<PathBuf>,
    /// Output pixels per image pixel in the PNG.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=64))]
    scale: u32,
    /// Random inputs the gradient is accumulated over (a pixel counts when any of them gives it a non-zero
    /// gradient).
    #[arg(long, default_value_t = receptive_field::DEFAULT_INPUTS as u64, value_parser = clap::value_parser!(u64).range(1..=256))]
    inputs: u64,
    /// Seed of the random inputs, and of the random weights of a model given by --arch etc.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use a training checkpoint's raw parameters, not the Polyak average it keeps (`train --ema`).
    #[arg(long)]
    raw_weights: bool,
    /// Print one JSON object with the mask (H × W: 1 = the prediction depends on that pixel) and the blind spot.
    #[arg(long)]
    json: bool,
}

impl ReceptiveFieldArgs {
    pub fn run(self) -> Result<()> {
        let (net, params, source, checkpoint) = if self.model.given() || self.shape.image_size.is_some() {
            let config = self.shape.apply(self.model.config()?)?;
            let net = Network::new(config);
            let params = net.init_params(self.seed);
            (net, params, format!("random weights, seed {}", self.seed), None)
        } else {
            let path = sampling::model_path(self.checkpoint.as_deref())?;
            if let Some(out) = &self.out {
                image_out::check_image_output(out, &[&path])?;
            }
            let ck = checkpoint::load(&path)?;
            (
                Network::new(ck.config),
                ck.weights(self.raw_weights).to_vec(),
                path.display().to_string(),
                Some(path),
            )
        };
        if let Some(out) = &self.out {
            image_out::check_image_output(out, &[])?;
        }
        let field = receptive_field::receptive_field(&net, &params, self.pixel, self.inputs as usize, self.seed)?;
        let title = format!("{} ({source})", net.config.describe());
        if let Some(out) = &self.out {
            receptive_field::write_image(out, &field, &net.config.describe(), &source, self.scale)?;
        }
        let (r, c) = self.pixel;
        if self.json {
            let j = serde_json::json!({
                "model": net.config.describe(),
                "checkpoint": checkpoint,
                "random_weights_seed": checkpoint.is_none().then_some(self.seed),
                "pixel": [r, c],
                "inputs": field.inputs,
                "depends_on": field.count(Region::Depends),
                "blind_spot_pixels": field.count(Region::BlindSpot),
                "unreached_pixels": field.count(Region::Unreached),
                "causal_pixels": field.causal_pixels(),
                "leaks": field.count(Region::Leak),
                "mask": field.rows(|p| field.mask[p]),
                "blind_spot": field.rows(|p| field.regions[p] == Region::BlindSpot),
                "out": self.out,
            });
            println!("{j}");
            return Ok(());
        }
        if self.out.is_none() {
            print!("{}", field.text_map());
            println!("X the pixel predicted   # pixels it depends on   o blind spot   . earlier, out of reach");
        }
        println!(
            "{title}: the prediction at ({r}, {c}) depends on {} of the {} earlier pixels; blind spot {}, out of reach {}{}",
            field.count(Region::Depends),
            field.causal_pixels(),
            field.count(Region::BlindSpot),
            field.count(Region::Unreached),
            match field.count(Region::Leak) {
                0 => String::new(),
                n => format!("; LEAK: it depends on {n} later pixels"),
            }
        );
        if let Some(out) = &self.out {
            eprintln!("wrote {}", out.display());
        }
        Ok(())
    }
}

/// Images in one heatmap at most (one row each).
const MAX_HEATMAP_IMAGES: usize = 100;

#[derive(Args)]
pub struct ScoreArgs {
    /// Image files: PNG, JPEG, GIF or BMP, grey or colour, of the model's size (or any size with --resize).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
    /// Checkpoint (.safetensors); default: the shipped model.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Invert the grey levels first (for dark drawings on a light background; Fashion-MNIST is light garments on
    /// black).
    #[arg(long)]
    invert: bool,
    /// Pad an image of another size than the model's to its aspect ratio and resize it (triangle filter), instead
    /// of refusing it.
    #[arg(long)]
    resize: bool,
    /// Draw each image beside its per-pixel surprise −log p(x_q | earlier pixels) into this image (.png, .jpg,
    /// .bmp or .gif), with the colour scale.
    #[arg(long, value_name = "FILE.png")]
    heatmap: Option<PathBuf>,
    /// Output pixels per image pixel in the heatmap.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=32))]
    scale: u32,
    #[arg(long, value_enum, default_value_t = Device::Gpu)]
    device: Device,
    /// Use a training checkpoint's raw parameters, not the Polyak average it keeps (`train --ema`).
    #[arg(long)]
    raw_weights: bool,
    /// Print one JSON object with every image's figures.
    #[arg(long)]
    json: bool,
}

impl ScoreArgs {
    pub fn run(self) -> Result<()> {
        let path = sampling::model_path(self.checkpoint.as_deref())?;
        if let Some(h) = &self.heatmap {
            ensure!(
                self.images.len() <= MAX_HEATMAP_IMAGES,
                "--heatmap draws at most {MAX_HEATMAP_IMAGES} images (got {}); score the rest without it",
                self.images.len()
            );
            let mut inputs: Vec<&Path> = self.images.iter().map(PathBuf::as_path).collect();
            inputs.push(&path);
            image_out::check_image_output(h, &inputs)?;
        }
        let ck = checkpoint::load(&path)?;
        let net = Network::new(ck.config);
        let prep = user_image::Preparation {
            shape: net.image(),
            threshold: ck.meta.threshold,
            invert: ck.meta.invert != self.invert,
            resize: self.resize,
        };
        let images = user_image::load_all(&self.images, prep)?;
        let names = &ck.meta.class_names;
        let binary: Vec<u8> = images.iter().flat_map(|i| i.binary.iter().copied()).collect();
        let passes = images.len() * net.config.classes.max(1);
        let pb = styled_bar(passes as u64, "scoring", "{pos}/{len}");
        let scores = score::pixel_scores(self.device, &net, ck.weights(self.raw_weights), &binary, |k| {
            pb.inc(k as u64)
        })?;
        pb.finish_and_clear();
        let results: Vec<score::ImageScore> = (0..images.len()).map(|i| score::image_score(&scores, i)).collect();
        if let Some(h) = &self.heatmap {
            let rows: Vec<HeatmapRow> = images
                .iter()
                .zip(&results)
                .map(|(img, r)| HeatmapRow {
                    binary: &img.binary,
                    surprise: &r.surprise,
                    caption: caption(img, r, names),
                })
                .collect();
            score::write_heatmap(h, &rows, net.image(), self.scale)?;
        }
        if self.json {
            let per_image: Vec<serde_json::Value> = images
                .iter()
                .zip(&results)
                .map(|(img, r)| {
                    let mut v = serde_json::to_value(r).expect("scores serialize");
                    let o = v.as_object_mut().expect("an object");
                    o.insert("file".into(), serde_json::json!(img.path));
                    o.insert("width".into(), img.width.into());
                    o.insert("height".into(), img.height.into());
                    o.insert("ones".into(), img.ones().into());
                    if let Some((y, p)) = r.best_class() {
                        o.insert("most_likely_class".into(), names[y].clone().into());
                        o.insert("most_likely_probability".into(), p.into());
                    }
                    v
                })
                .collect();
            let j = serde_json::json!({
                "model": net.config.describe(),
                "checkpoint": path,
                "conditional": net.config.is_conditional(),
                "classes": net.config.is_conditional().then_some(names),
                "images": per_image,
                "heatmap": self.heatmap,
            });
            println!("{j}");
            return Ok(());
        }
        for (img, r) in images.iter().zip(&results) {
            println!(
                "{} ({}×{}, {} of {} pixels on after binarizing): NLL {:.3} nats = {:.4} bits/dim{}",
                img.path.display(),
                img.width,
                img.height,
                img.ones(),
                net.pixels(),
                r.nll_nats,
                r.bits_per_dim,
                if r.class_probabilities.is_some() {
                    " (marginal over the classes)"
                } else {
                    ""
                }
            );
            if let Some(top) = r.top_classes(3, names) {
                println!("  p(class | image): {top}");
            }
        }
        if let Some(h) = &self.heatmap {
            eprintln!("wrote {}", h.display());
        }
        Ok(())
    }
}

/// "shoe.png: 95.3 nats, 0.175 bits/dim, sneaker 0.93".
fn caption(img: &user_image::UserImage, r: &score::ImageScore, names: &[String]) -> String {
    let mut s = format!("{}: {:.1} nats, {:.3} bits/dim", img.name(), r.nll_nats, r.bits_per_dim);
    if let Some((y, p)) = r.best_class() {
        s.push_str(&format!(", {} {p:.2}", names[y]));
    }
    s
}
