//! The training loop, shared by both devices: epochs over a seeded data order, a progress bar over completed
//! steps, per-epoch train and validation NLL appended to `metrics.jsonl`, periodic atomic checkpoints, exact
//! resume, a deterministic NaN guard, and Ctrl-C / SIGTERM handling.

use crate::checkpoint::{self, TrainState};
use crate::cpu::{self, AdamConfig, AdamState};
use crate::data::Split;
use crate::gpu::layers::GpuModel;
use crate::gpu::trainer::Trainer;
use crate::gpu::Gpu;
use crate::model::{bits_per_dim, Config, Network, PIXELS};
use anyhow::{ensure, Context, Result};
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

/// The loss is checked every this many optimizer steps (and before every checkpoint): a diverged run stops within
/// this many steps, whatever the timing.
pub const NAN_CHECK_EVERY: u64 = 10;

/// Default minutes between periodic checkpoints.
pub const DEFAULT_SAVE_EVERY_MINUTES: f64 = 10.0;

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
        /// Submissions not yet known to be complete (step number, index).
        in_flight: std::collections::VecDeque<(u64, wgpu::SubmissionIndex)>,
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
                    in_flight: Default::default(),
                }
            }
        })
    }

    /// Submits one optimizer step. Returns the number of the last step known to be complete: the GPU keeps one
    /// step in flight while the host prepares the next, and reports a step only once it has finished.
    pub fn step(&mut self, images: &[u8], labels: Option<&[u8]>) -> Result<u64> {
        match self {
            Backend::Cpu {
                net,
                params,
                adam,
                cfg,
                running,
            } => {
                let x: Vec<f32> = images.iter().map(|&v| v as f32).collect();
                let nll = cpu::train_step(net, params, adam, cfg, &x, labels, images.len() / PIXELS);
                *running += nll.iter().map(|&v| v as f64).sum::<f64>();
                Ok(adam.step)
            }
            Backend::Gpu {
                gpu,
                trainer,
                step,
                in_flight,
            } => {
                *step += 1;
                let index = trainer.step(gpu, images, labels, *step)?;
                in_flight.push_back((*step, index));
                let mut done = *step - in_flight.len() as u64;
                while in_flight.len() > 1 {
                    let (s, index) = in_flight.pop_front().expect("non-empty");
                    gpu.wait_for(index)?;
                    done = s;
                }
                Ok(done)
            }
        }
    }

    /// Sets Adam's learning rate for the following steps (the step size is recomputed from it at every step).
    pub fn set_lr(&mut self, lr: f64) {
        match self {
            Backend::Cpu { cfg, .. } => cfg.lr = lr,
            Backend::Gpu { trainer, .. } => trainer.adam_cfg.lr = lr,
        }
    }

    /// Waits for every submitted step; returns the last step number.
    pub fn finish(&mut self) -> Result<u64> {
        match self {
            Backend::Cpu { adam, .. } => Ok(adam.step),
            Backend::Gpu {
                gpu, step, in_flight, ..
            } => {
                in_flight.clear();
                gpu.wait()?;
                Ok(*step)
            }
        }
    }

    /// Sum of per-image training NLLs since the last reset (waits for the device).
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

    /// Per-image NLL of `images` (given `labels`, for a conditional model).
    pub fn evaluate(&mut self, images: &[u8], labels: Option<&[u8]>, progress: impl FnMut(usize)) -> Result<Vec<f32>> {
        match self {
            Backend::Cpu { net, params, .. } => Ok(evaluate_cpu(net, params, images, labels, progress)),
            Backend::Gpu { gpu, trainer, .. } => trainer.evaluate(gpu, images, labels, progress),
        }
    }

    /// Parameters (CPU layout) and Adam state, waiting for the device.
    pub fn state(&self) -> Result<(Vec<f32>, AdamState)> {
        match self {
            Backend::Cpu { params, adam, .. } => Ok((params.clone(), adam.clone())),
            Backend::Gpu { gpu, trainer, step, .. } => Ok((
                trainer.model.download_params(gpu)?,
                trainer.model.download_adam(gpu, *step)?,
            )),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Backend::Cpu { .. } => "CPU reference".into(),
            Backend::Gpu { gpu, .. } => format!("{}, kernels {}", gpu.adapter_name(), gpu.kernels.describe()),
        }
    }
}

