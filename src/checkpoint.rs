//! Checkpoints in safetensors format, with PyTorch names and layouts (all F32, conv weights OIHW). The tensors are
//! exactly those of the network's [`ParamTable`](crate::model::ParamTable), in its order; `pixelcnn summary` lists
//! them. Masked taps are saved as zeros and ignored on load (only live taps are read).
//!
//! Metadata: `format` = `pixelcnn`, `arch` (`pixelcnn` | `gated`), `classes` (0, or 2–256), `filters`, `depth`,
//! `height` and `width`, `dilation_cycle` (only when not 1), `dropout_percent` (only when not 0), `class_names` (a JSON list, conditional models),
//! `threshold` and `invert` (how the training images were binarized), and for training checkpoints a JSON
//! `train_state`. A file without `height`/`width` is 28×28, one without `class_names` has Fashion-MNIST's names
//! (10 classes) or the label numbers, one without `threshold` the seed's 0.33. Training checkpoints also hold Adam's moments as tensors
//! `train.adam_m.<name>` and `train.adam_v.<name>` (same shapes). A file without metadata (as PyTorch's
//! `safetensors.torch.save_file(model.state_dict())` writes it) loads too: the architecture is inferred from the
//! names (`blocks.` or `layers.`, and `class_bias`) and F and the depth from the shapes.

use crate::cpu::{AdamConfig, AdamState};
use crate::model::{default_class_names, Arch, Config, Network, ParamKind, ParamTensor, MAX_CLASSES};
use anyhow::{anyhow, bail, ensure, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Everything needed to resume training exactly.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Optimizer steps taken so far.
    pub step: u64,
    /// Epoch in progress (0-based); `batch_in_epoch` batches of it are done.
    pub epoch: usize,
    pub batch_in_epoch: usize,
    pub seed: u64,
    pub batch_size: usize,
    pub epochs: usize,
    pub adam: AdamConfig,
    pub val_split: f64,
    pub limit: Option<usize>,
    /// Running NLL sum and image count of the epoch in progress (for its reported train NLL).
    pub epoch_nll_sum: f64,
    pub epoch_images: usize,
    /// The data the run trains on (`--data` as resolved, an absolute path), so that `--resume` finds it again from
    /// any directory. A path that is not UTF-8 is kept exactly in `data_bytes`, and here only for reading.
    #[serde(default)]
    pub data: Option<String>,
    /// The data path's bytes when it is not UTF-8 (Unix); it then takes precedence over `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_bytes: Option<Vec<u8>>,
    /// Epoch e trains with learning rate `adam.lr · lr_decay^(e − lr_epoch0)` (`--lr-decay`; 1 keeps it constant, as
    /// Keras does).
    #[serde(default = "no_decay")]
    pub lr_decay: f64,
    /// The epoch the learning-rate schedule starts from: 0, or the epoch where a branch of a run (`--resume X --out
    /// NEW` with `--lr` or `--lr-decay`) set a schedule of its own.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lr_epoch0: usize,
    /// The step at which the Polyak average started (0, or the step where `--resume … --ema` started one): it has
    /// averaged `step − ema_start` updates.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub ema_start: u64,
    /// How the run loads its data (binarization, image size, class names, a CSV's columns); None for runs made
    /// before runs recorded them, which loaded with the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_options: Option<crate::data::LoadOptions>,
    /// The last record the run appended to `metrics.jsonl` before this checkpoint (the record of the epoch this
    /// checkpoint ends, at an epoch's end): a resume re-appends it if a crash between the save and the append lost it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_record: Option<crate::metrics::EpochRecord>,
}

fn no_decay() -> f64 {
    1.0
}

fn is_zero(x: &usize) -> bool {
    *x == 0
}

fn is_zero_u64(x: &u64) -> bool {
    *x == 0
}

/// The largest batch a checkpoint may name (`--batch-size`'s range).
pub const MAX_BATCH_SIZE: usize = 4096;
/// The most epochs a checkpoint may name (`--epochs`' range).
pub const MAX_EPOCHS: usize = 100_000;

impl TrainState {
    /// The learning rate of the epoch in progress.
    pub fn epoch_lr(&self) -> f64 {
        self.adam.lr * self.lr_decay.powi(self.epoch.saturating_sub(self.lr_epoch0) as i32)
    }

