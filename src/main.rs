//! The `pixelcnn` command line: argument parsing and printing only; the work lives in the library.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pixelcnn::model::{bits_per_dim, Config, Network, PIXELS};
use pixelcnn::train::Device;
use pixelcnn::{bench, checkpoint, data, download, gpu, grid, plot, sampling, train};
use std::path::PathBuf;
use std::process::ExitCode;

/// Train, evaluate and sample a PixelCNN on binarized Fashion-MNIST, with every piece of math in WGSL compute
/// shaders (any Vulkan, Metal or DX12 GPU; on a machine without one, Mesa's lavapipe runs them on the CPU).
///
/// Quick start:  pixelcnn sample                     (samples from the shipped model into samples.png)
///               pixelcnn download && pixelcnn train (trains the original model: 50 epochs, batch 128)
#[derive(Parser)]
#[command(name = "pixelcnn", version, max_term_width = 110)]
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
    /// List the GPU adapters wgpu can see and mark the one pixelcnn will use.
    ///
    /// The choice honours WGPU_BACKEND (vulkan, metal, dx12, gl), WGPU_ADAPTER_NAME (a substring of the name)
    /// and WGPU_POWER_PREF (high, low).
    Devices {
        #[arg(long)]
        json: bool,
    },
    /// Print the layers, output shapes and parameter counts (532,673 for the defaults).
    Summary {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        json: bool,
    },
    /// Train a model. Writes metrics.jsonl, epoch_NNN.safetensors and last.safetensors into the run directory.
    ///
    /// Ctrl-C saves last.safetensors and stops; `--resume DIR/last.safetensors` continues exactly (same data
    /// order, same optimizer state), so an interrupted and resumed run ends bit-identical to an uninterrupted one.
    Train(TrainArgs),
    /// Mean negative log-likelihood of a checkpoint on a data split (nats/image and bits/dim).
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
        #[arg(long)]
        limit: Option<usize>,
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
        /// Number of images.
        #[arg(long, default_value_t = 16)]
        count: usize,
        /// Seed of the random draws: the same seed gives the same images.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output PNG grid (⌈√count⌉ columns).
        #[arg(long, default_value = "samples.png")]
        out: PathBuf,
        /// Upscaling factor of the grid (nearest neighbour).
        #[arg(long, default_value_t = grid::DEFAULT_SCALE)]
        scale: u32,
        /// Use the original algorithm (a full forward pass per pixel) instead of the incremental sampler.
        #[arg(long)]
        naive: bool,
        #[arg(long, value_enum, default_value_t = Device::Gpu)]
        device: Device,
        /// Also write each image as its own PNG into this directory.
        #[arg(long)]
        save_each: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Complete the bottom of test images: keep the top rows, sample the rest; grid of original | occluded | completions.
    Complete {
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        #[command(flatten)]
        data: DataArgs,
        /// Number of test images (the first ones of the test split).
        #[arg(long, default_value_t = 8)]
        count: usize,
        /// Rows kept from each image (0–28).
        #[arg(long, default_value_t = 14)]
        rows: usize,
        /// Completions per image.
        #[arg(long, default_value_t = 4)]
        samples: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value = "completions.png")]
        out: PathBuf,
        #[arg(long, default_value_t = grid::DEFAULT_SCALE)]
        scale: u32,
        #[arg(long, value_enum, default_value_t = Device::Gpu)]
        device: Device,
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks on the selected GPU adapter.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// NLL of two trivial baselines on the test split: one constant p, and independent per-pixel Bernoullis, both
    /// fitted on the training split.
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
        #[arg(long, default_value_t = 128)]
        batch_size: usize,
        #[command(flatten)]
        model: ModelArgs,
        /// Timed steps (after 2 warm-up steps).
        #[arg(long, default_value_t = 10)]
        steps: usize,
        #[arg(long)]
        json: bool,
    },
    /// Sampling speed: the incremental sampler against the naive one (timed on a prefix and extrapolated).
    Sample {
        #[arg(long, default_value_t = 64)]
        count: usize,
        /// Checkpoint to sample from (default: random weights of the --filters/--blocks model).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
        /// Pixel steps the naive sampler runs before its time is extrapolated to 784.
        #[arg(long, default_value_t = 8)]
        naive_pixels: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Clone)]
