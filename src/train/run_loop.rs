//! The training loop, shared by both devices: epochs over a seeded data order, a progress bar over completed
//! steps, per-epoch train and validation NLL appended to `metrics.jsonl`, periodic atomic checkpoints, exact
//! resume, a deterministic NaN guard, Ctrl-C / SIGTERM handling, and a hook the caller runs at each epoch's end.

use super::backend::Backend;
use super::metrics_log::append_metrics;
use super::plan::{fresh_state, RunPlan, Start, TrainOptions};
use super::run_dir::prepare_run_dir;
use crate::checkpoint::{self, TrainState};
use crate::cpu::AdamState;
use crate::data::Split;
use crate::gpu::Gpu;
use crate::metrics::EpochRecord;
use crate::model::{bits_per_dim, Network};
use anyhow::{ensure, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The loss is checked every this many optimizer steps (and before every checkpoint): a diverged run stops within
/// this many steps, whatever the timing.
pub const NAN_CHECK_EVERY: u64 = 10;

/// Default minutes between periodic checkpoints.
pub const DEFAULT_SAVE_EVERY_MINUTES: f64 = 10.0;

/// The data order of one epoch: a permutation seeded by (seed, epoch).
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<u32> {
    crate::rng::permutation(n, seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
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

/// What the loop hands to the caller's hook at the end of each epoch (`pixelcnn train` draws the epoch's sample
/// grid with it), after the epoch's checkpoints and its `metrics.jsonl` record are written.
pub struct EpochEnd<'a> {
    pub net: &'a Network,
    /// The weights the run's checkpoints are used with: the Polyak average when the run keeps one and it has taken
    /// the updates it needs to count, else the raw parameters.
    pub weights: &'a [f32],
    /// The epoch's number, 1-based as in `metrics.jsonl`.
    pub epoch: usize,
    pub run_dir: &'a Path,
    /// The device the run trains on (None: the CPU reference), for work on the run's own device: no second
    /// adapter is opened.
    pub gpu: Option<&'a Gpu>,
}

/// Runs a resolved plan, calling `on_epoch_end` at the end of each epoch (see [`train`]).
pub fn run(plan: &RunPlan, on_epoch_end: &mut dyn FnMut(&EpochEnd) -> Result<()>) -> Result<TrainSummary> {
    train(&plan.opts, plan.start.clone(), &plan.train, &plan.val, on_epoch_end)
}

/// Trains on `train`, validating on `val` at each epoch end. `start` is the checkpoint to resume from (its
/// config, parameters, Adam state and run state), or None for a fresh run of `opts.config`.
///
/// `on_epoch_end` runs after each epoch's (or, with --steps, partial epoch's) checkpoints and metrics record are
/// written, so they are safe whatever it does: an error it returns is printed as a warning and the run goes on.
pub fn train(
    opts: &TrainOptions,
    start: Option<Start>,
    train: &Split,
    val: &Split,
    on_epoch_end: &mut dyn FnMut(&EpochEnd) -> Result<()>,
) -> Result<TrainSummary> {
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
        run.end_epoch(&epoch, sum, on_epoch_end)?;
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
        let backend = Backend::new(
            opts.device,
            &net,
            params,
            adam,
            state.adam,
            state.batch_size,
            state.seed,
        )?;
        let metrics_path = prepare_run_dir(&out_dir, opts.resume.as_deref(), &state)?;
        let run = TrainLoop {
            opts,
            conditional: net.config.is_conditional(),
            batches_per_epoch: train.len().div_ceil(state.batch_size),
            batch_images: Vec::with_capacity(state.batch_size * net.pixels()),
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
            mean / self.net.pixels() as f64,
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
    /// epoch's metrics, saves `epoch_NNN.safetensors` (complete epochs only) and `last.safetensors`, then runs the
    /// caller's hook.
    fn end_epoch(
        &mut self,
        epoch: &Epoch,
        sum: f64,
        on_epoch_end: &mut dyn FnMut(&EpochEnd) -> Result<()>,
    ) -> Result<()> {
        let train_nll = sum / self.state.epoch_images.max(1) as f64;
        let seconds = epoch.start.elapsed().as_secs_f64();
        let rate = (self.state.epoch_images - epoch.images_before) as f64 / seconds;
        let (val_nll, val_nll_ema) = self.validate()?;
        let partial = self.state.batch_in_epoch < self.batches_per_epoch;
        let pixels = self.net.pixels();
        let bits_per_dim = |nll: f64| bits_per_dim(nll, pixels);
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
        // The hook gets the weights the run's checkpoints are used with: the average once it has taken the updates
        // it needs to count (as `sample` and `eval` choose), else the raw parameters.
        let average = adam.ema.as_deref().filter(|_| self.state.average_counts());
        let end = EpochEnd {
            net: &self.net,
            weights: average.unwrap_or(&params),
            epoch: record.epoch,
            run_dir: &self.out_dir,
            gpu: self.backend.gpu(),
        };
        // A failure there is a warning, not the end of the run: the checkpoint and the record are already safe.
        if let Err(e) = on_epoch_end(&end) {
            eprintln!("warning: {e:#}");
        }
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
        let pixels = self.net.pixels();
        let bits_per_dim = |nll: f64| bits_per_dim(nll, pixels);
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
        checkpoint::save_with(&path, &self.net, params, Some((state, adam)), &self.opts.meta)?;
        Ok(path)
    }
}

fn mean(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64
}

fn diverged(what: String, last_good: &Option<PathBuf>) -> anyhow::Error {
    let good = match last_good {
        Some(p) => format!("the last good checkpoint is {} (not overwritten)", p.display()),
        None => "no checkpoint of this run was written yet".to_string(),
    };
    anyhow::anyhow!("training diverged: {what}; {good} — try a lower --lr")
}
