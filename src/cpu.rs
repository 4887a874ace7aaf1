//! The CPU reference: every layer's forward and backward written plainly, Adam, BCE, and the samplers.
//! It is the ground truth the GPU kernels are tested against; each function shares its name with the WGSL entry
//! point it mirrors (`conv_forward`, `conv_pixel`, `conv_backward_data`, `conv_backward_weight`, `relu_backward`,
//! `add`, `bce_loss_grad`, `adam_update`, `sample_pixel`).
//!
//! Layouts are those of `model.rs`: activations `[B * 784, C]` row-major; a conv's packed parameter block
//! `[T * Cin + 1, Cout]` (live taps, then the bias row).

use crate::model::{Conv, Layer, Network, HEIGHT, PIXELS, WIDTH};
use crate::rng;

/// Adam hyper-parameters with Keras' defaults.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 5e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-7,
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

/// The input pixel that tap (dy, dx) reads for output position `p` of a batch, or None in the zero padding.
fn tap_source(p: usize, dy: i32, dx: i32) -> Option<usize> {
    let image = p / PIXELS;
    let y = ((p % PIXELS) / WIDTH) as i32 + dy;
    let x = (p % WIDTH) as i32 + dx;
    if y < 0 || y >= HEIGHT as i32 || x < 0 || x >= WIDTH as i32 {
        return None;
    }
    Some(image * PIXELS + y as usize * WIDTH + x as usize)
}

/// Forward of one conv at the given output positions: `out[p] = act(bias + Σ_taps Σ_ci in[src(p)] · w)`.
fn conv_forward_positions(
    conv: &Conv,
    block: &[f32],
    input: &[f32],
    out: &mut [f32],
    positions: impl Iterator<Item = usize>,
) {
    let (cin, cout) = (conv.cin, conv.cout);
    let bias = &block[conv.weight_rows() * cout..][..cout];
    for p in positions {
        let row = &mut out[p * cout..][..cout];
        row.copy_from_slice(bias);
        for (t, tap) in conv.taps.iter().enumerate() {
            let Some(src) = tap_source(p, tap.dy, tap.dx) else {
                continue;
            };
            for ci in 0..cin {
                let x = input[src * cin + ci];
                let w = &block[(t * cin + ci) * cout..][..cout];
                for co in 0..cout {
                    row[co] += x * w[co];
                }
            }
        }
        if conv.relu {
            for v in row.iter_mut() {
                *v = v.max(0.0);
            }
        }
    }
}

/// Masked (or 1×1) convolution with bias and optional ReLU, over a whole batch.
pub fn conv_forward(conv: &Conv, block: &[f32], input: &[f32], batch: usize) -> Vec<f32> {
    let mut out = vec![0.0; batch * PIXELS * conv.cout];
    conv_forward_positions(conv, block, input, &mut out, 0..batch * PIXELS);
    out
}

/// The conv at pixel `pixel` of each of `count` images only (the incremental sampler's step), into `out`; the
/// input must hold every earlier pixel the taps read. With `residual`, `out = residual + conv(...)` there (a
/// residual add fused into the conv, as the GPU sampler does).
pub fn conv_pixel(
    conv: &Conv,
    block: &[f32],
    input: &[f32],
    residual: Option<&[f32]>,
    out: &mut [f32],
    count: usize,
    pixel: usize,
) {
    conv_forward_positions(conv, block, input, out, (0..count).map(|i| i * PIXELS + pixel));
    if let Some(r) = residual {
        for i in 0..count {
            let at = (i * PIXELS + pixel) * conv.cout;
            for k in at..at + conv.cout {
                out[k] += r[k];
            }
        }
    }
}

/// `dz = dy · [y > 0]`: the gradient through ReLU, from the layer's output `y`.
pub fn relu_backward(y: &[f32], dy: &[f32]) -> Vec<f32> {
    y.iter().zip(dy).map(|(&y, &d)| if y > 0.0 { d } else { 0.0 }).collect()
}

/// Gradient of the conv's input: `dx[src(p)] += Σ_co w[t, ci, co] · dz[p, co]` (a transposed convolution).
pub fn conv_backward_data(conv: &Conv, block: &[f32], dz: &[f32], batch: usize) -> Vec<f32> {
    let (cin, cout) = (conv.cin, conv.cout);
    let mut dx = vec![0.0; batch * PIXELS * cin];
    for p in 0..batch * PIXELS {
        let dz_row = &dz[p * cout..][..cout];
        for (t, tap) in conv.taps.iter().enumerate() {
            let Some(src) = tap_source(p, tap.dy, tap.dx) else {
                continue;
            };
            for ci in 0..cin {
                let w = &block[(t * cin + ci) * cout..][..cout];
                dx[src * cin + ci] += w.iter().zip(dz_row).map(|(w, d)| w * d).sum::<f32>();
            }
        }
    }
    dx
}

