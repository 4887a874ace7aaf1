//! The training loop, shared by both devices: epochs over a seeded data order, a progress bar over completed
//! steps, per-epoch train and validation NLL appended to `metrics.jsonl`, periodic atomic checkpoints, exact
//! resume, a deterministic NaN guard, and Ctrl-C / SIGTERM handling.

use crate::checkpoint::{self, TrainState};
use crate::cpu::{self, AdamConfig, AdamState};
use crate::data::Split;
use crate::device::Device;
use crate::evaluate::evaluate_cpu;
use crate::gpu::layers::GpuModel;
use crate::gpu::trainer::Trainer;
use crate::gpu::Gpu;
use crate::metrics::{EpochRecord, MAX_METRICS_BYTES, MAX_METRICS_LINE};
use crate::model::{bits_per_dim, Config, Network, PIXELS};
use anyhow::{bail, ensure, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
                let mut model = GpuModel::new(&gpu, net, &params)?;
                model.upload_adam(&gpu, &adam)?;
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

    /// Per-image NLL of `images` under the parameters' Polyak average (None when the run keeps none).
    pub fn evaluate_average(
        &mut self,
        images: &[u8],
        labels: Option<&[u8]>,
        progress: impl FnMut(usize),
    ) -> Result<Option<Vec<f32>>> {
        match self {
            Backend::Cpu { net, adam, .. } => Ok(adam
                .ema
                .as_ref()
                .map(|ema| evaluate_cpu(net, ema, images, labels, progress))),
            Backend::Gpu { gpu, trainer, .. } => match trainer.model.ema {
                Some(_) => Ok(Some(trainer.evaluate_average(gpu, images, labels, progress)?)),
                None => Ok(None),
            },
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
    /// Adam's β1.
    pub beta1: f64,
    /// Decay of the Polyak average of the parameters (0: none).
    pub ema: f64,
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
    /// Images in the sample grid written at the end of every epoch (`samples_epoch_NNN.png`); 0: none.
    pub epoch_samples: usize,
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

/// Appends one record to `metrics.jsonl` as a single write of the line and its newline, then syncs. Only a
/// regular file is appended to (opening never blocks: a FIFO swapped in is refused).
fn append_metrics(path: &Path, record: &EpochRecord) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let meta = f
        .metadata()
        .with_context(|| format!("reading metadata of {}", path.display()))?;
    ensure!(
        meta.is_file(),
        "{} is {}, not a regular file; refusing to append to it",
        path.display(),
        crate::fsio::file_kind(&meta)
    );
    let line = format!("{}\n", serde_json::to_string(record)?);
    f.write_all(line.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    f.sync_all().with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

/// Brings a resumed run's log in line with its checkpoint before the run appends to it: reads `src` (the log
/// beside the checkpoint), completes a last line whose newline a crash lost or drops one torn mid-write, drops the
/// records of steps past the checkpoint's (written after it was saved), restores the checkpoint's own last record
/// if a crash lost it, and writes the result to `dst` (atomically; `dst` is `src` unless the run continues in
/// another directory). Says what it changed on stderr. A damaged line other than the last is an error naming it.
fn repair_metrics(src: &Path, dst: &Path, state: &TrainState) -> Result<()> {
    let text = match std::fs::symlink_metadata(src) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        _ => crate::fsio::read_regular(src, "metrics file", MAX_METRICS_BYTES)?,
    };
    let mut notes = Vec::new();
    let mut kept: Vec<String> = Vec::new();
    let mut steps: Vec<(u64, u64)> = Vec::new();
    let mut dropped = 0;
    let pieces: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    let last = pieces.len() - 1; // the piece after the last newline: empty unless the last line is torn
    for (i, piece) in pieces.iter().enumerate() {
        if piece.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = (piece.len() <= MAX_METRICS_LINE)
            .then(|| serde_json::from_slice::<serde_json::Value>(piece).ok())
            .flatten()
            .filter(|v| v["step"].is_u64() && v["epoch"].is_u64());
        let Some(v) = parsed else {
            if i == last {
                notes.push(format!(
                    "dropped its torn last line ({} bytes, cut short by a crash while it was written)",
                    piece.len()
                ));
                continue;
            }
            bail!(
                "{} line {}: not a metrics record ({} bytes); fix or remove that line, then resume again",
                src.display(),
                i + 1,
                piece.len()
            );
        };
        if i == last {
            notes.push("completed its last line, whose newline a crash lost".to_string());
        }
        let step = v["step"].as_u64().expect("checked");
        if step > state.step {
            dropped += 1;
            continue;
        }
        steps.push((v["epoch"].as_u64().expect("checked"), step));
        kept.push(String::from_utf8_lossy(piece).into_owned());
    }
    if dropped > 0 {
        notes.push(format!(
            "dropped {dropped} record(s) past step {} of the checkpoint (logged after it was saved)",
            state.step
        ));
    }
    if let Some(r) = &state.last_record {
        if !steps.contains(&(r.epoch as u64, r.step)) {
            kept.push(serde_json::to_string(r)?);
            notes.push(format!(
                "restored the record of epoch {} (step {}), which a crash after the checkpoint lost",
                r.epoch, r.step
            ));
        }
    }
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    if out.as_bytes() != text.as_slice() || (src != dst && !out.is_empty()) {
        crate::fsio::write_atomic(dst, out.as_bytes())?;
    }
    for n in notes {
        eprintln!("{}: {n}", dst.display());
    }
    Ok(())
}

fn mean(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64
}

/// The state a fresh run starts from.
pub fn fresh_state(opts: &TrainOptions) -> TrainState {
    let mut state = TrainState {
        step: 0,
        epoch: 0,
        batch_in_epoch: 0,
        seed: opts.seed,
        batch_size: opts.batch_size,
        epochs: opts.epochs,
        adam: AdamConfig {
            lr: opts.lr,
            beta1: opts.beta1,
            ema_decay: opts.ema,
            ..AdamConfig::default()
        },
        val_split: opts.val_split,
        limit: opts.limit,
        epoch_nll_sum: 0.0,
        epoch_images: 0,
        data: None,
        data_bytes: None,
        lr_decay: opts.lr_decay,
        last_record: None,
        lr_epoch0: 0,
        ema_start: 0,
    };
    if let Some(p) = &opts.data {
        state.set_data_path(p);
    }
    state
}

fn diverged(what: String, last_good: &Option<PathBuf>) -> anyhow::Error {
    let good = match last_good {
        Some(p) => format!("the last good checkpoint is {} (not overwritten)", p.display()),
        None => "no checkpoint of this run was written yet".to_string(),
    };
    anyhow::anyhow!("training diverged: {what}; {good} — try a lower --lr")
}

/// Where a resumed run starts: its checkpoint's config, parameters, Adam state and run state.
pub type Start = (Config, Vec<f32>, AdamState, TrainState);

/// Trains on `train`, validating on `val` at each epoch end. `start` is the checkpoint to resume from (its
/// config, parameters, Adam state and run state), or None for a fresh run of `opts.config`.
pub fn train(opts: &TrainOptions, start: Option<Start>, train: &Split, val: &Split) -> Result<TrainSummary> {
    install_ctrlc();
    let mut run = TrainLoop::new(opts, start, train, val)?;
    let mut interrupted = false;
    while run.state.epoch < run.state.epochs {
        let mut epoch = run.begin_epoch();
        let stop = run.run_batches(&mut epoch)?;
        run.backend.finish()?;
        epoch.bar.finish_and_clear();
        let sum = run.check_finite()?;
        if stop == Stop::Interrupted {
            run.interrupt(sum)?;
            interrupted = true;
            break;
        }
        run.end_epoch(&epoch, sum)?;
        if stop == Stop::Steps {
            break;
        }
    }
    Ok(TrainSummary {
        out_dir: run.out_dir,
        steps: run.state.step,
        epochs_completed: run.state.epoch,
        last_val_nll: run.last_val,
        interrupted,
    })
}

/// Why an epoch's batches stopped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The epoch ran to its end.
    EpochEnd,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// `--steps` was reached.
    Steps,
}

/// One epoch's bookkeeping: its data order and learning rate, where it started, and its progress bar.
struct Epoch {
    order: Vec<u32>,
    lr: f64,
    start: Instant,
    first_batch: usize,
    images_before: usize,
    steps_before: u64,
    bar_end: usize,
    bar: ProgressBar,
    last_log: Instant,
}

/// A run in progress: the backend and the run state, where the run writes, and when it last saved.
struct TrainLoop<'a> {
    opts: &'a TrainOptions,
    net: Network,
    backend: Backend,
    state: TrainState,
    train: &'a Split,
    val: &'a Split,
    out_dir: PathBuf,
    metrics_path: PathBuf,
    conditional: bool,
    batches_per_epoch: usize,
    /// The last checkpoint written (or resumed from): named when the run diverges, never overwritten by it.
    last_good: Option<PathBuf>,
    last_val: Option<f64>,
    last_save: Instant,
    save_every: Duration,
    batch_images: Vec<u8>,
    batch_labels: Vec<u8>,
}

impl<'a> TrainLoop<'a> {
    /// Sets up the run: its starting state, its directory (a fresh run starts a fresh `metrics.jsonl`) and its
    /// backend, and announces it.
    fn new(opts: &'a TrainOptions, start: Option<Start>, train: &'a Split, val: &'a Split) -> Result<Self> {
        let (config, params, adam, state) = match start {
            Some(s) => s,
            None => {
                opts.config.validate()?;
                let net = Network::new(opts.config);
                let params = net.init_params(opts.seed);
                let state = fresh_state(opts);
                let adam = AdamState::for_run(&params, &state.adam);
                (opts.config, params, adam, state)
            }
        };
        ensure!(state.batch_size >= 1, "--batch-size must be at least 1");
        ensure!(!train.is_empty(), "the training split is empty");
        let net = Network::new(config);
        let out_dir = opts.out.clone();
        // The device first: a run that cannot get one writes nothing.
        let backend = Backend::new(opts.device, &net, params, adam, state.adam, state.batch_size)?;
        let metrics_path = prepare_run_dir(&out_dir, opts.resume.as_deref(), &state)?;
        let run = TrainLoop {
            opts,
            conditional: net.config.is_conditional(),
            batches_per_epoch: train.len().div_ceil(state.batch_size),
            batch_images: Vec::with_capacity(state.batch_size * PIXELS),
            batch_labels: Vec::with_capacity(state.batch_size),
            net,
            backend,
            state,
            train,
            val,
            out_dir,
            metrics_path,
            last_good: opts.resume.clone(),
            last_val: None,
            last_save: Instant::now(),
            save_every: Duration::from_secs_f64(opts.save_every_minutes * 60.0),
        };
        run.announce();
        Ok(run)
    }

    fn announce(&self) {
        eprintln!(
            "training {} ({} parameters) on {} images ({} val), batch {}, {} epochs, {} steps/epoch, on {}; run directory {}",
            self.net.config.describe(),
            self.net.full_param_count(),
            self.train.len(),
            self.val.len(),
            self.state.batch_size,
            self.state.epochs,
            self.batches_per_epoch,
            self.backend.describe(),
            self.out_dir.display()
        );
    }

    /// Starts the epoch `state.epoch` (or the rest of it, on a resume): its order, learning rate and bar.
    fn begin_epoch(&mut self) -> Epoch {
        let state = &self.state;
        let order = epoch_order(self.train.len(), state.seed, state.epoch);
        let lr = state.epoch_lr();
        self.backend.set_lr(lr);
        self.backend.reset_running_nll();
        let start = Instant::now();
        let first_batch = state.batch_in_epoch;
        // With --steps the bar ends where the run stops, not at the end of the epoch.
        let bar_end = match self.opts.steps {
            Some(s) => self
                .batches_per_epoch
                .min(first_batch + s.saturating_sub(state.step) as usize),
            None => self.batches_per_epoch,
        };
        let bar = ProgressBar::new(bar_end as u64).with_position(first_batch as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                .unwrap()
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", state.epoch + 1, state.epochs));
        Epoch {
            order,
            lr,
            start,
            first_batch,
            images_before: state.epoch_images,
            steps_before: state.step,
            bar_end,
            bar,
            last_log: Instant::now(),
        }
    }

    /// Steps through the rest of the epoch, until its end, an interrupt or `--steps`.
    fn run_batches(&mut self, epoch: &mut Epoch) -> Result<Stop> {
        while self.state.batch_in_epoch < self.batches_per_epoch {
            self.step(epoch)?;
            if self.state.step.is_multiple_of(NAN_CHECK_EVERY) || self.state.batch_in_epoch == self.batches_per_epoch {
                self.show_progress(epoch)?;
            }
            if INTERRUPTED.load(Ordering::SeqCst) {
                return Ok(Stop::Interrupted);
            }
            if self.opts.steps.is_some_and(|s| self.state.step >= s) {
                return Ok(Stop::Steps);
            }
            self.maybe_checkpoint()?;
        }
        Ok(Stop::EpochEnd)
    }

    /// Submits the epoch's next batch and moves the bar to the steps completed so far.
    fn step(&mut self, epoch: &Epoch) -> Result<()> {
        let (b, size) = (self.state.batch_in_epoch, self.state.batch_size);
        let idx = &epoch.order[b * size..((b + 1) * size).min(self.train.len())];
        self.batch_images.clear();
        self.batch_labels.clear();
        for &i in idx {
            self.batch_images.extend_from_slice(self.train.image(i as usize));
            self.batch_labels.push(self.train.labels[i as usize]);
        }
        let labels = self.conditional.then_some(&self.batch_labels[..]);
        let done = self.backend.step(&self.batch_images, labels)?;
        self.state.step += 1;
        self.state.batch_in_epoch += 1;
        self.state.epoch_images += idx.len();
        // The bar and the rate count completed steps only.
        let completed = done.saturating_sub(epoch.steps_before);
        epoch
            .bar
            .set_position((epoch.first_batch as u64 + completed).min(epoch.bar_end as u64));
        Ok(())
    }

    /// The epoch's loss so far (reading it waits for the device), or the divergence error when it is not finite.
    /// Read every NAN_CHECK_EVERY steps, independent of time.
    fn check_finite(&self) -> Result<f64> {
        let sum = self.state.epoch_nll_sum + self.backend.running_nll()?;
        if !sum.is_finite() {
            return Err(diverged(
                format!(
                    "the loss became {sum} by step {} (epoch {})",
                    self.state.step,
                    self.state.epoch + 1
                ),
                &self.last_good,
            ));
        }
        Ok(sum)
    }

    /// Checks the loss and shows it with the rate on the bar (or, without a terminal, in a line every 30 s).
    fn show_progress(&self, epoch: &mut Epoch) -> Result<()> {
        let state = &self.state;
        let sum = self.check_finite()?;
        let mean = sum / state.epoch_images.max(1) as f64;
        let rate = (state.epoch_images - epoch.images_before) as f64 / epoch.start.elapsed().as_secs_f64();
        let msg = format!(
            "loss {:.4} ({:.1} nats/img) {:.1} img/s",
            mean / PIXELS as f64,
            mean,
            rate
        );
        // Without a terminal the bar is hidden: log a line every 30 s instead.
        if !std::io::stderr().is_terminal() && epoch.last_log.elapsed().as_secs_f64() > 30.0 {
            let of_steps = self.opts.steps.map(|s| format!(" of {s}")).unwrap_or_default();
            eprintln!(
                "epoch {}/{} batch {}/{} (step {}{of_steps}): {msg}",
                state.epoch + 1,
                state.epochs,
                state.batch_in_epoch,
                self.batches_per_epoch,
                state.step
            );
            epoch.last_log = Instant::now();
        }
        epoch.bar.set_message(msg);
        Ok(())
    }

    /// Writes `last.safetensors` (with the position inside the epoch) when --save-every minutes have passed, except
    /// at the epoch's end, which saves anyway.
    fn maybe_checkpoint(&mut self) -> Result<()> {
        if self.last_save.elapsed() < self.save_every || self.state.batch_in_epoch >= self.batches_per_epoch {
            return Ok(());
        }
        let sum = self.check_finite()?;
        let (params, adam) = self.backend.state()?;
        let snapshot = TrainState {
            epoch_nll_sum: sum,
            ..self.state.clone()
        };
        self.last_good = Some(self.save_checked("last.safetensors", &params, &adam, &snapshot)?);
        self.last_save = Instant::now();
        Ok(())
    }

    /// Saves `last.safetensors` after an interrupt and says how to continue.
    fn interrupt(&mut self, sum: f64) -> Result<()> {
        // Keep the partial epoch's loss so that the resumed run reports the same numbers.
        self.state.epoch_nll_sum = sum;
        let (params, adam) = self.backend.state()?;
        let path = self.save_checked("last.safetensors", &params, &adam, &self.state)?;
        eprintln!(
            "interrupted at step {}; saved {} — continue with: pixelcnn train --resume {}",
            self.state.step,
            path.display(),
            path.display()
        );
        Ok(())
    }

    /// Ends the epoch (or, with --steps, the part of it this invocation ran): validates, records and prints the
    /// epoch's metrics, and saves `epoch_NNN.safetensors` (complete epochs only) and `last.safetensors`.
    fn end_epoch(&mut self, epoch: &Epoch, sum: f64) -> Result<()> {
        let train_nll = sum / self.state.epoch_images.max(1) as f64;
        let seconds = epoch.start.elapsed().as_secs_f64();
        let rate = (self.state.epoch_images - epoch.images_before) as f64 / seconds;
        let (val_nll, val_nll_ema) = self.validate()?;
        let partial = self.state.batch_in_epoch < self.batches_per_epoch;
        let record = EpochRecord {
            epoch: self.state.epoch + 1,
            step: self.state.step,
            partial,
            train_nll,
            train_bpd: bits_per_dim(train_nll),
            val_nll,
            val_bpd: val_nll.map(bits_per_dim),
            val_nll_ema,
            val_bpd_ema: val_nll_ema.map(bits_per_dim),
            seconds,
            images_per_second: rate,
            lr: epoch.lr,
        };
        self.last_val = val_nll;
        // The checkpoint first, then the log: a failed save leaves no record, and a crash between the two leaves
        // the record in the checkpoint (`last_record`), from which a resume restores it.
        self.state.last_record = Some(record.clone());
        let (params, adam) = self.backend.state()?;
        if partial {
            self.state.epoch_nll_sum = sum;
        } else {
            self.state.epoch += 1;
            self.state.batch_in_epoch = 0;
            self.state.epoch_nll_sum = 0.0;
            self.state.epoch_images = 0;
            let name = format!("epoch_{:03}.safetensors", self.state.epoch);
            self.save_checked(&name, &params, &adam, &self.state)?;
        }
        self.last_good = Some(self.save_checked("last.safetensors", &params, &adam, &self.state)?);
        self.last_save = Instant::now();
        append_metrics(&self.metrics_path, &record)?;
        self.print_record(&record)?;
        // The grid shows the weights the run's checkpoints are used with: the average when it keeps one.
        let weights = adam.ema.as_deref().unwrap_or(&params);
        crate::inspect::epoch_samples::after_epoch(self.opts, &self.backend, &self.net, weights, record.epoch);
        Ok(())
    }

    /// The mean validation NLL under the parameters and under their Polyak average (when the run keeps one); None
    /// without validation images.
    fn validate(&mut self) -> Result<(Option<f64>, Option<f64>)> {
        if self.val.is_empty() {
            return Ok((None, None));
        }
        let averaged = self.state.adam.ema_decay > 0.0;
        let bar = ProgressBar::new(self.val.len() as u64 * if averaged { 2 } else { 1 });
        bar.set_style(
            ProgressStyle::with_template("validating [{bar:30}] {pos}/{len}")
                .unwrap()
                .progress_chars("=> "),
        );
        let labels = self.conditional.then_some(&self.val.labels[..]);
        let v = mean(&self.backend.evaluate(&self.val.images, labels, |k| bar.inc(k as u64))?);
        let v_ema = self
            .backend
            .evaluate_average(&self.val.images, labels, |k| bar.inc(k as u64))?
            .map(|nll| mean(&nll));
        bar.finish_and_clear();
        for (what, x) in [("", Some(v)), (" under the average", v_ema)] {
            if let Some(x) = x.filter(|x| !x.is_finite()) {
                return Err(diverged(format!("the validation NLL{what} is {x}"), &self.last_good));
            }
        }
        Ok((Some(v), v_ema))
    }

    /// The epoch's line: JSON on stdout with --json, else a summary on stderr.
    fn print_record(&self, record: &EpochRecord) -> Result<()> {
        if self.opts.quiet {
            println!("{}", serde_json::to_string(record)?);
            return Ok(());
        }
        let val_text = match (record.val_nll, record.val_nll_ema) {
            (Some(v), Some(a)) => format!(
                "val NLL {v:.2} nats/image ({:.4} bits/dim), averaged weights {a:.2} ({:.4})",
                bits_per_dim(v),
                bits_per_dim(a)
            ),
            (Some(v), None) => format!("val NLL {v:.2} nats/image ({:.4} bits/dim)", bits_per_dim(v)),
            _ => "no validation images".to_string(),
        };
        eprintln!(
            "epoch {:>3}{} step {:>6}: train NLL {:.2} nats/image ({:.4} bits/dim), {val_text}, {:.1} images/s",
            record.epoch,
            if record.partial { " (partial)" } else { "" },
            record.step,
            record.train_nll,
            record.train_bpd,
            record.images_per_second
        );
        Ok(())
    }

    /// Saves `name` in the run directory after checking that every parameter is finite: a diverged state is
    /// never written.
    fn save_checked(&self, name: &str, params: &[f32], adam: &AdamState, state: &TrainState) -> Result<PathBuf> {
        if let Some(i) = params.iter().position(|v| !v.is_finite()) {
            return Err(diverged(
                format!("parameter {i} is {} at step {}", params[i], state.step),
                &self.last_good,
            ));
        }
        let path = self.out_dir.join(name);
        checkpoint::save(&path, &self.net, params, Some((state, adam)))?;
        Ok(path)
    }
}

/// Creates the run directory and returns its `metrics.jsonl`: removed first for a fresh run; for a run resumed
/// from the checkpoint `resume`, the log beside that checkpoint brought in line with it ([`repair_metrics`]).
fn prepare_run_dir(out_dir: &Path, resume: Option<&Path>, state: &TrainState) -> Result<PathBuf> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating run directory {}", out_dir.display()))?;
    remove_stale_temp_files(out_dir);
    let metrics_path = out_dir.join("metrics.jsonl");
    match resume {
        None => {
            if std::fs::symlink_metadata(&metrics_path).is_ok() {
                // A fresh run starts a fresh log rather than appending to an old run's epochs.
                std::fs::remove_file(&metrics_path)
                    .with_context(|| format!("removing the old {}", metrics_path.display()))?;
            }
        }
        Some(ck) => repair_metrics(&run_dir_of(ck).join("metrics.jsonl"), &metrics_path, state)?,
    }
    Ok(metrics_path)
}

/// Removes the temporary files of atomic writes that a run killed with SIGKILL left in its directory (the caller
/// holds the directory's lock, so no write of a run is in progress there).
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        if name.to_str().is_some_and(crate::fsio::is_temp_name)
            && e.file_type().is_ok_and(|t| t.is_file())
            && std::fs::remove_file(e.path()).is_ok()
        {
            log::info!("removed {}, left by an interrupted write", e.path().display());
        }
    }
}

