//! The `pixelcnn` command line: argument parsing (with every value range-checked) and printing only; the work
//! lives in the library, one function per command.

use anyhow::{bail, ensure, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pixelcnn::model::{bits_per_dim, Arch, Config, Network, CLASS_NAMES, DEFAULT_DEPTH, DEFAULT_FILTERS};
use pixelcnn::train::Device;
use pixelcnn::{baselines, bench, checkpoint, data, download, evaluate, gpu, grid, plot, sampling, train, util};
use std::path::PathBuf;
use std::process::ExitCode;

const QUICK_START: &str = "\
Quick start:
  pixelcnn sample                      samples from the shipped model into samples.png
  pixelcnn sample --class sneaker      sneakers, from the shipped class-conditional model
  pixelcnn sample --class all          one labelled row per class
  pixelcnn eval                        the shipped model's test NLL
  pixelcnn download && pixelcnn train  trains the seed's model (50 epochs, batch 128)";

/// Train, evaluate and sample PixelCNNs on binarized Fashion-MNIST — the seed's network or a blind-spot-free
/// Gated PixelCNN, optionally class-conditional — with every piece of math in WGSL compute shaders (any Vulkan,
/// Metal or DX12 GPU; on a machine without one, Mesa's lavapipe runs them on the CPU).
#[derive(Parser)]
#[command(name = "pixelcnn", version, max_term_width = 110, after_help = QUICK_START)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the dataset: images, label histogram and fraction of 1-pixels per split, after binarization.
    Data {
        #[command(flatten)]
        data: DataArgs,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Download the four official Fashion-MNIST files, verifying their MD5 sums.
    Download {
        /// Directory to write into.
        #[arg(long, default_value = data::DEFAULT_DATA_DIR)]
        dir: PathBuf,
        /// Mirror to fetch from (plain HTTP).
        #[arg(long, default_value = download::BASE_URL)]
        base_url: String,
    },
    /// List the GPU adapters wgpu can see, mark the one pixelcnn will use, and say which kernel versions serve it.
    ///
    /// The choice honours WGPU_BACKEND (vulkan, metal, dx12, gl), WGPU_ADAPTER_NAME (a substring of the name)
    /// and WGPU_POWER_PREF (high, low); PIXELCNN_KERNELS (raster, tiled, conv=…, pixel=…) forces kernel versions.
    Devices {
        #[arg(long)]
        json: bool,
    },
    /// Print the layers, output shapes and parameter counts (532,673 for the defaults) and the parameter tensors.
    Summary {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        json: bool,
    },
    /// Train a model. Writes metrics.jsonl, epoch_NNN.safetensors and last.safetensors into the run directory.
    ///
    /// last.safetensors is also written every --save-every minutes, so a run killed at any moment (even with
    /// kill -9) loses at most that much. Ctrl-C or SIGTERM saves it and stops; `--resume DIR/last.safetensors`
    /// continues exactly (same data order, same optimizer state), so an interrupted and resumed run ends
    /// bit-identical to an uninterrupted one.
    Train(TrainArgs),
    /// Negative log-likelihood of a checkpoint on a data split (nats/image and bits/dim). For a conditional model
    /// also −log p(x|y) with the true labels and the accuracy of the Bayes classifier argmax_y p(x|y).
    Eval {
        /// Checkpoint (.safetensors); default: the shipped model.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        #[command(flatten)]
        data: DataArgs,
        /// Which split to evaluate.
        #[arg(long, default_value = "test", value_parser = ["train", "val", "test"])]
        split: String,
        /// Evaluate only the first N images of the split.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        #[arg(long, value_enum, default_value_t = Device::Gpu)]
        device: Device,
        /// Print one JSON object, with every image's NLL.
        #[arg(long)]
        json: bool,
    },
    /// Sample new images into a PNG grid.
    Sample {
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
        /// Output PNG grid (⌈√count⌉ columns).
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
        #[arg(long)]
        json: bool,
    },
    /// Complete the bottom of test images: keep the top rows, sample the rest (a conditional model conditions on
    /// each image's label); grid of original | occluded | completions.
    Complete {
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
        #[arg(long, default_value = "completions.png")]
        out: PathBuf,
        #[arg(long, default_value_t = grid::DEFAULT_SCALE, value_parser = clap::value_parser!(u32).range(1..=64))]
        scale: u32,
        #[arg(long, value_enum, default_value_t = Device::Gpu)]
        device: Device,
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks on the selected GPU adapter.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Test NLL of baselines fitted on the training split: a constant p, independent per-pixel Bernoullis, and a
    /// count table over each pixel's 6 causal neighbours.
    Baselines {
        #[command(flatten)]
        data: DataArgs,
        #[arg(long)]
        json: bool,
    },
    /// Draw the training curve (train and val NLL per epoch) from a run's metrics.jsonl into a PNG.
    Plot {
        /// metrics.jsonl of a run.
        metrics: PathBuf,
        #[arg(long, default_value = "training_curve.png")]
        out: PathBuf,
        #[arg(long, default_value = "PixelCNN on binarized Fashion-MNIST")]
        title: String,
    },
    /// Write a model-only copy of a checkpoint (no optimizer state), e.g. to ship it.
    Export {
        checkpoint: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Training speed: median step time on synthetic data → images/s and GFLOP/s.
    Train {
        #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=4096))]
        batch_size: u64,
        #[command(flatten)]
        model: ModelArgs,
        /// Timed steps (after 2 warm-up steps).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
        steps: u64,
        /// Also run one step dispatch by dispatch: time, dispatches and GFLOP/s per kernel and layer shape.
        #[arg(long)]
        profile: bool,
        #[arg(long)]
        json: bool,
    },
    /// Sampling speed: the incremental sampler against the naive one (timed on a prefix and extrapolated).
    Sample {
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
        count: u64,
        /// Checkpoint to sample from (default: random weights of the --arch/--filters/--depth model).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
        /// Pixel steps the naive sampler runs before its time is extrapolated to 784.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=784))]
        naive_pixels: u64,
        #[arg(long)]
        json: bool,
    },
}

/// A finite float in `[lo, hi]` (`hi_open`: `[lo, hi)`), for clap.
fn float_in(s: &str, lo: f64, hi: f64, hi_open: bool, what: &str) -> Result<f64, String> {
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

fn parse_lr(s: &str) -> Result<f64, String> {
    in_unit_interval(s, "the learning rate")
}

fn parse_lr_decay(s: &str) -> Result<f64, String> {
    in_unit_interval(s, "--lr-decay")
}

fn parse_minutes(s: &str) -> Result<f64, String> {
    let v = float_in(s, 0.0, 1e6, false, "--save-every")?;
    if v == 0.0 {
        return Err("--save-every must be positive (minutes)".into());
    }
    Ok(v)
}

#[derive(Args, Clone)]
struct DataArgs {
    /// A directory with the four Fashion-MNIST IDX files (plain or .gz), or a Kaggle-format CSV file.
    /// Default: $PIXELCNN_DATA, else data/fashion-mnist.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Fraction of the training images held out for validation (the last ones, as Keras does).
    #[arg(long, default_value_t = 0.1, value_parser = parse_val_split)]
    val_split: f64,
}

impl DataArgs {
    fn load(&self) -> Result<data::Dataset> {
        let path = self.data.clone().unwrap_or_else(data::default_data_path);
        data::load(&path, self.val_split)
    }
}

#[derive(Args, Clone, Copy)]
struct ModelArgs {
    /// Architecture: the seed's PixelCNN or the Gated PixelCNN.
    #[arg(long, value_enum)]
    arch: Option<Arch>,
    /// Channels F (the residual stream, or each gated stack). Default 128.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    filters: Option<u64>,
    /// Residual blocks N of --arch pixelcnn. Default 5.
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=64), conflicts_with = "layers")]
    blocks: Option<u64>,
    /// Gated layers L of --arch gated. Default 5.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    layers: Option<u64>,
    /// Class-conditional: a per-class bias table in every ReLU conv (pixelcnn) or gate (gated).
    #[arg(long)]
    conditional: bool,
}

impl ModelArgs {
    fn given(&self) -> bool {
        self.arch.is_some()
            || self.filters.is_some()
            || self.blocks.is_some()
            || self.layers.is_some()
            || self.conditional
    }

    fn config(&self) -> Result<Config> {
        let arch = self.arch.unwrap_or(if self.layers.is_some() {
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
        };
        let c = if self.conditional { c.conditional() } else { c };
        c.validate()?;
        Ok(c)
    }
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
    /// Epochs in total (default 50; with --resume the run's own, unless given to extend it).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    epochs: Option<u64>,
    /// Images per step (default 128).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4096))]
    batch_size: Option<u64>,
    /// Adam learning rate (default 5e-4; β1 0.9, β2 0.999, ε 1e-7 as in Keras).
    #[arg(long, value_parser = parse_lr)]
    lr: Option<f64>,
    /// Multiply the learning rate by this after every epoch: epoch e (from 0) trains at lr · decay^e. Default 1
    /// (constant, as Keras). 0.9 roughly halves it every 7 epochs.
    #[arg(long, value_parser = parse_lr_decay)]
    lr_decay: Option<f64>,
    /// Train on the first N training images only.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// Stop after N optimizer steps in total.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    steps: Option<u64>,
    /// Seed of the initialisation and the data order (default 0).
    #[arg(long)]
    seed: Option<u64>,
    /// Run directory (default: runs/<UTC timestamp>, or the checkpoint's directory with --resume). A fresh run
    /// refuses a directory that already holds a run.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue from a checkpoint written by `train` (its settings come from it; --epochs and --steps may extend).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Minutes between periodic checkpoints of last.safetensors.
    #[arg(long, default_value_t = train::DEFAULT_SAVE_EVERY_MINUTES, value_parser = parse_minutes)]
    save_every: f64,
    #[arg(long, value_enum, default_value_t = Device::Gpu)]
    device: Device,
    /// Print each epoch's metrics as a JSON line on stdout, and a final JSON summary.
    #[arg(long)]
    json: bool,
}

fn styled_bar(len: u64, what: &str, count: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template(&format!("{what} [{{bar:30}}] {count} {{elapsed}} ETA {{eta}}"))
            .unwrap()
            .progress_chars("=> "),
    );
    b
}

fn cmd_train(a: TrainArgs) -> Result<()> {
    let plan = train::plan_run(train::RunRequest {
        config: a.model.given().then(|| a.model.config()).transpose()?,
        epochs: a.epochs.map(|e| e as usize),
        batch_size: a.batch_size.map(|b| b as usize),
        lr: a.lr,
        lr_decay: a.lr_decay,
        seed: a.seed,
        steps: a.steps,
        limit: a.limit.map(|l| l as usize),
        val_split: a.data.val_split,
        data: a.data.data.clone(),
        out: a.out,
        resume: a.resume,
        device: a.device,
        save_every_minutes: a.save_every,
        quiet: a.json,
    })?;
    let summary = train::run(&plan)?;
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        eprintln!(
            "done: {} steps, run directory {}",
            summary.steps,
            summary.out_dir.display()
        );
    }
    if summary.interrupted {
        std::process::exit(130);
    }
    Ok(())
}