    /// Where the run's data is, exactly as recorded.
    pub fn data_path(&self) -> Option<std::path::PathBuf> {
        #[cfg(unix)]
        if let Some(b) = &self.data_bytes {
            use std::os::unix::ffi::OsStrExt;
            return Some(std::ffi::OsStr::from_bytes(b).into());
        }
        self.data.as_ref().map(std::path::PathBuf::from)
    }

    /// Records `path` as the run's data: as text when it is UTF-8, else (Unix) as its exact bytes.
    pub fn set_data_path(&mut self, path: &Path) {
        self.data = Some(path.to_string_lossy().into_owned());
        self.data_bytes = None;
        #[cfg(unix)]
        if path.to_str().is_none() {
            use std::os::unix::ffi::OsStrExt;
            self.data_bytes = Some(path.as_os_str().as_bytes().to_vec());
        }
    }

    /// Updates the Polyak average has taken, and the number it needs to count (one time constant, 1 / (1 − decay)):
    /// before that it is still mostly the parameters it started from, so `eval`, `sample` and the epoch grids use the
    /// raw parameters.
    pub fn average_updates(&self) -> (u64, u64) {
        let needed = (1.0 / (1.0 - self.adam.ema_decay)).round() as u64;
        (self.step.saturating_sub(self.ema_start), needed)
    }

    /// Whether the Polyak average is the better choice of weights: it has taken the updates it needs to count
    /// ([`TrainState::average_updates`]), and it scored no worse than the raw parameters on the run's last
    /// validation ([`TrainState::last_validation`]), when there was one. A slow average (0.9995) keeps e^−1 of its
    /// weight on the initial parameters after one time constant, and on binarized MNIST it scored 87.4 nats against
    /// the parameters' 82.5 after three epochs: the validation, not the step count, says when it has caught up.
    pub fn average_counts(&self) -> bool {
        let (updates, needed) = self.average_updates();
        updates >= needed && self.last_validation().is_none_or(|(raw, average)| average <= raw)
    }

    /// The validation NLL of the raw parameters and of their Polyak average on the last record of the run, when it
    /// validated both.
    pub fn last_validation(&self) -> Option<(f64, f64)> {
        let r = self.last_record.as_ref()?;
        Some((r.val_nll?, r.val_nll_ema?))
    }

