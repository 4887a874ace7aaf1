//! The `pixelcnn` command line: argument parsing (with every value range-checked) and printing only; the work
//! lives in the library, one function per command. [`Cli`] is the parser (`src/main.rs` parses with it and calls
//! [`run`]); each subcommand's arguments and their `run` are in the submodules, and this file holds what they share:
//! the data and model flags, the value parsers that range-check every number, and the progress bar.

pub mod bench;
pub mod eval;
pub mod info;
pub mod inspect;
pub mod sample;
pub mod train;

use crate::model::{Arch, Config, DEFAULT_DEPTH, DEFAULT_FILTERS};
use crate::{checkpoint, data};
use anyhow::{ensure, Result};
use bench::BenchCommand;
use clap::{Args, Parser, Subcommand};
use eval::EvalArgs;
use indicatif::{ProgressBar, ProgressStyle};
use info::{BaselinesArgs, DataCmdArgs, DevicesArgs, DownloadArgs, ExportArgs, PlotArgs, SummaryArgs};
use inspect::{ReceptiveFieldArgs, ScoreArgs};
use sample::{CompleteArgs, SampleArgs};
use std::path::PathBuf;
use train::TrainArgs;

const QUICK_START: &str = "\
Quick start:
  pixelcnn sample                      samples from the shipped model into samples.png
  pixelcnn sample --class sneaker      sneakers, from the shipped class-conditional model
  pixelcnn sample --class all          one labelled row per class
  pixelcnn eval                        the shipped model's test NLL
  pixelcnn sample --animate draw.gif   also an animation of the sampler drawing the grid, pixel by pixel
  pixelcnn receptive-field --pixel 14,14 --out field.png
                                       which pixels the prediction at row 14, column 14 can see
  pixelcnn score my-shoe.png --resize --heatmap surprise.png
                                       the model's NLL of your own image, its surprise per pixel, its class
  pixelcnn complete --image my-shoe.png --resize
                                       completions of the bottom half of your own image
  pixelcnn download && pixelcnn train  trains the seed's model (50 epochs, batch 128)
  pixelcnn train --data my-images --conditional --arch gated --dilation-cycle 5
                                       a model of your own images (class folders, any size; see data --help)";

/// Train, evaluate and sample PixelCNNs on binarized images — Fashion-MNIST, binarized MNIST or your own, at any
/// size — with the seed's network or a blind-spot-free Gated PixelCNN (dilated to see the whole image), optionally
/// class-conditional, and every piece of math in WGSL compute shaders (any Vulkan, Metal or DX12 GPU; on a machine
/// without one, Mesa's lavapipe runs them on the CPU).
#[derive(Parser)]
#[command(name = "pixelcnn", version, max_term_width = 110, after_help = QUICK_START)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

