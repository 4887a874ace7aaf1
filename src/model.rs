//! The network, written once: a configuration, the list of layers, and the packed parameter layout that both the
//! CPU reference (`cpu.rs`) and the GPU backend (`gpu/`) walk.
//!
//! Activations are stored pixel-major ("NHWC"): activation `a` of a batch of `B` images is a `[B * 784, C]`
//! row-major matrix, so every convolution is a (implicit) GEMM over the positions.
//!
//! Each convolution's parameters are one packed `[T * Cin + 1, Cout]` row-major block: row `t * Cin + ci` holds the
//! weights of live tap `t` from input channel `ci`, and the last row is the bias. Only the live taps of a masked
//! kernel are stored at all, so masked taps cannot contribute, receive gradients, or change.

use serde::{Deserialize, Serialize};

pub const HEIGHT: usize = 28;
pub const WIDTH: usize = 28;
pub const PIXELS: usize = HEIGHT * WIDTH;

/// Every parameter block starts at a multiple of this many floats (256 bytes), the storage-buffer offset
/// alignment that wgpu guarantees on every adapter, so each block can be bound on its own.
pub const PARAM_ALIGN: usize = 64;

/// The knobs of the architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Channels of the residual stream (F). Must be even: the masked conv in a block has F/2 outputs.
    pub filters: usize,
    /// Number of residual blocks (N).
    pub blocks: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            filters: 128,
            blocks: 5,
        }
    }
}

impl Config {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.filters >= 2 && self.filters.is_multiple_of(2),
            "--filters must be even and at least 2 (got {})",
            self.filters
        );
        anyhow::ensure!(
            self.filters <= 4096,
            "--filters {} is unreasonably large (at most 4096)",
            self.filters
        );
        anyhow::ensure!(
            self.blocks <= 256,
            "--blocks {} is unreasonably large (at most 256)",
            self.blocks
        );
        Ok(())
    }
}

/// Which causal mask a kernel carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Mask {
    /// Rows above the centre, and on the centre row the columns left of it.
    A,
    /// Mask A plus the centre tap.
    B,
    /// A plain (1×1) convolution.
    None,
}

impl Mask {
    /// Whether kernel tap (ky, kx) of a `k`×`k` kernel is live.
    pub fn keeps(self, k: usize, ky: usize, kx: usize) -> bool {
        let c = k / 2;
        match self {
            Mask::None => true,
            Mask::A => ky < c || (ky == c && kx < c),
            Mask::B => ky < c || (ky == c && kx <= c),
        }
    }
}

/// One live kernel tap: where it sits in the k×k kernel, and the offset (dy, dx) of the input pixel it reads
/// relative to the output pixel ("same" padding: out-of-image reads are zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Tap {
    pub ky: usize,
    pub kx: usize,
    pub dy: i32,
    pub dx: i32,
}

/// A convolution with bias, optionally followed by ReLU.
#[derive(Clone, Debug, Serialize)]
pub struct Conv {
    /// PyTorch-style parameter prefix, e.g. `blocks.2.masked`.
    pub name: String,
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
    pub mask: Mask,
    pub relu: bool,
    /// Live taps in raster order of the kernel.
    pub taps: Vec<Tap>,
}

impl Conv {
    fn new(name: String, cin: usize, cout: usize, kernel: usize, mask: Mask, relu: bool) -> Conv {
        let c = (kernel / 2) as i32;
        let mut taps = Vec::new();
        for ky in 0..kernel {
            for kx in 0..kernel {
                if mask.keeps(kernel, ky, kx) {
                    taps.push(Tap {
                        ky,
                        kx,
                        dy: ky as i32 - c,
                        dx: kx as i32 - c,
                    });
                }
            }
        }
        Conv {
            name,
            cin,
            cout,
            kernel,
            mask,
            relu,
            taps,
        }
    }

    /// Rows of the packed weight matrix (live taps × input channels), not counting the bias row.
    pub fn weight_rows(&self) -> usize {
        self.taps.len() * self.cin
    }

    /// Floats in the packed block: weights of live taps plus the bias row.
    pub fn packed_len(&self) -> usize {
        (self.weight_rows() + 1) * self.cout
    }

    /// Parameters as Keras/PyTorch count them: the full (masked) kernel plus the bias.
    pub fn full_param_count(&self) -> usize {
        self.cout * self.cin * self.kernel * self.kernel + self.cout
    }

    /// Multiply-accumulates per image through live taps (padding taps included), the FLOP convention of the
    /// reference (`pixelcnn_torch.py flops`: 0.570 GFLOP per image for the default model).
    pub fn live_macs_per_image(&self) -> usize {
        PIXELS * self.weight_rows() * self.cout
    }
}

