//! The CPU reference: every layer's forward and backward written plainly, Adam, BCE, and the samplers. It is the
//! ground truth the GPU kernels are tested against. Each kernel function shares its name with the WGSL entry point
//! it mirrors (`conv_forward`, `conv_backward_data`, `conv_backward_weight`, `relu_forward`, `relu_backward`, `add`,
//! `gate_forward`, `gate_backward`, `class_bias_add`, `image_sums`, `class_bias_backward`, `reduce_chunks`,
//! `sum_images`, `adam_update`, `ema_update`, `dropout`, `sample_pixel`, `fma_peak`, `read_bandwidth`; `conv_pixel` is the twin
//! of `conv_forward` over one pixel's rows, the sampler's step), and [`forward`] / [`backward`] have one match arm
//! per layer kind, mirrored by `gpu::layers`.
//!
//! Layouts are those of `model.rs`: activations `[B * H * W, C]` row-major; a conv weight packed
//! `[taps, cin, cout]`.

use crate::model::{Activation, Conv, ImageShape, Layer, Network, Schedule};
use crate::rng;

/// Adam hyper-parameters with Keras' defaults.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decay of the Polyak average of the parameters kept beside them (`--ema`; 0: none). Each step, after Adam:
    /// `ema ← ema − (1 − decay) · (ema − θ)`.
    #[serde(default)]
    pub ema_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 5e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-7,
            ema_decay: 0.0,
        }
    }
}

impl AdamConfig {
    /// Keras folds both bias corrections into the step size: lr_t = lr · sqrt(1 − β2^t) / (1 − β1^t).
    /// Computed in f64 on the host, once per step, for both backends.
    pub fn step_size(&self, step: u64) -> f32 {
        let t = step as f64;
        (self.lr * (1.0 - self.beta2.powf(t)).sqrt() / (1.0 - self.beta1.powf(t))) as f32
    }
}

/// The input pixel that tap (dy, dx) reads for output position `p` of a batch of `shape` images, or None in the
/// zero padding.
pub fn tap_source(shape: ImageShape, p: usize, dy: i32, dx: i32) -> Option<usize> {
    let (pixels, width) = (shape.pixels(), shape.width);
    let image = p / pixels;
    let y = ((p % pixels) / width) as i32 + dy;
    let x = (p % width) as i32 + dx;
    if y < 0 || y >= shape.height as i32 || x < 0 || x >= width as i32 {
        return None;
    }
    Some(image * pixels + y as usize * width + x as usize)
}

/// The bias row of image `i`: `bias` is one row `[C]` shared by every image, or a per-image table `[B, C]`
/// (from [`class_bias_add`]).
fn bias_row(bias: &[f32], cout: usize, image: usize) -> &[f32] {
    if bias.len() == cout {
        bias
    } else {
        &bias[image * cout..][..cout]
    }
}

/// Forward of one conv at the given output positions: `out[p] = act(bias + Σ_taps Σ_ci in[src(p)] · w)`.
fn conv_forward_positions(
    conv: &Conv,
    weight: &[f32],
    bias: &[f32],
    input: &[f32],
    out: &mut [f32],
    positions: impl Iterator<Item = usize>,
) {
    let (cin, cout) = (conv.cin, conv.cout);
    for p in positions {
        let row = &mut out[p * cout..][..cout];
        row.copy_from_slice(bias_row(bias, cout, p / conv.image.pixels()));
        for (t, tap) in conv.taps.iter().enumerate() {
            let Some(src) = tap_source(conv.image, p, tap.dy, tap.dx) else {
                continue;
            };
            for ci in 0..cin {
                let x = input[src * cin + ci];
                let w = &weight[(t * cin + ci) * cout..][..cout];
                for co in 0..cout {
                    row[co] += x * w[co];
                }
            }
        }
        if conv.act == Activation::Relu {
            for v in row.iter_mut() {
                *v = v.max(0.0);
            }
        }
    }
}

/// A convolution with bias and activation over a whole batch (`bias`: `[C]` or a per-image `[B, C]` table).
pub fn conv_forward(conv: &Conv, weight: &[f32], bias: &[f32], input: &[f32], batch: usize) -> Vec<f32> {
    let positions = batch * conv.image.pixels();
    let mut out = vec![0.0; positions * conv.cout];
    conv_forward_positions(conv, weight, bias, input, &mut out, 0..positions);
    out
}