    /// Checks every value against its range and the counters against each other (what can be checked without the
    /// data; [`TrainState::check_against_data`] does the rest). `file` names the checkpoint in errors.
    pub fn validate(&self, file: &str) -> Result<()> {
        let bad = |what: String| anyhow!("{file}: train_state has {what}; the checkpoint is damaged or was edited");
        if self.ema_start > self.step {
            return Err(bad(format!("ema_start {} past the step {}", self.ema_start, self.step)));
        }
        if self.lr_epoch0 > self.epoch {
            return Err(bad(format!(
                "lr_epoch0 {} past the epoch in progress {}",
                self.lr_epoch0, self.epoch
            )));
        }
        let (lr, decay) = (self.adam.lr, self.lr_decay);
        ensure!(
            lr.is_finite() && lr > 0.0 && lr <= 1.0 && decay.is_finite() && decay > 0.0 && decay <= 1.0,
            "{file}: train_state has learning rate {lr} and decay {decay}; expected lr and decay in (0, 1]"
        );
        for (name, beta) in [("beta1", self.adam.beta1), ("beta2", self.adam.beta2)] {
            if !(beta.is_finite() && (0.0..1.0).contains(&beta)) {
                return Err(bad(format!("Adam {name} = {beta}, outside [0, 1)")));
            }
        }
        let eps = self.adam.eps;
        if !(eps.is_finite() && eps > 0.0 && eps < 1.0) {
            return Err(bad(format!("Adam eps = {eps}, outside (0, 1)")));
        }
        let ema = self.adam.ema_decay;
        if !(ema.is_finite() && (0.0..1.0).contains(&ema)) {
            return Err(bad(format!("the average's decay ema_decay = {ema}, outside [0, 1)")));
        }
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return Err(bad(format!(
                "batch_size {}, outside 1–{MAX_BATCH_SIZE}",
                self.batch_size
            )));
        }
        if !(1..=MAX_EPOCHS).contains(&self.epochs) || self.epoch > self.epochs {
            return Err(bad(format!(
                "epoch {} of {} epochs (epochs must be 1–{MAX_EPOCHS}, and the epoch in progress at most that)",
                self.epoch, self.epochs
            )));
        }
        let v = self.val_split;
        if !(v.is_finite() && (0.0..1.0).contains(&v)) {
            return Err(bad(format!("val_split {v}, outside [0, 1)")));
        }
        if self.limit == Some(0) {
            return Err(bad("limit 0".into()));
        }
        if !(self.epoch_nll_sum.is_finite() && self.epoch_nll_sum >= 0.0) {
            return Err(bad(format!("epoch_nll_sum {}", self.epoch_nll_sum)));
        }
        // Every completed epoch took at least one step, and so did every batch of the epoch in progress.
        if (self.epoch as u64).saturating_add(self.batch_in_epoch as u64) > self.step {
            return Err(bad(format!(
                "step {} with epoch {} and batch_in_epoch {} (too few steps for them)",
                self.step, self.epoch, self.batch_in_epoch
            )));
        }
        let b = self.batch_in_epoch as u64;
        let (most, fewest) = (
            b * self.batch_size as u64,
            b.saturating_sub(1) * self.batch_size as u64 + b.min(1),
        );
        let images = self.epoch_images as u64;
        if images > most || images < fewest {
            return Err(bad(format!(
                "epoch_images {images} after {b} batches of {} (expected {fewest}–{most})",
                self.batch_size
            )));
        }
        Ok(())
    }

    /// Checks the step counters against the training data: `train_len` images in batches of `batch_size` make
    /// `ceil(train_len / batch_size)` batches per epoch, and `step` must be where the epoch and batch say the run is.
    pub fn check_against_data(&self, file: &str, train_len: usize) -> Result<()> {
        ensure!(train_len > 0, "the training split is empty");
        let per_epoch = train_len.div_ceil(self.batch_size);
        let expected_step = self.epoch as u64 * per_epoch as u64 + self.batch_in_epoch as u64;
        let expected_images = (self.batch_in_epoch * self.batch_size).min(train_len);
        ensure!(
            self.batch_in_epoch <= per_epoch && self.step == expected_step && self.epoch_images == expected_images,
            "{file}: train_state is at step {} (epoch {}, batch {} of the epoch, {} images into it), but {train_len}              training images in batches of {} make {per_epoch} batches per epoch (so step {expected_step}); the data              is not the run's (check --data, and the run's --limit and --val-split) or the checkpoint is damaged",
            self.step,
            self.epoch + 1,
            self.batch_in_epoch,
            self.epoch_images,
            self.batch_size
        );
        Ok(())
    }
}

/// What a model file says besides its tensors: the names of its classes and how its images were binarized (so that
/// `sample --class NAME` and `score IMAGE` follow the data the model was trained on).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelMeta {
    /// One name per class, in label order (empty for an unconditional model).
    pub class_names: Vec<String>,
    /// A grey level g of maximum m binarized to 1 when g / m ≥ threshold (after inversion with `invert`).
    pub threshold: f64,
    pub invert: bool,
}

/// The binarization threshold of every model that names none (the seed's: `x / 256 ≥ 0.33`).
pub const DEFAULT_THRESHOLD: f64 = 0.33;

impl ModelMeta {
    /// What a file of `config` that says nothing means: the default names of its classes, the seed's threshold.
    pub fn default_for(config: &Config) -> ModelMeta {
        ModelMeta {
            class_names: default_class_names(config.classes),
            threshold: DEFAULT_THRESHOLD,
            invert: false,
        }
    }
}

/// A loaded checkpoint.
pub struct Checkpoint {
    pub config: Config,
    pub meta: ModelMeta,
    /// Parameters in the CPU layout of the network's parameter table.
    pub params: Vec<f32>,
    pub train: Option<(TrainState, AdamState)>,
}

impl Checkpoint {
    /// The weights a model uses: the Polyak average of the parameters when this training checkpoint keeps one that
    /// has averaged at least one time constant, 1 / (1 − decay) updates, and scored no worse than the parameters on
    /// the run's last validation (what eval, sample, complete, score, receptive-field and export use by default:
    /// see [`TrainState::average_counts`]); else, or with `raw`, the parameters themselves.
    pub fn weights(&self, raw: bool) -> &[f32] {
        match self.train.as_ref().and_then(|(_, adam)| adam.ema.as_deref()) {
            Some(ema) if self.averaged(raw) => ema,
            _ => &self.params,
        }
    }