/// One step of the network. Activation 0 is the input image; layer `i` produces activation `i + 1`.
#[derive(Clone, Debug, Serialize)]
pub enum Layer {
    /// `out = act(conv(acts[input]) + bias)`; `conv` indexes [`Network::convs`].
    Conv { conv: usize, input: usize },
    /// `out = acts[a] + acts[b]`: the residual connection.
    Add { a: usize, b: usize },
}

/// The whole network: its convolutions, the layer list, and the channels of every activation.
#[derive(Clone, Debug)]
pub struct Network {
    pub config: Config,
    pub convs: Vec<Conv>,
    pub layers: Vec<Layer>,
    /// Channels of each activation (index 0 is the 1-channel input image).
    pub act_channels: Vec<usize>,
    /// Offset (in floats) of each conv's packed block in the flat parameter vector.
    pub param_offsets: Vec<usize>,
    /// Length of the flat parameter vector, padding included.
    pub param_len: usize,
}

impl Network {
    pub fn new(config: Config) -> Network {
        let f = config.filters;
        let mut convs = Vec::new();
        let mut layers = Vec::new();
        let mut act_channels = vec![1];
        let conv = |convs: &mut Vec<Conv>, layers: &mut Vec<Layer>, act_channels: &mut Vec<usize>, c: Conv| {
            let input = act_channels.len() - 1;
            assert_eq!(act_channels[input], c.cin);
            act_channels.push(c.cout);
            layers.push(Layer::Conv {
                conv: convs.len(),
                input,
            });
            convs.push(c);
            act_channels.len() - 1
        };
        conv(
            &mut convs,
            &mut layers,
            &mut act_channels,
            Conv::new("conv_in".into(), 1, f, 7, Mask::A, true),
        );
        for i in 0..config.blocks {
            let block_in = act_channels.len() - 1;
            let c1 = Conv::new(format!("blocks.{i}.conv1"), f, f, 1, Mask::None, true);
            conv(&mut convs, &mut layers, &mut act_channels, c1);
            let m = Conv::new(format!("blocks.{i}.masked"), f, f / 2, 3, Mask::B, true);
            conv(&mut convs, &mut layers, &mut act_channels, m);
            let c2 = Conv::new(format!("blocks.{i}.conv2"), f / 2, f, 1, Mask::None, true);
            let branch = conv(&mut convs, &mut layers, &mut act_channels, c2);
            layers.push(Layer::Add { a: block_in, b: branch });
            act_channels.push(f);
        }
        for j in 0..2 {
            conv(
                &mut convs,
                &mut layers,
                &mut act_channels,
                Conv::new(format!("head.{j}"), f, f, 1, Mask::None, true),
            );
        }
        conv(
            &mut convs,
            &mut layers,
            &mut act_channels,
            Conv::new("conv_out".into(), f, 1, 1, Mask::None, false),
        );

        let mut param_offsets = Vec::new();
        let mut len = 0;
        for c in &convs {
            param_offsets.push(len);
            len += c.packed_len().div_ceil(PARAM_ALIGN) * PARAM_ALIGN;
        }
        Network {
            config,
            convs,
            layers,
            act_channels,
            param_offsets,
            param_len: len,
        }
    }

    /// Index of the final activation (the logits, 1 channel).
    pub fn logits_act(&self) -> usize {
        self.act_channels.len() - 1
    }

    /// Parameters as Keras/PyTorch count them (masked taps included): 532,673 for F=128, N=5.
    pub fn full_param_count(&self) -> usize {
        self.convs.iter().map(Conv::full_param_count).sum()
    }

    /// Parameters that can ever be non-zero (live taps and biases).
    pub fn live_param_count(&self) -> usize {
        self.convs.iter().map(Conv::packed_len).sum()
    }

    /// Forward multiply-accumulates per image through live taps.
    pub fn live_macs_per_image(&self) -> usize {
        self.convs.iter().map(Conv::live_macs_per_image).sum()
    }