/// The conv at pixel `pixel` of each of `count` images only (the incremental sampler's step), into `out`; the
/// input must hold every pixel the taps read. With `residual`, `out = residual + conv(...)` there (a residual add
/// fused into the conv, as the GPU sampler does).
#[allow(clippy::too_many_arguments)]
pub fn conv_pixel(
    conv: &Conv,
    weight: &[f32],
    bias: &[f32],
    input: &[f32],
    residual: Option<&[f32]>,
    out: &mut [f32],
    count: usize,
    pixel: usize,
) {
    let pixels = conv.image.pixels();
    conv_forward_positions(conv, weight, bias, input, out, (0..count).map(|i| i * pixels + pixel));
    if let Some(r) = residual {
        for i in 0..count {
            let at = (i * pixels + pixel) * conv.cout;
            for k in at..at + conv.cout {
                out[k] += r[k];
            }
        }
    }
}

/// The per-image bias table `out[i] = bias[i] + class_bias[labels[i]]` (`bias`: `[C]`, or None for zero).
pub fn class_bias_add(bias: Option<&[f32]>, class_bias: &[f32], labels: &[u8], channels: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(labels.len() * channels);
    for &y in labels {
        let row = &class_bias[y as usize * channels..][..channels];
        match bias {
            Some(b) => out.extend(row.iter().zip(b).map(|(c, b)| b + c)),
            None => out.extend_from_slice(row),
        }
    }
    out
}

/// Per-image sums of an image-major `[images · pixels, channels]` gradient, in pixel order: `[images, channels]`.
pub fn image_sums(dz: &[f32], channels: usize, pixels: usize) -> Vec<f32> {
    let images = dz.len() / (pixels * channels);
    let mut out = vec![0.0f32; images * channels];
    for i in 0..images {
        let sum = &mut out[i * channels..][..channels];
        for p in 0..pixels {
            for c in 0..channels {
                sum[c] += dz[(i * pixels + p) * channels + c];
            }
        }
    }
    out
}

/// Gradient of a class-bias table `[classes, channels]`: `d[y, c] = Σ over images of class y, Σ over their pixels of
/// dz[p, c]`, summed per image first ([`image_sums`]), then over the images in batch order.
pub fn class_bias_backward(dz: &[f32], labels: &[u8], channels: usize, classes: usize, pixels: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; classes * channels];
    let sums = image_sums(dz, channels, pixels);
    for (i, &y) in labels.iter().enumerate() {
        for c in 0..channels {
            out[y as usize * channels + c] += sums[i * channels + c];
        }
    }
    out
}

/// `out[i] = Σ_{c < n_chunks} input[c · len + i]` for i < len, summed in chunk order: the second pass of the GPU's
/// weight gradients (per-chunk partial sums, then their sum).
pub fn reduce_chunks(input: &[f32], len: usize, n_chunks: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; len];
    for c in 0..n_chunks {
        for (o, x) in out.iter_mut().zip(&input[c * len..][..len]) {
            *o += x;
        }
    }
    out
}

/// Each image's sum of its `pixels` per-pixel values (image-major), in pixel order: its NLL from the per-pixel BCE.
pub fn sum_images(loss: &[f32], pixels: usize) -> Vec<f32> {
    loss.chunks(pixels).map(|img| img.iter().sum()).collect()
}

/// `dz = dy · [y > 0]`: the gradient through ReLU, from the layer's output `y`.
pub fn relu_backward(y: &[f32], dy: &[f32]) -> Vec<f32> {
    y.iter().zip(dy).map(|(&y, &d)| if y > 0.0 { d } else { 0.0 }).collect()
}

/// `out = max(x, 0)`.
pub fn relu_forward(x: &[f32]) -> Vec<f32> {
    x.iter().map(|v| v.max(0.0)).collect()
}

/// Gradient of the conv's input, as a gather over the taps: `dx[p, ci] = Σ_t Σ_co dz[p − (dy, dx)_t, co] · w[t, ci, co]`
/// (a transposed convolution), summed in tap, then channel order.
pub fn conv_backward_data(conv: &Conv, weight: &[f32], dz: &[f32], batch: usize) -> Vec<f32> {
    let (cin, cout) = (conv.cin, conv.cout);
    let mut dx = vec![0.0; batch * conv.image.pixels() * cin];
    for p in 0..batch * conv.image.pixels() {
        let row = &mut dx[p * cin..][..cin];
        for (t, tap) in conv.taps.iter().enumerate() {
            let Some(src) = tap_source(conv.image, p, -tap.dy, -tap.dx) else {
                continue;
            };
            let dz_row = &dz[src * cout..][..cout];
            for (ci, v) in row.iter_mut().enumerate() {
                let w = &weight[(t * cin + ci) * cout..][..cout];
                for co in 0..cout {
                    *v += dz_row[co] * w[co];
                }
            }
        }
    }
    dx
}