    /// Whether [`Checkpoint::weights`] gives the average.
    pub fn averaged(&self, raw: bool) -> bool {
        !raw && self
            .train
            .as_ref()
            .is_some_and(|(state, adam)| adam.ema.is_some() && state.average_counts())
    }

    /// Which weights [`Checkpoint::weights`] gives by default and why, when the checkpoint keeps a Polyak average.
    /// The choice is [`TrainState::average_counts`]'s; this only names the condition that left the average out.
    pub fn weights_note(&self) -> Option<String> {
        let (state, adam) = self.train.as_ref()?;
        adam.ema.as_ref()?;
        if state.average_counts() {
            return Some("using the checkpoint's Polyak-averaged weights (--raw-weights for the raw ones)".to_string());
        }
        let (n, needed) = state.average_updates();
        Some(match state.last_validation() {
            Some((raw, average)) if n >= needed => format!(
                "the checkpoint's Polyak average scored {average:.2} nats on the run's last validation, the raw parameters \
                 {raw:.2}: using the raw parameters"
            ),
            _ => format!(
                "the checkpoint's Polyak average has taken {n} of the {needed} updates it needs to count: using the raw parameters"
            ),
        })
    }

    /// Updates the Polyak average has taken and the number it needs to count (one time constant), when the
    /// checkpoint keeps one.
    pub fn average_updates(&self) -> Option<(u64, u64)> {
        let (state, adam) = self.train.as_ref()?;
        adam.ema.as_ref()?;
        Some(state.average_updates())
    }
}

/// A tensor in the CPU layout → its PyTorch layout (OIHW with zeros in masked taps, for conv weights).
fn export(net: &Network, t: &ParamTensor, packed: &[f32]) -> Vec<f32> {
    let ParamKind::Weight { conv } = t.kind else {
        return packed.to_vec();
    };
    let c = &net.convs[conv];
    let [kh, kw] = c.kernel;
    let mut w = vec![0.0; t.full_len()];
    for (i, tap) in c.taps.iter().enumerate() {
        for ci in 0..c.cin {
            for co in 0..c.cout {
                w[((co * c.cin + ci) * kh + tap.ky) * kw + tap.kx] = packed[(i * c.cin + ci) * c.cout + co];
            }
        }
    }
    w
}

/// A PyTorch-layout tensor → the CPU layout; masked taps are not read, whatever the file holds.
fn import(net: &Network, t: &ParamTensor, data: &[f32], packed: &mut [f32]) {
    let ParamKind::Weight { conv } = t.kind else {
        packed.copy_from_slice(data);
        return;
    };
    let c = &net.convs[conv];
    let [kh, kw] = c.kernel;
    for (i, tap) in c.taps.iter().enumerate() {
        for ci in 0..c.cin {
            for co in 0..c.cout {
                packed[(i * c.cin + ci) * c.cout + co] = data[((co * c.cin + ci) * kh + tap.ky) * kw + tap.kx];
            }
        }
    }
}

/// Serialises a checkpoint to bytes, with the default [`ModelMeta`] of its network.
pub fn to_bytes(net: &Network, params: &[f32], train: Option<(&TrainState, &AdamState)>) -> Result<Vec<u8>> {
    to_bytes_with(net, params, train, &ModelMeta::default_for(&net.config))
}

