//! The training backend: the CPU reference or the GPU trainer, behind one interface the loop drives.

use crate::cpu::{self, AdamConfig, AdamState};
use crate::device::Device;
use crate::evaluate::evaluate_cpu;
use crate::gpu::layers::GpuModel;
use crate::gpu::trainer::Trainer;
use crate::gpu::Gpu;
use crate::model::Network;
use anyhow::Result;
use std::sync::Arc;

/// A training backend: the CPU reference or the GPU trainer.
pub enum Backend {
    Cpu {
        net: Box<Network>,
        params: Vec<f32>,
        adam: AdamState,
        cfg: AdamConfig,
        running: f64,
        /// The run's seed, from which each step's dropout masks come.
        seed: u64,
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
    /// The backend of a run seeded `seed` (its dropout masks derive from the seed and the step).
    pub fn new(
        device: Device,
        net: &Network,
        params: Vec<f32>,
        adam: AdamState,
        cfg: AdamConfig,
        batch: usize,
        seed: u64,
    ) -> Result<Backend> {
        Ok(match device {
            Device::Cpu => Backend::Cpu {
                net: Box::new(net.clone()),
                params,
                adam,
                cfg,
                running: 0.0,
                seed,
            },
            Device::Gpu => {
                let gpu = Arc::new(Gpu::new()?);
                let mut model = GpuModel::new(&gpu, net, &params)?;
                model.upload_adam(&gpu, &adam)?;
                let mut trainer = Box::new(Trainer::new(&gpu, model, cfg, batch)?);
                trainer.dropout_seed = seed;
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
                seed,
            } => {
                let x: Vec<f32> = images.iter().map(|&v| v as f32).collect();
                let batch = images.len() / net.pixels();
                let nll = cpu::train_step(net, params, adam, cfg, &x, labels, batch, *seed);
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

    /// The GPU device the backend runs on (None for the CPU reference).
    pub fn gpu(&self) -> Option<&Gpu> {
        match self {
            Backend::Cpu { .. } => None,
            Backend::Gpu { gpu, .. } => Some(gpu),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Backend::Cpu { .. } => "CPU reference".into(),
            Backend::Gpu { gpu, .. } => format!("{}, kernels {}", gpu.adapter_name(), gpu.kernels.describe()),
        }
    }
}