/// Gradients of the packed weight and the bias: `dw[t, ci, co] = Σ_p in[src(p), ci] · dz[p, co]`,
/// `db[co] = Σ_p dz[p, co]`. These are sums over every position of the batch (tens of thousands of terms), so the
/// reference accumulates them in f64: its result is then accurate to f32 rounding, and the comparison measures the
/// GPU's error, not the reference's.
pub fn conv_backward_weight(conv: &Conv, input: &[f32], dz: &[f32], batch: usize) -> (Vec<f32>, Vec<f32>) {
    let (cin, cout) = (conv.cin, conv.cout);
    let mut dw = vec![0.0f64; conv.weight_rows() * cout];
    let mut db = vec![0.0f64; cout];
    for p in 0..batch * conv.image.pixels() {
        let dz_row = &dz[p * cout..][..cout];
        for (t, tap) in conv.taps.iter().enumerate() {
            let Some(src) = tap_source(conv.image, p, tap.dy, tap.dx) else {
                continue;
            };
            for ci in 0..cin {
                let x = input[src * cin + ci] as f64;
                let row = &mut dw[(t * cin + ci) * cout..][..cout];
                for co in 0..cout {
                    row[co] += x * dz_row[co] as f64;
                }
            }
        }
        for co in 0..cout {
            db[co] += dz_row[co] as f64;
        }
    }
    let to32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    (to32(dw), to32(db))
}

/// The sum of two activations: a residual connection. Its backward sends the same gradient to both inputs.
pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(a, b)| a + b).collect()
}

/// The gate's two halves at position `p` (of images of `pixels` positions, which index a per-image bias table).
fn tanh_sigmoid(z: &[f32], bias: Option<&[f32]>, p: usize, c: usize, channels: usize, pixels: usize) -> (f32, f32) {
    let (mut a, mut g) = (z[p * 2 * channels + c], z[p * 2 * channels + channels + c]);
    if let Some(b) = bias {
        let row = bias_row(b, 2 * channels, p / pixels);
        a += row[c];
        g += row[channels + c];
    }
    (a.tanh(), sigmoid(g))
}

/// The gated unit: `out[p, c] = tanh(z[p, c] + b[c]) · σ(z[p, C + c] + b[C + c])` for `C = channels`, with `b` a
/// per-image bias table `[B, 2C]` (the class bias; images of `pixels` positions) or none.
pub fn gate_forward(z: &[f32], bias: Option<&[f32]>, channels: usize, pixels: usize) -> Vec<f32> {
    let positions = z.len() / (2 * channels);
    let mut out = vec![0.0; positions * channels];
    for p in 0..positions {
        for c in 0..channels {
            let (t, s) = tanh_sigmoid(z, bias, p, c, channels, pixels);
            out[p * channels + c] = t * s;
        }
    }
    out
}

/// Gradient of [`gate_forward`] with respect to its input: `dz[:C] = d · (1 − t²) · s`, `dz[C:] = d · t · s(1 − s)`.
pub fn gate_backward(z: &[f32], bias: Option<&[f32]>, dout: &[f32], channels: usize, pixels: usize) -> Vec<f32> {
    let positions = z.len() / (2 * channels);
    let mut dz = vec![0.0; positions * 2 * channels];
    for p in 0..positions {
        for c in 0..channels {
            let (t, s) = tanh_sigmoid(z, bias, p, c, channels, pixels);
            let d = dout[p * channels + c];
            dz[p * 2 * channels + c] = d * (1.0 - t * t) * s;
            dz[p * 2 * channels + channels + c] = d * t * s * (1.0 - s);
        }
    }
    dz
}

/// Whether dropout at `rate` keeps element (position `p`, channel `c`) of an activation whose GPU layout has `c4`
/// vec4 columns, in the step with `key`: u(key, p · c4 + c / 4, c mod 4) ≥ rate — the GPU's `dropout` draws the
/// same numbers for the same vec4 and lane.
pub fn dropout_keeps(key: u32, p: usize, c: usize, c4: usize, rate: f32) -> bool {
    rng::sample_uniform(key, (p * c4 + c / 4) as u32, (c % 4) as u32) >= rate
}

