//! `pixelcnn score`: a user's images under the model.
//!
//! For each image: its NLL −log p(x) in nats and bits/dim, computed exactly as `eval` computes it (the same
//! per-image sums on the same device, and for a class-conditional model the same marginal
//! −log (1/K Σ_y p(x|y)) over its K classes), so that a test image saved as PNG scores what `eval` reports for
//! it; each pixel's surprise −log p(x_q | x_<q); and for a class-conditional model p(y | x) ∝ p(x | y) · 1/K, what
//! the model thinks the image is.
//!
//! The surprise of a conditional model is that of its marginal, p(x_q | x_<q) = Σ_y p(y | x_<q) p(x_q | x_<q, y),
//! with the class posterior p(y | x_<q) updated pixel by pixel from the earlier pixels; by the chain rule the
//! surprises add up to the marginal NLL. For an unconditional model it is the binary cross-entropy at each pixel,
//! which adds up to the NLL the same way.

use super::draw::{self, Canvas, INK, PAPER, TEXT_SIZE};
use crate::cpu;
use crate::device::Device;
use crate::evaluate::{log_sum_exp, EVAL_BATCH};
use crate::gpu::layers::GpuModel;
use crate::gpu::trainer::Trainer;
use crate::gpu::Gpu;
use crate::model::{bits_per_dim, ImageShape, Network};
use anyhow::{ensure, Result};
use std::path::Path;

/// Each image's per-pixel log-probabilities and NLL under the model, once per class for a conditional model.
#[derive(Clone, Debug)]
pub struct PixelScores {
    pub images: usize,
    /// Pixels per image.
    pub pixels: usize,
    /// `[class][image · pixels + q]`: log p(x_q | x_<q [, y]) in f64, from the model's logits. One entry (no class)
    /// for an unconditional model, one per class for a conditional one.
    pub log_p: Vec<Vec<f64>>,
    /// `[class][image]`: the NLL the device's evaluation computes (what `eval` sums), nats.
    pub nll: Vec<Vec<f64>>,
}

/// Runs the model over `images` (the model's pixels per image, bytes of 0/1) on `device`: once, or once per class
/// for a conditional model; `progress(k)` counts image passes.
pub fn pixel_scores(
    device: Device,
    net: &Network,
    params: &[f32],
    images: &[u8],
    mut progress: impl FnMut(usize),
) -> Result<PixelScores> {
    let pixels = net.pixels();
    let n = images.len() / pixels;
    ensure!(n > 0 && images.len() == n * pixels, "no images to score");
    let classes: Vec<Option<u8>> = if net.config.is_conditional() {
        (0..net.config.classes).map(|y| Some(y as u8)).collect()
    } else {
        vec![None]
    };
    let logits_act = net.logits_act();
    let mut log_p = Vec::new();
    let mut nll = Vec::new();
    let mut gpu_state = match device {
        Device::Gpu => {
            let gpu = Gpu::new()?;
            let model = GpuModel::new(&gpu, net, params)?;
            let t = Trainer::new(&gpu, model, Default::default(), EVAL_BATCH.min(n))?;
            Some((gpu, t))
        }
        Device::Cpu => None,
    };
    for y in classes {
        let mut lp = Vec::with_capacity(n * pixels);
        let mut sums = Vec::with_capacity(n);
        let chunk = match &gpu_state {
            Some((_, t)) => t.max_batch,
            None => 8,
        };
        for part in images.chunks(chunk * pixels) {
            let b = part.len() / pixels;
            let labels = y.map(|y| vec![y; b]);
            let x: Vec<f32> = part.iter().map(|&v| v as f32).collect();
            let (logits, image_nll) = match &mut gpu_state {
                Some((gpu, t)) => {
                    let nll = t.evaluate(gpu, part, labels.as_deref(), |_| {})?;
                    (t.read_act(gpu, logits_act, b)?, nll)
                }
                None => {
                    let acts = cpu::forward(net, params, &x, labels.as_deref(), b);
                    let logits = acts[logits_act].clone();
                    let nll = cpu::bce_loss_grad(&logits, &x, pixels).0;
                    (logits, nll)
                }
            };
            lp.extend(logits.iter().zip(&x).map(|(&z, &v)| -bce_f64(z as f64, v as f64)));
            sums.extend(image_nll.into_iter().map(f64::from));
            progress(b);
        }
        log_p.push(lp);
        nll.push(sums);
    }
    Ok(PixelScores {
        images: n,
        pixels,
        log_p,
        nll,
    })
}