// The doc comment on each variant is its subcommand's help text.
#[derive(Subcommand)]
enum Command {
    /// Show the dataset: images, label histogram and fraction of 1-pixels per split, after binarization.
    Data(DataCmdArgs),
    /// Download the four official Fashion-MNIST files, verifying their MD5 sums.
    Download(DownloadArgs),
    /// List the GPU adapters wgpu can see, mark the one pixelcnn will use, and say which kernel versions serve it.
    ///
    /// The choice honours WGPU_BACKEND (vulkan, metal, dx12, gl), WGPU_ADAPTER_NAME (a substring of the name)
    /// and WGPU_POWER_PREF (high, low); PIXELCNN_KERNELS (raster, tiled, conv=…, pixel=…) forces kernel versions.
    Devices(DevicesArgs),
    /// Print the layers, output shapes and parameter counts (532,673 for the defaults) and the parameter tensors.
    Summary(SummaryArgs),
    /// Train a model. Writes metrics.jsonl, epoch_NNN.safetensors and last.safetensors into the run directory.
    ///
    /// last.safetensors is also written every --save-every minutes, so a run killed at any moment (even with
    /// kill -9) loses at most that much. Ctrl-C or SIGTERM saves it and stops; `--resume DIR/last.safetensors`
    /// continues exactly (same data order, same optimizer state), so an interrupted and resumed run ends
    /// bit-identical to an uninterrupted one.
    Train(TrainArgs),
    /// Negative log-likelihood of a checkpoint on a data split (nats/image and bits/dim). For a conditional model
    /// also −log p(x|y) with the true labels and the accuracy of the Bayes classifier argmax_y p(x|y).
    Eval(EvalArgs),
    /// Sample new images into a PNG grid, and with --animate a GIF of the grid as it is drawn.
    ///
    /// The sampler draws each image pixel by pixel in raster order (row by row, left to right), each pixel from
    /// the model's p(x_q = 1 | the pixels before it [, the class]). The same --seed gives the same images.
    Sample(SampleArgs),
    /// Complete the bottom of images: keep the top --rows rows, sample the rest; grid of original | occluded |
    /// completions.
    ///
    /// The images are the first --count test images, or your own with --image (prepared as `score --help`
    /// describes). A class-conditional model conditions on --class when given; otherwise on each test image's
    /// label, and for your own images on the class the model finds most likely given the kept rows, argmax_y
    /// p(y | kept rows) (printed; with --rows 0 nothing is kept and every class is equally likely, so pass
    /// --class).
    Complete(CompleteArgs),
    /// Which input pixels can change the model's prediction at one pixel: its receptive field
    ///
    /// How: the model's own backward pass (the CPU reference) gives the gradient of the logit at (ROW, COLUMN)
    /// with respect to every input pixel, for several random inputs (--inputs); a pixel belongs to the field when
    /// any of them gives it a non-zero gradient.
    ///
    /// What to look for: a causal model may only see earlier pixels (the rows above, and the pixels left of the
    /// target on its own row). The plain network (--arch pixelcnn) also has a blind spot: earlier pixels above and
    /// to the right of the target, inside the reach of its convolutions, that it never sees (one row up, five
    /// columns right is always one of them). The Gated PixelCNN (--arch gated) has none; 12 gated layers see every
    /// earlier pixel of row 14, column 14, and 6 dilated ones (--dilation-cycle 5) every earlier pixel of a 28×28
    /// image, even at row 27, column 27.
    ///
    /// The map: `X` the target, `#` pixels it depends on, `o` the blind spot, `.` earlier pixels out of reach;
    /// --out draws it as a PNG, --json gives the mask (the model's height × width). Examine the shipped model, a
    /// --checkpoint, or a model with random weights of any architecture:
    ///   pixelcnn receptive-field --pixel 14,14
    ///   pixelcnn receptive-field --pixel 14,14 --arch gated --layers 12 --out gated.png
    ///   pixelcnn receptive-field --pixel 27,27 --arch gated --layers 6 --dilation-cycle 5
    #[command(verbatim_doc_comment)]
    ReceptiveField(ReceptiveFieldArgs),
    /// The model's opinion of your own images: NLL, bits/dim, surprise per pixel, and the class it sees
    ///
    /// What the model sees: each image (PNG, JPEG, GIF or BMP, grey or colour) is
    ///   1. made grey (Rec. 709 luminance) and inverted when the model was trained on inverted images
    ///      (`train --invert`), and once more with --invert: Fashion-MNIST is light garments on black, so a dark
    ///      drawing on white needs --invert with its models;
    ///   2. transparent pixels become background;
    ///   3. of the model's size (28×28 for Fashion-MNIST's), or refused: --resize pads it with background to the
    ///      model's aspect ratio, centred so its shape is not stretched, and resizes it with a triangle filter
    ///      (bilinear, averaging all pixels when shrinking);
    ///   4. binarized as the model's data was: grey / 255 ≥ its threshold (0.33: grey < 85 is 0, else 1).
    ///
    /// What it prints: the NLL −log p(x) in nats (lower is more typical: test images average 88.2 under the
    /// shipped model) and in bits per pixel, computed as `eval` computes it (for a class-conditional model the
    /// marginal over its classes, so a test image saved as PNG scores what `eval --json` reports for it); and
    /// for a class-conditional model p(class | image) ∝ p(image | class), what the model thinks the image is.
    /// --heatmap draws each pixel's surprise −log p(x_q | earlier pixels): where the model did not expect what it
    /// saw. The surprises add up to the NLL.
    ///   pixelcnn score my-shoe.png --invert --resize --heatmap surprise.png
    #[command(verbatim_doc_comment)]
    Score(ScoreArgs),
    /// Benchmarks on the selected GPU adapter.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Test NLL of baselines fitted on the training split: a constant p, independent per-pixel Bernoullis, and a
    /// count table over each pixel's 6 causal neighbours.
    Baselines(BaselinesArgs),
    /// Draw the training curve (train and val NLL per epoch, and the Polyak average's val NLL when logged) from a
    /// run's metrics.jsonl into a PNG.
    Plot(PlotArgs),
    /// Write a model-only copy of a checkpoint (no optimizer state), e.g. to ship it.
    Export(ExportArgs),
}