/// Gradient of the packed block: `dw[t, ci, co] = Σ_p in[src(p), ci] · dz[p, co]`, bias row `Σ_p dz[p, co]`.
pub fn conv_backward_weight(conv: &Conv, input: &[f32], dz: &[f32], batch: usize) -> Vec<f32> {
    let (cin, cout) = (conv.cin, conv.cout);
    let mut dw = vec![0.0; conv.packed_len()];
    for p in 0..batch * PIXELS {
        let dz_row = &dz[p * cout..][..cout];
        for (t, tap) in conv.taps.iter().enumerate() {
            let Some(src) = tap_source(p, tap.dy, tap.dx) else {
                continue;
            };
            for ci in 0..cin {
                let x = input[src * cin + ci];
                let row = &mut dw[(t * cin + ci) * cout..][..cout];
                for co in 0..cout {
                    row[co] += x * dz_row[co];
                }
            }
        }
        let bias = &mut dw[conv.weight_rows() * cout..][..cout];
        for co in 0..cout {
            bias[co] += dz_row[co];
        }
    }
    dw
}

/// The residual connection: `out = a + b`. Its backward sends the same gradient to both inputs.
pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(a, b)| a + b).collect()
}

/// Binary cross-entropy from a logit, in the stable softplus form: max(z, 0) − z·x + log(1 + e^−|z|).
pub fn bce_from_logit(z: f32, x: f32) -> f32 {
    z.max(0.0) - z * x + (-z.abs()).exp().ln_1p()
}

pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Loss and its gradient. Returns each image's NLL (nats: BCE summed over its pixels) and the gradient of the
/// mean BCE over all `B · 784` pixels with respect to the logits: `(σ(z) − x) / (B · 784)`.
pub fn bce_loss_grad(logits: &[f32], target: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let scale = 1.0 / logits.len() as f32;
    let nll = logits
        .chunks(PIXELS)
        .zip(target.chunks(PIXELS))
        .map(|(z, x)| z.iter().zip(x).map(|(&z, &x)| bce_from_logit(z, x)).sum())
        .collect();
    let grad = logits
        .iter()
        .zip(target)
        .map(|(&z, &x)| (sigmoid(z) - x) * scale)
        .collect();
    (nll, grad)
}

/// All activations of a forward pass: `acts[0]` is the input, the last is the logits.
pub fn forward(net: &Network, params: &[f32], images: &[f32], batch: usize) -> Vec<Vec<f32>> {
    assert_eq!(images.len(), batch * PIXELS);
    let mut acts = vec![images.to_vec()];
    for layer in &net.layers {
        let out = match *layer {
            Layer::Conv { conv, input } => conv_forward(&net.convs[conv], net.block(params, conv), &acts[input], batch),
            Layer::Add { a, b } => add(&acts[a], &acts[b]),
        };
        acts.push(out);
    }
    acts
}

/// Backward through the layer list. Returns the flat parameter gradient (same layout as the parameters) and the
/// gradient with respect to the input image.
pub fn backward(
    net: &Network,
    params: &[f32],
    acts: &[Vec<f32>],
    d_logits: Vec<f32>,
    batch: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut grads = vec![0.0f32; net.param_len];
    let mut d_acts: Vec<Option<Vec<f32>>> = vec![None; acts.len()];
    d_acts[net.logits_act()] = Some(d_logits);
    // Gradients fan in where an activation feeds two layers (the residual stream): accumulate.
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
                let dz = if c.relu {
                    relu_backward(&acts[out], &d_out)
                } else {
                    d_out
                };
                let dw = conv_backward_weight(c, &acts[input], &dz, batch);
                net.block_mut(&mut grads, conv).copy_from_slice(&dw);
                accumulate(
                    &mut d_acts[input],
                    conv_backward_data(c, net.block(params, conv), &dz, batch),
                );
            }
            Layer::Add { a, b } => {
                accumulate(&mut d_acts[b], d_out.clone());
                accumulate(&mut d_acts[a], d_out);
            }
        }
    }
    (grads, d_acts[0].take().unwrap_or_default())
}

/// Adam state: first and second moments (same layout as the parameters) and the step count.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamState {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    pub step: u64,
}