/// Per-image NLL on the CPU, in small batches.
pub fn evaluate_cpu(
    net: &Network,
    params: &[f32],
    images: &[u8],
    labels: Option<&[u8]>,
    mut progress: impl FnMut(usize),
) -> Vec<f32> {
    let mut out = Vec::new();
    for (i, chunk) in images.chunks(8 * PIXELS).enumerate() {
        let n = chunk.len() / PIXELS;
        let x: Vec<f32> = chunk.iter().map(|&v| v as f32).collect();
        let l = labels.map(|l| &l[i * 8..i * 8 + n]);
        out.extend(cpu::image_nll(net, params, &x, l, n));
        progress(n);
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
    /// Per-epoch learning-rate factor: epoch e trains at `lr · lr_decay^e`.
    pub lr_decay: f64,
    pub seed: u64,
    pub steps: Option<u64>,
    pub out: PathBuf,
    pub resume: Option<PathBuf>,
    pub device: Device,
    pub val_split: f64,
    pub limit: Option<usize>,
    /// Where the data came from (recorded in checkpoints for --resume).
    pub data: Option<PathBuf>,
    /// Minutes between periodic checkpoints (`last.safetensors`, with the position inside the epoch).
    pub save_every_minutes: f64,
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
    /// None when there are no validation images (JSON `null`, never NaN).
    pub val_nll: Option<f64>,
    pub val_bpd: Option<f64>,
    pub seconds: f64,
    pub images_per_second: f64,
    /// The epoch's learning rate (`--lr` · `--lr-decay`^(epoch − 1)).
    pub lr: f64,
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

/// `runs/<UTC timestamp>`, the default run directory.
pub fn default_run_dir() -> PathBuf {
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
    PathBuf::from("runs").join(format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    ))
}

/// Set by Ctrl-C or SIGTERM; the loop saves and stops at the next step boundary.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn install_ctrlc() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The `termination` feature routes SIGTERM (and SIGHUP) here too.
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond interrupt: exiting without saving");
                std::process::exit(130);
            }
            eprintln!("\ninterrupted: finishing the current step and saving a checkpoint (interrupt again to abort)");
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
    f.sync_all().with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

fn mean(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64
}

/// The state a fresh run starts from.
pub fn fresh_state(opts: &TrainOptions) -> TrainState {
    TrainState {
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
        lr_decay: opts.lr_decay,
    }
}

/// Saves `name` in the run directory after checking that the loss and every parameter are finite: a diverged
/// state is never written.
#[allow(clippy::too_many_arguments)]
fn save_checked(
    dir: &Path,
    name: &str,
    net: &Network,
    params: &[f32],
    adam: &AdamState,
    state: &TrainState,
    last_good: &Option<PathBuf>,
) -> Result<PathBuf> {
    if let Some(i) = params.iter().position(|v| !v.is_finite()) {
        return Err(diverged(
            format!("parameter {i} is {} at step {}", params[i], state.step),
            last_good,
        ));
    }
    let path = dir.join(name);
    checkpoint::save(&path, net, params, Some((state, adam)))?;
    Ok(path)
}

fn diverged(what: String, last_good: &Option<PathBuf>) -> anyhow::Error {
    let good = match last_good {
        Some(p) => format!("the last good checkpoint is {} (not overwritten)", p.display()),
        None => "no checkpoint of this run was written yet".to_string(),
    };
    anyhow::anyhow!("training diverged: {what}; {good} — try a lower --lr")
}

