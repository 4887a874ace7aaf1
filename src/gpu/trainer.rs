//! Training and evaluation on the GPU: parameters, Adam state, activations and gradients stay on the device for
//! the whole run. One training step is one pre-recorded [`Program`] (forward, loss, backward, Adam) submitted
//! at once; the host uploads the batch, rewrites Adam's step size, and reads the loss only when asked.

use super::buffers::{pad4, GpuParamLayout, Tensor, View};
use super::kernels;
use super::record::Program;
use super::Gpu;
use crate::cpu::{AdamConfig, AdamState};
use crate::model::{Layer, Network, PIXELS};
use anyhow::Result;
use std::collections::HashMap;

/// Parameters, gradients and Adam moments on the GPU, in the GPU layout.
pub struct GpuModel {
    pub net: Network,
    pub layout: GpuParamLayout,
    pub params: Tensor,
    pub grads: Tensor,
    pub m: Tensor,
    pub v: Tensor,
}

impl GpuModel {
    pub fn new(gpu: &Gpu, net: &Network, params: &[f32]) -> Result<GpuModel> {
        let layout = GpuParamLayout::new(net);
        Ok(GpuModel {
            net: net.clone(),
            params: {
                // The tail lets the sampler's `conv_pixel` bind a full uniform window at any block.
                let t = gpu.tensor("params", layout.total + kernels::WINDOW_TAIL)?;
                gpu.write(&t, 0, &layout.pack(net, params));
                t
            },
            grads: gpu.tensor("grads", layout.total)?,
            m: gpu.tensor("adam.m", layout.total)?,
            v: gpu.tensor("adam.v", layout.total)?,
            layout,
        })
    }

    pub fn params_view(&self, conv: usize) -> super::buffers::View {
        self.params.slice(self.layout.offsets[conv], self.layout.lens[conv])
    }

    /// Every parameter block (the tensor without its tail), as Adam updates it.
    pub fn all_params(&self) -> View {
        self.params.slice(0, self.layout.total)
    }

    /// Parameters in the CPU layout.
    pub fn download_params(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        Ok(self
            .layout
            .unpack(&self.net, &gpu.read(&self.params)?[..self.layout.total]))
    }

    pub fn upload_adam(&self, gpu: &Gpu, adam: &AdamState) {
        gpu.write(&self.m, 0, &self.layout.pack(&self.net, &adam.m));
        gpu.write(&self.v, 0, &self.layout.pack(&self.net, &adam.v));
    }

    /// Adam moments in the CPU layout (the step count is the host's).
    pub fn download_adam(&self, gpu: &Gpu, step: u64) -> Result<AdamState> {
        Ok(AdamState {
            m: self.layout.unpack(&self.net, &gpu.read(&self.m)?),
            v: self.layout.unpack(&self.net, &gpu.read(&self.v)?),
            step,
        })
    }

    /// Gradients of the last step, in the CPU layout (for tests).
    pub fn download_grads(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        Ok(self.layout.unpack(&self.net, &gpu.read(&self.grads)?))
    }
}

/// Images (0/1 bytes) as the GPU input activation: one position per pixel, value in lane x of a vec4.
pub fn images_to_input(images: &[u8]) -> Vec<f32> {
    let mut out = vec![0.0f32; images.len() * 4];
    for (i, &v) in images.iter().enumerate() {
        out[i * 4] = v as f32;
    }
    out
}

