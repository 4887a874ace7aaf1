//! The training loop, shared by both devices: epochs over a seeded data order, a progress bar, per-epoch train
//! and validation NLL appended to `metrics.jsonl`, atomic checkpoints, exact resume, NaN guard and Ctrl-C.

use crate::checkpoint::{self, TrainState};
use crate::cpu::{self, AdamConfig, AdamState};
use crate::data::Split;
use crate::gpu::trainer::{GpuModel, Trainer};
use crate::gpu::Gpu;
use crate::model::{bits_per_dim, Config, Network, PIXELS};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Which backend runs the math.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Device {
    /// WGSL compute shaders through wgpu (Vulkan, Metal, DX12).
    Gpu,
    /// The plain Rust reference (slow; for tests and machines without any GPU driver).
    Cpu,
}

/// A training backend: the CPU reference or the GPU trainer.
pub enum Backend {
    Cpu {
        net: Box<Network>,
        params: Vec<f32>,
        adam: AdamState,
        cfg: AdamConfig,
        running: f64,
    },
    Gpu {
        gpu: Arc<Gpu>,
        trainer: Box<Trainer>,
        step: u64,
    },
}

impl Backend {
    pub fn new(
        device: Device,
        net: &Network,
        params: Vec<f32>,
        adam: AdamState,
        cfg: AdamConfig,
        batch: usize,
    ) -> Result<Backend> {
        Ok(match device {
            Device::Cpu => Backend::Cpu {
                net: Box::new(net.clone()),
                params,
                adam,
                cfg,
                running: 0.0,
            },
            Device::Gpu => {
                let gpu = Arc::new(Gpu::new()?);
                let model = GpuModel::new(&gpu, net, &params)?;
                model.upload_adam(&gpu, &adam);
                let trainer = Box::new(Trainer::new(&gpu, model, cfg, batch)?);
                Backend::Gpu {
                    gpu,
                    trainer,
                    step: adam.step,
                }
            }
        })
    }

    /// One optimizer step (the GPU returns before the step has finished).
    pub fn step(&mut self, images: &[u8]) -> Result<()> {
        match self {
            Backend::Cpu {
                net,
                params,
                adam,
                cfg,
                running,
            } => {
                let x: Vec<f32> = images.iter().map(|&v| v as f32).collect();
                let nll = cpu::train_step(net, params, adam, cfg, &x, images.len() / PIXELS);
                *running += nll.iter().map(|&v| v as f64).sum::<f64>();
            }
            Backend::Gpu { gpu, trainer, step } => {
                *step += 1;
                trainer.step(gpu, images, *step)?;
            }
        }
        Ok(())
    }

    /// Sum of per-image training NLLs since the last reset (the GPU waits for its queue).
    pub fn running_nll(&self) -> Result<f64> {
        match self {
            Backend::Cpu { running, .. } => Ok(*running),
            Backend::Gpu { gpu, trainer, .. } => trainer.read_running_nll(gpu),
        }
    }

    pub fn reset_running_nll(&mut self) {
        match self {
            Backend::Cpu { running, .. } => *running = 0.0,
            Backend::Gpu { gpu, trainer, .. } => trainer.reset_running_nll(gpu),
        }
    }

    /// Per-image NLL of `images`.
    pub fn evaluate(&mut self, images: &[u8], progress: impl FnMut(usize)) -> Result<Vec<f32>> {
        match self {
            Backend::Cpu { net, params, .. } => Ok(evaluate_cpu(net, params, images, progress)),
            Backend::Gpu { gpu, trainer, .. } => trainer.evaluate(gpu, images, progress),
        }
    }

    /// Parameters (CPU layout) and Adam state, waiting for the device.
    pub fn state(&self) -> Result<(Vec<f32>, AdamState)> {
        match self {
            Backend::Cpu { params, adam, .. } => Ok((params.clone(), adam.clone())),
            Backend::Gpu { gpu, trainer, step } => Ok((
                trainer.model.download_params(gpu)?,
                trainer.model.download_adam(gpu, *step)?,
            )),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Backend::Cpu { .. } => "CPU reference".into(),
            Backend::Gpu { gpu, .. } => gpu.adapter_name(),
        }
    }
}

/// Per-image NLL on the CPU, in small batches.
pub fn evaluate_cpu(net: &Network, params: &[f32], images: &[u8], mut progress: impl FnMut(usize)) -> Vec<f32> {
    let mut out = Vec::new();
    for chunk in images.chunks(8 * PIXELS) {
        let x: Vec<f32> = chunk.iter().map(|&v| v as f32).collect();
        out.extend(cpu::image_nll(net, params, &x, chunk.len() / PIXELS));
        progress(chunk.len() / PIXELS);
    }
    out
}

