//! `pixelcnn eval`.

use super::{styled_bar, DataArgs};
use crate::device::Device;
use crate::evaluate::{self, EvalReport};
use crate::model::Network;
use crate::sampling;
use anyhow::{ensure, Result};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct EvalArgs {
    /// Checkpoint (.safetensors); default: the shipped model.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Which split to evaluate.
    #[arg(long, default_value = "test", value_parser = ["train", "val", "test"])]
    split: String,
    /// Evaluate only the first N images of the split.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    #[arg(long, value_enum, default_value_t = Device::Gpu)]
    device: Device,
    /// Use a training checkpoint's raw parameters, not the Polyak average it keeps (`train --ema`).
    #[arg(long)]
    raw_weights: bool,
    /// Print one JSON object, with every image's NLL.
    #[arg(long)]
    json: bool,
}

impl EvalArgs {
    pub fn run(self) -> Result<()> {
        let (path, ck) = sampling::load_model(self.checkpoint.as_deref())?;
        let ds = self.data.load_for_model(&ck.meta, &ck.config, &path)?;
        let split = &self.split;
        let split_data = ds.split(split)?;
        ensure!(!split_data.is_empty(), "no {split} images (the {split} split is empty)");
        ensure!(
            ds.labelled || !ck.config.is_conditional(),
            "{}: the images have no labels, and {} is class-conditional ({}): its NLL needs the labels' classes",
            ds.source.display(),
            path.display(),
            ck.config.describe()
        );
        let net = Network::new(ck.config);
        let n = self
            .limit
            .map_or(split_data.len(), |l| (l as usize).min(split_data.len()));
        let pb = styled_bar(evaluate::progress_units(&net, n), "evaluating", "{pos}/{len}");
        let weights = ck.weights(self.raw_weights);
        if let Some(note) = ck.weights_note().filter(|_| !self.raw_weights && !self.json) {
            eprintln!("note: {note}");
        }
        let r = evaluate::evaluate(self.device, &net, weights, split_data, Some(n), |k| pb.inc(k as u64))?;
        pb.finish_and_clear();
        if self.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            print_report(&path, split, &r);
        }
        Ok(())
    }
}

fn print_report(path: &Path, split: &str, r: &EvalReport) {
    println!(
        "{}: {} {split} images, NLL {:.3} nats/image = {:.4} bits/dim{}",
        path.display(),
        r.images,
        r.nll_nats_per_image,
        r.bits_per_dim,
        if r.conditional {
            format!(" (marginal over the {} classes)", r.classes)
        } else {
            String::new()
        }
    );
    if let (Some(g), Some(g_bpd), Some(acc)) = (
        r.nll_given_label_nats_per_image,
        r.nll_given_label_bits_per_dim,
        r.classifier_accuracy,
    ) {
        println!("  given the true label: {g:.3} nats/image = {g_bpd:.4} bits/dim");
        println!(
            "  generative classifier (argmax_y p(x|y)) accuracy: {:.2}%",
            100.0 * acc
        );
    }
}