/// Records the forward pass over the layer list into `p`: for `batch` images at every position (image-major), or
/// (`pixel` = Some(q)) at pixel q only, reading cached activations at earlier positions (the incremental sampler;
/// position-major buffers with `batch` images per position).
pub fn record_forward(
    gpu: &Gpu,
    p: &mut Program,
    model: &GpuModel,
    acts: &[Tensor],
    batch: usize,
    pixel: Option<usize>,
) -> Result<()> {
    let net = &model.net;
    let positions = batch * PIXELS;
    let rows = if pixel.is_some() { batch } else { positions };
    let act = |i: usize| acts[i].slice(0, positions * pad4(net.act_channels[i]));
    let mut fused_add = None;
    for (l, layer) in net.layers.iter().enumerate() {
        match *layer {
            Layer::Conv { conv, input } => {
                let (block, c) = (model.params_view(conv), &net.convs[conv]);
                // At a single pixel a residual add right after the conv goes into the conv's epilogue where the
                // kernel allows it (one dispatch fewer per block and pixel). The conv's own output is then never
                // written, so only when no other layer reads it.
                let read_later = |act: usize| {
                    net.layers[l + 2..].iter().any(|layer| match *layer {
                        Layer::Conv { input, .. } => input == act,
                        Layer::Add { a, b } => a == act || b == act,
                    })
                };
                if let (Some(q), Some(&Layer::Add { a, b })) = (pixel, net.layers.get(l + 1)) {
                    if b == l + 1
                        && !read_later(l + 1)
                        && kernels::try_conv_pixel(gpu, p, c, &block, &act(input), Some(act(a)), &act(l + 2), rows, q)?
                    {
                        fused_add = Some(l + 1);
                        continue;
                    }
                }
                kernels::conv_forward(gpu, p, c, block, act(input), act(l + 1), rows, pixel)?
            }
            Layer::Add { .. } if fused_add == Some(l) => {}
            Layer::Add { a, b } => {
                kernels::add(gpu, p, act(a), act(b), act(l + 1), net.act_channels[l + 1], rows, pixel)?
            }
        }
    }
    Ok(())
}

/// Everything a training or evaluation pass needs besides the parameters, sized for `max_batch` images.
pub struct Trainer {
    pub model: GpuModel,
    pub adam_cfg: AdamConfig,
    pub max_batch: usize,
    /// One tensor per activation, `[max_batch · 784, C4]`.
    acts: Vec<Tensor>,
    /// Gradient tensor of each activation (residual-stream activations share one; see `assign_gradients`).
    grad_of: Vec<Option<usize>>,
    grad_tensors: Vec<Tensor>,
    dz: Tensor,
    wt: Tensor,
    partial: Tensor,
    loss: Tensor,
    /// Per-image NLL of the last evaluation batch.
    image_nll: Tensor,
    /// Running per-slot NLL sums over the training steps since the last reset.
    epoch_nll: Tensor,
    step_programs: HashMap<usize, (Program, usize)>,
    eval_programs: HashMap<usize, Program>,
}

impl Trainer {
    pub fn new(gpu: &Gpu, model: GpuModel, adam_cfg: AdamConfig, max_batch: usize) -> Result<Trainer> {
        anyhow::ensure!(max_batch >= 1, "batch size must be at least 1");
        let net = model.net.clone();
        let positions = max_batch * PIXELS;
        let acts = net
            .act_channels
            .iter()
            .enumerate()
            .map(|(i, &c)| gpu.tensor(&format!("act{i}"), positions * pad4(c)))
            .collect::<Result<Vec<_>>>()?;
        let (grad_of, count) = assign_gradients(&net);
        let mut grad_tensors = Vec::new();
        for g in 0..count {
            let channels = (0..net.act_channels.len())
                .filter(|&a| grad_of[a] == Some(g))
                .map(|a| net.act_channels[a])
                .max()
                .unwrap_or(1);
            grad_tensors.push(gpu.tensor(&format!("grad{g}"), positions * pad4(channels))?);
        }
        let max_c = net.convs.iter().map(|c| pad4(c.cout)).max().unwrap_or(4);
        let max_wt = net.convs.iter().map(kernels::transposed_len).max().unwrap_or(4);
        let max_partial = net
            .convs
            .iter()
            .map(|c| kernels::wgrad_partial_len(gpu, c, positions))
            .max()
            .unwrap_or(4);
        Ok(Trainer {
            adam_cfg,
            max_batch,
            dz: gpu.tensor("dz", positions * max_c)?,
            wt: gpu.tensor("weights^T", max_wt)?,
            partial: gpu.tensor("wgrad partials", max_partial)?,
            loss: gpu.tensor("loss", positions)?,
            image_nll: gpu.tensor("image nll", max_batch)?,
            epoch_nll: gpu.tensor("epoch nll", max_batch)?,
            acts,
            grad_of,
            grad_tensors,
            model,
            step_programs: HashMap::new(),
            eval_programs: HashMap::new(),
        })
    }

