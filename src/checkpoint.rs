//! Checkpoints in safetensors format, with PyTorch names and layouts (all F32, conv weights OIHW). The tensors are
//! exactly those of the network's [`ParamTable`](crate::model::ParamTable), in its order; `pixelcnn summary` lists
//! them. Masked taps are saved as zeros and ignored on load (only live taps are read).
//!
//! Metadata: `format` = `pixelcnn`, `arch` (`pixelcnn` | `gated`), `classes` (0 or 10), `filters`, `depth`, and
//! for training checkpoints a JSON `train_state`. Training checkpoints also hold Adam's moments as tensors
//! `train.adam_m.<name>` and `train.adam_v.<name>` (same shapes). A file without metadata (as PyTorch's
//! `safetensors.torch.save_file(model.state_dict())` writes it) loads too: the architecture is inferred from the
//! names (`blocks.` or `layers.`, and `class_bias`) and F and the depth from the shapes.

use crate::cpu::{AdamConfig, AdamState};
use crate::model::{Arch, Config, Network, ParamKind, ParamTensor, CLASSES};
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
    /// The data the run trains on (`--data` as resolved), so that `--resume` finds it again.
    #[serde(default)]
    pub data: Option<String>,
    /// Epoch e trains with learning rate `adam.lr · lr_decay^e` (`--lr-decay`; 1 keeps it constant, as Keras does).
    #[serde(default = "no_decay")]
    pub lr_decay: f64,
}

fn no_decay() -> f64 {
    1.0
}

impl TrainState {
    /// The learning rate of the epoch in progress.
    pub fn epoch_lr(&self) -> f64 {
        self.adam.lr * self.lr_decay.powi(self.epoch as i32)
    }
}

/// A loaded checkpoint.
pub struct Checkpoint {
    pub config: Config,
    /// Parameters in the CPU layout of the network's parameter table.
    pub params: Vec<f32>,
    pub train: Option<(TrainState, AdamState)>,
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

/// Serialises a checkpoint to bytes.
pub fn to_bytes(net: &Network, params: &[f32], train: Option<(&TrainState, &AdamState)>) -> Result<Vec<u8>> {
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
        }
    }
    let c = net.config;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pixelcnn".to_string());
    meta.insert(
        "description".to_string(),
        "PixelCNN for binarized 28x28 Fashion-MNIST (github pixelcnn); PyTorch names, OIHW weights, masked taps zero"
            .to_string(),
    );
    meta.insert("arch".to_string(), c.arch.as_str().to_string());
    meta.insert("classes".to_string(), c.classes.to_string());
    meta.insert("filters".to_string(), c.filters.to_string());
    meta.insert("depth".to_string(), c.depth.to_string());
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

/// Writes a checkpoint atomically (temp file + rename).
pub fn save(path: &Path, net: &Network, params: &[f32], train: Option<(&TrainState, &AdamState)>) -> Result<()> {
    crate::util::write_atomic(path, &to_bytes(net, params, train)?)
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
    let arch = match meta.and_then(|m| m.get("arch")) {
        Some(a) if a == "pixelcnn" => Arch::Pixelcnn,
        Some(a) if a == "gated" => Arch::Gated,
        Some(a) => bail!("{file}: metadata `arch` is {a:?}, expected \"pixelcnn\" or \"gated\""),
        None if has("layers.") => Arch::Gated,
        None if has("conv_in.") || has("blocks.") => Arch::Pixelcnn,
        None => bail!("{file}: neither `conv_in.weight` (pixelcnn) nor `layers.0.v.weight` (gated) is present; is this a pixelcnn checkpoint?"),
    };
    let classes = match meta.and_then(|m| m.get("classes")) {
        Some(c) => c
            .parse::<usize>()
            .ok()
            .filter(|&c| c == 0 || c == CLASSES)
            .ok_or_else(|| anyhow!("{file}: metadata `classes` is {c:?}, expected \"0\" or \"10\""))?,
        None if names
            .iter()
            .any(|n| n.ends_with(".class_bias") && !n.starts_with("train.")) =>
        {
            CLASSES
        }
        None => 0,
    };
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
    let config = Config {
        arch,
        filters,
        depth,
        classes,
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
    let params = to_params(read_all("")?);
    let train = match meta.and_then(|m| m.get("train_state")) {
        None => None,
        Some(json) => {
            let state: TrainState =
                serde_json::from_str(json).with_context(|| format!("{file}: bad train_state metadata"))?;
            ensure!(state.batch_size >= 1, "{file}: train_state has batch_size 0");
            let (lr, decay) = (state.adam.lr, state.lr_decay);
            ensure!(
                lr.is_finite() && lr > 0.0 && decay.is_finite() && decay > 0.0 && decay <= 1.0,
                "{file}: train_state has learning rate {lr} and decay {decay}; expected lr > 0 and decay in (0, 1]"
            );
            let m = to_params(read_all("train.adam_m.")?);
            let v = to_params(read_all("train.adam_v.")?);
            let step = state.step;
            Some((state, AdamState { m, v, step }))
        }
    };
    Ok(Checkpoint { config, params, train })
}

/// Loads a checkpoint file.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).with_context(|| format!("reading checkpoint {}", path.display()))?;
    from_bytes(&bytes, &path.display().to_string())
}
