//! The `pixelcnn` command line: argument parsing (with every value range-checked) and printing only; the work
//! lives in the library, one function per command. Each subcommand's arguments and their `run` are in `cli/`.

mod cli;

use anyhow::Result;
use clap::{Parser, Subcommand};
use cli::bench::BenchCommand;
use cli::eval::EvalArgs;
use cli::info::{BaselinesArgs, DataCmdArgs, DevicesArgs, DownloadArgs, ExportArgs, PlotArgs, SummaryArgs};
use cli::sample::{CompleteArgs, SampleArgs};
use cli::train::TrainArgs;
use std::process::ExitCode;

const QUICK_START: &str = "\
Quick start:
  pixelcnn sample                      samples from the shipped model into samples.png
  pixelcnn sample --class sneaker      sneakers, from the shipped class-conditional model
  pixelcnn sample --class all          one labelled row per class
  pixelcnn eval                        the shipped model's test NLL
  pixelcnn download && pixelcnn train  trains the seed's model (50 epochs, batch 128)";

/// Train, evaluate and sample PixelCNNs on binarized Fashion-MNIST — the seed's network or a blind-spot-free
/// Gated PixelCNN, optionally class-conditional — with every piece of math in WGSL compute shaders (any Vulkan,
/// Metal or DX12 GPU; on a machine without one, Mesa's lavapipe runs them on the CPU).
#[derive(Parser)]
#[command(name = "pixelcnn", version, max_term_width = 110, after_help = QUICK_START)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// The doc comment on each variant is its subcommand's help text.
#[derive(Subcommand)]
enum Command {
    /// Show the dataset: images, label histogram and fraction of 1-pixels per split, after binarization.
    Data(DataCmdArgs),
    /// Download the four official Fashion-MNIST files, verifying their MD5 sums.
    Download(DownloadArgs),
    /// List the GPU adapters wgpu can see, mark the one pixelcnn will use, and say which kernel versions serve it.
    ///
    /// The choice honours WGPU_BACKEND (vulkan, metal, dx12, gl), WGPU_ADAPTER_NAME (a substring of the name)
    /// and WGPU_POWER_PREF (high, low); PIXELCNN_KERNELS (raster, tiled, conv=…, pixel=…) forces kernel versions.
    Devices(DevicesArgs),
    /// Print the layers, output shapes and parameter counts (532,673 for the defaults) and the parameter tensors.
    Summary(SummaryArgs),
    /// Train a model. Writes metrics.jsonl, epoch_NNN.safetensors and last.safetensors into the run directory.
    ///
    /// last.safetensors is also written every --save-every minutes, so a run killed at any moment (even with
    /// kill -9) loses at most that much. Ctrl-C or SIGTERM saves it and stops; `--resume DIR/last.safetensors`
    /// continues exactly (same data order, same optimizer state), so an interrupted and resumed run ends
    /// bit-identical to an uninterrupted one.
    Train(TrainArgs),
    /// Negative log-likelihood of a checkpoint on a data split (nats/image and bits/dim). For a conditional model
    /// also −log p(x|y) with the true labels and the accuracy of the Bayes classifier argmax_y p(x|y).
    Eval(EvalArgs),
    /// Sample new images into a PNG grid.
    Sample(SampleArgs),
    /// Complete the bottom of test images: keep the top rows, sample the rest (a conditional model conditions on
    /// each image's label); grid of original | occluded | completions.
    Complete(CompleteArgs),
    /// Benchmarks on the selected GPU adapter.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Test NLL of baselines fitted on the training split: a constant p, independent per-pixel Bernoullis, and a
    /// count table over each pixel's 6 causal neighbours.
    Baselines(BaselinesArgs),
    /// Draw the training curve (train and val NLL per epoch) from a run's metrics.jsonl into a PNG.
    Plot(PlotArgs),
    /// Write a model-only copy of a checkpoint (no optimizer state), e.g. to ship it.
    Export(ExportArgs),
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Data(a) => a.run(),
        Command::Download(a) => a.run(),
        Command::Devices(a) => a.run(),
        Command::Summary(a) => a.run(),
        Command::Train(a) => a.run(),
        Command::Eval(a) => a.run(),
        Command::Sample(a) => a.run(),
        Command::Complete(a) => a.run(),
        Command::Bench(b) => b.run(),
        Command::Baselines(a) => a.run(),
        Command::Plot(a) => a.run(),
        Command::Export(a) => a.run(),
    }
}

fn main() -> ExitCode {
    // Behave like a Unix tool when the reader goes away (`pixelcnn summary | head`): exit quietly instead of
    // panicking on a broken pipe.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Before any thread or driver call: a private XDG_RUNTIME_DIR where none is set (see util::ensure_runtime_dir).
    pixelcnn::util::ensure_runtime_dir();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