    /// Bytes of GPU memory this trainer allocated (parameters, Adam, activations, gradients, scratch).
    pub fn gpu_bytes(&self) -> u64 {
        let m = &self.model;
        [
            &m.params,
            &m.grads,
            &m.m,
            &m.v,
            &self.dz,
            &self.wt,
            &self.partial,
            &self.loss,
            &self.image_nll,
            &self.epoch_nll,
        ]
        .iter()
        .map(|t| t.bytes())
        .chain(self.acts.iter().map(Tensor::bytes))
        .chain(self.grad_tensors.iter().map(Tensor::bytes))
        .sum()
    }

    fn record_forward(&self, gpu: &Gpu, p: &mut Program, batch: usize) -> Result<()> {
        record_forward(gpu, p, &self.model, &self.acts, batch, None)
    }

    /// Forward pass, per-pixel BCE and its gradient, and per-image NLL sums written (or added) to `nll`.
    fn record_forward_loss(&self, gpu: &Gpu, p: &mut Program, batch: usize, nll: View, accumulate: bool) -> Result<()> {
        let net = &self.model.net;
        let positions = batch * PIXELS;
        self.record_forward(gpu, p, batch)?;
        let logits = net.logits_act();
        let logits_view = self.acts[logits].slice(0, positions * pad4(net.act_channels[logits]));
        let target = self.acts[0].slice(0, positions * 4);
        let loss = self.loss.slice(0, positions);
        kernels::bce_loss_grad(
            gpu,
            p,
            logits_view,
            target,
            self.grad(logits, positions),
            loss.clone(),
            batch,
        )?;
        kernels::sum_images(gpu, p, loss, nll, batch, accumulate)
    }

    fn grad(&self, act: usize, positions: usize) -> super::buffers::View {
        let g = self.grad_of[act].expect("activation has a gradient");
        self.grad_tensors[g].slice(0, positions * pad4(self.model.net.act_channels[act]))
    }

    /// Forward, loss, backward and Adam for a batch of `batch` images, recorded once.
    fn build_step(&self, gpu: &Gpu, batch: usize) -> Result<(Program, usize)> {
        let net = &self.model.net;
        let positions = batch * PIXELS;
        let mut p = Program::new();
        self.record_forward_loss(gpu, &mut p, batch, self.epoch_nll.slice(0, pad4(batch)), true)?;
        let act = |i: usize| self.acts[i].slice(0, positions * pad4(net.act_channels[i]));
        let logits = net.logits_act();
        // Backward through the layer list. A gradient tensor is "written" once something stored into it; later
        // contributions (the residual stream's fan-out) accumulate.
        let mut written = vec![false; self.grad_tensors.len()];
        written[self.grad_of[logits].unwrap()] = true;
        for (l, layer) in net.layers.iter().enumerate().rev() {
            let Layer::Conv { conv, input } = *layer else { continue }; // Add: both inputs alias the output's gradient.
            let c = &net.convs[conv];
            let out = l + 1;
            let dz = if c.relu {
                let dz = self.dz.slice(0, positions * pad4(c.cout));
                kernels::relu_backward(
                    gpu,
                    &mut p,
                    act(out),
                    self.grad(out, positions),
                    dz.clone(),
                    c.cout,
                    positions,
                )?;
                dz
            } else {
                self.grad(out, positions)
            };
            let grad_block = self
                .model
                .grads
                .slice(self.model.layout.offsets[conv], self.model.layout.lens[conv]);
            let partial = self.partial.slice(0, kernels::wgrad_partial_len(gpu, c, positions));
            kernels::conv_backward_weight(gpu, &mut p, c, act(input), dz.clone(), partial, grad_block, positions)?;
            if input != 0 {
                let wt = self.wt.slice(0, kernels::transposed_len(c));
                kernels::transpose_weights(gpu, &mut p, c, self.model.params_view(conv), wt.clone())?;
                let g = self.grad_of[input].unwrap();
                kernels::conv_backward_data(
                    gpu,
                    &mut p,
                    c,
                    wt,
                    dz,
                    self.grad(input, positions),
                    positions,
                    written[g],
                )?;
                written[g] = true;
            }
        }
        let m = &self.model;
        let adam = kernels::adam_update(
            gpu,
            &mut p,
            m.all_params(),
            m.grads.view(),
            m.m.view(),
            m.v.view(),
            0.0,
            &self.adam_cfg,
        )?;
        p.finish(gpu);
        Ok((p, adam))
    }