/// Serialises a checkpoint to bytes.
pub fn to_bytes_with(
    net: &Network,
    params: &[f32],
    train: Option<(&TrainState, &AdamState)>,
    info: &ModelMeta,
) -> Result<Vec<u8>> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (i, t) in net.params.tensors.iter().enumerate() {
        let mut push = |name: String, src: &[f32]| {
            let data = export(net, t, net.params.cpu(src, i));
            tensors.push((name, t.shape.clone(), bytemuck::cast_slice(&data).to_vec()));
        };
        push(t.name.clone(), params);
        if let Some((_, adam)) = train {
            push(format!("train.adam_m.{}", t.name), &adam.m);
            push(format!("train.adam_v.{}", t.name), &adam.v);
            if let Some(ema) = &adam.ema {
                push(format!("train.ema.{}", t.name), ema);
            }
        }
    }
    let c = net.config;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pixelcnn".to_string());
    meta.insert(
        "description".to_string(),
        format!(
            "PixelCNN for binarized {}x{} images (github pixelcnn); PyTorch names, OIHW weights, masked taps zero",
            c.height, c.width
        ),
    );
    meta.insert("arch".to_string(), c.arch.as_str().to_string());
    meta.insert("classes".to_string(), c.classes.to_string());
    meta.insert("filters".to_string(), c.filters.to_string());
    meta.insert("depth".to_string(), c.depth.to_string());
    meta.insert("height".to_string(), c.height.to_string());
    meta.insert("width".to_string(), c.width.to_string());
    if c.is_conditional() {
        ensure!(
            info.class_names.len() == c.classes,
            "{} class names for a model of {} classes",
            info.class_names.len(),
            c.classes
        );
        meta.insert("class_names".to_string(), serde_json::to_string(&info.class_names)?);
    }
    meta.insert("threshold".to_string(), info.threshold.to_string());
    meta.insert("invert".to_string(), info.invert.to_string());
    // Only where it differs from the default, so that files of undilated networks stay as they were.
    if c.dilation_cycle != 1 {
        meta.insert("dilation_cycle".to_string(), c.dilation_cycle.to_string());
    }
    if c.dropout != 0 {
        meta.insert("dropout_percent".to_string(), c.dropout.to_string());
    }
    if let Some((state, _)) = train {
        meta.insert("train_state".to_string(), serde_json::to_string(state)?);
    }
    let views = tensors
        .iter()
        .map(|(n, s, d)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), d)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| anyhow!("building checkpoint: {e:?}"))?;
    safetensors::serialize(views, &Some(meta)).map_err(|e| anyhow!("serialising checkpoint: {e:?}"))
}

/// Writes a checkpoint atomically (temp file + rename), with the default [`ModelMeta`] of its network.
pub fn save(path: &Path, net: &Network, params: &[f32], train: Option<(&TrainState, &AdamState)>) -> Result<()> {
    save_with(path, net, params, train, &ModelMeta::default_for(&net.config))
}

/// Writes a checkpoint atomically (temp file + rename).
pub fn save_with(
    path: &Path,
    net: &Network,
    params: &[f32],
    train: Option<(&TrainState, &AdamState)>,
    info: &ModelMeta,
) -> Result<()> {
    crate::fsio::write_atomic(path, &to_bytes_with(net, params, train, info)?)
        .with_context(|| format!("saving checkpoint {}", path.display()))
}

fn read_f32(st: &SafeTensors, file: &str, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let t = st
        .tensor(name)
        .map_err(|_| anyhow!("{file}: tensor `{name}` is missing"))?;
    ensure!(
        t.dtype() == Dtype::F32,
        "{file}: tensor `{name}` has dtype {:?}, expected F32",
        t.dtype()
    );
    ensure!(
        t.shape() == shape,
        "{file}: tensor `{name}` has shape {:?}, expected {:?}",
        t.shape(),
        shape
    );
    let data: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        bail!("{file}: tensor `{name}` holds a non-finite value at element {i}");
    }
    Ok(data)
}

/// The leading dimension of tensor `name`, checking its rank.
fn dim0(st: &SafeTensors, file: &str, name: &str, rank: usize) -> Result<usize> {
    let t = st
        .tensor(name)
        .map_err(|_| anyhow!("{file}: tensor `{name}` is missing; is this a pixelcnn checkpoint?"))?;
    ensure!(
        t.shape().len() == rank,
        "{file}: tensor `{name}` has shape {:?}, expected rank {rank}",
        t.shape()
    );
    Ok(t.shape()[0])
}