fn cmd_eval(
    checkpoint: Option<PathBuf>,
    data: DataArgs,
    split: String,
    limit: Option<u64>,
    device: Device,
    json: bool,
) -> Result<()> {
    let (path, ck) = sampling::load_model(checkpoint.as_deref())?;
    let ds = data.load()?;
    let split_data = ds.split(&split)?;
    ensure!(!split_data.is_empty(), "no {split} images (the {split} split is empty)");
    let net = Network::new(ck.config);
    let n = limit.map_or(split_data.len(), |l| (l as usize).min(split_data.len()));
    let pb = styled_bar(evaluate::progress_units(&net, n), "evaluating", "{pos}/{len}");
    let r = evaluate::evaluate(device, &net, &ck.params, split_data, Some(n), |k| pb.inc(k as u64))?;
    pb.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "{}: {} {split} images, NLL {:.3} nats/image = {:.4} bits/dim{}",
        path.display(),
        r.images,
        r.nll_nats_per_image,
        r.bits_per_dim,
        if r.conditional {
            " (marginal over the 10 classes)"
        } else {
            ""
        }
    );
    if let (Some(g), Some(acc)) = (r.nll_given_label_nats_per_image, r.classifier_accuracy) {
        println!(
            "  given the true label: {g:.3} nats/image = {:.4} bits/dim",
            bits_per_dim(g)
        );
        println!(
            "  generative classifier (argmax_y p(x|y)) accuracy: {:.2}%",
            100.0 * acc
        );
    }
    Ok(())
}

