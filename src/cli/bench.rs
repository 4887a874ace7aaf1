//! `pixelcnn bench peak`, `pixelcnn bench train` and `pixelcnn bench sample`.

use super::{ModelArgs, ShapeArgs};
use crate::bench::{self, PeakBench, SampleBench, TrainBench};
use crate::checkpoint;
use crate::gpu::record::ProfileLine;
use crate::model::Network;
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// The adapter's own limits: its vec4 multiply-add rate and storage-read bandwidth (the roofline every other
    /// benchmark reports against), each the median of several runs. Takes seconds.
    ///
    /// The multiply-add rate runs 8 independent vec4 fma chains per invocation, in registers, over enough
    /// invocations to fill every core, at 8 and at 64 invocations per workgroup; the higher median is the peak.
    Peak(BenchPeakArgs),
    /// Training speed: median step time on synthetic data → images/s, GFLOP/s and % of the adapter's peak.
    Train(BenchTrainArgs),
    /// Sampling speed: the incremental sampler against the naive one (timed on a prefix and extrapolated).
    Sample(BenchSampleArgs),
}

impl BenchCommand {
    pub fn run(self) -> Result<()> {
        match self {
            BenchCommand::Peak(a) => a.run(),
            BenchCommand::Train(a) => a.run(),
            BenchCommand::Sample(a) => a.run(),
        }
    }
}

#[derive(Args)]
pub struct BenchPeakArgs {
    /// Timed runs of each measurement (the median is reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
    runs: u64,
    #[arg(long)]
    json: bool,
}

impl BenchPeakArgs {
    pub fn run(self) -> Result<()> {
        let gpu = crate::gpu::Gpu::new()?;
        let r = bench::bench_peak(&gpu, self.runs as usize, 0.1)?;
        if self.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            print_peak(&r);
        }
        Ok(())
    }
}

fn print_peak(r: &PeakBench) {
    println!("{} [kernels {}]", r.adapter, r.kernels.describe());
    for f in &r.fma {
        println!(
            "  vec4 multiply-add, {:>2} invocations per workgroup: {:8.1} GFLOP/s (median of {}; {} invocations × {} × {} vec4 fmas)",
            f.workgroup,
            f.gflops_median,
            r.runs,
            f.invocations,
            f.iters,
            4 * crate::gpu::kernels::peak::CHAINS
        );
    }
    println!(
        "  storage reads, a vec4 per invocation: {:8.2} GB/s (median of {}; {:.0} MiB per run)",
        r.read_gb_per_s,
        r.runs,
        r.read_bytes as f64 / 1048576.0
    );
    println!(
        "peak: {:.1} GFLOP/s (every benchmark's % of peak is of this)",
        r.peak_gflops
    );
}

/// The adapter's peak in GFLOP/s, when the user already measured it (`bench peak`); else measured first.
fn peak_arg(s: &str) -> Result<f64, String> {
    super::float_in(s, 1e-3, 1e9, false, "--peak")
}

#[derive(Args)]
pub struct BenchTrainArgs {
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=4096))]
    batch_size: u64,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    shape: ShapeArgs,
    /// Timed steps (after 2 warm-up steps).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    steps: u64,
    /// Also run one step dispatch by dispatch: time, dispatches, GFLOP/s and % of peak per kernel and layer shape.
    #[arg(long)]
    profile: bool,
    /// The adapter's multiply-add peak in GFLOP/s (from `bench peak`); default: measured first, in seconds.
    #[arg(long, value_parser = peak_arg)]
    peak: Option<f64>,
    #[arg(long)]
    json: bool,
}

impl BenchTrainArgs {
    pub fn run(self) -> Result<()> {
        let config = self.shape.apply(self.model.config()?)?;
        let r = bench::bench_train(
            config,
            self.batch_size as usize,
            self.steps as usize,
            2,
            self.profile,
            self.peak,
        )?;
        if self.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            print_train(&r);
        }
        Ok(())
    }
}

/// A profile table: kernel and layer shape, dispatches, time, GFLOP/s over live taps and % of peak.
fn print_profile(title: &str, lines: &[ProfileLine]) {
    println!(
        "{:<72} {:>5} {:>10} {:>9} {:>7}",
        title, "count", "ms", "GFLOP/s", "% peak"
    );
    for l in lines {
        println!(
            "{:<72} {:>5} {:>10.2} {:>9.2} {:>7.1}",
            l.kernel,
            l.dispatches,
            l.seconds * 1e3,
            l.gflops_per_second,
            l.percent_of_peak
        );
    }
}

fn print_train(r: &TrainBench) {
    if let Some(lines) = &r.profile {
        print_profile("kernel (one step, dispatch by dispatch)", lines);
    }
    println!(
        "{} [kernels {}]: {} batch {}: {:.4} s/step (median of {}), {:.1} images/s, {:.2} GFLOP/s = {:.1}% of the {:.1} GFLOP/s peak, {} dispatches/step, {:.1} MiB of GPU buffers",
        r.adapter,
        r.kernels.describe(),
        r.model,
        r.batch_size,
        r.step_seconds_median,
        r.steps,
        r.images_per_second,
        r.gflops,
        r.percent_of_peak,
        r.peak_gflops,
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
    #[command(flatten)]
    shape: ShapeArgs,
    /// Pixel steps the naive sampler runs before its time is extrapolated to 784.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=784))]
    naive_pixels: u64,
    /// Also run one image row of the incremental sampler dispatch by dispatch: time, dispatches, GFLOP/s and % of
    /// peak per kernel and layer shape.
    #[arg(long)]
    profile: bool,
    /// The adapter's multiply-add peak in GFLOP/s (from `bench peak`); default: measured first, in seconds.
    #[arg(long, value_parser = peak_arg)]
    peak: Option<f64>,
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
                let net = Network::new(self.shape.apply(self.model.config()?)?);
                let params = net.init_params(0);
                (net, params)
            }
        };
        let r = bench::bench_sample(
            &net,
            &params,
            self.count as usize,
            self.naive_pixels as usize,
            self.peak,
            self.profile,
        )?;
        if self.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            print_sample(&r);
        }
        Ok(())
    }
}

fn print_sample(r: &SampleBench) {
    if let Some(lines) = &r.profile {
        print_profile("kernel (one image row, one device, dispatch by dispatch)", lines);
    }
    println!(
        "{} ({} device{}{}, kernels {}): {} images, {}: incremental {:.3} s = {:.2} GFLOP/s, {:.1}% of the {:.1} GFLOP/s peak (one device {:.3} s, {:.2} dispatches/pixel), naive {:.1} s{}, speedup {:.0}×",
        r.adapter,
        r.devices,
        if r.devices == 1 { "" } else { "s" },
        if r.devices_inline { " without worker pools" } else { "" },
        r.kernels.describe(),
        r.count,
        r.model,
        r.incremental_seconds,
        r.gflops,
        r.percent_of_peak,
        r.peak_gflops,
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