/// The architecture a file holds: from its metadata where present (checked against its tensors), else inferred
/// from the tensor names and shapes.
fn infer_config(st: &SafeTensors, meta: Option<&HashMap<String, String>>, file: &str) -> Result<Config> {
    let names = st.names();
    let has = |prefix: &str| names.iter().any(|n| n.starts_with(prefix));
    if let Some(f) = meta.and_then(|m| m.get("format")) {
        ensure!(
            f == "pixelcnn",
            "{file}: metadata `format` is {f:?}, expected \"pixelcnn\""
        );
    }
    let arch = match meta.and_then(|m| m.get("arch")) {
        Some(a) if a == "pixelcnn" => Arch::Pixelcnn,
        Some(a) if a == "gated" => Arch::Gated,
        Some(a) => bail!("{file}: metadata `arch` is {a:?}, expected \"pixelcnn\" or \"gated\""),
        None if has("layers.") => Arch::Gated,
        None if has("conv_in.") || has("blocks.") => Arch::Pixelcnn,
        None => bail!("{file}: neither `conv_in.weight` (pixelcnn) nor `layers.0.v.weight` (gated) is present; is this a pixelcnn checkpoint?"),
    };
    let class_bias = names
        .iter()
        .find(|n| n.ends_with(".class_bias") && !n.starts_with("train."));
    let classes = match meta.and_then(|m| m.get("classes")) {
        Some(c) => c
            .parse::<usize>()
            .ok()
            .filter(|&c| c == 0 || (2..=MAX_CLASSES).contains(&c))
            .ok_or_else(|| anyhow!("{file}: metadata `classes` is {c:?}, expected 0 or 2–{MAX_CLASSES}"))?,
        // Without metadata, a class-bias table's rows are the classes.
        None => match class_bias {
            Some(t) => dim0(st, file, t, 2)?,
            None => 0,
        },
    };
    if let (Some(t), Some(c)) = (class_bias, meta.and_then(|m| m.get("classes"))) {
        let rows = dim0(st, file, t, 2)?;
        ensure!(
            rows == classes,
            "{file}: metadata `classes` is {c:?} but `{t}` has {rows} rows (one per class); the metadata contradicts \
             the tensors"
        );
    }
    match (classes, class_bias) {
        (0, Some(t)) => bail!(
            "{file}: metadata `classes` is \"0\" but the file holds class-bias tensors (`{t}`); the metadata contradicts the tensors"
        ),
        (c, None) if c > 0 && meta.is_some_and(|m| m.contains_key("classes")) => bail!(
            "{file}: metadata `classes` is \"{c}\" but the class_bias tensors are missing; the metadata contradicts the tensors"
        ),
        _ => {}
    }
    let prefix = match arch {
        Arch::Pixelcnn => "blocks",
        Arch::Gated => "layers",
    };
    let depth = (0..).take_while(|i| has(&format!("{prefix}.{i}."))).count();
    let filters = match arch {
        Arch::Pixelcnn => dim0(st, file, "conv_in.weight", 4)?,
        Arch::Gated => {
            let f2 = dim0(st, file, "layers.0.v.weight", 4)?;
            ensure!(
                f2 % 2 == 0,
                "{file}: `layers.0.v.weight` has an odd number of outputs ({f2}); expected 2F"
            );
            f2 / 2
        }
    };
    // Dilation leaves the tensors' shapes as they are, so only the metadata can tell (PyTorch-made files without
    // metadata load undilated).
    let dilation_cycle = match meta.and_then(|m| m.get("dilation_cycle")) {
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|k| (1..=crate::model::MAX_DILATION_CYCLE).contains(k))
            .ok_or_else(|| {
                anyhow!(
                    "{file}: metadata `dilation_cycle` is {v:?}, expected 1–{}",
                    crate::model::MAX_DILATION_CYCLE
                )
            })?,
        None => 1,
    };
    // The image shape: files made before models carried it are 28×28.
    let side = |key: &str, default: usize| -> Result<usize> {
        match meta.and_then(|m| m.get(key)) {
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|s| (crate::model::MIN_SIDE..=crate::model::MAX_SIDE).contains(s))
                .ok_or_else(|| {
                    anyhow!(
                        "{file}: metadata `{key}` is {v:?}, expected {}–{}",
                        crate::model::MIN_SIDE,
                        crate::model::MAX_SIDE
                    )
                }),
            None => Ok(default),
        }
    };
    let config = Config {
        arch,
        filters,
        depth,
        classes,
        height: side("height", crate::model::DEFAULT_HEIGHT)?,
        width: side("width", crate::model::DEFAULT_WIDTH)?,
        dilation_cycle,
        // Training-only: a file that does not say was trained without it.
        dropout: match meta.and_then(|m| m.get("dropout_percent")) {
            Some(v) => v
                .parse::<u8>()
                .ok()
                .filter(|&d| d <= crate::model::MAX_DROPOUT)
                .ok_or_else(|| {
                    anyhow!(
                        "{file}: metadata `dropout_percent` is {v:?}, expected 0–{}",
                        crate::model::MAX_DROPOUT
                    )
                })?,
            None => 0,
        },
    };
    if let Some(m) = meta {
        for (key, value) in [("filters", filters), ("depth", depth)] {
            if let Some(v) = m.get(key) {
                ensure!(
                    v.parse::<usize>().ok() == Some(value),
                    "{file}: metadata `{key}` is {v:?} but the tensors describe {value}"
                );
            }
        }
    }
    config
        .validate()
        .with_context(|| format!("{file}: inferred {}", config.describe()))?;
    Ok(config)
}