struct DataArgs {
    /// A directory with the four Fashion-MNIST IDX files (plain or .gz), or a Kaggle-format CSV file.
    /// Default: $PIXELCNN_DATA, else data/fashion-mnist.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Fraction of the training images held out for validation (the last ones, as Keras does).
    #[arg(long, default_value_t = 0.1)]
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
    /// Channels of the residual stream (even).
    #[arg(long, default_value_t = 128)]
    filters: usize,
    /// Residual blocks.
    #[arg(long, default_value_t = 5)]
    blocks: usize,
}

impl ModelArgs {
    fn config(&self) -> Result<Config> {
        let c = Config {
            filters: self.filters,
            blocks: self.blocks,
        };
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
    #[arg(long, default_value_t = 50)]
    epochs: usize,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Adam learning rate (β1 0.9, β2 0.999, ε 1e-7 as in Keras).
    #[arg(long, default_value_t = 5e-4)]
    lr: f64,
    /// Train on the first N training images only.
    #[arg(long)]
    limit: Option<usize>,
    /// Stop after N optimizer steps in total.
    #[arg(long)]
    steps: Option<u64>,
    /// Seed of the initialisation and the data order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run directory (default: runs/<UTC timestamp>, or the checkpoint's directory with --resume).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue from a checkpoint written by `train` (seed, batch size, lr and data come from it).
    #[arg(long)]
    resume: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Device::Gpu)]
    device: Device,
    /// Print each epoch's metrics as a JSON line on stdout, and a final JSON summary.
    #[arg(long)]
    json: bool,
}

fn bar(len: u64, what: &str) -> ProgressBar {
    styled_bar(len, what, "{pos}/{len}")
}