/// The directory a checkpoint lies in (its run's directory).
fn run_dir_of(checkpoint: &Path) -> PathBuf {
    checkpoint
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Whether `a` and `b` name the same directory (both must exist).
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// The files of a run directory that say it holds a run.
const RUN_FILES: [&str; 2] = ["last.safetensors", "metrics.jsonl"];

/// Checks the run directory `out` for this run: a fresh run needs one that holds no run; a resumed one its
/// checkpoint's own directory or one that holds no run (a branch of the run); and the files the run writes, where
/// they exist, must be regular files (or links to them).
fn check_run_dir(out: &Path, resume: Option<&Path>) -> Result<()> {
    if let Ok(meta) = std::fs::metadata(out) {
        ensure!(
            meta.is_dir(),
            "{} is {}; a run directory must be a directory",
            out.display(),
            crate::fsio::file_kind(&meta)
        );
    }
    let holds = RUN_FILES
        .iter()
        .find(|f| std::fs::symlink_metadata(out.join(f)).is_ok());
    match (resume, holds) {
        (None, Some(existing)) => bail!(
            "{} already holds a run ({existing}); continue it with --resume {} or choose another --out",
            out.display(),
            out.join("last.safetensors").display()
        ),
        (Some(ck), Some(existing)) if !same_dir(&run_dir_of(ck), out) => bail!(
            "{} holds another run ({existing}); --resume {} continues in {}, or in an --out that holds no run yet \
             (a branch of the run) — it never writes over another run",
            out.display(),
            ck.display(),
            run_dir_of(ck).display()
        ),
        _ => {}
    }
    for f in RUN_FILES {
        crate::fsio::output_target(&out.join(f))?;
    }
    Ok(())
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
    /// `--beta1`: Adam's first-moment decay.
    pub beta1: Option<f64>,
    /// `--ema`: the decay of the parameters' Polyak average (0: none).
    pub ema: Option<f64>,
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
    pub epoch_samples: usize,
}

/// A run, resolved: its options, its starting state (for a resume), its data, and the lock on its directory
/// (held as long as the plan lives, so for the whole run).
pub struct RunPlan {
    pub opts: TrainOptions,
    pub start: Option<Start>,
    pub train: Split,
    pub val: Split,
    pub lock: crate::dir_lock::DirLock,
}

/// The decay of the Polyak average a fresh run keeps (openai/pixel-cnn's).
pub const DEFAULT_EMA: f64 = 0.9995;

/// Default epochs and batch size of a fresh run (the seed's setup).
pub const DEFAULT_EPOCHS: usize = 50;
pub const DEFAULT_BATCH_SIZE: usize = 128;

/// Resolves a request: a resume takes every setting from its checkpoint, its length (`--epochs`) included (a
/// conflicting flag is an error; `--epochs` may extend the run, `--steps` stops this invocation early), a fresh run
/// takes the defaults and refuses a directory that already holds a run. Then loads the data.
///
/// Nothing is written before every check has passed. The run directory is then locked (a second `train` writing
/// into it is refused, naming the holder's pid) and checked again under the lock.
pub fn plan_run(req: RunRequest) -> Result<RunPlan> {
    let (opts, start) = match &req.resume {
        Some(path) => resume_options(&req, path)?,
        None => (fresh_options(&req)?, None),
    };
    opts.config.validate()?;
    check_run_dir(&opts.out, req.resume.as_deref())?;
    // Recorded absolute, so that a resume from any directory finds the data.
    let given = opts.data.clone().unwrap_or_else(crate::data::default_data_path);
    let data_path =
        std::path::absolute(&given).with_context(|| format!("resolving the data path {}", given.display()))?;
    let ds = crate::data::load(&data_path, opts.val_split)?;
    ensure!(
        ds.labelled || !opts.config.is_conditional(),
        "{}: the images have no labels, so a class-conditional model ({}) cannot train on them; drop --conditional",
        data_path.display(),
        opts.config.describe()
    );
    let train = match opts.limit {
        Some(n) => ds.train.take(n),
        None => ds.train.clone(),
    };
    let start = match start {
        Some((config, params, adam, mut state)) => {
            let file = req
                .resume
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            state.check_against_data(&file, train.len())?;
            state.set_data_path(&data_path);
            Some((config, params, adam, state))
        }
        None => None,
    };
    let lock = crate::dir_lock::lock_dir(&opts.out)?;
    check_run_dir(&opts.out, req.resume.as_deref())?;
    let opts = TrainOptions {
        data: Some(data_path),
        ..opts
    };
    Ok(RunPlan {
        opts,
        start,
        train,
        val: ds.val,
        lock,
    })
}

/// The options and starting state of a run resumed from the checkpoint `path`.
fn resume_options(req: &RunRequest, path: &Path) -> Result<(TrainOptions, Option<Start>)> {
    let ck = checkpoint::load(path)?;
    let Some((state, adam)) = ck.train else {
        anyhow::bail!(
            "{} holds no training state (it is a model-only checkpoint, as `export` writes); it cannot be resumed",
            path.display()
        );
    };
    let out = req.out.clone().unwrap_or_else(|| run_dir_of(path));
    // A branch (an --out other than the run's own directory) may set a learning-rate schedule of its own.
    let branch = !same_dir(&out, &run_dir_of(path)) && out != run_dir_of(path);
    check_resume_flags(req, &ck.config, &state, branch)?;
    // --epochs and --steps are totals: at or below where the run is, there is nothing to do.
    let (done, step) = (state.epoch, state.step);
    let epochs = match req.epochs {
        Some(e) => {
            ensure!(
                e > done,
                "--epochs {e}: the run has already completed {done} epoch(s) (it is at step {step}); --epochs is the \
                 total, so give more than {done} to train on"
            );
            e
        }
        None => {
            ensure!(
                done < state.epochs,
                "{} has completed all {} epochs of its run (step {step}); give --epochs (more than {done}) to train on",
                path.display(),
                state.epochs
            );
            state.epochs
        }
    };
    if let Some(s) = req.steps {
        ensure!(
            s > step,
            "--steps {s}: the run is already at step {step}; --steps is the total number of steps, so give more \
             than {step} to train on"
        );
    }
    let mut state = TrainState { epochs, ..state };
    let mut adam = adam;
    if branch && (req.lr.is_some() || req.lr_decay.is_some()) {
        // The branch's schedule starts at the epoch in progress: --lr (default: the rate the run is at) decayed by
        // --lr-decay (default: the run's) per epoch from here.
        let lr = req.lr.unwrap_or_else(|| state.epoch_lr());
        let decay = req.lr_decay.unwrap_or(state.lr_decay);
        eprintln!(
            "note: branching {} at epoch {}: learning rate {lr:e} × {decay} per epoch from here",
            path.display(),
            state.epoch + 1
        );
        state.adam.lr = lr;
        state.lr_decay = decay;
        state.lr_epoch0 = state.epoch;
    }
    // A run that kept no average starts one at its current parameters when --ema asks for it.
    if let Some(e) = req.ema.filter(|&e| e > 0.0 && state.adam.ema_decay == 0.0) {
        eprintln!(
            "note: {} kept no average of its parameters; averaging them from step {} on (--ema {e})",
            path.display(),
            state.step
        );
        state.adam.ema_decay = e;
        state.ema_start = state.step;
        adam.ema = Some(ck.params.clone());
    }
    let opts = TrainOptions {
        config: ck.config,
        epochs,
        batch_size: state.batch_size,
        lr: state.adam.lr,
        lr_decay: state.lr_decay,
        beta1: state.adam.beta1,
        ema: state.adam.ema_decay,
        seed: state.seed,
        steps: req.steps,
        out,
        resume: Some(path.to_path_buf()),
        device: req.device,
        val_split: state.val_split,
        limit: state.limit,
        data: req.data.clone().or(state.data_path()),
        save_every_minutes: req.save_every_minutes,
        quiet: req.quiet,
        epoch_samples: req.epoch_samples,
    };
    Ok((opts, Some((ck.config, ck.params, adam, state))))
}

/// A resume takes its settings from the checkpoint: a flag that asks for another value is an error, except the
/// learning rate and its decay on a `branch` (an --out other than the run's directory), which may set its own.
fn check_resume_flags(req: &RunRequest, config: &Config, state: &TrainState, branch: bool) -> Result<()> {
    let conflict = |flag: &str, given: String, saved: String| -> Result<()> {
        ensure!(
            given == saved,
            "--resume takes {flag} from the checkpoint ({saved}); it cannot be changed to {given} (start a fresh run with --out to change it)"
        );
        Ok(())
    };
    if let Some(c) = req.config {
        conflict("the model", c.describe(), config.describe())?;
    }
    if let Some(b) = req.batch_size {
        conflict("--batch-size", b.to_string(), state.batch_size.to_string())?;
    }
    let schedule = |flag: &str, given: f64, saved: f64| -> Result<()> {
        ensure!(
            given == saved,
            "--resume takes {flag} from the checkpoint ({saved}) in the run's own directory; to train on with {flag}              {given}, continue as a branch: add --out NEW_DIR (a directory that holds no run)"
        );
        Ok(())
    };
    if let Some(lr) = req.lr.filter(|_| !branch) {
        schedule("--lr", lr, state.adam.lr)?;
    }
    if let Some(d) = req.lr_decay.filter(|_| !branch) {
        schedule("--lr-decay", d, state.lr_decay)?;
    }
    if let Some(s) = req.seed {
        conflict("--seed", s.to_string(), state.seed.to_string())?;
    }
    if let Some(b) = req.beta1 {
        conflict("--beta1", b.to_string(), state.adam.beta1.to_string())?;
    }
    if let Some(e) = req.ema.filter(|_| state.adam.ema_decay > 0.0) {
        conflict("--ema", e.to_string(), state.adam.ema_decay.to_string())?;
    }
    if let Some(l) = req.limit {
        conflict("--limit", l.to_string(), format!("{:?}", state.limit.unwrap_or(0)))?;
    }
    Ok(())
}

/// The options of a fresh run: the defaults where no flag was given, in a directory that holds no run yet.
fn fresh_options(req: &RunRequest) -> Result<TrainOptions> {
    let out = req.out.clone().unwrap_or_else(default_run_dir);
    Ok(TrainOptions {
        config: req.config.unwrap_or_default(),
        epochs: req.epochs.unwrap_or(DEFAULT_EPOCHS),
        batch_size: req.batch_size.unwrap_or(DEFAULT_BATCH_SIZE),
        lr: req.lr.unwrap_or(AdamConfig::default().lr),
        lr_decay: req.lr_decay.unwrap_or(1.0),
        beta1: req.beta1.unwrap_or(AdamConfig::default().beta1),
        ema: req.ema.unwrap_or(DEFAULT_EMA),
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
        epoch_samples: req.epoch_samples,
    })
}

/// Runs a resolved plan.
pub fn run(plan: &RunPlan) -> Result<TrainSummary> {
    train(&plan.opts, plan.start.clone(), &plan.train, &plan.val)
}