/// Inverted dropout over `[positions, channels]` values: kept elements scaled by 1 / (1 − rate), the others 0. Its
/// gradient is the same function of the output's gradient (the same mask and scale).
pub fn dropout(x: &[f32], channels: usize, key: u32, rate: f32) -> Vec<f32> {
    let c4 = crate::model::pad4(channels) / 4;
    let scale = 1.0 / (1.0 - rate);
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            if dropout_keeps(key, i / channels, i % channels, c4, rate) {
                v * scale
            } else {
                0.0
            }
        })
        .collect()
}

/// Binary cross-entropy from a logit, in the stable softplus form: max(z, 0) − z·x + log(1 + e^−|z|).
pub fn bce_from_logit(z: f32, x: f32) -> f32 {
    z.max(0.0) - z * x + (-z.abs()).exp().ln_1p()
}

pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Loss and its gradient. Returns each image's NLL (nats: BCE summed over its `pixels` pixels) and the gradient of
/// the mean BCE over all `B · pixels` pixels with respect to the logits: `(σ(z) − x) / (B · pixels)`.
pub fn bce_loss_grad(logits: &[f32], target: &[f32], pixels: usize) -> (Vec<f32>, Vec<f32>) {
    let scale = 1.0 / logits.len() as f32;
    let loss: Vec<f32> = logits.iter().zip(target).map(|(&z, &x)| bce_from_logit(z, x)).collect();
    let nll = sum_images(&loss, pixels);
    let grad = logits
        .iter()
        .zip(target)
        .map(|(&z, &x)| (sigmoid(z) - x) * scale)
        .collect();
    (nll, grad)
}

/// The labels a conditional network needs (an error naming the problem otherwise); None for an unconditional one.
fn labels_for<'a>(net: &Network, labels: Option<&'a [u8]>, batch: usize) -> Option<&'a [u8]> {
    if !net.config.is_conditional() {
        return None;
    }
    let l = labels.expect("a class-conditional network needs a label per image");
    assert_eq!(l.len(), batch, "one label per image");
    let classes = net.config.classes;
    assert!(
        l.iter().all(|&y| (y as usize) < classes),
        "labels are 0..{}",
        classes - 1
    );
    Some(l)
}

/// The bias a conv uses: its own `[C]` row, or the per-image table with its class bias.
fn conv_bias(net: &Network, params: &[f32], c: &Conv, labels: Option<&[u8]>) -> Vec<f32> {
    let bias = net.params.cpu(params, c.bias);
    match (c.class_bias, labels) {
        (Some(cb), Some(l)) => class_bias_add(Some(bias), net.params.cpu(params, cb), l, c.cout),
        _ => bias.to_vec(),
    }
}

/// The per-image class-bias table a gate adds, if any.
fn gate_bias(
    net: &Network,
    params: &[f32],
    class_bias: Option<usize>,
    labels: Option<&[u8]>,
    c2: usize,
) -> Option<Vec<f32>> {
    match (class_bias, labels) {
        (Some(cb), Some(l)) => Some(class_bias_add(None, net.params.cpu(params, cb), l, c2)),
        _ => None,
    }
}

/// All activations of a forward pass: `acts[0]` is the input, the last is the logits. `labels` (one per image) is
/// needed by class-conditional networks and ignored by others. Dropout layers pass their input through (the
/// network as evaluation and sampling use it); see [`forward_training`].
pub fn forward(net: &Network, params: &[f32], images: &[f32], labels: Option<&[u8]>, batch: usize) -> Vec<Vec<f32>> {
    forward_training(net, params, images, labels, batch, None)
}