/// Runs the command `cli` names.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Data(a) => a.run(),
        Command::Download(a) => a.run(),
        Command::Devices(a) => a.run(),
        Command::Summary(a) => a.run(),
        Command::Train(a) => a.run(),
        Command::Eval(a) => a.run(),
        Command::Sample(a) => a.run(),
        Command::Complete(a) => a.run(),
        Command::ReceptiveField(a) => a.run(),
        Command::Score(a) => a.run(),
        Command::Bench(b) => b.run(),
        Command::Baselines(a) => a.run(),
        Command::Plot(a) => a.run(),
        Command::Export(a) => a.run(),
    }
}

/// A finite float in `[lo, hi]` (`hi_open`: `[lo, hi)`), for clap.
pub fn float_in(s: &str, lo: f64, hi: f64, hi_open: bool, what: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("{s:?} is not a number"))?;
    let ok = v.is_finite() && v >= lo && if hi_open { v < hi } else { v <= hi };
    if !ok {
        let close = if hi_open { ")" } else { "]" };
        return Err(format!(
            "{what} must be a finite number in [{lo}, {hi}{close} (got {s})"
        ));
    }
    Ok(v)
}

fn parse_val_split(s: &str) -> Result<f64, String> {
    float_in(s, 0.0, 1.0, true, "the validation split")
}

/// A finite number in (0, 1].
fn in_unit_interval(s: &str, what: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !(v.is_finite() && v > 0.0 && v <= 1.0) {
        return Err(format!("{what} must be a finite number in (0, 1] (got {s})"));
    }
    Ok(v)
}

pub fn parse_lr(s: &str) -> Result<f64, String> {
    in_unit_interval(s, "the learning rate")
}

pub fn parse_lr_decay(s: &str) -> Result<f64, String> {
    in_unit_interval(s, "--lr-decay")
}

/// `--temperature`: a finite number in (0, 100].
pub fn parse_temperature(s: &str) -> Result<f64, String> {
    let v = float_in(s, 0.0, 100.0, false, "--temperature")?;
    if v == 0.0 {
        return Err("--temperature must be positive (1 samples the model itself)".into());
    }
    Ok(v)
}

/// `--ema`: a decay in [0, 1) (0: no average).
pub fn parse_ema(s: &str) -> Result<f64, String> {
    float_in(s, 0.0, 1.0, true, "--ema")
}

/// `--dropout`: a rate in [0, 0.9] in whole percent.
pub fn parse_dropout(s: &str) -> Result<f64, String> {
    let v = float_in(s, 0.0, 0.9, false, "--dropout")?;
    if ((v * 100.0).round() - v * 100.0).abs() > 1e-9 {
        return Err(format!("--dropout takes whole percent (0.5, 0.05; got {s})"));
    }
    Ok(v)
}

/// `--beta1`: Adam's first-moment decay in [0, 1).
pub fn parse_beta1(s: &str) -> Result<f64, String> {
    float_in(s, 0.0, 1.0, true, "--beta1")
}

pub fn parse_minutes(s: &str) -> Result<f64, String> {
    let v = float_in(s, 0.0, 1e6, false, "--save-every")?;
    if v == 0.0 {
        return Err("--save-every must be positive (minutes)".into());
    }
    Ok(v)
}

/// `--image-size HxW`.
pub fn parse_image_size(s: &str) -> Result<(usize, usize), String> {
    data::parse_image_size(s).map_err(|e| format!("{e:#}"))
}