/// Trains on `train`, validating on `val` at each epoch end. `start` is the checkpoint to resume from (its
/// config, parameters, Adam state and run state), or None for a fresh run of `opts.config`.
pub fn train(
    opts: &TrainOptions,
    start: Option<(Config, Vec<f32>, AdamState, TrainState)>,
    train: &Split,
    val: &Split,
) -> Result<TrainSummary> {
    install_ctrlc();
    let (config, params, adam, mut state) = match start {
        Some(s) => s,
        None => {
            opts.config.validate()?;
            let net = Network::new(opts.config);
            let params = net.init_params(opts.seed);
            (opts.config, params, AdamState::new(net.param_len()), fresh_state(opts))
        }
    };
    ensure!(state.batch_size >= 1, "--batch-size must be at least 1");
    ensure!(!train.is_empty(), "the training split is empty");
    let net = Network::new(config);
    let out_dir = opts.out.clone();
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating run directory {}", out_dir.display()))?;
    let metrics_path = out_dir.join("metrics.jsonl");
    if opts.resume.is_none() && metrics_path.exists() {
        // A fresh run starts a fresh log rather than appending to an old run's epochs.
        std::fs::remove_file(&metrics_path).with_context(|| format!("removing the old {}", metrics_path.display()))?;
    }
    let conditional = net.config.is_conditional();
    let mut backend = Backend::new(opts.device, &net, params, adam, state.adam, state.batch_size)?;
    let n = train.len();
    let batches_per_epoch = n.div_ceil(state.batch_size);
    eprintln!(
        "training {} ({} parameters) on {} images ({} val), batch {}, {} epochs, {} steps/epoch, on {}; run directory {}",
        config.describe(),
        net.full_param_count(),
        n,
        val.len(),
        state.batch_size,
        state.epochs,
        batches_per_epoch,
        backend.describe(),
        out_dir.display()
    );
    let mut last_good: Option<PathBuf> = opts.resume.clone();
    let mut last_val = None;
    let mut interrupted = false;
    let mut stop = false;
    let mut last_save = Instant::now();
    let save_every = std::time::Duration::from_secs_f64(opts.save_every_minutes * 60.0);
    let mut batch_images = Vec::with_capacity(state.batch_size * PIXELS);
    let mut batch_labels = Vec::with_capacity(state.batch_size);
    let max_steps = opts.steps;
    while state.epoch < state.epochs && !stop {
        let order = epoch_order(n, state.seed, state.epoch);
        let lr = state.epoch_lr();
        backend.set_lr(lr);
        backend.reset_running_nll();
        let epoch_start = Instant::now();
        let first_batch = state.batch_in_epoch;
        let images_before = state.epoch_images;
        let steps_before = state.step;
        // With --steps the bar ends where the run stops, not at the end of the epoch.
        let bar_end = match max_steps {
            Some(s) => batches_per_epoch.min(first_batch + s.saturating_sub(state.step) as usize),
            None => batches_per_epoch,
        };
        let bar = ProgressBar::new(bar_end as u64).with_position(first_batch as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                .unwrap()
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", state.epoch + 1, state.epochs));
        let mut last_log = Instant::now();
        // The running NLL is read (which waits for the device) every NAN_CHECK_EVERY steps, independent of time.
        let check = |backend: &Backend, state: &TrainState, last_good: &Option<PathBuf>| -> Result<f64> {
            let sum = state.epoch_nll_sum + backend.running_nll()?;
            if !sum.is_finite() {
                return Err(diverged(
                    format!(
                        "the loss became {sum} by step {} (epoch {})",
                        state.step,
                        state.epoch + 1
                    ),
                    last_good,
                ));
            }
            Ok(sum)
        };
        while state.batch_in_epoch < batches_per_epoch {
            let b = state.batch_in_epoch;
            let idx = &order[b * state.batch_size..((b + 1) * state.batch_size).min(n)];
            batch_images.clear();
            batch_labels.clear();
            for &i in idx {
                batch_images.extend_from_slice(train.image(i as usize));
                batch_labels.push(train.labels[i as usize]);
            }
            let done = backend.step(&batch_images, conditional.then_some(&batch_labels[..]))?;
            state.step += 1;
            state.batch_in_epoch += 1;
            state.epoch_images += idx.len();
            // The bar and the rate count completed steps only.
            let completed = done.saturating_sub(steps_before);
            bar.set_position((first_batch as u64 + completed).min(bar_end as u64));
            if state.step.is_multiple_of(NAN_CHECK_EVERY) || state.batch_in_epoch == batches_per_epoch {
                let sum = check(&backend, &state, &last_good)?;
                let mean = sum / state.epoch_images.max(1) as f64;
                let rate = (state.epoch_images - images_before) as f64 / epoch_start.elapsed().as_secs_f64();
                let msg = format!(
                    "loss {:.4} ({:.1} nats/img) {:.1} img/s",
                    mean / PIXELS as f64,
                    mean,
                    rate
                );
                // Without a terminal the bar is hidden: log a line every 30 s instead.
                if !std::io::stderr().is_terminal() && last_log.elapsed().as_secs_f64() > 30.0 {
                    let of_steps = max_steps.map(|s| format!(" of {s}")).unwrap_or_default();
                    eprintln!(
                        "epoch {}/{} batch {}/{} (step {}{of_steps}): {msg}",
                        state.epoch + 1,
                        state.epochs,
                        state.batch_in_epoch,
                        batches_per_epoch,
                        state.step
                    );
                    last_log = Instant::now();
                }
                bar.set_message(msg);
            }
            if INTERRUPTED.load(Ordering::SeqCst) {
                interrupted = true;
                stop = true;
                break;
            }
            if max_steps.is_some_and(|s| state.step >= s) {
                stop = true;
                break;
            }
            if last_save.elapsed() >= save_every && state.batch_in_epoch < batches_per_epoch {
                let sum = check(&backend, &state, &last_good)?;
                let (params, adam) = backend.state()?;
                let snapshot = TrainState {
                    epoch_nll_sum: sum,
                    ..state.clone()
                };
                last_good = Some(save_checked(
                    &out_dir,
                    "last.safetensors",
                    &net,
                    &params,
                    &adam,
                    &snapshot,
                    &last_good,
                )?);
                last_save = Instant::now();
            }
        }
        backend.finish()?;
        bar.finish_and_clear();
        let sum = check(&backend, &state, &last_good)?;
        if interrupted {
            // Keep the partial epoch's loss so that the resumed run reports the same numbers.
            state.epoch_nll_sum = sum;
            let (params, adam) = backend.state()?;
            let path = save_checked(&out_dir, "last.safetensors", &net, &params, &adam, &state, &last_good)?;
            eprintln!(
                "interrupted at step {}; saved {} — continue with: pixelcnn train --resume {}",
                state.step,
                path.display(),
                path.display()
            );
            break;
        }
        let train_nll = sum / state.epoch_images.max(1) as f64;
        let seconds = epoch_start.elapsed().as_secs_f64();
        let rate = (state.epoch_images - images_before) as f64 / seconds;
        let val_nll = if val.is_empty() {
            None
        } else {
            let bar = ProgressBar::new(val.len() as u64);
            bar.set_style(
                ProgressStyle::with_template("validating [{bar:30}] {pos}/{len}")
                    .unwrap()
                    .progress_chars("=> "),
            );
            let labels = conditional.then_some(&val.labels[..]);
            let v = mean(&backend.evaluate(&val.images, labels, |k| bar.inc(k as u64))?);
            bar.finish_and_clear();
            if !v.is_finite() {
                return Err(diverged(format!("the validation NLL is {v}"), &last_good));
            }
            Some(v)
        };
        let partial = state.batch_in_epoch < batches_per_epoch;
        let record = EpochRecord {
            epoch: state.epoch + 1,
            step: state.step,
            partial,
            train_nll,
            train_bpd: bits_per_dim(train_nll),
            val_nll,
            val_bpd: val_nll.map(bits_per_dim),
            seconds,
            images_per_second: rate,
            lr,
        };
        append_metrics(&metrics_path, &record)?;
        if opts.quiet {
            println!("{}", serde_json::to_string(&record)?);
        } else {
            let val_text = match val_nll {
                Some(v) => format!("val NLL {v:.2} nats/image ({:.4} bits/dim)", bits_per_dim(v)),
                None => "no validation images".to_string(),
            };
            eprintln!(
                "epoch {:>3}{} step {:>6}: train NLL {:.2} nats/image ({:.4} bits/dim), {val_text}, {:.1} images/s",
                record.epoch,
                if partial { " (partial)" } else { "" },
                state.step,
                train_nll,
                record.train_bpd,
                rate
            );
        }
        last_val = val_nll;
        let (params, adam) = backend.state()?;
        if partial {
            state.epoch_nll_sum = sum;
        } else {
            state.epoch += 1;
            state.batch_in_epoch = 0;
            state.epoch_nll_sum = 0.0;
            state.epoch_images = 0;
            let name = format!("epoch_{:03}.safetensors", state.epoch);
            save_checked(&out_dir, &name, &net, &params, &adam, &state, &last_good)?;
        }
        last_good = Some(save_checked(
            &out_dir,
            "last.safetensors",
            &net,
            &params,
            &adam,
            &state,
            &last_good,
        )?);
        last_save = Instant::now();
    }
    Ok(TrainSummary {
        out_dir,
        steps: state.step,
        epochs_completed: state.epoch,
        last_val_nll: last_val,
        interrupted,
    })
}

/// What `pixelcnn train` was asked: every setting is None where the user gave no flag, so that a resumed run can
/// keep its own and a fresh one takes the defaults.
#[derive(Clone, Debug)]
pub struct RunRequest {
    pub config: Option<Config>,
    pub epochs: Option<usize>,
    pub batch_size: Option<usize>,
    pub lr: Option<f64>,
    pub lr_decay: Option<f64>,
    pub seed: Option<u64>,
    pub steps: Option<u64>,
    pub limit: Option<usize>,
    pub val_split: f64,
    pub data: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    pub device: Device,
    pub save_every_minutes: f64,
    pub quiet: bool,
}

/// A run, resolved: its options, its starting state (for a resume), and its data.
pub struct RunPlan {
    pub opts: TrainOptions,
    pub start: Option<(Config, Vec<f32>, AdamState, TrainState)>,
    pub train: Split,
    pub val: Split,
}

/// Default epochs and batch size of a fresh run (the seed's setup).
pub const DEFAULT_EPOCHS: usize = 50;
pub const DEFAULT_BATCH_SIZE: usize = 128;

/// Resolves a request: a resume takes every setting from its checkpoint, its length (`--epochs`) included (a
/// conflicting flag is an error; `--epochs` may extend the run, `--steps` stops this invocation early), a fresh run
/// takes the defaults and refuses a directory that already holds a run. Then loads the data.
pub fn plan_run(req: RunRequest) -> Result<RunPlan> {
    let (opts, start) = match &req.resume {
        Some(path) => {
            let ck = checkpoint::load(path)?;
            let Some((state, adam)) = ck.train else {
                anyhow::bail!(
                    "{} holds no training state (it is a model-only checkpoint, as `export` writes); it cannot be resumed",
                    path.display()
                );
            };
            let conflict = |flag: &str, given: String, saved: String| -> Result<()> {
                ensure!(
                    given == saved,
                    "--resume takes {flag} from the checkpoint ({saved}); it cannot be changed to {given} (start a fresh run with --out to change it)"
                );
                Ok(())
            };
            if let Some(c) = req.config {
                conflict("the model", c.describe(), ck.config.describe())?;
            }
            if let Some(b) = req.batch_size {
                conflict("--batch-size", b.to_string(), state.batch_size.to_string())?;
            }
            if let Some(lr) = req.lr {
                conflict("--lr", lr.to_string(), state.adam.lr.to_string())?;
            }
            if let Some(d) = req.lr_decay {
                conflict("--lr-decay", d.to_string(), state.lr_decay.to_string())?;
            }
            if let Some(s) = req.seed {
                conflict("--seed", s.to_string(), state.seed.to_string())?;
            }
            if let Some(l) = req.limit {
                conflict("--limit", l.to_string(), format!("{:?}", state.limit.unwrap_or(0)))?;
            }
            let epochs = req.epochs.unwrap_or(state.epochs);
            ensure!(
                epochs >= state.epoch,
                "--epochs {epochs} is less than the {} epochs the run has already completed",
                state.epoch
            );
            let state = TrainState { epochs, ..state };
            let out = match &req.out {
                Some(o) => o.clone(),
                None => path
                    .parent()
                    .map(Path::to_path_buf)
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or_else(|| PathBuf::from(".")),
            };
            let opts = TrainOptions {
                config: ck.config,
                epochs,
                batch_size: state.batch_size,
                lr: state.adam.lr,
                lr_decay: state.lr_decay,
                seed: state.seed,
                steps: req.steps,
                out,
                resume: Some(path.clone()),
                device: req.device,
                val_split: state.val_split,
                limit: state.limit,
                data: req.data.clone().or(state.data.clone().map(PathBuf::from)),
                save_every_minutes: req.save_every_minutes,
                quiet: req.quiet,
            };
            (opts, Some((ck.config, ck.params, adam, state)))
        }
        None => {
            let out = req.out.clone().unwrap_or_else(default_run_dir);
            for existing in ["last.safetensors", "metrics.jsonl"] {
                ensure!(
                    !out.join(existing).exists(),
                    "{} already holds a run ({existing}); continue it with --resume {} or choose another --out",
                    out.display(),
                    out.join("last.safetensors").display()
                );
            }
            let opts = TrainOptions {
                config: req.config.unwrap_or_default(),
                epochs: req.epochs.unwrap_or(DEFAULT_EPOCHS),
                batch_size: req.batch_size.unwrap_or(DEFAULT_BATCH_SIZE),
                lr: req.lr.unwrap_or(AdamConfig::default().lr),
                lr_decay: req.lr_decay.unwrap_or(1.0),
                seed: req.seed.unwrap_or(0),
                steps: req.steps,
                out,
                resume: None,
                device: req.device,
                val_split: req.val_split,
                limit: req.limit,
                data: req.data.clone(),
                save_every_minutes: req.save_every_minutes,
                quiet: req.quiet,
            };
            (opts, None)
        }
    };
    opts.config.validate()?;
    let data_path = opts.data.clone().unwrap_or_else(crate::data::default_data_path);
    let ds = crate::data::load(&data_path, opts.val_split)?;
    let train = match opts.limit {
        Some(n) => ds.train.take(n),
        None => ds.train.clone(),
    };
    let opts = TrainOptions {
        data: Some(data_path),
        ..opts
    };
    Ok(RunPlan {
        opts,
        start,
        train,
        val: ds.val,
    })
}

/// Runs a resolved plan.
pub fn run(plan: &RunPlan) -> Result<TrainSummary> {
    train(&plan.opts, plan.start.clone(), &plan.train, &plan.val)
}
