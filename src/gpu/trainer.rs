//! Training and evaluation on the GPU: parameters, Adam state, activations and gradients stay on the device for
//! the whole run. One training step is one pre-recorded [`Program`] (forward with the loss fused into the last
//! conv, backward, Adam) submitted at once; the host uploads the batch as u8 bytes (and its labels), rewrites Adam's
//! step size, and reads the loss only when asked.

use super::buffers::{Tensor, View};
use super::kernels::adam::{self, AdamViews, EmaViews};
use super::kernels::conv::Epilogue;
use super::kernels::prelude::Rows;
use super::kernels::reduce;
use super::layers::{self, Backward, BackwardScratch, Fused, GpuModel, GradientSlots, Pass};
use super::record::{ProfileLine, Program};
use super::Gpu;
use crate::cpu::AdamConfig;
use anyhow::{ensure, Result};
use std::collections::HashMap;

/// Where a forward pass with the loss writes: dL/dlogits (training), and the per-image NLL sums (added to what
/// `nll` holds when `accumulate`: the running sums over an epoch's steps).
struct LossOut {
    grad: Option<View>,
    nll: View,
    accumulate: bool,
}

/// Everything a training or evaluation pass needs besides the parameters, sized for `max_batch` images.
pub struct Trainer {
    pub model: GpuModel,
    pub adam_cfg: AdamConfig,
    pub max_batch: usize,
    /// The batch's u8 images (activation 0) and labels.
    images: Tensor,
    labels: Tensor,
    /// One tensor per activation, `[max_batch · 784, C4]` (activation 0 is `images`).
    acts: Vec<Tensor>,
    /// Per-image bias tables of conditional layers.
    tables: Vec<Option<Tensor>>,
    slots: GradientSlots,
    scratch: BackwardScratch,
    loss: Tensor,
    /// Per-image NLL of the last evaluation batch.
    image_nll: Tensor,
    /// Running per-slot NLL sums over the training steps since the last reset.
    epoch_nll: Tensor,
    step_programs: HashMap<usize, (Program, usize)>,
    eval_programs: HashMap<usize, Program>,
    /// The training step's dropout key (its first word), written before each step.
    dropout_key: Tensor,
    /// Dropout's masks in step t come from `rng::dropout_key(dropout_seed, t)` (the run's seed).
    pub dropout_seed: u64,
}