/// `--threshold`: a finite number in (0, 1].
pub fn parse_threshold(s: &str) -> Result<f64, String> {
    in_unit_interval(s, "--threshold")
}

#[derive(Args, Clone)]
pub struct DataArgs {
    /// The data: a directory with the four IDX files of an MNIST-style set (Fashion-MNIST, MNIST, KMNIST; plain or
    /// .gz; labels optional), a directory of binarized-MNIST .amat files, a CSV file (label then pixels per line,
    /// plain or .gz), or a folder of images (class subfolders, optional train/ and test/). Default:
    /// $PIXELCNN_DATA, else data/fashion-mnist.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Fraction of the training images held out for validation (the last ones, as Keras does). Sets with their
    /// own validation files (.amat) keep those.
    #[arg(long, default_value_t = 0.1, value_parser = parse_val_split)]
    pub val_split: f64,
    /// A pixel is 1 when its grey level / the maximum ≥ T. Default 0.33 (the seed's); with a model (eval,
    /// complete), the threshold it was trained with.
    #[arg(long, value_parser = parse_threshold)]
    pub threshold: Option<f64>,
    /// Invert the grey levels before binarizing (for dark drawings on a light background).
    #[arg(long)]
    pub invert: bool,
    /// The image shape HxW (e.g. 32x32): a folder's images are all resized to it (triangle filter); a CSV whose
    /// pixel count is not a square needs it.
    #[arg(long, value_name = "HxW", value_parser = parse_image_size)]
    pub image_size: Option<(usize, usize)>,
    /// Class names, comma-separated in label order, for data that carries none (IDX, CSV); default: a
    /// classes.txt beside the data (one name per line), Fashion-MNIST's names for Fashion-MNIST, else the label
    /// numbers.
    #[arg(long, value_name = "A,B,…", value_delimiter = ',')]
    pub class_names: Option<Vec<String>>,
    /// A CSV's label column: first (Kaggle), last (scikit-learn's digits) or none (unlabelled).
    #[arg(long, default_value = "first", value_parser = ["first", "last", "none"])]
    pub label_column: String,
    /// A CSV's largest pixel value (255 for 8-bit greys; 16 for scikit-learn's digits).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub max_value: Option<u32>,
}

impl DataArgs {
    /// The load options, binarizing with the flags, else `model`'s own threshold and inversion, else the defaults.
    pub fn options(&self, model: Option<&checkpoint::ModelMeta>) -> Result<data::LoadOptions> {
        let label_column = self
            .label_column
            .parse::<data::LabelColumn>()
            .map_err(|e| anyhow::anyhow!("--label-column: {e}"))?;
        Ok(data::LoadOptions {
            val_split: self.val_split,
            binarize: data::Binarize {
                threshold: self
                    .threshold
                    .or(model.map(|m| m.threshold))
                    .unwrap_or(data::DEFAULT_THRESHOLD),
                invert: self.invert || model.is_some_and(|m| m.invert),
            },
            image_size: self.image_size,
            class_names: self.class_names.clone(),
            label_column,
            max_value: self.max_value,
        })
    }

    /// The data path: `--data`, else $PIXELCNN_DATA, else data/fashion-mnist.
    pub fn path(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(data::default_data_path)
    }

    /// Loads the data, binarized as `model` was trained (unless flags say otherwise); prints the loader's notes.
    pub fn load_for(&self, model: Option<&checkpoint::ModelMeta>) -> Result<data::Dataset> {
        let ds = data::load_with(&self.path(), &self.options(model)?)?;
        for note in &ds.notes {
            eprintln!("note: {note}");
        }
        Ok(ds)
    }

    pub fn load(&self) -> Result<data::Dataset> {
        self.load_for(None)
    }

    /// [`DataArgs::load_for`] a model of `config` (the file `model`), refusing images of another shape: a model
    /// only scores images of the shape it was built for.
    pub fn load_for_model(
        &self,
        meta: &checkpoint::ModelMeta,
        config: &Config,
        model: &std::path::Path,
    ) -> Result<data::Dataset> {
        let ds = self.load_for(Some(meta))?;
        let (h, w) = (config.height, config.width);
        ensure!(
            (ds.height, ds.width) == (h, w),
            "{}: the images are {}x{}, but {} is a model of {h}x{w} images ({}); --image-size {h}x{w} resizes a \
             folder's images",
            ds.source.display(),
            ds.height,
            ds.width,
            model.display(),
            config.describe()
        );
        Ok(ds)
    }
}

