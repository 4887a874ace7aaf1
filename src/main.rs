//! The `pixelcnn` command line: argument parsing (with every value range-checked) and printing only; the work
//! lives in the library, one function per command. Each subcommand's arguments and their `run` are in `cli/`.

mod cli;

use anyhow::Result;
use clap::{Parser, Subcommand};
use cli::bench::BenchCommand;
use cli::eval::EvalArgs;
use cli::info::{BaselinesArgs, DataCmdArgs, DevicesArgs, DownloadArgs, ExportArgs, PlotArgs, SummaryArgs};
use cli::inspect::{ReceptiveFieldArgs, ScoreArgs};
use cli::sample::{CompleteArgs, SampleArgs};
use cli::train::TrainArgs;
use std::process::ExitCode;

const QUICK_START: &str = "\
Quick start:
  pixelcnn sample                      samples from the shipped model into samples.png
  pixelcnn sample --class sneaker      sneakers, from the shipped class-conditional model
  pixelcnn sample --class all          one labelled row per class
  pixelcnn eval                        the shipped model's test NLL
  pixelcnn sample --animate draw.gif   also an animation of the sampler drawing the grid, pixel by pixel
  pixelcnn receptive-field --pixel 14,14 --out field.png
                                       which pixels the prediction at row 14, column 14 can see
  pixelcnn score my-shoe.png --heatmap surprise.png
                                       the model's NLL of your own image, its surprise per pixel, its class
  pixelcnn complete --image my-shoe.png
                                       completions of the bottom half of your own image
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
    /// Sample new images into a PNG grid, and with --animate a GIF of the grid as it is drawn.
    ///
    /// The sampler draws each image pixel by pixel in raster order (row by row, left to right), each pixel from
    /// the model's p(x_q = 1 | the pixels before it [, the class]). The same --seed gives the same images.
    Sample(SampleArgs),
    /// Complete the bottom of images: keep the top --rows rows, sample the rest; grid of original | occluded |
    /// completions.
    ///
    /// The images are the first --count test images, or your own with --image (prepared as `score --help`
    /// describes). A class-conditional model conditions on --class when given; otherwise on each test image's
    /// label, and for your own images on the class the model finds most likely given the kept rows, argmax_y
    /// p(y | kept rows) (printed; with --rows 0 nothing is kept and every class is equally likely, so pass
    /// --class).
    Complete(CompleteArgs),
    /// Which input pixels can change the model's prediction at one pixel: its receptive field
    ///
    /// How: the model's own backward pass (the CPU reference) gives the gradient of the logit at (ROW, COLUMN)
    /// with respect to every input pixel, for several random inputs (--inputs); a pixel belongs to the field when
    /// any of them gives it a non-zero gradient.
    ///
    /// What to look for: a causal model may only see earlier pixels (the rows above, and the pixels left of the
    /// target on its own row). The plain network (--arch pixelcnn) also has a blind spot: earlier pixels above and
    /// to the right of the target, inside the reach of its convolutions, that it never sees (one row up, five
    /// columns right is always one of them). The Gated PixelCNN (--arch gated) has none; 12 gated layers see every
    /// earlier pixel of row 14, column 14.
    ///
    /// The map: `X` the target, `#` pixels it depends on, `o` the blind spot, `.` earlier pixels out of reach;
    /// --out draws it as a PNG, --json gives the 28×28 mask. Examine the shipped model, a --checkpoint, or a
    /// model with random weights of any architecture:
    ///   pixelcnn receptive-field --pixel 14,14
    ///   pixelcnn receptive-field --pixel 14,14 --arch gated --layers 12 --out gated.png
    #[command(verbatim_doc_comment)]
    ReceptiveField(ReceptiveFieldArgs),
    /// The model's opinion of your own images: NLL, bits/dim, surprise per pixel, and the class it sees
    ///
    /// What the model sees: each image (PNG, JPEG, GIF or BMP, grey or colour, any size) is
    ///   1. made grey (Rec. 709 luminance) and, with --invert, inverted: Fashion-MNIST is light garments on
    ///      black, so a dark drawing on white needs --invert (nothing is inverted unless asked);
    ///   2. transparent pixels become background; a non-square image is padded to a square with background,
    ///      centred, so its shape is not stretched;
    ///   3. resized to 28×28 with a triangle filter (bilinear, averaging all pixels when shrinking); an image that
    ///      is already 28×28 is not resampled;
    ///   4. binarized like the data set: grey < 85 (0.33 · 256) is 0, else 1.
    ///
    /// What it prints: the NLL −log p(x) in nats (lower is more typical: test images average 90.5 under the
    /// shipped model) and in bits per pixel, computed as `eval` computes it (for a class-conditional model the
    /// marginal over the ten classes, so a test image saved as PNG scores what `eval --json` reports for it); and
    /// for a class-conditional model p(class | image) ∝ p(image | class), what the model thinks the image is.
    /// --heatmap draws each pixel's surprise −log p(x_q | earlier pixels): where the model did not expect what it
    /// saw. The surprises add up to the NLL.
    ///   pixelcnn score my-shoe.png --invert --heatmap surprise.png
    #[command(verbatim_doc_comment)]
    Score(ScoreArgs),
    /// Benchmarks on the selected GPU adapter.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Test NLL of baselines fitted on the training split: a constant p, independent per-pixel Bernoullis, and a
    /// count table over each pixel's 6 causal neighbours.
    Baselines(BaselinesArgs),
    /// Draw the training curve (train and val NLL per epoch, and the Polyak average's val NLL when logged) from a
    /// run's metrics.jsonl into a PNG.
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
        Command::ReceptiveField(a) => a.run(),
        Command::Score(a) => a.run(),
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
    // Before any thread or driver call: a private XDG_RUNTIME_DIR where none is set (see runtime_dir::ensure_runtime_dir).
    pixelcnn::runtime_dir::ensure_runtime_dir();
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
