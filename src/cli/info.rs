//! The small commands: `data`, `download`, `devices`, `summary`, `baselines`, `plot` and `export`.

use super::{DataArgs, ModelArgs, ShapeArgs};
use crate::model::Network;
use crate::{baselines, checkpoint, data, download, fsio, gpu, image_out, plot};
use anyhow::{ensure, Result};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct DataCmdArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Also write every image, binarized (0 or 255), as a PNG into a class-folder tree: DIR/train/<class>/ (the
    /// training and validation images, in order) and DIR/test/<class>/, which `--data DIR` reads back as the same
    /// splits. DIR must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    export_folder: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

impl DataCmdArgs {
    pub fn run(self) -> Result<()> {
        let ds = self.data.load()?;
        if self.json {
            println!("{}", data::report_json(&ds));
        } else {
            print!("{}", data::report_text(&ds));
        }
        if let Some(dir) = &self.export_folder {
            let n = data::export_folder(&ds, dir)?;
            eprintln!("wrote {n} images into {}", dir.display());
        }
        Ok(())
    }
}

#[derive(Args)]
pub struct DownloadArgs {
    /// Directory to write into.
    #[arg(long, default_value = data::DEFAULT_DATA_DIR)]
    dir: PathBuf,
    /// Mirror to fetch from (plain HTTP).
    #[arg(long, default_value = download::BASE_URL)]
    base_url: String,
}

impl DownloadArgs {
    pub fn run(self) -> Result<()> {
        for f in download::download(&self.dir, &self.base_url, &download::FILES, true)? {
            eprintln!("{:<28} {:<10} {} bytes", f.name, f.action, f.bytes);
        }
        eprintln!("Fashion-MNIST is in {}", self.dir.display());
        Ok(())
    }
}

#[derive(Args)]
pub struct DevicesArgs {
    #[arg(long)]
    json: bool,
}

impl DevicesArgs {
    pub fn run(self) -> Result<()> {
        let adapters = gpu::list_adapters()?;
        if self.json {
            println!("{}", serde_json::to_string(&adapters)?);
        } else if adapters.is_empty() {
            println!("{}", gpu::NO_ADAPTER_HELP);
        } else {
            for a in &adapters {
                println!(
                    "{} {} | {} | {} | {} {}",
                    if a.selected { "*" } else { " " },
                    a.name,
                    a.backend,
                    a.device_type,
                    a.driver,
                    a.driver_info
                );
                if let Some(k) = &a.kernels {
                    println!("    kernels: {} — {}", k.describe(), k.reason);
                }
            }
            println!("(* = the adapter pixelcnn uses; choose with WGPU_ADAPTER_NAME, WGPU_BACKEND, WGPU_POWER_PREF)");
        }
        if !self.json {
            for hint in gpu::unlisted_drivers(&adapters) {
                println!("{hint}");
            }
        }
        ensure!(!adapters.is_empty(), "no GPU adapter found");
        Ok(())
    }
}

#[derive(Args)]
pub struct SummaryArgs {
    /// Summarise the model of this checkpoint (its shape and class names too) instead of one described by flags.
    #[arg(long, conflicts_with_all = ["arch", "filters", "blocks", "layers", "dilation_cycle", "conditional", "image_size"])]
    checkpoint: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    shape: ShapeArgs,
    #[arg(long)]
    json: bool,
}

impl SummaryArgs {
    pub fn run(self) -> Result<()> {
        let (config, names) = match &self.checkpoint {
            Some(path) => {
                let ck = checkpoint::load(path)?;
                (ck.config, ck.meta.class_names)
            }
            None => {
                let config = self.shape.apply(self.model.config()?)?;
                (config, crate::model::default_class_names(config.classes))
            }
        };
        let net = Network::new(config);
        if self.json {
            print_summary_json(&net, &names);
        } else {
            print_summary(&net, &names);
        }
        Ok(())
    }
}

fn print_summary_json(net: &Network, names: &[String]) {
    let tensors: Vec<_> = net
        .params
        .tensors
        .iter()
        .map(|t| serde_json::json!({"name": t.name, "shape": t.shape, "live": t.cpu_len()}))
        .collect();
    println!(
        "{}",
        serde_json::json!({"model": net.config.describe(), "height": net.config.height, "width": net.config.width, "classes": names, "total_params": net.full_param_count(), "live_params": net.live_param_count(), "layers": net.summary_rows(), "tensors": tensors})
    );
}

fn print_summary(net: &Network, names: &[String]) {
    println!("{}", net.config.describe());
    if !names.is_empty() {
        println!("classes: {}", names.join(", "));
    }
    println!("{:<22} {:<44} {:<16} {:>10}", "layer", "type", "output shape", "params");
    println!("{}", "-".repeat(95));
    for r in &net.summary_rows() {
        let shape = format!("({}, {}, {})", r.output_shape[0], r.output_shape[1], r.output_shape[2]);
        println!("{:<22} {:<44} {:<16} {:>10}", r.layer, r.kind, shape, r.params);
    }
    println!("{}", "-".repeat(95));
    println!(
        "total parameters: {} ({} under the masks can never be non-zero)",
        net.full_param_count(),
        net.full_param_count() - net.live_param_count()
    );
    println!(
        "forward FLOPs per image (live taps): {:.3} G",
        2.0 * net.live_macs_per_image() as f64 / 1e9
    );
}

#[derive(Args)]
pub struct BaselinesArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Which split to evaluate on (a single CSV file's test split is the whole file: use val for held-out images).
    #[arg(long, default_value = "test", value_parser = ["val", "test"])]
    split: String,
    #[arg(long)]
    json: bool,
}

impl BaselinesArgs {
    pub fn run(self) -> Result<()> {
        let ds = self.data.load()?;
        let split = ds.split(&self.split)?;
        ensure!(!split.is_empty(), "no {} images", self.split);
        let b = baselines::baselines_on(&ds, split);
        if self.json {
            println!("{}", serde_json::to_string(&b)?);
            return Ok(());
        }
        println!(
            "baselines fitted on {} training images, evaluated on {} {} images:",
            b.train_images, b.test_images, self.split
        );
        for x in b.all() {
            println!(
                "  {:<28} {:>8.2} nats/image  {:.4} bits/dim",
                x.name, x.nll_nats_per_image, x.bits_per_dim
            );
        }
        Ok(())
    }
}

#[derive(Args)]
pub struct PlotArgs {
    /// metrics.jsonl of a run.
    metrics: PathBuf,
    /// Output image; the extension picks the format: .png, .jpg/.jpeg, .bmp or .gif.
    #[arg(long, default_value = "training_curve.png")]
    out: PathBuf,
    /// The picture's title; default: the run's network and data, read from the last.safetensors beside the
    /// metrics ("gated F=32 L=15 dilated 1–16 on binarized-mnist"), or the run directory's name.
    #[arg(long)]
    title: Option<String>,
}

impl PlotArgs {
    pub fn run(self) -> Result<()> {
        image_out::check_image_output(&self.out, &[&self.metrics])?;
        let m = plot::read_metrics(&self.metrics)?;
        let title = self.title.clone().unwrap_or_else(|| run_title(&self.metrics));
        plot::plot_training_curve(&m, &self.out, &title)?;
        eprintln!("wrote {} (\"{title}\")", self.out.display());
        Ok(())
    }
}

/// A training curve's default title: the network and the data of the run whose `metrics.jsonl` this is, from the
/// checkpoint beside it when it loads, else the run directory's name.
fn run_title(metrics: &Path) -> String {
    let dir = metrics
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = |p: &Path| {
        let p = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        p.file_name().map(|n| n.to_string_lossy().into_owned())
    };
    match checkpoint::load(&dir.join("last.safetensors")) {
        Ok(ck) => {
            let data = ck
                .train
                .as_ref()
                .and_then(|(state, _)| state.data_path())
                .and_then(|p| name(&p));
            match data {
                Some(data) => format!("{} on {data}", ck.config.describe()),
                None => ck.config.describe(),
            }
        }
        Err(_) => format!("Training curve: {}", name(dir).unwrap_or_else(|| "run".into())),
    }
}

#[derive(Args)]
pub struct ExportArgs {
    checkpoint: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// Export a training checkpoint's raw parameters, not the Polyak average it keeps (`train --ema`).
    #[arg(long)]
    raw_weights: bool,
}

impl ExportArgs {
    pub fn run(self) -> Result<()> {
        fsio::check_output(&self.out, &[&self.checkpoint])?;
        let ck = checkpoint::load(&self.checkpoint)?;
        let net = Network::new(ck.config);
        checkpoint::save_with(&self.out, &net, ck.weights(self.raw_weights), None, &ck.meta)?;
        eprintln!(
            "wrote {} (model only, {}{})",
            self.out.display(),
            ck.config.describe(),
            if ck.averaged(self.raw_weights) {
                ", the Polyak-averaged weights"
            } else {
                ""
            }
        );
        Ok(())
    }
}