/// [`forward`] of a training step: with `dropout_key`, dropout layers drop units with that step's masks.
#[deny(clippy::wildcard_enum_match_arm)]
pub fn forward_training(
    net: &Network,
    params: &[f32],
    images: &[f32],
    labels: Option<&[u8]>,
    batch: usize,
    dropout_key: Option<u32>,
) -> Vec<Vec<f32>> {
    assert_eq!(images.len(), batch * net.pixels());
    let labels = labels_for(net, labels, batch);
    let mut acts = vec![images.to_vec()];
    for layer in &net.layers {
        let out = match *layer {
            Layer::Conv { conv, input } => {
                let c = &net.convs[conv];
                conv_forward(
                    c,
                    net.weight(params, conv),
                    &conv_bias(net, params, c, labels),
                    &acts[input],
                    batch,
                )
            }
            Layer::Add { a, b } => add(&acts[a], &acts[b]),
            Layer::Gate { input, class_bias } => {
                let ch = net.act_channels[input] / 2;
                let bias = gate_bias(net, params, class_bias, labels, 2 * ch);
                gate_forward(&acts[input], bias.as_deref(), ch, net.pixels())
            }
            Layer::Relu { input } => relu_forward(&acts[input]),
            Layer::Dropout { input } => match dropout_key {
                Some(key) => dropout(&acts[input], net.act_channels[input], key, net.config.dropout_rate()),
                None => acts[input].clone(),
            },
        };
        acts.push(out);
    }
    acts
}

/// Backward through the layer list. Returns the flat parameter gradient (the CPU layout of the parameters) and the
/// gradient with respect to the input image. Dropout layers pass their gradient through; see [`backward_training`].
pub fn backward(
    net: &Network,
    params: &[f32],
    acts: &[Vec<f32>],
    labels: Option<&[u8]>,
    d_logits: Vec<f32>,
    batch: usize,
) -> (Vec<f32>, Vec<f32>) {
    backward_training(net, params, acts, labels, d_logits, batch, None)
}

/// [`backward`] of a training step whose forward dropped units with `dropout_key`'s masks.
#[deny(clippy::wildcard_enum_match_arm)]
pub fn backward_training(
    net: &Network,
    params: &[f32],
    acts: &[Vec<f32>],
    labels: Option<&[u8]>,
    d_logits: Vec<f32>,
    batch: usize,
    dropout_key: Option<u32>,
) -> (Vec<f32>, Vec<f32>) {
    let labels = labels_for(net, labels, batch);
    let mut grads = vec![0.0f32; net.param_len()];
    let mut d_acts: Vec<Option<Vec<f32>>> = vec![None; acts.len()];
    d_acts[net.logits_act()] = Some(d_logits);
    // Gradients fan in where an activation feeds several layers: accumulate.
    fn accumulate(slot: &mut Option<Vec<f32>>, g: Vec<f32>) {
        match slot {
            Some(s) => s.iter_mut().zip(&g).for_each(|(s, g)| *s += g),
            None => *slot = Some(g),
        }
    }
    for (i, layer) in net.layers.iter().enumerate().rev() {
        let out = i + 1;
        let d_out = d_acts[out].take().expect("every activation feeds the loss");
        match *layer {
            Layer::Conv { conv, input } => {
                let c = &net.convs[conv];
                let dz = match c.act {
                    Activation::Relu => relu_backward(&acts[out], &d_out),
                    Activation::Identity => d_out,
                };
                let (dw, db) = conv_backward_weight(c, &acts[input], &dz, batch);
                net.params.cpu_mut(&mut grads, c.weight).copy_from_slice(&dw);
                net.params.cpu_mut(&mut grads, c.bias).copy_from_slice(&db);
                if let (Some(cb), Some(l)) = (c.class_bias, labels) {
                    net.params.cpu_mut(&mut grads, cb).copy_from_slice(&class_bias_backward(
                        &dz,
                        l,
                        c.cout,
                        net.config.classes,
                        net.pixels(),
                    ));
                }
                accumulate(
                    &mut d_acts[input],
                    conv_backward_data(c, net.weight(params, conv), &dz, batch),
                );
            }
            Layer::Add { a, b } => {
                accumulate(&mut d_acts[b], d_out.clone());
                accumulate(&mut d_acts[a], d_out);
            }
            Layer::Gate { input, class_bias } => {
                let ch = net.act_channels[input] / 2;
                let bias = gate_bias(net, params, class_bias, labels, 2 * ch);
                let dz = gate_backward(&acts[input], bias.as_deref(), &d_out, ch, net.pixels());
                if let (Some(cb), Some(l)) = (class_bias, labels) {
                    net.params.cpu_mut(&mut grads, cb).copy_from_slice(&class_bias_backward(
                        &dz,
                        l,
                        2 * ch,
                        net.config.classes,
                        net.pixels(),
                    ));
                }
                accumulate(&mut d_acts[input], dz);
            }
            Layer::Relu { input } => accumulate(&mut d_acts[input], relu_backward(&acts[out], &d_out)),
            Layer::Dropout { input } => {
                let d = match dropout_key {
                    Some(key) => dropout(&d_out, net.act_channels[input], key, net.config.dropout_rate()),
                    None => d_out,
                };
                accumulate(&mut d_acts[input], d);
            }
        }
    }
    (grads, d_acts[0].take().unwrap_or_default())
}