/// `--image-size` of a model with random weights (receptive-field, bench, summary).
#[derive(Args, Clone, Copy)]
pub struct ShapeArgs {
    /// The images of a fresh model, HxW (default 28x28).
    #[arg(long, value_name = "HxW", value_parser = parse_image_size)]
    pub image_size: Option<(usize, usize)>,
}

impl ShapeArgs {
    /// `config` for images of the requested shape.
    pub fn apply(&self, config: Config) -> Result<Config> {
        let c = match self.image_size {
            Some((h, w)) => config.with_shape(h, w),
            None => config,
        };
        c.validate()?;
        Ok(c)
    }
}

#[derive(Args, Clone, Copy)]
pub struct ModelArgs {
    /// Architecture: the seed's PixelCNN or the Gated PixelCNN.
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,
    /// Channels F (the residual stream, or each gated stack). Default 128.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub filters: Option<u64>,
    /// Residual blocks N of --arch pixelcnn. Default 5.
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=64), conflicts_with = "layers")]
    pub blocks: Option<u64>,
    /// Gated layers L of --arch gated. Default 5.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub layers: Option<u64>,
    /// Dilate the gated layers 1, 2, … by 1, 2, 4, …, 2^(K−1), then again from 1, so that the network's reach grows
    /// exponentially with depth (--arch gated; 1: no dilation). 5 lets 6 layers see every earlier pixel of a 28×28
    /// image.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=crate::model::MAX_DILATION_CYCLE as u64))]
    pub dilation_cycle: Option<u64>,
    /// Dropout rate in training (0–0.9, in steps of 0.01; default 0): on each gated layer's gate output, or each
    /// plain block's masked conv output, as openai/pixel-cnn does (it uses 0.5). Evaluation and sampling use every
    /// unit.
    #[arg(long, value_parser = parse_dropout)]
    pub dropout: Option<f64>,
    /// Class-conditional: a per-class bias table in every ReLU conv (pixelcnn) or gate (gated).
    #[arg(long)]
    pub conditional: bool,
}

impl ModelArgs {
    pub fn given(&self) -> bool {
        self.arch.is_some()
            || self.filters.is_some()
            || self.blocks.is_some()
            || self.layers.is_some()
            || self.dilation_cycle.is_some()
            || self.dropout.is_some()
            || self.conditional
    }

    pub fn config(&self) -> Result<Config> {
        let arch = self
            .arch
            .unwrap_or(if self.layers.is_some() || self.dilation_cycle.is_some() {
                Arch::Gated
            } else {
                Arch::Pixelcnn
            });
        ensure!(
            !(arch == Arch::Pixelcnn && self.layers.is_some()),
            "--layers is for --arch gated; --arch pixelcnn takes --blocks"
        );
        ensure!(
            !(arch == Arch::Gated && self.blocks.is_some()),
            "--blocks is for --arch pixelcnn; --arch gated takes --layers"
        );
        let depth = self.blocks.or(self.layers).map_or(DEFAULT_DEPTH, |d| d as usize);
        let c = Config {
            arch,
            filters: self.filters.map_or(DEFAULT_FILTERS, |f| f as usize),
            depth,
            classes: 0,
            height: crate::model::DEFAULT_HEIGHT,
            width: crate::model::DEFAULT_WIDTH,
            dilation_cycle: self.dilation_cycle.map_or(1, |k| k as usize),
            dropout: self.dropout.map_or(0, |d| (d * 100.0).round() as u8),
        };
        let c = if self.conditional { c.conditional() } else { c };
        c.validate()?;
        Ok(c)
    }
}

/// A progress bar `what [=====>    ] count elapsed ETA eta`.
pub fn styled_bar(len: u64, what: &str, count: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template(&format!("{what} [{{bar:30}}] {count} {{elapsed}} ETA {{eta}}"))
            .unwrap()
            .progress_chars("=> "),
    );
    b
}