/// The data order of one epoch: a permutation seeded by (seed, epoch).
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<u32> {
    crate::rng::permutation(n, seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Options of `pixelcnn train`.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub config: Config,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
    pub steps: Option<u64>,
    pub out: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    pub device: Device,
    pub val_split: f64,
    pub limit: Option<usize>,
    /// Where the data came from (recorded in checkpoints for --resume).
    pub data: Option<PathBuf>,
    /// Print a JSON line per epoch on stdout instead of the human summary.
    pub quiet: bool,
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub step: u64,
    /// True when the epoch was cut short by --steps.
    pub partial: bool,
    pub train_nll: f64,
    pub train_bpd: f64,
    pub val_nll: f64,
    pub val_bpd: f64,
    pub seconds: f64,
    pub images_per_second: f64,
}

/// What a finished (or stopped) run reports.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TrainSummary {
    pub out_dir: PathBuf,
    pub steps: u64,
    pub epochs_completed: usize,
    pub last_val_nll: Option<f64>,
    pub interrupted: bool,
}

fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Set by Ctrl-C; the loop saves and stops at the next step boundary.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn install_ctrlc() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond Ctrl-C: exiting without saving");
                std::process::exit(130);
            }
            eprintln!("\nCtrl-C: finishing the current step and saving a checkpoint (press again to abort)");
        });
    });
}

fn append_metrics(path: &Path, record: &EpochRecord) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(record)?).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn mean(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64
}