/// Parses checkpoint bytes; `file` names the source in errors.
pub fn from_bytes(bytes: &[u8], file: &str) -> Result<Checkpoint> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow!("{file} is not a valid safetensors file ({e:?}); is it truncated?"))?;
    let (_, metadata) =
        SafeTensors::read_metadata(bytes).map_err(|e| anyhow!("{file}: bad safetensors header ({e:?})"))?;
    let meta = metadata.metadata().as_ref();
    let config = infer_config(&st, meta, file)?;
    let net = Network::new(config);
    // Read and check every tensor before allocating the parameters: a tiny file can claim a huge F, and the
    // allocation would then abort the process instead of this returning an error. Once every tensor is read, the
    // parameters are no bigger than the file.
    let read_all = |prefix: &str| -> Result<Vec<Vec<f32>>> {
        net.params
            .tensors
            .iter()
            .map(|t| read_f32(&st, file, &format!("{prefix}{}", t.name), &t.shape))
            .collect()
    };
    let to_params = |tensors: Vec<Vec<f32>>| {
        let mut out = vec![0.0; net.param_len()];
        for (i, (t, data)) in net.params.tensors.iter().zip(tensors).enumerate() {
            import(&net, t, &data, net.params.cpu_mut(&mut out, i));
        }
        out
    };
    let names = st.names();
    let train_json = meta.and_then(|m| m.get("train_state"));
    // Exactly the network's tensors (and Adam's, with a training state): anything else means the metadata and the
    // tensors disagree, and silently dropping a tensor would change the model.
    let mut expected: std::collections::HashSet<String> = net.params.tensors.iter().map(|t| t.name.clone()).collect();
    // The Polyak average is there exactly when the training state keeps one (checked below).
    let has_ema = names.iter().any(|n| n.starts_with("train.ema."));
    if train_json.is_some() {
        for t in &net.params.tensors {
            expected.insert(format!("train.adam_m.{}", t.name));
            expected.insert(format!("train.adam_v.{}", t.name));
            if has_ema {
                expected.insert(format!("train.ema.{}", t.name));
            }
        }
    }
    let mut unexpected: Vec<&String> = names.iter().copied().filter(|n| !expected.contains(*n)).collect();
    if !unexpected.is_empty() {
        unexpected.sort();
        let what = if train_json.is_none() && unexpected.iter().all(|n| n.starts_with("train.")) {
            " (optimizer tensors without a train_state in the metadata)"
        } else {
            ""
        };
        bail!(
            "{file}: tensor `{}`{} is not part of a {} checkpoint{what}; the metadata contradicts the tensors",
            unexpected[0],
            if unexpected.len() > 1 {
                format!(" (and {} more)", unexpected.len() - 1)
            } else {
                String::new()
            },
            config.describe()
        );
    }
    let params = to_params(read_all("")?);
    let train = match train_json {
        None => None,
        Some(json) => {
            let state: TrainState =
                serde_json::from_str(json).with_context(|| format!("{file}: bad train_state metadata"))?;
            state.validate(file)?;
            let m = to_params(read_all("train.adam_m.")?);
            let v_tensors = read_all("train.adam_v.")?;
            for (t, data) in net.params.tensors.iter().zip(&v_tensors) {
                if let Some(i) = data.iter().position(|&x| x < 0.0) {
                    bail!(
                        "{file}: tensor `train.adam_v.{}` holds a negative second moment ({}) at element {i}",
                        t.name,
                        data[i]
                    );
                }
            }
            let v = to_params(v_tensors);
            let step = state.step;
            let keeps_average = state.adam.ema_decay > 0.0;
            ensure!(
                keeps_average == has_ema,
                "{file}: train_state says the run {} an average of its parameters (ema_decay {}), but the file {} `train.ema.*` tensors",
                if keeps_average { "keeps" } else { "keeps no" },
                state.adam.ema_decay,
                if has_ema { "holds" } else { "lacks" }
            );
            let ema = if has_ema {
                Some(to_params(read_all("train.ema.")?))
            } else {
                None
            };
            Some((state, AdamState { m, v, step, ema }))
        }
    };
    let info = read_model_meta(meta, &config, file)?;
    Ok(Checkpoint {
        config,
        meta: info,
        params,
        train,
    })
}

