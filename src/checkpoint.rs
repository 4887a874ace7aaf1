//! Checkpoints in safetensors format, with PyTorch names and layouts (all F32, weights OIHW):
//!
//! | tensor | shape |
//! |---|---|
//! | `conv_in.weight`, `conv_in.bias` | [F,1,7,7], [F] |
//! | `blocks.{i}.conv1.weight`, `.bias` | [F,F,1,1], [F] |
//! | `blocks.{i}.masked.weight`, `.bias` | [F/2,F,3,3], [F/2] |
//! | `blocks.{i}.conv2.weight`, `.bias` | [F,F/2,1,1], [F] |
//! | `head.{j}.weight`, `.bias` (j = 0, 1) | [F,F,1,1], [F] |
//! | `conv_out.weight`, `.bias` | [1,F,1,1], [1] |
//!
//! Masked taps are saved as zeros and ignored on load (only live taps are read). Training state, when present,
//! lives in the same file: tensors `train.adam_m.<name>` and `train.adam_v.<name>` (same shapes) and a JSON
//! `train_state` metadata entry (step, epoch, position in the epoch, seed, hyper-parameters). A file with only the
//! model tensors (as PyTorch's `safetensors.torch.save_file(model.state_dict())` writes it) loads too; F and N are
//! inferred from the shapes.

use crate::cpu::{AdamConfig, AdamState};
use crate::model::{Config, Network};
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
}

/// A loaded checkpoint.
pub struct Checkpoint {
    pub config: Config,
    /// Parameters in the packed CPU layout of `model.rs`.
    pub params: Vec<f32>,
    pub train: Option<(TrainState, AdamState)>,
}

/// `(name, conv index, is_weight)` for every tensor of the model, in file order.
fn tensor_names(net: &Network) -> Vec<(String, usize, bool)> {
    let mut names = Vec::new();
    for (i, c) in net.convs.iter().enumerate() {
        names.push((format!("{}.weight", c.name), i, true));
        names.push((format!("{}.bias", c.name), i, false));
    }
    names
}

fn shape_of(net: &Network, conv: usize, weight: bool) -> Vec<usize> {
    let c = &net.convs[conv];
    if weight {
        vec![c.cout, c.cin, c.kernel, c.kernel]
    } else {
        vec![c.cout]
    }
}

/// Packed block → OIHW weight (zeros in masked taps) or bias.
fn export(net: &Network, params: &[f32], conv: usize, weight: bool) -> Vec<f32> {
    let c = &net.convs[conv];
    let block = net.block(params, conv);
    if !weight {
        return block[c.weight_rows() * c.cout..][..c.cout].to_vec();
    }
    let k = c.kernel;
    let mut w = vec![0.0; c.cout * c.cin * k * k];
    for (t, tap) in c.taps.iter().enumerate() {
        for ci in 0..c.cin {
            for co in 0..c.cout {
                w[((co * c.cin + ci) * k + tap.ky) * k + tap.kx] = block[(t * c.cin + ci) * c.cout + co];
            }
        }
    }
    w
}

/// OIHW weight or bias → packed block; masked taps are not read, whatever the file holds.
fn import(net: &Network, params: &mut [f32], conv: usize, weight: bool, data: &[f32]) {
    let c = net.convs[conv].clone();
    let block = net.block_mut(params, conv);
    if !weight {
        block[c.weight_rows() * c.cout..][..c.cout].copy_from_slice(data);
        return;
    }
    let k = c.kernel;
    for (t, tap) in c.taps.iter().enumerate() {
        for ci in 0..c.cin {
            for co in 0..c.cout {
                block[(t * c.cin + ci) * c.cout + co] = data[((co * c.cin + ci) * k + tap.ky) * k + tap.kx];
            }
        }
    }
}

/// Serialises a checkpoint to bytes.
pub fn to_bytes(net: &Network, params: &[f32], train: Option<(&TrainState, &AdamState)>) -> Result<Vec<u8>> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, conv, weight) in tensor_names(net) {
        let data = export(net, params, conv, weight);
        tensors.push((
            name.clone(),
            shape_of(net, conv, weight),
            bytemuck::cast_slice(&data).to_vec(),
        ));
        if let Some((_, adam)) = train {
            for (prefix, moments) in [("train.adam_m", &adam.m), ("train.adam_v", &adam.v)] {
                let data = export(net, moments, conv, weight);
                tensors.push((
                    format!("{prefix}.{name}"),
                    shape_of(net, conv, weight),
                    bytemuck::cast_slice(&data).to_vec(),
                ));
            }
        }
    }
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pixelcnn".to_string());
    meta.insert(
        "description".to_string(),
        "PixelCNN for binarized 28x28 Fashion-MNIST (github pixelcnn); PyTorch names, OIHW weights, masked taps zero"
            .to_string(),
    );
    meta.insert("filters".to_string(), net.config.filters.to_string());
    meta.insert("blocks".to_string(), net.config.blocks.to_string());
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

/// Parses checkpoint bytes; `file` names the source in errors.
pub fn from_bytes(bytes: &[u8], file: &str) -> Result<Checkpoint> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow!("{file} is not a valid safetensors file ({e:?}); is it truncated?"))?;
    let (_, metadata) =
        SafeTensors::read_metadata(bytes).map_err(|e| anyhow!("{file}: bad safetensors header ({e:?})"))?;
    // F from conv_in.weight [F,1,7,7]; N from the highest block index present.
    let conv_in = st
        .tensor("conv_in.weight")
        .map_err(|_| anyhow!("{file}: tensor `conv_in.weight` is missing; is this a pixelcnn checkpoint?"))?;
    let shape = conv_in.shape();
    ensure!(
        shape.len() == 4 && shape[1..] == [1, 7, 7],
        "{file}: tensor `conv_in.weight` has shape {shape:?}, expected [F, 1, 7, 7]"
    );
    let filters = shape[0];
    let blocks = (0..)
        .take_while(|i| st.names().iter().any(|n| n.starts_with(&format!("blocks.{i}."))))
        .count();
    let config = Config { filters, blocks };
    config
        .validate()
        .with_context(|| format!("{file}: inferred F={filters}, N={blocks}"))?;
    let net = Network::new(config);
    // Read and check every tensor before allocating the parameters: a tiny file can claim a huge F and N, and the
    // allocation would then abort the process instead of this returning an error.
    let mut tensors = Vec::new();
    for (name, conv, weight) in tensor_names(&net) {
        tensors.push((conv, weight, read_f32(&st, file, &name, &shape_of(&net, conv, weight))?));
    }
    let mut params = vec![0.0; net.param_len];
    for (conv, weight, data) in tensors {
        import(&net, &mut params, conv, weight, &data);
    }
    let train = match metadata.metadata().as_ref().and_then(|m| m.get("train_state")) {
        None => None,
        Some(json) => {
            let state: TrainState =
                serde_json::from_str(json).with_context(|| format!("{file}: bad train_state metadata"))?;
            let mut m = vec![0.0; net.param_len];
            let mut v = vec![0.0; net.param_len];
            for (name, conv, weight) in tensor_names(&net) {
                let shape = shape_of(&net, conv, weight);
                import(
                    &net,
                    &mut m,
                    conv,
                    weight,
                    &read_f32(&st, file, &format!("train.adam_m.{name}"), &shape)?,
                );
                import(
                    &net,
                    &mut v,
                    conv,
                    weight,
                    &read_f32(&st, file, &format!("train.adam_v.{name}"), &shape)?,
                );
            }
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