/// Trains on `train`, validating on `val` at each epoch end.
pub fn train(opts: &TrainOptions, train: &Split, val: &Split) -> Result<TrainSummary> {
    install_ctrlc();
    // Start fresh or resume exactly where a checkpoint left off.
    let (config, params, adam, mut state) = match &opts.resume {
        Some(path) => {
            let ck = checkpoint::load(path)?;
            let Some((state, adam)) = ck.train else {
                bail!(
                    "{} holds no training state (it is a model-only checkpoint); it cannot be resumed",
                    path.display()
                );
            };
            // --epochs may extend a run; everything else (seed, batch size, lr, data) comes from the checkpoint.
            let state = TrainState {
                epochs: opts.epochs,
                ..state
            };
            (ck.config, ck.params, adam, state)
        }
        None => {
            opts.config.validate()?;
            let net = Network::new(opts.config);
            let params = net.init_params(opts.seed);
            let state = TrainState {
                step: 0,
                epoch: 0,
                batch_in_epoch: 0,
                seed: opts.seed,
                batch_size: opts.batch_size,
                epochs: opts.epochs,
                adam: AdamConfig {
                    lr: opts.lr,
                    ..AdamConfig::default()
                },
                val_split: opts.val_split,
                limit: opts.limit,
                epoch_nll_sum: 0.0,
                epoch_images: 0,
                data: opts.data.as_ref().map(|p| p.display().to_string()),
            };
            (opts.config, params, AdamState::new(net.param_len), state)
        }
    };
    anyhow::ensure!(state.batch_size >= 1, "--batch-size must be at least 1");
    anyhow::ensure!(!train.is_empty(), "the training split is empty");
    let net = Network::new(config);
    let out_dir = match (&opts.out, &opts.resume) {
        (Some(o), _) => o.clone(),
        (None, Some(r)) => r.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".")),
        (None, None) => PathBuf::from("runs").join(timestamp()),
    };
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let metrics_path = out_dir.join("metrics.jsonl");
    if opts.resume.is_none() && metrics_path.exists() {
        // A fresh run starts a fresh log rather than appending to an old run's epochs.
        std::fs::remove_file(&metrics_path).with_context(|| format!("removing the old {}", metrics_path.display()))?;
    }
    let mut backend = Backend::new(opts.device, &net, params, adam, state.adam, state.batch_size)?;
    let n = train.len();
    let batches_per_epoch = n.div_ceil(state.batch_size);
    eprintln!(
        "training F={} N={} ({} parameters) on {} images ({} val), batch {}, {} epochs, {} steps/epoch, on {}; run directory {}",
        config.filters,
        config.blocks,
        net.full_param_count(),
        n,
        val.len(),
        state.batch_size,
        state.epochs,
        batches_per_epoch,
        backend.describe(),
        out_dir.display()
    );
    let mut last_val = None;
    let mut interrupted = false;
    let mut stop = false;
    let save = |backend: &Backend, state: &TrainState, name: &str| -> Result<()> {
        let (params, adam) = backend.state()?;
        checkpoint::save(&out_dir.join(name), &net, &params, Some((state, &adam)))
    };
    let mut batch_images = Vec::with_capacity(state.batch_size * PIXELS);
    while state.epoch < state.epochs && !stop {
        let order = epoch_order(n, state.seed, state.epoch);
        backend.reset_running_nll();
        let epoch_start = Instant::now();
        let images_before = state.epoch_images;
        let bar = ProgressBar::new(batches_per_epoch as u64).with_position(state.batch_in_epoch as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                .unwrap()
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", state.epoch + 1, state.epochs));
        let mut last_read = Instant::now();
        let mut last_log = Instant::now();
        while state.batch_in_epoch < batches_per_epoch {
            let b = state.batch_in_epoch;
            let idx = &order[b * state.batch_size..((b + 1) * state.batch_size).min(n)];
            batch_images.clear();
            for &i in idx {
                batch_images.extend_from_slice(train.image(i as usize));
            }
            backend.step(&batch_images)?;
            state.step += 1;
            state.batch_in_epoch += 1;
            state.epoch_images += idx.len();
            bar.inc(1);
            // Reading the loss makes the host wait for the GPU, so do it only for the display, every 2 s.
            if last_read.elapsed().as_secs_f64() > 2.0 || state.batch_in_epoch == batches_per_epoch {
                let sum = state.epoch_nll_sum + backend.running_nll()?;
                let mean = sum / state.epoch_images.max(1) as f64;
                if !mean.is_finite() {
                    bar.abandon();
                    bail!(
                        "training diverged: the loss became {mean} at step {} (epoch {}); the last good checkpoint is {} — try a lower --lr",
                        state.step,
                        state.epoch + 1,
                        out_dir.join("last.safetensors").display()
                    );
                }
                let rate = (state.epoch_images - images_before) as f64 / epoch_start.elapsed().as_secs_f64();
                let msg = format!(
                    "loss {:.4} ({:.1} nats/img) {:.1} img/s",
                    mean / PIXELS as f64,
                    mean,
                    rate
                );
                // Without a terminal the bar is hidden: log a line every 30 s instead.
                if !std::io::stderr().is_terminal() && last_log.elapsed().as_secs_f64() > 30.0 {
                    eprintln!(
                        "epoch {}/{} step {}/{}: {msg}",
                        state.epoch + 1,
                        state.epochs,
                        state.batch_in_epoch,
                        batches_per_epoch
                    );
                    last_log = Instant::now();
                }
                bar.set_message(msg);
                last_read = Instant::now();
            }
            if INTERRUPTED.load(Ordering::SeqCst) {
                interrupted = true;
                stop = true;
                break;
            }
            if opts.steps.is_some_and(|s| state.step >= s) {
                stop = true;
                break;
            }
        }
        bar.finish_and_clear();
        let sum = state.epoch_nll_sum + backend.running_nll()?;
        if interrupted {
            // Keep the partial epoch's loss so that the resumed run reports the same numbers.
            state.epoch_nll_sum = sum;
            save(&backend, &state, "last.safetensors")?;
            eprintln!(
                "interrupted at step {}; saved {} — continue with: pixelcnn train --resume {}",
                state.step,
                out_dir.join("last.safetensors").display(),
                out_dir.join("last.safetensors").display()
            );
            break;
        }
        let train_nll = sum / state.epoch_images.max(1) as f64;
        anyhow::ensure!(
            train_nll.is_finite(),
            "training diverged: the loss became {train_nll} in epoch {}; try a lower --lr",
            state.epoch + 1
        );
        let seconds = epoch_start.elapsed().as_secs_f64();
        let rate = (state.epoch_images - images_before) as f64 / seconds;
        let val_nll = if val.is_empty() {
            f64::NAN
        } else {
            let bar = ProgressBar::new(val.len() as u64);
            bar.set_style(
                ProgressStyle::with_template("validating [{bar:30}] {pos}/{len}")
                    .unwrap()
                    .progress_chars("=> "),
            );
            let v = mean(&backend.evaluate(&val.images, |k| bar.inc(k as u64))?);
            bar.finish_and_clear();
            v
        };
        let partial = state.batch_in_epoch < batches_per_epoch;
        let record = EpochRecord {
            epoch: state.epoch + 1,
            step: state.step,
            partial,
            train_nll,
            train_bpd: bits_per_dim(train_nll),
            val_nll,
            val_bpd: bits_per_dim(val_nll),
            seconds,
            images_per_second: rate,
        };
        append_metrics(&metrics_path, &record)?;
        if opts.quiet {
            println!("{}", serde_json::to_string(&record)?);
        } else {
            eprintln!(
                "epoch {:>3}{} step {:>6}: train NLL {:.2} nats/image ({:.4} bits/dim), val NLL {:.2} nats/image ({:.4} bits/dim), {:.1} images/s",
                record.epoch,
                if partial { " (partial)" } else { "" },
                state.step,
                train_nll,
                record.train_bpd,
                val_nll,
                record.val_bpd,
                rate
            );
        }
        last_val = Some(val_nll);
        if partial {
            state.epoch_nll_sum = sum;
        } else {
            state.epoch += 1;
            state.batch_in_epoch = 0;
            state.epoch_nll_sum = 0.0;
            state.epoch_images = 0;
            save(&backend, &state, &format!("epoch_{:03}.safetensors", state.epoch))?;
        }
        save(&backend, &state, "last.safetensors")?;
    }
    Ok(TrainSummary {
        out_dir,
        steps: state.step,
        epochs_completed: state.epoch,
        last_val_nll: last_val,
        interrupted,
    })
}