/// The optimizer's state: Adam's first and second moments (same layout as the parameters), the step count, and the
/// Polyak average of the parameters when the run keeps one (`AdamConfig::ema_decay` > 0).
#[derive(Clone, Debug, PartialEq)]
pub struct AdamState {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    pub step: u64,
    pub ema: Option<Vec<f32>>,
}

impl AdamState {
    /// A fresh state for `len` parameters, without an average.
    pub fn new(len: usize) -> Self {
        AdamState {
            m: vec![0.0; len],
            v: vec![0.0; len],
            step: 0,
            ema: None,
        }
    }

    /// A fresh state for `params`, with their average started at themselves when `cfg` keeps one.
    pub fn for_run(params: &[f32], cfg: &AdamConfig) -> Self {
        AdamState {
            ema: (cfg.ema_decay > 0.0).then(|| params.to_vec()),
            ..AdamState::new(params.len())
        }
    }
}

/// One step of the Polyak average: `ema ← ema − (1 − decay) · (ema − θ)`, element-wise, in f32 as on the GPU.
pub fn ema_update(ema: &mut [f32], params: &[f32], decay: f64) {
    let rate = (1.0 - decay) as f32;
    for (e, &p) in ema.iter_mut().zip(params) {
        *e -= rate * (*e - p);
    }
}

/// One Adam update with Keras semantics, element-wise:
/// `m ← m + (g − m)(1 − β1)`, `v ← v + (g² − v)(1 − β2)`, `θ ← θ − lr_t · m / (√v + ε)`.
pub fn adam_update(params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], lr_t: f32, cfg: &AdamConfig) {
    let (b1, b2, eps) = (cfg.beta1 as f32, cfg.beta2 as f32, cfg.eps as f32);
    for i in 0..params.len() {
        let g = grads[i];
        m[i] += (g - m[i]) * (1.0 - b1);
        v[i] += (g * g - v[i]) * (1.0 - b2);
        params[i] -= lr_t * m[i] / (v[i].sqrt() + eps);
    }
}

/// One training step on a batch of binary images (values 0/1 as f32), the run's step `adam.step + 1`, whose dropout
/// masks come from [`rng::dropout_key`]`(dropout_seed, step)`. Returns each image's NLL (before the update, under
/// the step's dropout).
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    net: &Network,
    params: &mut [f32],
    adam: &mut AdamState,
    cfg: &AdamConfig,
    images: &[f32],
    labels: Option<&[u8]>,
    batch: usize,
    dropout_seed: u64,
) -> Vec<f32> {
    let key = (net.config.dropout > 0).then(|| rng::dropout_key(dropout_seed, adam.step + 1));
    let acts = forward_training(net, params, images, labels, batch, key);
    let (nll, d_logits) = bce_loss_grad(&acts[net.logits_act()], images, net.pixels());
    let (grads, _) = backward_training(net, params, &acts, labels, d_logits, batch, key);
    adam.step += 1;
    let lr_t = cfg.step_size(adam.step);
    adam_update(params, &grads, &mut adam.m, &mut adam.v, lr_t, cfg);
    if let Some(ema) = adam.ema.as_mut() {
        ema_update(ema, params, cfg.ema_decay);
    }
    nll
}

/// Each image's NLL (nats) under the model (given its label, for a conditional model).
pub fn image_nll(net: &Network, params: &[f32], images: &[f32], labels: Option<&[u8]>, batch: usize) -> Vec<f32> {
    let acts = forward(net, params, images, labels, batch);
    bce_loss_grad(&acts[net.logits_act()], images, net.pixels()).0
}

/// The Bernoulli draw of one pixel, shared by every sampler: `x = 1 if u(seed, image, pixel) < p`.
pub fn sample_pixel(key: u32, image: u32, pixel: u32, p: f32) -> u8 {
    (rng::sample_uniform(key, image, pixel) < p) as u8
}

/// What a sampler returns: the images (0/1) and the probability p(x_q = 1 | x_<q) it drew each sampled pixel
/// from (pixels before `start_pixel` keep probability NaN).
#[derive(Clone, Debug)]
pub struct Samples {
    pub images: Vec<u8>,
    pub probs: Vec<f32>,
}