    /// Submits one training step on `images` (batch · 784 bytes of 0/1) as Adam step number `step` (1-based).
    /// Does not wait; the loss goes into the running sums read by [`Trainer::read_running_nll`].
    pub fn step(&mut self, gpu: &Gpu, images: &[u8], step: u64) -> Result<()> {
        let batch = images.len() / PIXELS;
        anyhow::ensure!(
            batch >= 1 && batch <= self.max_batch,
            "batch of {batch} images exceeds the trainer's {}",
            self.max_batch
        );
        if !self.step_programs.contains_key(&batch) {
            let built = self.build_step(gpu, batch)?;
            self.step_programs.insert(batch, built);
        }
        gpu.write(&self.acts[0], 0, &images_to_input(images));
        let (program, adam) = &self.step_programs[&batch];
        let lr_t = self.adam_cfg.step_size(step);
        program.set_uniform(
            gpu,
            *adam,
            &kernels::adam_uniform(self.model.layout.total / 4, lr_t, &self.adam_cfg),
        );
        program.submit(gpu);
        Ok(())
    }

    /// Per-kernel time of one training step of `batch` images (see [`Program::profile`]).
    pub fn profile_step(&mut self, gpu: &Gpu, images: &[u8]) -> Result<Vec<(String, f64, usize)>> {
        let batch = images.len() / PIXELS;
        self.step(gpu, images, 1)?;
        gpu.wait()?;
        self.step_programs[&batch].0.profile(gpu)
    }

    /// Zeroes the running NLL sums (at the start of an epoch).
    pub fn reset_running_nll(&self, gpu: &Gpu) {
        gpu.write(&self.epoch_nll, 0, &vec![0.0; self.epoch_nll.len]);
    }

    /// Sum of the per-image NLLs of all training images since the last reset (waits for the GPU).
    pub fn read_running_nll(&self, gpu: &Gpu) -> Result<f64> {
        Ok(gpu.read(&self.epoch_nll)?.iter().map(|&v| v as f64).sum())
    }

    /// Each image's NLL (nats) under the current parameters, in batches of at most `max_batch`.
    pub fn evaluate(&mut self, gpu: &Gpu, images: &[u8], mut progress: impl FnMut(usize)) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(images.len() / PIXELS);
        for chunk in images.chunks(self.max_batch * PIXELS) {
            let batch = chunk.len() / PIXELS;
            if !self.eval_programs.contains_key(&batch) {
                let mut p = Program::new();
                self.record_forward_loss(gpu, &mut p, batch, self.image_nll.slice(0, pad4(batch)), false)?;
                p.finish(gpu);
                self.eval_programs.insert(batch, p);
            }
            gpu.write(&self.acts[0], 0, &images_to_input(chunk));
            self.eval_programs[&batch].submit(gpu);
            out.extend(gpu.read_range(&self.image_nll, 0, batch)?);
            progress(batch);
        }
        Ok(out)
    }

    /// An activation of the last pass, in the CPU layout (for tests).
    pub fn read_act(&self, gpu: &Gpu, act: usize, batch: usize) -> Result<Vec<f32>> {
        let c = self.model.net.act_channels[act];
        let data = gpu.read_range(&self.acts[act], 0, batch * PIXELS * pad4(c))?;
        Ok(super::buffers::unpad_channels(&data, c))
    }
}

/// Which gradient tensor each activation uses. The two inputs of a residual add receive exactly the add's output
/// gradient, so they share its tensor (no copy); a conv whose input already has a gradient accumulates into it.
/// This is safe because the layers run backward in reverse order: the add's branch (conv2's ReLU backward) reads
/// the shared gradient before conv1's backward-data adds its contribution for the block input.
/// The input image (activation 0) needs no gradient.
pub fn assign_gradients(net: &Network) -> (Vec<Option<usize>>, usize) {
    let mut grad_of = vec![None; net.act_channels.len()];
    let mut count = 0;
    grad_of[net.logits_act()] = Some(0);
    count += 1;
    for (l, layer) in net.layers.iter().enumerate().rev() {
        match *layer {
            Layer::Add { a, b } => {
                let g = grad_of[l + 1];
                assert!(grad_of[a].is_none() && grad_of[b].is_none());
                grad_of[a] = g;
                grad_of[b] = g;
            }
            Layer::Conv { input, .. } => {
                if input != 0 && grad_of[input].is_none() {
                    grad_of[input] = Some(count);
                    count += 1;
                }
            }
        }
    }
    (grad_of, count)
}