impl AdamState {
    pub fn new(len: usize) -> Self {
        AdamState {
            m: vec![0.0; len],
            v: vec![0.0; len],
            step: 0,
        }
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

/// One training step on a batch of binary images (values 0/1 as f32). Returns each image's NLL before the update.
pub fn train_step(
    net: &Network,
    params: &mut [f32],
    adam: &mut AdamState,
    cfg: &AdamConfig,
    images: &[f32],
    batch: usize,
) -> Vec<f32> {
    let acts = forward(net, params, images, batch);
    let (nll, d_logits) = bce_loss_grad(&acts[net.logits_act()], images);
    let (grads, _) = backward(net, params, &acts, d_logits, batch);
    adam.step += 1;
    let lr_t = cfg.step_size(adam.step);
    adam_update(params, &grads, &mut adam.m, &mut adam.v, lr_t, cfg);
    nll
}

/// Each image's NLL (nats) under the model.
pub fn image_nll(net: &Network, params: &[f32], images: &[f32], batch: usize) -> Vec<f32> {
    let acts = forward(net, params, images, batch);
    bce_loss_grad(&acts[net.logits_act()], images).0
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

/// The images a sampler starts from: the known pixels of `init` (or zeros), with every pixel from `start_pixel`
/// on cleared.
pub fn starting_images(init: Option<&[u8]>, count: usize, start_pixel: usize) -> Vec<u8> {
    let mut images = init.map(|s| s.to_vec()).unwrap_or_else(|| vec![0; count * PIXELS]);
    for img in images.chunks_mut(PIXELS) {
        img[start_pixel..].fill(0);
    }
    images
}

/// The original algorithm: for every pixel in raster order, run the whole network on the current images and
/// draw that pixel. `init` holds the images' known pixels (zeros when None); pixels from `start_pixel` on are
/// sampled. Image `i` of the batch draws with counter `first_image + i`.
pub fn sample_naive(
    net: &Network,
    params: &[f32],
    count: usize,
    key: u32,
    first_image: u32,
    init: Option<&[u8]>,
    start_pixel: usize,
) -> Samples {
    let mut images = starting_images(init, count, start_pixel);
    let mut probs = vec![f32::NAN; count * PIXELS];
    for q in start_pixel..PIXELS {
        let x: Vec<f32> = images.iter().map(|&v| v as f32).collect();
        let acts = forward(net, params, &x, count);
        let logits = &acts[net.logits_act()];
        for i in 0..count {
            let p = sigmoid(logits[i * PIXELS + q]);
            probs[i * PIXELS + q] = p;
            images[i * PIXELS + q] = sample_pixel(key, first_image + i as u32, q as u32, p);
        }
    }
    Samples { images, probs }
}

/// The incremental algorithm on the CPU: each layer is computed at pixel q only, right after pixel q−1 is drawn,
/// reading cached activations at earlier positions. Costs about one forward pass in total instead of 784.
pub fn sample_incremental(
    net: &Network,
    params: &[f32],
    count: usize,
    key: u32,
    first_image: u32,
    init: Option<&[u8]>,
    start_pixel: usize,
) -> Samples {
    let mut images = starting_images(init, count, start_pixel);
    let mut acts: Vec<Vec<f32>> = net
        .act_channels
        .iter()
        .map(|&c| vec![0.0; count * PIXELS * c])
        .collect();
    acts[0] = images.iter().map(|&v| v as f32).collect();
    // Pixels before start_pixel are known: every layer is still computed there, because later pixels read those
    // cached activations.
    for q in 0..PIXELS {
        let positions = || (0..count).map(move |i| i * PIXELS + q);
        for (l, layer) in net.layers.iter().enumerate() {
            let (before, after) = acts.split_at_mut(l + 1);
            let out = &mut after[0];
            match *layer {
                Layer::Conv { conv, input } => conv_pixel(
                    &net.convs[conv],
                    net.block(params, conv),
                    &before[input],
                    None,
                    out,
                    count,
                    q,
                ),
                Layer::Add { a, b } => {
                    let c = net.act_channels[l + 1];
                    for p in positions() {
                        for k in p * c..(p + 1) * c {
                            out[k] = before[a][k] + before[b][k];
                        }
                    }
                }
            }
        }
        if q < start_pixel {
            continue;
        }
        for i in 0..count {
            let at = i * PIXELS + q;
            let p = sigmoid(acts[net.logits_act()][at]);
            images[at] = sample_pixel(key, first_image + i as u32, q as u32, p);
            acts[0][at] = images[at] as f32;
        }
    }
    // Probabilities: recompute from the cached logits (they were computed before each pixel's draw, and later
    // pixels never overwrite them).
    let mut probs = vec![f32::NAN; count * PIXELS];
    let logits = &acts[net.logits_act()];
    for i in 0..count {
        for q in start_pixel..PIXELS {
            probs[i * PIXELS + q] = sigmoid(logits[i * PIXELS + q]);
        }
    }
    Samples { images, probs }
}
