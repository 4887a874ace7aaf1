//! Planning a run: what `pixelcnn train` was asked resolved into the options of a fresh run (the defaults) or of a
//! resumed one (the checkpoint's own, with the flags that may change checked), its data loaded and its directory
//! locked.

use super::run_dir::{check_run_dir, default_run_dir, run_dir_of, same_dir};
use crate::checkpoint::{self, ModelMeta, TrainState};
use crate::cpu::{AdamConfig, AdamState};
use crate::data::{self, Split};
use crate::device::Device;
use crate::dir_lock::{self, DirLock};
use crate::model::Config;
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};

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
    /// How the data is loaded (`val_split` is the field above).
    pub data_options: data::LoadOptions,
    /// The model's class names and binarization, which its checkpoints carry (from the data on a fresh run, from
    /// the checkpoint on a resumed one).
    pub meta: ModelMeta,
    /// Minutes between periodic checkpoints (`last.safetensors`, with the position inside the epoch).
    pub save_every_minutes: f64,
    /// Print a JSON line per epoch on stdout instead of the human summary.
    pub quiet: bool,
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
    /// How to load the data (`--threshold`, `--invert`, `--image-size`, `--class-names`, `--label-column`,
    /// `--max-value`); a resumed run keeps its own.
    pub data_options: data::LoadOptions,
    pub out: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    pub device: Device,
    pub save_every_minutes: f64,
    pub quiet: bool,
}

/// A run, resolved: its options, its starting state (for a resume), its data, and the lock on its directory
/// (held as long as the plan lives, so for the whole run).
pub struct RunPlan {
    pub opts: TrainOptions,
    pub start: Option<Start>,
    pub train: Split,
    pub val: Split,
    pub lock: DirLock,
}

/// Where a resumed run starts: its checkpoint's config, parameters, Adam state and run state.
pub type Start = (Config, Vec<f32>, AdamState, TrainState);

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
    let given = opts.data.clone().unwrap_or_else(data::default_data_path);
    let data_path =
        std::path::absolute(&given).with_context(|| format!("resolving the data path {}", given.display()))?;
    let load_options = data::LoadOptions {
        val_split: opts.val_split,
        ..opts.data_options.clone()
    };
    let ds = data::load_with(&data_path, &load_options)?;
    for note in &ds.notes {
        eprintln!("note: {note}");
    }
    ensure!(
        ds.labelled || !opts.config.is_conditional(),
        "{}: the images have no labels, so a class-conditional model ({}) cannot train on them; drop --conditional",
        data_path.display(),
        opts.config.describe()
    );
    let opts = fit_to_data(opts, &ds, start.is_some())?;
    let train = match opts.limit {
        Some(n) => ds.train.take(n),
        None => ds.train.clone(),
    };
    let start = match start {
        Some((config, params, adam, mut state)) => {
            state.data_options = Some(load_options.clone());
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
    let lock = dir_lock::lock_dir(&opts.out)?;
    check_run_dir(&opts.out, req.resume.as_deref())?;
    let opts = TrainOptions {
        data: Some(data_path),
        data_options: load_options,
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

/// A fresh run's model takes the data's image shape and, when class-conditional, its classes and their names; a
/// resumed run's model must fit the data as it is.
fn fit_to_data(opts: TrainOptions, ds: &data::Dataset, resumed: bool) -> Result<TrainOptions> {
    let c = opts.config;
    let conditional = c.is_conditional();
    if resumed {
        ensure!(
            (c.height, c.width) == (ds.height, ds.width),
            "{}: the images are {}×{}, but the run's model ({}) takes {}×{} images; the data is not the run's",
            ds.source.display(),
            ds.height,
            ds.width,
            c.describe(),
            c.height,
            c.width
        );
        ensure!(
            !conditional || c.classes == ds.classes(),
            "{}: the data has {} classes, but the run's model ({}) has {}; the data is not the run's",
            ds.source.display(),
            ds.classes(),
            c.describe(),
            c.classes
        );
        return Ok(opts);
    }
    let mut config = c.with_shape(ds.height, ds.width);
    if conditional {
        config = config.with_classes(ds.classes());
    }
    config
        .validate()
        .with_context(|| format!("{}: a model for these images", ds.source.display()))?;
    let meta = ModelMeta {
        class_names: if conditional {
            ds.class_names.clone()
        } else {
            Vec::new()
        },
        threshold: ds.binarize.threshold,
        invert: ds.binarize.invert,
    };
    Ok(TrainOptions { config, meta, ..opts })
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
        data_options: data_options_of(req, &state)?,
        meta: ck.meta.clone(),
        save_every_minutes: req.save_every_minutes,
        quiet: req.quiet,
    };
    Ok((opts, Some((ck.config, ck.params, adam, state))))
}

/// A resumed run loads its data as it did (runs made before runs recorded how: the defaults); data flags that ask
/// for something else are an error.
fn data_options_of(req: &RunRequest, state: &TrainState) -> Result<data::LoadOptions> {
    let saved = state.data_options.clone().unwrap_or_default();
    let (given, defaults) = (&req.data_options, data::LoadOptions::default());
    let same = |a: &data::LoadOptions, b: &data::LoadOptions| {
        data::LoadOptions {
            val_split: 0.0,
            ..a.clone()
        } == data::LoadOptions {
            val_split: 0.0,
            ..b.clone()
        }
    };
    ensure!(
        same(given, &defaults) || same(given, &saved),
        "--resume loads the data as the run did ({}); the data flags ask for {} (start a fresh run with --out to \
         change them)",
        describe_options(&saved),
        describe_options(given)
    );
    Ok(saved)
}

/// "threshold 0.33, not inverted, image size as stored, …" for errors.
fn describe_options(o: &data::LoadOptions) -> String {
    format!(
        "threshold {}, {}, image size {}, class names {}, label column {:?}, max value {}",
        o.binarize.threshold,
        if o.binarize.invert { "inverted" } else { "not inverted" },
        o.image_size
            .map_or("as stored".to_string(), |(h, w)| format!("{h}x{w}")),
        o.class_names
            .as_ref()
            .map_or("from the data".to_string(), |n| n.join(",")),
        o.label_column,
        o.max_value.map_or("default".to_string(), |m| m.to_string())
    )
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
        data_options: req.data_options.clone(),
        // Replaced from the data once it is loaded (fit_to_data).
        meta: ModelMeta::default_for(&req.config.unwrap_or_default()),
        save_every_minutes: req.save_every_minutes,
        quiet: req.quiet,
    })
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
        data_options: Some(opts.data_options.clone()),
        last_record: None,
        lr_epoch0: 0,
        ema_start: 0,
    };
    if let Some(p) = &opts.data {
        state.set_data_path(p);
    }
    state
}