    /// The packed block of conv `i` inside a flat parameter vector.
    pub fn block<'a>(&self, params: &'a [f32], i: usize) -> &'a [f32] {
        &params[self.param_offsets[i]..self.param_offsets[i] + self.convs[i].packed_len()]
    }

    pub fn block_mut<'a>(&self, params: &'a mut [f32], i: usize) -> &'a mut [f32] {
        &mut params[self.param_offsets[i]..self.param_offsets[i] + self.convs[i].packed_len()]
    }

    /// Keras initialisation, seeded: glorot-uniform kernels over the *full* kernel's fans
    /// (fan_in = cin·k·k, fan_out = cout·k·k), zero biases. Masked taps are not stored, so they are zero.
    pub fn init_params(&self, seed: u64) -> Vec<f32> {
        let mut params = vec![0.0f32; self.param_len];
        let mut rng = crate::rng::SplitMix64::new(seed ^ 0x5EED_1417);
        for (i, c) in self.convs.iter().enumerate() {
            let kk = c.kernel * c.kernel;
            let limit = (6.0 / ((c.cin * kk + c.cout * kk) as f64)).sqrt();
            let block = self.block_mut(&mut params, i);
            // Draw the full OIHW kernel in PyTorch's order so that the values do not depend on the packing, then
            // keep only the live taps.
            for co in 0..c.cout {
                for ci in 0..c.cin {
                    for ky in 0..c.kernel {
                        for kx in 0..c.kernel {
                            let w = ((rng.next_f64() * 2.0 - 1.0) * limit) as f32;
                            if let Some(t) = c.taps.iter().position(|t| t.ky == ky && t.kx == kx) {
                                block[(t * c.cin + ci) * c.cout + co] = w;
                            }
                        }
                    }
                }
            }
        }
        params
    }

    /// A table of the layers as Keras prints it: name, output shape, parameters.
    pub fn summary_rows(&self) -> Vec<SummaryRow> {
        let mut rows = vec![SummaryRow {
            layer: "input".into(),
            kind: "Input".into(),
            output_shape: [HEIGHT, WIDTH, 1],
            params: 0,
        }];
        for layer in &self.layers {
            match layer {
                Layer::Conv { conv, .. } => {
                    let c = &self.convs[*conv];
                    let kind = match c.mask {
                        Mask::A => format!("MaskedConv2D A {0}x{0}", c.kernel),
                        Mask::B => format!("MaskedConv2D B {0}x{0}", c.kernel),
                        Mask::None => format!("Conv2D {0}x{0}", c.kernel),
                    };
                    let kind = if c.relu { format!("{kind} + ReLU") } else { kind };
                    rows.push(SummaryRow {
                        layer: c.name.clone(),
                        kind,
                        output_shape: [HEIGHT, WIDTH, c.cout],
                        params: c.full_param_count(),
                    });
                }
                Layer::Add { .. } => {
                    let name = format!("blocks.{}.add", rows.iter().filter(|r| r.kind == "Add").count());
                    rows.push(SummaryRow {
                        layer: name,
                        kind: "Add".into(),
                        output_shape: [HEIGHT, WIDTH, self.config.filters],
                        params: 0,
                    });
                }
            }
        }
        rows.push(SummaryRow {
            layer: "sigmoid".into(),
            kind: "Sigmoid".into(),
            output_shape: [HEIGHT, WIDTH, 1],
            params: 0,
        });
        rows
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SummaryRow {
    pub layer: String,
    pub kind: String,
    pub output_shape: [usize; 3],
    pub params: usize,
}

/// NLL conversions. The loss is the mean BCE per pixel; an image's NLL is the sum over its 784 pixels.
pub fn bits_per_dim(nats_per_image: f64) -> f64 {
    nats_per_image / (PIXELS as f64 * std::f64::consts::LN_2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_model_has_532673_parameters() {
        let net = Network::new(Config::default());
        assert_eq!(net.full_param_count(), 532_673);
        assert_eq!(net.convs[0].taps.len(), 24);
        assert_eq!(net.convs[2].taps.len(), 5);
        // 0.570 GFLOP per image through live taps, as the reference counts it.
        let gflop = 2.0 * net.live_macs_per_image() as f64 / 1e9;
        assert!((gflop - 0.570).abs() < 0.001, "{gflop}");
    }

    #[test]
    fn masks_match_the_definition() {
        // 3x3 B: row 0 all, row 1 cols 0,1. 7x7 A: rows 0..3 all (21), row 3 cols 0..3 (3).
        let b: Vec<_> = (0..9).filter(|i| Mask::B.keeps(3, i / 3, i % 3)).collect();
        assert_eq!(b, vec![0, 1, 2, 3, 4]);
        let a = (0..49).filter(|i| Mask::A.keeps(7, i / 7, i % 7)).count();
        assert_eq!(a, 24);
        assert!(!Mask::A.keeps(7, 3, 3) && Mask::B.keeps(7, 3, 3));
    }

    #[test]
    fn param_blocks_are_aligned_and_disjoint() {
        let net = Network::new(Config { filters: 6, blocks: 2 });
        for (i, c) in net.convs.iter().enumerate() {
            assert_eq!(net.param_offsets[i] % PARAM_ALIGN, 0);
            if i + 1 < net.convs.len() {
                assert!(net.param_offsets[i] + c.packed_len() <= net.param_offsets[i + 1]);
            }
        }
    }
}