/// A bar that shows a percentage (for units that mean little to the user, such as image-pixel steps).
fn percent_bar(len: u64, what: &str) -> ProgressBar {
    styled_bar(len, what, "{percent}%")
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
    // On resume the data settings come from the checkpoint (an explicit --data still wins).
    let (val_split, limit, saved_data) = match &a.resume {
        Some(p) => match checkpoint::load(p)?.train {
            Some((s, _)) => (s.val_split, s.limit, s.data.map(PathBuf::from)),
            None => anyhow::bail!(
                "{} holds no training state (it is a model-only checkpoint); it cannot be resumed",
                p.display()
            ),
        },
        None => (a.data.val_split, a.limit, None),
    };
    let data_path = a
        .data
        .data
        .clone()
        .or(saved_data)
        .unwrap_or_else(data::default_data_path);
    let ds = data::load(&data_path, val_split)?;
    let train_split = match limit {
        Some(n) => ds.train.take(n),
        None => ds.train.clone(),
    };
    let opts = train::TrainOptions {
        config: a.model.config()?,
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        seed: a.seed,
        steps: a.steps,
        out: a.out,
        resume: a.resume,
        device: a.device,
        val_split,
        limit,
        data: Some(data_path),
        quiet: a.json,
    };
    let summary = train::train(&opts, &train_split, &ds.val)?;
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

#[allow(clippy::too_many_arguments)]
fn cmd_eval(
    checkpoint: Option<PathBuf>,
    data: DataArgs,
    split: String,
    limit: Option<usize>,
    device: Device,
    json: bool,
) -> Result<()> {
    let (path, ck) = sampling::load_model(checkpoint.as_deref())?;
    let ds = data.load()?;
    let mut images = ds.split(&split)?.images.clone();
    if let Some(n) = limit {
        images.truncate(n * PIXELS);
    }
    anyhow::ensure!(!images.is_empty(), "the {split} split is empty");
    let net = Network::new(ck.config);
    let n = images.len() / PIXELS;
    let pb = bar(n as u64, "evaluating");
    let nll = match device {
        Device::Cpu => train::evaluate_cpu(&net, &ck.params, &images, |k| pb.inc(k as u64)),
        Device::Gpu => {
            let g = gpu::Gpu::new()?;
            let model = gpu::trainer::GpuModel::new(&g, &net, &ck.params)?;
            let mut t = gpu::trainer::Trainer::new(&g, model, Default::default(), 128.min(n))?;
            t.evaluate(&g, &images, |k| pb.inc(k as u64))?
        }
    };
    pb.finish_and_clear();
    let mean = nll.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    if json {
        let out = serde_json::json!({"images": n, "nll_nats_per_image": mean, "bits_per_dim": bits_per_dim(mean), "nll_per_image": nll});
        println!("{out}");
    } else {
        println!(
            "{}: {n} {split} images, NLL {mean:.3} nats/image = {:.4} bits/dim",
            path.display(),
            bits_per_dim(mean)
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn cmd_sample(
    checkpoint: Option<PathBuf>,
    count: usize,
    seed: u64,
    out: PathBuf,
    scale: u32,
    naive: bool,
    device: Device,
    save_each: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    anyhow::ensure!(count >= 1, "--count must be at least 1");
    anyhow::ensure!((1..=64).contains(&scale), "--scale must be between 1 and 64");
    let (_, ck) = sampling::load_model(checkpoint.as_deref())?;
    let net = Network::new(ck.config);
    let pb = percent_bar(sampling::progress_units(count), "sampling");
    let t = std::time::Instant::now();
    let s = sampling::sample(device, &net, &ck.params, count, seed, None, 0, naive, |k| {
        pb.inc(k as u64)
    })?;
    let seconds = t.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let cells: Vec<&[u8]> = s.images.chunks(PIXELS).collect();
    grid::write_grid_png(&out, &cells, grid::grid_columns(count), scale, grid::DEFAULT_GAP)?;
    if let Some(dir) = &save_each {
        for (i, img) in cells.iter().enumerate() {
            grid::write_image_png(&dir.join(format!("sample_{i:04}.png")), img, scale)?;
        }
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"count": count, "seconds": seconds, "out": out})
        );
    } else {
        eprintln!("wrote {} ({count} images, {seconds:.2} s)", out.display());
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
    anyhow::ensure!(rows <= 28, "--rows must be between 0 and 28");
    anyhow::ensure!(count >= 1 && samples >= 1, "--count and --samples must be at least 1");
    let (_, ck) = sampling::load_model(checkpoint.as_deref())?;
    let ds = data.load()?;
    anyhow::ensure!(
        ds.test.len() >= count,
        "the test split has only {} images",
        ds.test.len()
    );
    let net = Network::new(ck.config);
    // Every image repeated `samples` times; each copy draws with its own counter.
    let mut init = Vec::with_capacity(count * samples * PIXELS);
    for i in 0..count {
        for _ in 0..samples {
            init.extend_from_slice(ds.test.image(i));
        }
    }
    let start = rows * 28;
    let pb = percent_bar(sampling::progress_units(count * samples), "completing");
    let t = std::time::Instant::now();
    let s = sampling::sample(
        device,
        &net,
        &ck.params,
        count * samples,
        seed,
        Some(&init),
        start,
        false,
        |k| pb.inc(k as u64),
    )?;
    let seconds = t.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let occluded: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            let mut img = ds.test.image(i).to_vec();
            img[start..].fill(grid::HIDDEN);
            img
        })
        .collect();
    let grid_rows: Vec<Vec<&[u8]>> = (0..count)
        .map(|i| {
            let mut row = vec![ds.test.image(i), &occluded[i][..]];
            row.extend((0..samples).map(|j| &s.images[(i * samples + j) * PIXELS..][..PIXELS]));
            row
        })
        .collect();
    grid::write_rows_png(&out, &grid_rows, scale, grid::DEFAULT_GAP)?;
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
    let train = &ds.train;
    let n = train.len() as f64;
    // Laplace-smoothed estimates so that no probability is exactly 0 or 1.
    let ones: f64 = train.images.iter().map(|&v| v as f64).sum();
    let p_const = (ones + 1.0) / (n * PIXELS as f64 + 2.0);
    let mut counts = vec![0.0f64; PIXELS];
    for img in train.images.chunks(PIXELS) {
        for (c, &v) in counts.iter_mut().zip(img) {
            *c += v as f64;
        }
    }
    let p_pixel: Vec<f64> = counts.iter().map(|c| (c + 1.0) / (n + 2.0)).collect();
    let nll = |p: &dyn Fn(usize) -> f64| -> f64 {
        let total: f64 = ds
            .test
            .images
            .chunks(PIXELS)
            .map(|img| {
                img.iter()
                    .enumerate()
                    .map(|(q, &x)| if x == 1 { -p(q).ln() } else { -(1.0 - p(q)).ln() })
                    .sum::<f64>()
            })
            .sum();
        total / ds.test.len() as f64
    };
    let constant = nll(&|_| p_const);
    let per_pixel = nll(&|q| p_pixel[q]);
    if json {
        println!(
            "{}",
            serde_json::json!({"test_images": ds.test.len(), "constant": {"p": p_const, "nll_nats_per_image": constant, "bits_per_dim": bits_per_dim(constant)},
                "per_pixel_bernoulli": {"nll_nats_per_image": per_pixel, "bits_per_dim": bits_per_dim(per_pixel)}})
        );
    } else {
        println!(
            "baselines fitted on {} training images, evaluated on {} test images:",
            train.len(),
            ds.test.len()
        );
        println!(
            "  constant p = {p_const:.4}:           {constant:.2} nats/image  {:.4} bits/dim",
            bits_per_dim(constant)
        );
        println!(
            "  per-pixel independent Bernoulli: {per_pixel:.2} nats/image  {:.4} bits/dim",
            bits_per_dim(per_pixel)
        );
    }
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
        Command::Devices { json } => {
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
                }
                println!(
                    "(* = the adapter pixelcnn uses; choose with WGPU_ADAPTER_NAME, WGPU_BACKEND, WGPU_POWER_PREF)"
                );
            }
            if adapters.is_empty() {
                anyhow::bail!("no GPU adapter found");
            }
        }
        Command::Summary { model, json } => {
            let net = Network::new(model.config()?);
            let rows = net.summary_rows();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"total_params": net.full_param_count(), "live_params": net.live_param_count(), "layers": rows})
                );
            } else {
                println!("{:<20} {:<28} {:<16} {:>10}", "layer", "type", "output shape", "params");
                println!("{}", "-".repeat(77));
                for r in &rows {
                    let shape = format!("({}, {}, {})", r.output_shape[0], r.output_shape[1], r.output_shape[2]);
                    println!("{:<20} {:<28} {:<16} {:>10}", r.layer, r.kind, shape, r.params);
                }
                println!("{}", "-".repeat(77));
                println!(
                    "total parameters: {} ({} under the masks can never be non-zero)",
                    net.full_param_count(),
                    net.full_param_count() - net.live_param_count()
                );
                println!(
                    "forward FLOPs per image (live taps): {:.3} G",
                    2.0 * net.live_macs_per_image() as f64 / 1e9
                );
            }
        }
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
            seed,
            out,
            scale,
            naive,
            device,
            save_each,
            json,
        } => cmd_sample(checkpoint, count, seed, out, scale, naive, device, save_each, json)?,
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
        } => cmd_complete(checkpoint, data, count, rows, samples, seed, out, scale, device, json)?,
        Command::Bench(BenchCommand::Train {
            batch_size,
            model,
            steps,
            json,
        }) => {
            let r = bench::bench_train(model.config()?, batch_size, steps, 2)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{}: F={} N={} batch {}: {:.4} s/step (median of {}), {:.1} images/s, {:.2} GFLOP/s, {:.1} MiB of GPU buffers",
                    r.adapter,
                    r.filters,
                    r.blocks,
                    r.batch_size,
                    r.step_seconds_median,
                    r.steps,
                    r.images_per_second,
                    r.gflops,
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
            let r = bench::bench_sample(&net, &params, count, naive_pixels)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{} ({} device{}): {} images, F={} N={}: incremental {:.3} s (one device {:.3} s), naive {:.1} s{}, speedup {:.0}×",
                    r.adapter,
                    r.devices,
                    if r.devices == 1 { "" } else { "s" },
                    r.count,
                    r.filters,
                    r.blocks,
                    r.incremental_seconds,
                    r.incremental_one_device_seconds,
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
            let m = plot::read_metrics(&metrics)?;
            plot::plot_training_curve(&m, &out, &title)?;
            eprintln!("wrote {}", out.display());
        }
        Command::Export { checkpoint: input, out } => {
            let ck = checkpoint::load(&input)?;
            let net = Network::new(ck.config);
            checkpoint::save(&out, &net, &ck.params, None).with_context(|| format!("exporting {}", input.display()))?;
            eprintln!(
                "wrote {} (model only, F={} N={})",
                out.display(),
                ck.config.filters,
                ck.config.blocks
            );
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