/// Grids above this many images are not drawn (use --save-each).
const MAX_GRID_IMAGES: usize = 4096;

#[allow(clippy::too_many_arguments)]
fn cmd_sample(
    checkpoint: Option<PathBuf>,
    count: usize,
    classes: Vec<String>,
    seed: u64,
    out: PathBuf,
    scale: u32,
    naive: bool,
    device: Device,
    save_each: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    let path = sampling::model_path(checkpoint.as_deref())?;
    util::check_output(&out, &[&path])?;
    if let Some(dir) = &save_each {
        util::check_output_dir(dir)?;
    }
    let ck = checkpoint::load(&path)?;
    let net = Network::new(ck.config);
    let sampling::ClassRequest {
        total,
        labels,
        per_class,
    } = sampling::class_request(&net, &classes, count)?;
    let grid = total <= MAX_GRID_IMAGES;
    if !grid && save_each.is_none() {
        bail!("a grid of {total} images is too big (at most {MAX_GRID_IMAGES}); pass --save-each DIR to write each image on its own");
    }
    if grid {
        let layout = if per_class {
            grid::Layout::Rows {
                rows: CLASS_NAMES.len(),
                cols: count,
                labelled: true,
            }
        } else {
            grid::Layout::Square(total)
        };
        grid::check_canvas(layout, scale, grid::DEFAULT_GAP)?;
    }
    let pb = styled_bar(sampling::progress_units(total), "sampling", "{percent}%");
    let t = std::time::Instant::now();
    let mut kept: Vec<u8> = Vec::new();
    sampling::sample_streaming(
        device,
        &net,
        &ck.params,
        total,
        seed,
        labels.as_deref(),
        naive,
        |k| pb.inc(k as u64),
        |start, s| {
            if let Some(dir) = &save_each {
                for (i, img) in s.images.chunks(pixelcnn::model::PIXELS).enumerate() {
                    grid::write_image_png(&dir.join(format!("sample_{:06}.png", start + i)), img, scale)?;
                }
            }
            if grid {
                kept.extend_from_slice(&s.images);
            }
            Ok(())
        },
    )?;
    let seconds = t.elapsed().as_secs_f64();
    pb.finish_and_clear();
    if grid {
        let cells: Vec<&[u8]> = kept.chunks(pixelcnn::model::PIXELS).collect();
        if per_class {
            let rows: Vec<Vec<&[u8]>> = cells.chunks(count).map(|r| r.to_vec()).collect();
            grid::write_labelled_rows_png(&out, &rows, &CLASS_NAMES, scale, grid::DEFAULT_GAP)?;
        } else {
            grid::write_grid_png(&out, &cells, grid::grid_columns(total), scale, grid::DEFAULT_GAP)?;
        }
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"count": total, "seconds": seconds, "out": grid.then_some(&out), "save_each": save_each})
        );
    } else if grid {
        eprintln!("wrote {} ({total} images, {seconds:.2} s)", out.display());
    } else {
        eprintln!(
            "wrote {total} images into {} ({seconds:.2} s; no grid above {MAX_GRID_IMAGES} images)",
            save_each.unwrap().display()
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn cmd_complete(
    checkpoint: Option<PathBuf>,
    data: DataArgs,
    count: usize,
    rows: usize,
    samples: usize,
    seed: u64,
    out: PathBuf,
    scale: u32,
    device: Device,
    json: bool,
) -> Result<()> {
    let path = sampling::model_path(checkpoint.as_deref())?;
    util::check_output(&out, &[&path])?;
    let ck = checkpoint::load(&path)?;
    let ds = data.load()?;
    let net = Network::new(ck.config);
    // Each row: the original, the occluded input and the completions.
    let layout = grid::Layout::Rows {
        rows: count,
        cols: 2 + samples,
        labelled: false,
    };
    grid::check_canvas(layout, scale, grid::DEFAULT_GAP)?;
    let pb = styled_bar(sampling::progress_units(count * samples), "completing", "{percent}%");
    let t = std::time::Instant::now();
    let c = sampling::complete(device, &net, &ck.params, &ds.test, count, rows, samples, seed, |k| {
        pb.inc(k as u64)
    })?;
    let seconds = t.elapsed().as_secs_f64();
    pb.finish_and_clear();
    grid::write_rows_png(&out, &c.grid_rows(), scale, grid::DEFAULT_GAP)?;
    if json {
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

fn cmd_baselines(data: DataArgs, json: bool) -> Result<()> {
    let ds = data.load()?;
    ensure!(!ds.test.is_empty(), "no test images");
    let b = baselines::baselines(&ds);
    if json {
        println!("{}", serde_json::to_string(&b)?);
        return Ok(());
    }
    println!(
        "baselines fitted on {} training images, evaluated on {} test images:",
        b.train_images, b.test_images
    );
    for x in b.all() {
        println!(
            "  {:<28} {:>8.2} nats/image  {:.4} bits/dim",
            x.name, x.nll_nats_per_image, x.bits_per_dim
        );
    }
    Ok(())
}

fn cmd_summary(model: ModelArgs, json: bool) -> Result<()> {
    let net = Network::new(model.config()?);
    let rows = net.summary_rows();
    if json {
        let tensors: Vec<_> = net
            .params
            .tensors
            .iter()
            .map(|t| serde_json::json!({"name": t.name, "shape": t.shape, "live": t.cpu_len()}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"model": net.config.describe(), "total_params": net.full_param_count(), "live_params": net.live_param_count(), "layers": rows, "tensors": tensors})
        );
        return Ok(());
    }
    println!("{}", net.config.describe());
    println!("{:<22} {:<44} {:<16} {:>10}", "layer", "type", "output shape", "params");
    println!("{}", "-".repeat(95));
    for r in &rows {
        let shape = format!("({}, {}, {})", r.output_shape[0], r.output_shape[1], r.output_shape[2]);
        println!("{:<22} {:<44} {:<16} {:>10}", r.layer, r.kind, shape, r.params);
    }
    println!("{}", "-".repeat(95));
    println!(
        "total parameters: {} ({} under the masks can never be non-zero)",
        net.full_param_count(),
        net.full_param_count() - net.live_param_count()
    );
    println!(
        "forward FLOPs per image (live taps): {:.3} G",
        2.0 * net.live_macs_per_image() as f64 / 1e9
    );
    Ok(())
}

fn cmd_devices(json: bool) -> Result<()> {
    let adapters = gpu::list_adapters()?;
    if json {
        println!("{}", serde_json::to_string(&adapters)?);
    } else if adapters.is_empty() {
        println!("{}", gpu::NO_ADAPTER_HELP);
    } else {
        for a in &adapters {
            println!(
                "{} {} | {} | {} | {} {}",
                if a.selected { "*" } else { " " },
                a.name,
                a.backend,
                a.device_type,
                a.driver,
                a.driver_info
            );
            if let Some(k) = &a.kernels {
                println!("    kernels: {} — {}", k.describe(), k.reason);
            }
        }
        println!("(* = the adapter pixelcnn uses; choose with WGPU_ADAPTER_NAME, WGPU_BACKEND, WGPU_POWER_PREF)");
    }
    ensure!(!adapters.is_empty(), "no GPU adapter found");
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Data { data, json } => {
            let ds = data.load()?;
            if json {
                println!("{}", data::report_json(&ds));
            } else {
                print!("{}", data::report_text(&ds));
            }
        }
        Command::Download { dir, base_url } => {
            for f in download::download(&dir, &base_url, &download::FILES, true)? {
                eprintln!("{:<28} {:<10} {} bytes", f.name, f.action, f.bytes);
            }
            eprintln!("Fashion-MNIST is in {}", dir.display());
        }
        Command::Devices { json } => cmd_devices(json)?,
        Command::Summary { model, json } => cmd_summary(model, json)?,
        Command::Train(a) => cmd_train(a)?,
        Command::Eval {
            checkpoint,
            data,
            split,
            limit,
            device,
            json,
        } => cmd_eval(checkpoint, data, split, limit, device, json)?,
        Command::Sample {
            checkpoint,
            count,
            classes,
            seed,
            out,
            scale,
            naive,
            device,
            save_each,
            json,
        } => cmd_sample(
            checkpoint,
            count as usize,
            classes,
            seed,
            out,
            scale,
            naive,
            device,
            save_each,
            json,
        )?,
        Command::Complete {
            checkpoint,
            data,
            count,
            rows,
            samples,
            seed,
            out,
            scale,
            device,
            json,
        } => cmd_complete(
            checkpoint,
            data,
            count as usize,
            rows as usize,
            samples as usize,
            seed,
            out,
            scale,
            device,
            json,
        )?,
        Command::Bench(BenchCommand::Train {
            batch_size,
            model,
            steps,
            profile,
            json,
        }) => {
            let r = bench::bench_train(model.config()?, batch_size as usize, steps as usize, 2, profile)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                if let Some(lines) = &r.profile {
                    println!(
                        "{:<72} {:>5} {:>10} {:>9}",
                        "kernel (one step, dispatch by dispatch)", "count", "ms", "GFLOP/s"
                    );
                    for l in lines {
                        println!(
                            "{:<72} {:>5} {:>10.2} {:>9.2}",
                            l.kernel,
                            l.dispatches,
                            l.seconds * 1e3,
                            l.gflops_per_second
                        );
                    }
                }
                println!(
                    "{} [kernels {}]: {} batch {}: {:.4} s/step (median of {}), {:.1} images/s, {:.2} GFLOP/s, {} dispatches/step, {:.1} MiB of GPU buffers",
                    r.adapter,
                    r.kernels.describe(),
                    r.model,
                    r.batch_size,
                    r.step_seconds_median,
                    r.steps,
                    r.images_per_second,
                    r.gflops,
                    r.dispatches_per_step,
                    r.gpu_bytes as f64 / 1048576.0
                );
            }
        }
        Command::Bench(BenchCommand::Sample {
            count,
            checkpoint,
            model,
            naive_pixels,
            json,
        }) => {
            let (net, params) = match checkpoint {
                Some(p) => {
                    let ck = checkpoint::load(&p)?;
                    (Network::new(ck.config), ck.params)
                }
                None => {
                    let net = Network::new(model.config()?);
                    let params = net.init_params(0);
                    (net, params)
                }
            };
            let r = bench::bench_sample(&net, &params, count as usize, naive_pixels as usize)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{} ({} device{}, kernels {}): {} images, {}: incremental {:.3} s (one device {:.3} s, {:.2} dispatches/pixel), naive {:.1} s{}, speedup {:.0}×",
                    r.adapter,
                    r.devices,
                    if r.devices == 1 { "" } else { "s" },
                    r.kernels.describe(),
                    r.count,
                    r.model,
                    r.incremental_seconds,
                    r.incremental_one_device_seconds,
                    r.dispatches_per_pixel,
                    r.naive_seconds,
                    if r.naive_extrapolated {
                        format!(" (extrapolated from {} of 784 pixel steps)", r.naive_pixels_timed)
                    } else {
                        String::new()
                    },
                    r.speedup
                );
            }
        }
        Command::Baselines { data, json } => cmd_baselines(data, json)?,
        Command::Plot { metrics, out, title } => {
            util::check_output(&out, &[&metrics])?;
            let m = plot::read_metrics(&metrics)?;
            plot::plot_training_curve(&m, &out, &title)?;
            eprintln!("wrote {}", out.display());
        }
        Command::Export { checkpoint: input, out } => {
            util::check_output(&out, &[&input])?;
            let ck = checkpoint::load(&input)?;
            let net = Network::new(ck.config);
            checkpoint::save(&out, &net, &ck.params, None)?;
            eprintln!("wrote {} (model only, {})", out.display(), ck.config.describe());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // Behave like a Unix tool when the reader goes away (`pixelcnn summary | head`): exit quietly instead of
    // panicking on a broken pipe.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