/// The [`ModelMeta`] a file's metadata gives (the defaults for what it does not say), checked.
fn read_model_meta(meta: Option<&HashMap<String, String>>, config: &Config, file: &str) -> Result<ModelMeta> {
    let mut info = ModelMeta::default_for(config);
    let Some(m) = meta else { return Ok(info) };
    if let Some(names) = m.get("class_names") {
        let names: Vec<String> = serde_json::from_str(names)
            .map_err(|e| anyhow!("{file}: metadata `class_names` is not a JSON list of strings ({e})"))?;
        ensure!(
            names.len() == config.classes,
            "{file}: metadata `class_names` names {} classes, but the model has {}",
            names.len(),
            config.classes
        );
        info.class_names = names;
    }
    if let Some(t) = m.get("threshold") {
        info.threshold = t
            .parse::<f64>()
            .ok()
            .filter(|t| t.is_finite() && *t > 0.0 && *t <= 1.0)
            .ok_or_else(|| anyhow!("{file}: metadata `threshold` is {t:?}, expected a number in (0, 1]"))?;
    }
    if let Some(i) = m.get("invert") {
        info.invert = i
            .parse::<bool>()
            .map_err(|_| anyhow!("{file}: metadata `invert` is {i:?}, expected \"true\" or \"false\""))?;
    }
    Ok(info)
}

/// The largest safetensors header (the format's own limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Loads a checkpoint file. It must be a regular file (a FIFO or device is refused before reading), and the read is
/// bounded by the format: an 8-byte header length of at most 100 MB, the header, and the tensor bytes the header
/// declares (one more byte is an error: trailing data).
pub fn load(path: &Path) -> Result<Checkpoint> {
    use std::io::Read;
    let file = path.display().to_string();
    let (mut f, len) = crate::fsio::open_regular(path, "checkpoint")?;
    let mut bytes = Vec::with_capacity(len.min(1 << 30) as usize);
    (&mut f)
        .take(8)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading checkpoint {file}"))?;
    ensure!(
        bytes.len() == 8,
        "{file} is {} bytes long, too short for a safetensors file; is it truncated?",
        bytes.len()
    );
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    ensure!(
        header_len <= MAX_HEADER_BYTES,
        "{file}: its safetensors header claims {header_len} bytes (at most {MAX_HEADER_BYTES}); is this a checkpoint?"
    );
    (&mut f)
        .take(header_len)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading checkpoint {file}"))?;
    ensure!(
        bytes.len() as u64 == 8 + header_len,
        "{file} ends inside its {header_len}-byte safetensors header; is it truncated?"
    );
    // The data section's length, as the header declares it (the largest end offset); a header that does not parse
    // is reported by `from_bytes`, with the file's own length as the bound.
    let declared = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes[8..])
        .ok()
        .map(|h| {
            h.iter()
                .filter(|(k, _)| *k != "__metadata__")
                .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
                .max()
                .unwrap_or(0)
        });
    let data_len = declared.unwrap_or(len.saturating_sub(8 + header_len));
    let before = bytes.len();
    (&mut f)
        .take(data_len.saturating_add(1))
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading checkpoint {file}"))?;
    let got = (bytes.len() - before) as u64;
    ensure!(
        got <= data_len,
        "{file}: trailing data after the {data_len} bytes of tensors its header declares"
    );
    from_bytes(&bytes, &file)
}