/// Binary cross-entropy from a logit, stably, in f64.
fn bce_f64(z: f64, x: f64) -> f64 {
    z.max(0.0) - z * x + (-z.abs()).exp().ln_1p()
}

/// One image's score.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ImageScore {
    /// −log p(x), nats (the marginal over the classes for a conditional model), as `eval` computes it.
    pub nll_nats: f64,
    pub bits_per_dim: f64,
    /// Conditional models: p(y | x) for each class, in class order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_probabilities: Option<Vec<f64>>,
    /// Conditional models: −log p(x | y) for each class, nats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nll_given_class_nats: Option<Vec<f64>>,
    /// −log p(x_q | x_<q) of every pixel in raster order, nats.
    #[serde(skip)]
    pub surprise: Vec<f64>,
}

impl ImageScore {
    /// The most likely class and its probability (conditional models).
    pub fn best_class(&self) -> Option<(usize, f64)> {
        let p = self.class_probabilities.as_ref()?;
        let best = (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b]).then(b.cmp(&a)))?;
        Some((best, p[best]))
    }

    /// "sneaker 0.93, sandal 0.05, ankle-boot 0.01": the `k` most likely classes, by their `names`.
    pub fn top_classes(&self, k: usize, names: &[String]) -> Option<String> {
        let p = self.class_probabilities.as_ref()?;
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        Some(
            order[..k.min(p.len())]
                .iter()
                .map(|&y| format!("{} {:.2}", names[y], p[y]))
                .collect::<Vec<_>>()
                .join(", "),
        )
    }
}

/// Scores image `i` of `s`.
pub fn image_score(s: &PixelScores, i: usize) -> ImageScore {
    let pixels = s.pixels;
    let lp = |y: usize| &s.log_p[y][i * pixels..][..pixels];
    if s.log_p.len() == 1 {
        let nll = s.nll[0][i];
        return ImageScore {
            nll_nats: nll,
            bits_per_dim: bits_per_dim(nll, pixels),
            class_probabilities: None,
            nll_given_class_nats: None,
            surprise: lp(0).iter().map(|v| -v).collect(),
        };
    }
    let classes = s.log_p.len();
    let ln_k = (classes as f64).ln();
    // The marginal exactly as `eval` computes it.
    let log_joint: Vec<f64> = (0..classes).map(|y| -s.nll[y][i] - ln_k).collect();
    let nll = -log_sum_exp(&log_joint);
    let probs: Vec<f64> = log_joint.iter().map(|a| (a + nll).exp()).collect();
    // The marginal's per-pixel predictive, with the class posterior given the earlier pixels.
    let mut acc = vec![-ln_k; classes];
    let mut surprise = Vec::with_capacity(pixels);
    for q in 0..pixels {
        let before = log_sum_exp(&acc);
        for (y, a) in acc.iter_mut().enumerate() {
            *a += lp(y)[q];
        }
        surprise.push(before - log_sum_exp(&acc));
    }
    ImageScore {
        nll_nats: nll,
        bits_per_dim: bits_per_dim(nll, pixels),
        class_probabilities: Some(probs),
        nll_given_class_nats: Some((0..classes).map(|y| s.nll[y][i]).collect()),
        surprise,
    }
}

/// p(y | x_<q) for image `i` of a conditional model's scores: the class posterior given the pixels before raster
/// index `q` (uniform for q = 0), from the per-pixel log-probabilities.
pub fn class_posterior(s: &PixelScores, i: usize, q: usize) -> Vec<f64> {
    let a: Vec<f64> = (0..s.log_p.len())
        .map(|y| s.log_p[y][i * s.pixels..][..q.min(s.pixels)].iter().sum())
        .collect();
    let z = log_sum_exp(&a);
    a.iter().map(|v| (v - z).exp()).collect()
}

/// One row of the heatmap: the image the model saw, its surprise map and a caption.
pub struct HeatmapRow<'a> {
    pub binary: &'a [u8],
    pub surprise: &'a [f64],
    pub caption: String,
}

/// The colour scale's top: the largest surprise rounded up to a whole nat (at least 1).
pub fn scale_max(rows: &[HeatmapRow]) -> f64 {
    let m = rows
        .iter()
        .flat_map(|r| r.surprise.iter().copied())
        .fold(0.0f64, f64::max);
    m.ceil().max(1.0)
}

