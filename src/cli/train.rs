//! `pixelcnn train`.

use super::{parse_beta1, parse_ema, parse_lr, parse_lr_decay, parse_minutes, DataArgs, ModelArgs};
use crate::device::Device;
use crate::inspect::epoch_samples;
use crate::train;
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
    /// Epochs in total (default 50; with --resume the run's own, unless given to extend it).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    epochs: Option<u64>,
    /// Images per step (default 128).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4096))]
    batch_size: Option<u64>,
    /// Adam learning rate (default 5e-4; β1 0.9, β2 0.999, ε 1e-7 as in Keras).
    #[arg(long, value_parser = parse_lr)]
    lr: Option<f64>,
    /// Multiply the learning rate by this after every epoch: epoch e (from 0) trains at lr · decay^e. Default 1
    /// (constant, as Keras). 0.9 roughly halves it every 7 epochs.
    #[arg(long, value_parser = parse_lr_decay)]
    lr_decay: Option<f64>,
    /// Adam's β1, the decay of its first moment (default 0.9, as Keras; openai/pixel-cnn uses 0.95).
    #[arg(long, value_parser = parse_beta1)]
    beta1: Option<f64>,
    /// Keep a Polyak average of the parameters (an exponential moving average with this decay per step, updated on
    /// the GPU after each Adam step), as published PixelCNNs do. Each epoch's metrics give the validation NLL of
    /// both; eval, sample, complete, score, receptive-field and export use the average once it has taken 1 / (1 −
    /// decay) updates and validated no worse than the parameters (else the parameters; --raw-weights forces them).
    /// Default 0.9995 (openai/pixel-cnn's); 0 turns it off. With --resume of a run that kept none, the average
    /// starts at the resumed parameters.
    #[arg(long, value_parser = parse_ema)]
    ema: Option<f64>,
    /// Train on the first N training images only.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// Stop after N optimizer steps in total.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    steps: Option<u64>,
    /// Seed of the initialisation and the data order (default 0).
    #[arg(long)]
    seed: Option<u64>,
    /// Run directory (default: runs/<UTC timestamp>, or the checkpoint's directory with --resume). A fresh run
    /// refuses a directory that already holds a run.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue from a checkpoint written by `train` (its settings come from it; --epochs and --steps may extend).
    /// With an --out that holds no run yet, the run continues there as a branch, which may set its own learning
    /// rate (--lr: the rate from the resumed epoch on) and --lr-decay.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Minutes between periodic checkpoints of last.safetensors.
    #[arg(long, default_value_t = train::DEFAULT_SAVE_EVERY_MINUTES, value_parser = parse_minutes)]
    save_every: f64,
    #[arg(long, value_enum, default_value_t = Device::Gpu)]
    device: Device,
    /// Images in the sample grid written into the run directory at the end of every epoch
    /// (samples_epoch_NNN.png, always the same seed, so that successive grids show what the model learned); 0 turns
    /// it off.
    #[arg(long, default_value_t = epoch_samples::DEFAULT_COUNT as u64,
          value_parser = clap::value_parser!(u64).range(0..=256))]
    epoch_samples: u64,
    /// Print each epoch's metrics as a JSON line on stdout, and a final JSON summary.
    #[arg(long)]
    json: bool,
}

impl TrainArgs {
    fn request(self) -> Result<train::RunRequest> {
        Ok(train::RunRequest {
            config: self.model.given().then(|| self.model.config()).transpose()?,
            epochs: self.epochs.map(|e| e as usize),
            batch_size: self.batch_size.map(|b| b as usize),
            lr: self.lr,
            lr_decay: self.lr_decay,
            beta1: self.beta1,
            ema: self.ema,
            seed: self.seed,
            steps: self.steps,
            limit: self.limit.map(|l| l as usize),
            val_split: self.data.val_split,
            data_options: self.data.options(None)?,
            data: self.data.data,
            out: self.out,
            resume: self.resume,
            device: self.device,
            save_every_minutes: self.save_every,
            quiet: self.json,
        })
    }

    pub fn run(self) -> Result<()> {
        let (json, count) = (self.json, self.epoch_samples as usize);
        let plan = train::plan_run(self.request()?)?;
        // At the end of every epoch, after the checkpoint and the metrics are written: the epoch's sample grid in the
        // run directory, said unless --json. The loop reports a failure as a warning and trains on: the checkpoint is
        // already safe, and a picture is not worth a training run.
        let mut draw_grid = |end: &train::EpochEnd| -> Result<()> {
            let written = epoch_samples::write(end.gpu, end.net, end.weights, end.run_dir, end.epoch, count)
                .context("the epoch's sample grid was not written")?;
            if let Some((path, seconds)) = written.filter(|_| !json) {
                eprintln!("  samples: {} ({seconds:.2} s)", path.display());
            }
            Ok(())
        };
        let summary = train::run(&plan, &mut draw_grid)?;
        if json {
            println!("{}", serde_json::to_string(&summary)?);
        } else {
            eprintln!(
                "done: {} steps, run directory {}",
                summary.steps,
                summary.out_dir.display()
            );
        }
        if summary.interrupted {
            std::process::exit(130);
        }
        Ok(())
    }
}
