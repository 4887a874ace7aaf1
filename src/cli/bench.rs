//! `pixelcnn bench train` and `pixelcnn bench sample`.

use super::ModelArgs;
use anyhow::Result;
use clap::{Args, Subcommand};
use pixelcnn::bench::{self, SampleBench, TrainBench};
use pixelcnn::checkpoint;
use pixelcnn::model::Network;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Training speed: median step time on synthetic data → images/s and GFLOP/s.
    Train(BenchTrainArgs),
    /// Sampling speed: the incremental sampler against the naive one (timed on a prefix and extrapolated).
    Sample(BenchSampleArgs),
}

impl BenchCommand {
    pub fn run(self) -> Result<()> {
        match self {
            BenchCommand::Train(a) => a.run(),
            BenchCommand::Sample(a) => a.run(),
        }
    }
}

#[derive(Args)]
pub struct BenchTrainArgs {
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=4096))]
    batch_size: u64,
    #[command(flatten)]
    model: ModelArgs,
    /// Timed steps (after 2 warm-up steps).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    steps: u64,
    /// Also run one step dispatch by dispatch: time, dispatches and GFLOP/s per kernel and layer shape.
    #[arg(long)]
    profile: bool,
    #[arg(long)]
    json: bool,
}

impl BenchTrainArgs {
    pub fn run(self) -> Result<()> {
        let config = self.model.config()?;
        let r = bench::bench_train(config, self.batch_size as usize, self.steps as usize, 2, self.profile)?;
        if self.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            print_train(&r);
        }
        Ok(())
    }
}

fn print_train(r: &TrainBench) {
    if let Some(lines) = &r.profile {
        println!(
            "{:<72} {:>5} {:>10} {:>9}",
            "kernel (one step, dispatch by dispatch)", "count", "ms", "GFLOP/s"
        );
        for l in lines {
            println!(
                "{:<72} {:>5} {:>10.2} {:>9.2}",
                l.kernel,
                l.dispatches,
                l.seconds * 1e3,
                l.gflops_per_second
            );
        }
    }
    println!(
        "{} [kernels {}]: {} batch {}: {:.4} s/step (median of {}), {:.1} images/s, {:.2} GFLOP/s, {} dispatches/step, {:.1} MiB of GPU buffers",
        r.adapter,
        r.kernels.describe(),
        r.model,
        r.batch_size,
        r.step_seconds_median,
        r.steps,
        r.images_per_second,
        r.gflops,
        r.dispatches_per_step,
        r.gpu_bytes as f64 / 1048576.0
    );
}

#[derive(Args)]
pub struct BenchSampleArgs {
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    count: u64,
    /// Checkpoint to sample from (default: random weights of the --arch/--filters/--depth model).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Pixel steps the naive sampler runs before its time is extrapolated to 784.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=784))]
    naive_pixels: u64,
    #[arg(long)]
    json: bool,
}

impl BenchSampleArgs {
    pub fn run(self) -> Result<()> {
        let (net, params) = match &self.checkpoint {
            Some(p) => {
                let ck = checkpoint::load(p)?;
                (Network::new(ck.config), ck.params)
            }
            None => {
                let net = Network::new(self.model.config()?);
                let params = net.init_params(0);
                (net, params)
            }
        };
        let r = bench::bench_sample(&net, &params, self.count as usize, self.naive_pixels as usize)?;
        if self.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            print_sample(&r);
        }
        Ok(())
    }
}

fn print_sample(r: &SampleBench) {
    println!(
        "{} ({} device{}, kernels {}): {} images, {}: incremental {:.3} s (one device {:.3} s, {:.2} dispatches/pixel), naive {:.1} s{}, speedup {:.0}×",
        r.adapter,
        r.devices,
        if r.devices == 1 { "" } else { "s" },
        r.kernels.describe(),
        r.count,
        r.model,
        r.incremental_seconds,
        r.incremental_one_device_seconds,
        r.dispatches_per_pixel,
        r.naive_seconds,
        if r.naive_extrapolated {
            format!(" (extrapolated from {} of 784 pixel steps)", r.naive_pixels_timed)
        } else {
            String::new()
        },
        r.speedup
    );
}
