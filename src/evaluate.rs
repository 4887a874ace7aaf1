//! `pixelcnn eval`: the NLL of a checkpoint on a split, on either device. For a class-conditional model three
//! figures: −log p(x|y) with the true labels, the marginal −log p(x) = −log Σ_y p(y) p(x|y) with p(y) uniform over
//! the model's classes
//! (computed stably in log space; the figure to compare with unconditional models), and the accuracy of the Bayes
//! classifier argmax_y p(x|y).

use crate::cpu;
use crate::data::Split;
use crate::device::Device;
use crate::gpu::layers::GpuModel;
use crate::gpu::trainer::Trainer;
use crate::gpu::Gpu;
use crate::model::{bits_per_dim, Network};
use anyhow::{ensure, Result};

/// Images per evaluation batch on the GPU.
pub const EVAL_BATCH: usize = 128;

/// What `eval --json` prints.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EvalReport {
    pub images: usize,
    pub conditional: bool,
    /// The classes a conditional model's marginal sums over (0 for an unconditional model).
    pub classes: usize,
    /// The marginal NLL for a conditional model.
    pub nll_nats_per_image: f64,
    pub bits_per_dim: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nll_given_label_nats_per_image: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nll_given_label_bits_per_dim: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classifier_accuracy: Option<f64>,
    /// Every image's NLL (the marginal, for a conditional model).
    pub nll_per_image: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nll_given_label_per_image: Option<Vec<f64>>,
}

/// A per-image NLL function on the chosen device: `(images, labels) -> nll`.
type Scorer<'a> = Box<dyn FnMut(&[u8], Option<&[u8]>, &mut dyn FnMut(usize)) -> Result<Vec<f32>> + 'a>;

fn scorer<'a>(device: Device, net: &'a Network, params: &'a [f32], images: usize) -> Result<Scorer<'a>> {
    Ok(match device {
        Device::Cpu => Box::new(move |x, l, progress| Ok(evaluate_cpu(net, params, x, l, progress))),
        Device::Gpu => {
            let gpu = Gpu::new()?;
            let model = GpuModel::new(&gpu, net, params)?;
            let mut t = Trainer::new(&gpu, model, Default::default(), EVAL_BATCH.min(images.max(1)))?;
            Box::new(move |x, l, progress| t.evaluate(&gpu, x, l, progress))
        }
    })
}

/// log Σ_y exp(a_y), stably.
pub fn log_sum_exp(a: &[f64]) -> f64 {
    let m = a.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    m + a.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

/// Evaluates `split` (its first `limit` images); `progress(k)` counts image passes (one per class per image for a
/// conditional model).
pub fn evaluate(
    device: Device,
    net: &Network,
    params: &[f32],
    split: &Split,
    limit: Option<usize>,
    mut progress: impl FnMut(usize),
) -> Result<EvalReport> {
    let n = limit.map_or(split.len(), |l| l.min(split.len()));
    ensure!(n > 0, "no images to evaluate: the split is empty");
    let pixels = net.pixels();
    ensure!(
        split.images.len() == split.len() * pixels,
        "the images have {} pixels each, but the model ({}) takes {} images of {pixels}",
        split.images.len() / split.len().max(1),
        net.config.describe(),
        net.image()
    );
    let images = &split.images[..n * pixels];
    let mut score = scorer(device, net, params, n)?;
    if !net.config.is_conditional() {
        let nll: Vec<f64> = score(images, None, &mut progress)?.into_iter().map(f64::from).collect();
        let mean = nll.iter().sum::<f64>() / n as f64;
        return Ok(EvalReport {
            images: n,
            conditional: false,
            classes: 0,
            nll_nats_per_image: mean,
            bits_per_dim: bits_per_dim(mean, pixels),
            nll_given_label_nats_per_image: None,
            nll_given_label_bits_per_dim: None,
            classifier_accuracy: None,
            nll_per_image: nll,
            nll_given_label_per_image: None,
        });
    }
    // −log p(x|y) for every class y: one pass per class over the images.
    let classes = net.config.classes;
    let mut per_class = vec![vec![0.0f64; n]; classes];
    for (y, row) in per_class.iter_mut().enumerate() {
        let labels = vec![y as u8; n];
        for (slot, v) in row.iter_mut().zip(score(images, Some(&labels), &mut progress)?) {
            *slot = v as f64;
        }
    }
    let true_labels = &split.labels[..n];
    let mut marginal = Vec::with_capacity(n);
    let mut given = Vec::with_capacity(n);
    let mut correct = 0;
    for i in 0..n {
        let log_p: Vec<f64> = (0..classes).map(|y| -per_class[y][i] - (classes as f64).ln()).collect();
        marginal.push(-log_sum_exp(&log_p));
        given.push(per_class[true_labels[i] as usize][i]);
        // argmax_y p(x|y): the smallest NLL; ties go to the lower class.
        let best = (0..classes)
            .min_by(|&a, &b| per_class[a][i].total_cmp(&per_class[b][i]))
            .expect("a conditional model has classes");
        correct += (best == true_labels[i] as usize) as usize;
    }
    let mean = marginal.iter().sum::<f64>() / n as f64;
    let mean_given = given.iter().sum::<f64>() / n as f64;
    Ok(EvalReport {
        images: n,
        conditional: true,
        classes,
        nll_nats_per_image: mean,
        bits_per_dim: bits_per_dim(mean, pixels),
        nll_given_label_nats_per_image: Some(mean_given),
        nll_given_label_bits_per_dim: Some(bits_per_dim(mean_given, pixels)),
        classifier_accuracy: Some(correct as f64 / n as f64),
        nll_per_image: marginal,
        nll_given_label_per_image: Some(given),
    })
}

/// Image passes [`evaluate`] makes over `n` images (for its progress bar).
pub fn progress_units(net: &Network, n: usize) -> u64 {
    (n * net.config.classes.max(1)) as u64
}

/// Per-image NLL on the CPU, in small batches.
pub fn evaluate_cpu(
    net: &Network,
    params: &[f32],
    images: &[u8],
    labels: Option<&[u8]>,
    mut progress: impl FnMut(usize),
) -> Vec<f32> {
    let mut out = Vec::new();
    for (i, chunk) in images.chunks(8 * net.pixels()).enumerate() {
        let n = chunk.len() / net.pixels();
        let x: Vec<f32> = chunk.iter().map(|&v| v as f32).collect();
        let l = labels.map(|l| &l[i * 8..i * 8 + n]);
        out.extend(cpu::image_nll(net, params, &x, l, n));
        progress(n);
    }
    out
}