impl Trainer {
    pub fn new(gpu: &Gpu, model: GpuModel, adam_cfg: AdamConfig, max_batch: usize) -> Result<Trainer> {
        ensure!(max_batch >= 1, "batch size must be at least 1");
        let net = model.net.clone();
        let positions = max_batch * net.pixels();
        let images = gpu.tensor("images", positions.div_ceil(4))?;
        let mut acts = vec![images.clone()];
        for a in 1..net.act_channels.len() {
            acts.push(gpu.tensor(&format!("act {}", net.act_names[a]), positions * net.gpu_channels(a))?);
        }
        let tables = (0..net.layers.len())
            .map(|l| {
                layers::table_len(&net, l, max_batch)
                    .map(|n| gpu.tensor(&format!("class table {l}"), n))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        let scratch = BackwardScratch {
            partial: gpu.tensor("wgrad partials", layers::max_partial_len(gpu, &model, positions))?,
            image_sums: gpu.tensor("image sums", layers::image_sums_len(&net, max_batch))?,
        };
        Ok(Trainer {
            adam_cfg,
            max_batch,
            labels: gpu.tensor("labels", max_batch)?,
            images,
            acts,
            tables,
            slots: GradientSlots::new(&net, positions),
            scratch,
            loss: gpu.tensor("loss", positions)?,
            image_nll: gpu.tensor("image nll", max_batch)?,
            epoch_nll: gpu.tensor("epoch nll", max_batch)?,
            model,
            step_programs: HashMap::new(),
            eval_programs: HashMap::new(),
            dropout_key: gpu.tensor("dropout key", 4)?,
            dropout_seed: 0,
        })
    }

    /// Bytes of GPU memory this trainer allocated (parameters, Adam, activations, gradients, scratch), once its
    /// programs are recorded.
    pub fn gpu_bytes(&self) -> u64 {
        let m = &self.model;
        let fixed = [
            &m.params,
            &m.grads,
            &m.m,
            &m.v,
            &m.taps,
            &self.labels,
            &self.scratch.partial,
            &self.scratch.image_sums,
            &self.loss,
            &self.image_nll,
            &self.epoch_nll,
        ];
        fixed.iter().map(|t| t.bytes()).sum::<u64>()
            + self.acts.iter().map(Tensor::bytes).sum::<u64>()
            + self.tables.iter().flatten().map(Tensor::bytes).sum::<u64>()
            + self.slots.bytes()
    }

    fn act_views(&self, batch: usize) -> Vec<View> {
        let net = &self.model.net;
        let positions = batch * net.pixels();
        let mut v = vec![self.images.slice(0, positions.div_ceil(16) * 4)];
        for a in 1..net.act_channels.len() {
            v.push(self.acts[a].slice(0, positions * net.gpu_channels(a)));
        }
        v
    }

    fn table_views(&self, batch: usize) -> Vec<Option<View>> {
        let net = &self.model.net;
        (0..net.layers.len())
            .map(|l| {
                let len = layers::table_len(net, l, batch)?;
                self.tables[l].as_ref().map(|t| t.slice(0, len))
            })
            .collect()
    }

    /// The forward pass's fusion plan: residual Adds, then gates ([`layers::fuse_gates`]; a training step keeps each
    /// gate's input for its backward, as it keeps a ReLU conv's output for its mask).
    fn fusion(&self, gpu: &Gpu, training: bool) -> Vec<Fused> {
        let net = &self.model.net;
        let mut plan = layers::fuse_residuals(net, training);
        layers::fuse_gates(net, &mut plan, training, &|_, _| true, &|l| {
            self.model.gate_fusable(gpu, l)
        });
        plan
    }

    /// Records the forward pass with the loss: per-pixel BCE into `loss`, per-image sums into `out.nll`, and (when
    /// `out.grad` is Some) dL/dlogits into that view.
    fn record_forward_loss(
        &self,
        gpu: &Gpu,
        p: &mut Program,
        pass: &Pass,
        fused: &[Fused],
        out: LossOut,
    ) -> Result<()> {
        let LossOut { grad, nll, accumulate } = out;
        let batch = pass.images;
        let positions = batch * pass.model.net.pixels();
        let logits = self.model.net.logits_act();
        let loss = self.loss.slice(0, positions.next_multiple_of(4));
        let epilogue = Epilogue::Loss {
            target: pass.acts[0].clone(),
            loss: loss.clone(),
            grad: grad.is_some(),
            scale: 1.0 / positions as f32,
        };
        // The epilogue writes the gradient (training) or the logits (evaluation) as the conv's output.
        let out_views: Vec<View> = match grad {
            Some(g) => pass
                .acts
                .iter()
                .enumerate()
                .map(|(a, v)| if a == logits { g.clone() } else { v.clone() })
                .collect(),
            None => pass.acts.to_vec(),
        };
        let pass = Pass {
            acts: &out_views,
            labels: pass.labels.clone(),
            dropout_key: pass.dropout_key.clone(),
            ..*pass
        };
        layers::record_forward(gpu, p, &pass, fused, Some(epilogue))?;
        reduce::sum_images(gpu, p, loss, nll, batch, self.model.net.image(), accumulate)
    }

    /// Forward, loss, backward and Adam for a batch of `batch` images, recorded once.
    fn build_step(&mut self, gpu: &Gpu, batch: usize) -> Result<(Program, usize)> {
        let net = self.model.net.clone();
        let positions = batch * net.pixels();
        let acts = self.act_views(batch);
        let tables = self.table_views(batch);
        let fused = self.fusion(gpu, true);
        let mut p = Program::new();
        let labels = net
            .config
            .is_conditional()
            .then(|| self.labels.slice(0, batch.next_multiple_of(4)));
        let grad = layers::logits_gradient(gpu, &mut self.slots, &net, positions)?;
        {
            let pass = Pass {
                model: &self.model,
                acts: &acts,
                bytes: true,
                labels: labels.clone(),
                tables: &tables,
                rows: Rows::image_major(self.model.net.image(), batch),
                images: batch,
                dropout_key: (self.model.net.config.dropout > 0).then(|| self.dropout_key.view()),
            };
            let nll = self.epoch_nll.slice(0, batch.next_multiple_of(4));
            let out = LossOut {
                grad: Some(grad),
                nll,
                accumulate: true,
            };
            self.record_forward_loss(gpu, &mut p, &pass, &fused, out)?;
            let mut bw = Backward {
                pass: &pass,
                slots: &mut self.slots,
                scratch: &self.scratch,
            };
            layers::record_backward(gpu, &mut p, &mut bw)?;
        }
        let m = &self.model;
        let views = AdamViews {
            params: m.all_params(),
            grads: m.grads.view(),
            m: m.m.view(),
            v: m.v.view(),
        };
        let adam = adam::adam_update(gpu, &mut p, views, 0.0, &self.adam_cfg)?;
        if let Some(ema) = &m.ema {
            let views = EmaViews {
                params: m.all_params(),
                ema: ema.view(),
            };
            adam::ema_update(gpu, &mut p, views, self.adam_cfg.ema_decay)?;
        }
        p.finish(gpu);
        Ok((p, adam))
    }

    /// Uploads a batch: u8 images as they are, and labels (conditional models).
    fn upload(&self, gpu: &Gpu, images: &[u8], labels: Option<&[u8]>) -> Result<usize> {
        let pixels = self.model.net.pixels();
        let batch = images.len() / pixels;
        ensure!(
            batch >= 1 && batch <= self.max_batch && images.len() == batch * pixels,
            "batch of {batch} images exceeds the trainer's {}",
            self.max_batch
        );
        gpu.write_bytes(&self.images, 0, images);
        if self.model.net.config.is_conditional() {
            let labels = labels.ok_or_else(|| anyhow::anyhow!("a class-conditional model needs the images' labels"))?;
            ensure!(labels.len() == batch, "{} labels for {batch} images", labels.len());
            gpu.write_bytes(
                &self.labels,
                0,
                &layers::label_words(labels, batch, self.model.net.config.classes),
            );
        }
        Ok(batch)
    }

    /// Records (without running) the training-step and evaluation programs for batches of `batch` images.
    pub fn record(&mut self, gpu: &Gpu, batch: usize) -> Result<()> {
        if !self.step_programs.contains_key(&batch) {
            let built = self.build_step(gpu, batch)?;
            self.step_programs.insert(batch, built);
        }
        self.eval_program(gpu, batch)
    }

    fn eval_program(&mut self, gpu: &Gpu, batch: usize) -> Result<()> {
        if self.eval_programs.contains_key(&batch) {
            return Ok(());
        }
        let net = &self.model.net;
        let acts = self.act_views(batch);
        let tables = self.table_views(batch);
        let pass = Pass {
            model: &self.model,
            acts: &acts,
            bytes: true,
            labels: net
                .config
                .is_conditional()
                .then(|| self.labels.slice(0, batch.next_multiple_of(4))),
            tables: &tables,
            rows: Rows::image_major(self.model.net.image(), batch),
            images: batch,
            dropout_key: None,
        };
        let fused = self.fusion(gpu, false);
        let mut p = Program::new();
        let nll = self.image_nll.slice(0, batch.next_multiple_of(4));
        let out = LossOut {
            grad: None,
            nll,
            accumulate: false,
        };
        self.record_forward_loss(gpu, &mut p, &pass, &fused, out)?;
        p.finish(gpu);
        self.eval_programs.insert(batch, p);
        Ok(())
    }

    /// Submits one training step on `images` (batch · 784 bytes of 0/1, with their labels for a conditional
    /// model) as Adam step number `step` (1-based). Does not wait; the loss goes into the running sums read by
    /// [`Trainer::read_running_nll`].
    pub fn step(
        &mut self,
        gpu: &Gpu,
        images: &[u8],
        labels: Option<&[u8]>,
        step: u64,
    ) -> Result<wgpu::SubmissionIndex> {
        let batch = self.upload(gpu, images, labels)?;
        if !self.step_programs.contains_key(&batch) {
            let built = self.build_step(gpu, batch)?;
            self.step_programs.insert(batch, built);
        }
        if self.model.net.config.dropout > 0 {
            let key = crate::rng::dropout_key(self.dropout_seed, step);
            gpu.write_bytes(&self.dropout_key, 0, bytemuck::bytes_of(&key));
        }
        let (program, adam) = &self.step_programs[&batch];
        let lr_t = self.adam_cfg.step_size(step);
        program.set_uniform(
            gpu,
            *adam,
            bytemuck::bytes_of(&adam::adam_uniform(
                self.model.net.params.gpu_len / 4,
                lr_t,
                &self.adam_cfg,
            )),
        );
        Ok(program.submit(gpu))
    }

    /// Per-kernel time of one training step of `batch` images (see [`Program::profile`]).
    pub fn profile_step(&mut self, gpu: &Gpu, images: &[u8], labels: Option<&[u8]>) -> Result<Vec<ProfileLine>> {
        let start = std::time::Instant::now();
        self.profile_step_by(gpu, images, labels, || start.elapsed().as_secs_f64())
    }

    /// [`Trainer::profile_step`] with another clock (see [`Program::profile_by`]).
    pub fn profile_step_by(
        &mut self,
        gpu: &Gpu,
        images: &[u8],
        labels: Option<&[u8]>,
        clock: impl Fn() -> f64,
    ) -> Result<Vec<ProfileLine>> {
        let batch = images.len() / self.model.net.pixels();
        self.step(gpu, images, labels, 1)?;
        gpu.wait()?;
        self.step_programs[&batch].0.profile_by(gpu, clock)
    }

    /// Dispatches of the recorded step for `batch` images (after a step of that size).
    pub fn step_dispatches(&self, batch: usize) -> Option<usize> {
        self.step_programs.get(&batch).map(|p| p.0.len())
    }

    /// Zeroes the running NLL sums (at the start of an epoch).
    pub fn reset_running_nll(&self, gpu: &Gpu) {
        gpu.write(&self.epoch_nll, 0, &vec![0.0; self.epoch_nll.len]);
    }

    /// Sum of the per-image NLLs of all training images since the last reset (waits for the GPU).
    pub fn read_running_nll(&self, gpu: &Gpu) -> Result<f64> {
        Ok(gpu.read(&self.epoch_nll)?.iter().map(|&v| v as f64).sum())
    }

    /// Each image's NLL (nats) under the current parameters (given `labels`, for a conditional model), in batches
    /// of at most `max_batch`; `progress(k)` after each batch.
    pub fn evaluate(
        &mut self,
        gpu: &Gpu,
        images: &[u8],
        labels: Option<&[u8]>,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<f32>> {
        let pixels = self.model.net.pixels();
        let mut out = Vec::with_capacity(images.len() / pixels);
        for (i, chunk) in images.chunks(self.max_batch * pixels).enumerate() {
            let batch = chunk.len() / pixels;
            let l = labels.map(|l| &l[i * self.max_batch..][..batch]);
            self.upload(gpu, chunk, l)?;
            self.eval_program(gpu, batch)?;
            self.eval_programs[&batch].submit(gpu);
            out.extend(gpu.read_range(&self.image_nll, 0, batch)?);
            progress(batch);
        }
        Ok(out)
    }

    /// [`Trainer::evaluate`] with the parameters' Polyak average in place of the parameters (which are kept in the
    /// gradient buffer meanwhile, and put back). Errors when the run keeps no average.
    pub fn evaluate_average(
        &mut self,
        gpu: &Gpu,
        images: &[u8],
        labels: Option<&[u8]>,
        progress: impl FnMut(usize),
    ) -> Result<Vec<f32>> {
        let ema = self
            .model
            .ema
            .clone()
            .ok_or_else(|| anyhow::anyhow!("this run keeps no average of its parameters"))?;
        let bytes = (self.model.net.params.gpu_len * 4) as u64;
        let copy = |from: &Tensor, to: &Tensor| {
            let mut e = gpu.device.create_command_encoder(&Default::default());
            e.copy_buffer_to_buffer(&from.buffer, 0, &to.buffer, 0, bytes);
            gpu.queue.submit([e.finish()]);
        };
        let (params, grads) = (self.model.params.clone(), self.model.grads.clone());
        copy(&params, &grads);
        copy(&ema, &params);
        let out = self.evaluate(gpu, images, labels, progress);
        copy(&grads, &params);
        gpu.wait()?;
        out
    }

    /// An activation of the last pass, in the CPU layout (for tests). Activation 0 and activations the fused
    /// passes never write are not available.
    pub fn read_act(&self, gpu: &Gpu, act: usize, batch: usize) -> Result<Vec<f32>> {
        let net = &self.model.net;
        let data = gpu.read_range(&self.acts[act], 0, batch * net.pixels() * net.gpu_channels(act))?;
        Ok(super::buffers::unpad_groups(
            &data,
            net.act_channels[act],
            net.act_groups[act],
        ))
    }
}