/// The images (of `pixels` pixels) a sampler starts from: the known pixels of `init` (or zeros), with every pixel
/// from `start_pixel` on cleared.
pub fn starting_images(init: Option<&[u8]>, count: usize, start_pixel: usize, pixels: usize) -> Vec<u8> {
    let mut images = init.map(|s| s.to_vec()).unwrap_or_else(|| vec![0; count * pixels]);
    for img in images.chunks_mut(pixels) {
        img[start_pixel..].fill(0);
    }
    images
}

/// What to sample: `count` images (of classes `labels`, for a conditional model), image `i` drawing with
/// counter `first_image + i` under `key`; pixels from `start_pixel` on are sampled, earlier ones come from
/// `init` (zeros when None).
#[derive(Clone, Copy, Debug)]
pub struct SampleSpec<'a> {
    pub count: usize,
    pub key: u32,
    pub first_image: u32,
    pub labels: Option<&'a [u8]>,
    pub init: Option<&'a [u8]>,
    pub start_pixel: usize,
    /// Each pixel is drawn with p = σ(logit / temperature) (`--temperature`): 1 draws from the model itself, below
    /// 1 sharper, above 1 flatter.
    pub temperature: f32,
}

impl<'a> SampleSpec<'a> {
    /// Images `start .. start + count` of this request (images of `pixels` pixels), with their own labels,
    /// starting images and draws.
    pub fn slice(&self, start: usize, count: usize, pixels: usize) -> SampleSpec<'a> {
        SampleSpec {
            count,
            first_image: self.first_image + start as u32,
            init: self.init.map(|s| &s[start * pixels..(start + count) * pixels]),
            labels: self.labels.map(|l| &l[start..start + count]),
            ..*self
        }
    }
}

/// The original algorithm: for every pixel in raster order, run the whole network on the current images and
/// draw that pixel.
pub fn sample_naive(net: &Network, params: &[f32], spec: SampleSpec) -> Samples {
    let (count, pixels) = (spec.count, net.pixels());
    let mut images = starting_images(spec.init, count, spec.start_pixel, pixels);
    let mut probs = vec![f32::NAN; count * pixels];
    for q in spec.start_pixel..pixels {
        let x: Vec<f32> = images.iter().map(|&v| v as f32).collect();
        let acts = forward(net, params, &x, spec.labels, count);
        let logits = &acts[net.logits_act()];
        for i in 0..count {
            let p = sigmoid(logits[i * pixels + q] / spec.temperature);
            probs[i * pixels + q] = p;
            images[i * pixels + q] = sample_pixel(spec.key, spec.first_image + i as u32, q as u32, p);
        }
    }
    Samples { images, probs }
}

/// Computes layer `l` at `positions` into `acts[l + 1]`, reading the other activations.
#[deny(clippy::wildcard_enum_match_arm)]
fn layer_at(
    net: &Network,
    params: &[f32],
    labels: Option<&[u8]>,
    acts: &mut [Vec<f32>],
    l: usize,
    positions: &[usize],
) {
    let (before, after) = acts.split_at_mut(l + 1);
    let out = &mut after[0];
    let c_out = net.act_channels[l + 1];
    match net.layers[l] {
        Layer::Conv { conv, input } => {
            let c = &net.convs[conv];
            let bias = conv_bias(net, params, c, labels);
            conv_forward_positions(
                c,
                net.weight(params, conv),
                &bias,
                &before[input],
                out,
                positions.iter().copied(),
            );
        }
        Layer::Add { a, b } => {
            for &p in positions {
                for k in p * c_out..(p + 1) * c_out {
                    out[k] = before[a][k] + before[b][k];
                }
            }
        }
        Layer::Gate { input, class_bias } => {
            let bias = gate_bias(net, params, class_bias, labels, 2 * c_out);
            for &p in positions {
                for c in 0..c_out {
                    let (t, s) = tanh_sigmoid(&before[input], bias.as_deref(), p, c, c_out, net.pixels());
                    out[p * c_out + c] = t * s;
                }
            }
        }
        Layer::Relu { input } => {
            for &p in positions {
                for k in p * c_out..(p + 1) * c_out {
                    out[k] = before[input][k].max(0.0);
                }
            }
        }
        // Sampling uses the whole network.
        Layer::Dropout { input } => {
            for &p in positions {
                out[p * c_out..(p + 1) * c_out].copy_from_slice(&before[input][p * c_out..(p + 1) * c_out]);
            }
        }
    }
}