/// Draws each image (of `shape`; white on black, as the model sees it) beside its surprise map on a common colour
/// scale, with a caption under each row and the colour bar; writes it in the format of the file's extension.
pub fn write_heatmap(path: &Path, rows: &[HeatmapRow], shape: ImageShape, scale: u32) -> Result<()> {
    ensure!(!rows.is_empty(), "no images to draw");
    let margin = 12u32;
    let (cell, cell_h) = (shape.width as u32 * scale, shape.height as u32 * scale);
    let line = TEXT_SIZE as u32 + 6;
    let max = scale_max(rows);
    let title = "surprise −log p(x_q | earlier pixels)";
    let mut widest = draw::text_width(title, TEXT_SIZE)?;
    for r in rows {
        widest = widest.max(draw::text_width(&r.caption, TEXT_SIZE)?);
    }
    let bar_w = 16u32;
    let bar_text = draw::text_width(&format!("{max:.0} nats"), TEXT_SIZE)?.ceil() as u32 + 12;
    let maps_w = 2 * cell + 8;
    let width = (maps_w + 16 + bar_w + bar_text).max(widest.ceil() as u32) + 2 * margin;
    let row_h = cell_h + line + 8;
    let top = margin + line;
    let height = top + rows.len() as u32 * row_h + margin;
    let mut c = Canvas::new(width, height, PAPER)?;
    c.text(margin as f32, margin as f32 - 2.0, title, TEXT_SIZE, INK);
    for (i, r) in rows.iter().enumerate() {
        let y0 = top + i as u32 * row_h + 4;
        c.fill(margin - 1, y0 - 1, cell + 2, cell_h + 2, INK);
        c.fill(margin + cell + 7, y0 - 1, cell + 2, cell_h + 2, INK);
        for p in 0..shape.pixels() {
            let (x, y) = ((p % shape.width) as u32 * scale, (p / shape.width) as u32 * scale);
            let v = if r.binary[p] == 1 { draw::WHITE } else { draw::BLACK };
            c.fill(margin + x, y0 + y, scale, scale, v);
            c.fill(
                margin + cell + 8 + x,
                y0 + y,
                scale,
                scale,
                draw::magma(r.surprise[p] / max),
            );
        }
        c.text(margin as f32, (y0 + cell_h + 3) as f32, &r.caption, TEXT_SIZE, INK);
    }
    let bar_h = cell_h.max(5 * TEXT_SIZE as u32);
    draw::colour_bar(&mut c, margin + maps_w + 16, top + 4, bar_w, bar_h, max, "nats");
    c.write(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Config;

    fn random_images(n: usize, pixels: usize, seed: u64) -> Vec<u8> {
        let mut rng = crate::rng::SplitMix64::new(seed);
        (0..n * pixels).map(|_| (rng.next_f64() < 0.4) as u8).collect()
    }

    #[test]
    fn surprises_add_up_to_the_nll_and_classes_to_one() {
        for config in [
            Config::pixelcnn(4, 1),
            Config::gated(3, 2).conditional(),
            Config::gated(3, 2).with_classes(3).with_shape(5, 7),
        ] {
            let net = Network::new(config);
            // Random weights, with non-zero (class) biases so that the classes differ.
            let mut rng = crate::rng::SplitMix64::new(3);
            let params: Vec<f32> = net
                .init_params(7)
                .into_iter()
                .map(|w| w + 0.2 * (rng.next_f64() as f32 - 0.5))
                .collect();
            let pixels = config.pixels();
            let images = random_images(3, pixels, 1);
            let s = pixel_scores(Device::Cpu, &net, &params, &images, |_| {}).unwrap();
            for i in 0..3 {
                let sc = image_score(&s, i);
                let total: f64 = sc.surprise.iter().sum();
                assert!(
                    (total - sc.nll_nats).abs() < 1e-4 * sc.nll_nats,
                    "{}: Σ surprise {total} vs NLL {}",
                    config.describe(),
                    sc.nll_nats
                );
                assert!(sc.surprise.iter().all(|&v| v >= 0.0 && v.is_finite()));
                if let Some(p) = &sc.class_probabilities {
                    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
                    let post = class_posterior(&s, i, pixels);
                    assert!(
                        post.iter().zip(p).all(|(a, b)| (a - b).abs() < 1e-3),
                        "{post:?} vs {p:?}"
                    );
                    let uniform = 1.0 / config.classes as f64;
                    assert!(class_posterior(&s, i, 0).iter().all(|&v| (v - uniform).abs() < 1e-12));
                }
            }
        }
    }
}