/// The incremental algorithm on the CPU, following [`Network::schedule`]: each pixel-scheduled layer is computed at
/// pixel q only, right before pixel q is drawn, reading cached activations; each row-scheduled layer (the gated
/// net's vertical stack) is computed for a whole row once its last pixel is drawn, and each ahead-scheduled layer
/// (the gated net's `v_to_h`) for a whole row before its first pixel. Costs about one forward pass.
pub fn sample_incremental(net: &Network, params: &[f32], spec: SampleSpec) -> Samples {
    let (count, pixels, width) = (spec.count, net.pixels(), net.width());
    let labels = labels_for(net, spec.labels, count);
    let schedule = net.schedule();
    let mut images = starting_images(spec.init, count, spec.start_pixel, pixels);
    let mut acts: Vec<Vec<f32>> = net
        .act_channels
        .iter()
        .map(|&c| vec![0.0; count * pixels * c])
        .collect();
    acts[0] = images.iter().map(|&v| v as f32).collect();
    // The layers of schedule `which` over the image row that starts at position `row0`.
    let row_pass = |acts: &mut [Vec<f32>], which: Schedule, row0: usize| {
        let rows: Vec<usize> = (0..count)
            .flat_map(|i| (row0..row0 + width).map(move |x| i * pixels + x))
            .collect();
        for l in 0..net.layers.len() {
            if schedule[l + 1] == which {
                layer_at(net, params, labels, acts, l, &rows);
            }
        }
    };
    row_pass(&mut acts, Schedule::Ahead, 0);
    // Pixels before start_pixel are known: every layer is still computed there, because later pixels read those
    // cached activations.
    for q in 0..pixels {
        let positions: Vec<usize> = (0..count).map(|i| i * pixels + q).collect();
        for l in 0..net.layers.len() {
            if schedule[l + 1] == Schedule::Pixel {
                layer_at(net, params, labels, &mut acts, l, &positions);
            }
        }
        if q >= spec.start_pixel {
            for i in 0..count {
                let at = i * pixels + q;
                let p = sigmoid(acts[net.logits_act()][at] / spec.temperature);
                images[at] = sample_pixel(spec.key, spec.first_image + i as u32, q as u32, p);
                acts[0][at] = images[at] as f32;
            }
        }
        if q % width == width - 1 {
            row_pass(&mut acts, Schedule::Row, q + 1 - width);
            if q + 1 < pixels {
                row_pass(&mut acts, Schedule::Ahead, q + 1);
            }
        }
    }
    // Probabilities: recompute from the cached logits (they were computed before each pixel's draw, and later
    // pixels never overwrite them).
    let mut probs = vec![f32::NAN; count * pixels];
    let logits = &acts[net.logits_act()];
    for i in 0..count {
        for q in spec.start_pixel..pixels {
            probs[i * pixels + q] = sigmoid(logits[i * pixels + q] / spec.temperature);
        }
    }
    Samples { images, probs }
}

/// Independent multiply-add chains per invocation in `fma_peak` (peak.wgsl's `CHAINS`, which the GPU family sets
/// from this).
pub const PEAK_CHAINS: u32 = 8;

/// What `fma_peak` (peak.wgsl) computes for invocation `id`: the sum of its [`PEAK_CHAINS`] chains after
/// `4 · iters` steps of `a ← a · m + c`.
pub fn fma_peak(id: u32, iters: usize, m: f32, c: f32) -> [f32; 4] {
    let seed = (id & 1023) as f32 * 1e-6;
    let mut sum = [0.0f32; 4];
    for k in 0..PEAK_CHAINS {
        let mut a = [seed + k as f32, seed + 0.25, seed + 0.5, seed + 0.75];
        for _ in 0..4 * iters {
            for x in &mut a {
                *x = x.mul_add(m, c);
            }
        }
        for (s, x) in sum.iter_mut().zip(a) {
            *s += x;
        }
    }
    sum
}

/// What `read_bandwidth` (peak.wgsl) computes: `out[id] = Σ_j src[id + j · n]` over vec4s (`src` as floats).
pub fn read_bandwidth(src: &[f32], n: usize, iters: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; n * 4];
    for j in 0..iters {
        for (o, x) in out.iter_mut().zip(&src[j * n * 4..][..n * 4]) {
            *o += x;
        }
    }
    out
}
