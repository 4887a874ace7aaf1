//! The network, described once. Everything else (the CPU reference, the GPU backend, checkpoints, the sampler's
//! schedule, parameter counts, `summary`) walks this description:
//!
//! * [`Conv`]: input and output channels, the PyTorch kernel shape, the explicit list of live [`Tap`]s (each with
//!   the input offset (dy, dx) it reads), the activation, and its parameter tensors.
//! * [`Layer`]: the DAG over activations. Activation 0 is the input image; layer `i` produces activation `i + 1`.
//! * [`ParamTable`]: every named parameter tensor (PyTorch name and shape, kind, offset in the flat parameter
//!   vector). Initialisation, the CPU and GPU layouts, checkpoints and parameter counts derive from it.
//!
//! Two architectures are built from these pieces ([`Arch`]): the seed's PixelCNN (masked conv A 7×7 → N residual
//! blocks → 2× 1×1 → 1×1) and the Gated PixelCNN of van den Oord et al. (2016), both optionally class-conditional.
//!
//! Activations are stored pixel-major ("NHWC"): activation `a` of a batch of `B` images is a `[B * 784, C]`
//! row-major matrix, so every convolution is an implicit GEMM over the positions.

use serde::{Deserialize, Serialize};

/// The image shape of a model whose file does not say (Fashion-MNIST's, and MNIST's).
pub const DEFAULT_HEIGHT: usize = 28;
pub const DEFAULT_WIDTH: usize = 28;
/// The smallest and largest image side a model takes. Below 4 pixels there is nothing to model; above 256 the
/// sampler's pixel-by-pixel steps and the activations' buffers grow past what is useful on binarized images (a
/// device may refuse smaller sizes still: the error names its limit).
pub const MIN_SIDE: usize = 4;
pub const MAX_SIDE: usize = 256;
/// Classes of Fashion-MNIST, the default of a class-conditional model (`Config::conditional`).
pub const FASHION_CLASSES: usize = 10;
/// The most classes a conditional model holds: labels are bytes, and a class-bias table of more rows than that
/// would mostly hold classes with too few images to learn from.
pub const MAX_CLASSES: usize = 256;
/// Fashion-MNIST's class names, in label order: the names of a 10-class model whose file names none.
pub const FASHION_CLASS_NAMES: [&str; FASHION_CLASSES] = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
];

/// An image's height and width in pixels: every activation holds `height × width` positions per image, in raster
/// order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageShape {
    pub height: usize,
    pub width: usize,
}

impl ImageShape {
    /// 28×28, the shape of every file that names none.
    pub const DEFAULT: ImageShape = ImageShape {
        height: DEFAULT_HEIGHT,
        width: DEFAULT_WIDTH,
    };

    pub fn new(height: usize, width: usize) -> ImageShape {
        ImageShape { height, width }
    }

    pub fn pixels(&self) -> usize {
        self.height * self.width
    }
}

impl std::fmt::Display for ImageShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}×{}", self.height, self.width)
    }
}

/// Every parameter tensor starts at a multiple of this many floats (256 bytes), the storage-buffer offset
/// alignment that wgpu guarantees on every adapter, so each tensor can be bound on its own.
pub const PARAM_ALIGN: usize = 64;

/// Which network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// The seed's PixelCNN: masked conv A 7×7 → N residual blocks → 2× 1×1 → 1×1 (has a blind spot).
    Pixelcnn,
    /// Gated PixelCNN: vertical and horizontal stacks with tanh·σ gates (no blind spot).
    Gated,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Pixelcnn => "pixelcnn",
            Arch::Gated => "gated",
        }
    }
}

/// The knobs of the architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub arch: Arch,
    /// Channels F (the residual stream of `pixelcnn`, each stack of `gated`).
    pub filters: usize,
    /// Residual blocks N (`pixelcnn`) or gated layers L (`gated`).
    pub depth: usize,
    /// 0 (unconditional), or the number of classes of a class-conditional model (2 to [`MAX_CLASSES`]).
    pub classes: usize,
    /// The image shape: every activation is `height × width` per image. Files without it are 28×28.
    #[serde(default = "default_height")]
    pub height: usize,
    #[serde(default = "default_width")]
    pub width: usize,
    /// `gated` only: layers 1, 2, … dilate their vertical and horizontal convs by 1, 2, 4, …, 2^(K−1), and again
    /// from 1 (WaveNet's cycle), so that the reach grows exponentially with depth instead of one row per layer.
    /// 1 (the default, and every file without the field): no dilation.
    #[serde(default = "one")]
    pub dilation_cycle: usize,
    /// Dropout in training, in percent (0: none): on each gated layer's gate output before `h_out`, or each plain
    /// block's masked conv output before `conv2` — where openai/pixel-cnn's gated ResNet drops units. Evaluation
    /// and sampling use the whole network (inverted dropout: kept units are scaled by 1 / (1 − rate) in training).
    #[serde(default)]
    pub dropout: u8,
}

/// The most dropout a network takes, in percent.
pub const MAX_DROPOUT: u8 = 90;

fn one() -> usize {
    1
}

fn default_height() -> usize {
    DEFAULT_HEIGHT
}

fn default_width() -> usize {
    DEFAULT_WIDTH
}

/// The longest dilation cycle: dilations up to 2^(K−1) = 128, beyond any image the kernels take.
pub const MAX_DILATION_CYCLE: usize = 8;

/// Default channels and depth (the seed's model).
pub const DEFAULT_FILTERS: usize = 128;
pub const DEFAULT_DEPTH: usize = 5;

impl Default for Config {
    fn default() -> Self {
        Config::pixelcnn(DEFAULT_FILTERS, DEFAULT_DEPTH)
    }
}

impl Config {
    pub fn pixelcnn(filters: usize, blocks: usize) -> Config {
        Config {
            arch: Arch::Pixelcnn,
            filters,
            depth: blocks,
            classes: 0,
            height: DEFAULT_HEIGHT,
            width: DEFAULT_WIDTH,
            dilation_cycle: 1,
            dropout: 0,
        }
    }

    pub fn gated(filters: usize, layers: usize) -> Config {
        Config {
            arch: Arch::Gated,
            filters,
            depth: layers,
            classes: 0,
            height: DEFAULT_HEIGHT,
            width: DEFAULT_WIDTH,
            dilation_cycle: 1,
            dropout: 0,
        }
    }

    /// The same gated network with its layers 1, 2, … dilated by 1, 2, …, 2^(K−1), cyclically.
    pub fn dilated(self, cycle: usize) -> Config {
        Config {
            dilation_cycle: cycle,
            ..self
        }
    }

    /// The dilation of gated layer `i`: 1 for layer 0 (the 7-wide first layer), then the cycle 1, 2, 4, ….
    pub fn dilation(&self, i: usize) -> usize {
        if i == 0 || self.dilation_cycle <= 1 {
            1
        } else {
            1 << ((i - 1) % self.dilation_cycle)
        }
    }

    /// The same network with a class-bias table of Fashion-MNIST's 10 classes per conditioned layer.
    pub fn conditional(self) -> Config {
        self.with_classes(FASHION_CLASSES)
    }

    /// The same network with `classes` classes (0: unconditional).
    pub fn with_classes(self, classes: usize) -> Config {
        Config { classes, ..self }
    }

    /// The same network with `percent`% dropout in training.
    pub fn with_dropout(self, percent: u8) -> Config {
        Config {
            dropout: percent,
            ..self
        }
    }

    /// The dropout rate, 0 to 0.9.
    pub fn dropout_rate(&self) -> f32 {
        self.dropout as f32 / 100.0
    }

    /// The same network for images of `height × width` pixels.
    pub fn with_shape(self, height: usize, width: usize) -> Config {
        Config { height, width, ..self }
    }

    /// Pixels per image.
    pub fn pixels(&self) -> usize {
        self.height * self.width
    }

    pub fn image(&self) -> ImageShape {
        ImageShape::new(self.height, self.width)
    }

    pub fn is_conditional(&self) -> bool {
        self.classes > 0
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        match self.arch {
            Arch::Pixelcnn => anyhow::ensure!(
                self.filters >= 2 && self.filters.is_multiple_of(2),
                "--filters must be even and at least 2 for --arch pixelcnn (got {})",
                self.filters
            ),
            Arch::Gated => {
                anyhow::ensure!(self.filters >= 1, "--filters must be at least 1 (got {})", self.filters);
                anyhow::ensure!(
                    self.depth >= 1,
                    "--arch gated needs at least 1 layer (got {})",
                    self.depth
                );
            }
        }
        anyhow::ensure!(
            self.filters <= 1024,
            "--filters {} is unreasonably large (at most 1024)",
            self.filters
        );
        anyhow::ensure!(
            self.depth <= 64,
            "depth {} is unreasonably large (at most 64)",
            self.depth
        );
        anyhow::ensure!(
            (1..=MAX_DILATION_CYCLE).contains(&self.dilation_cycle),
            "the dilation cycle must be 1–{MAX_DILATION_CYCLE} (got {})",
            self.dilation_cycle
        );
        anyhow::ensure!(
            self.dilation_cycle == 1 || self.arch == Arch::Gated,
            "--dilation-cycle is for --arch gated (got {} with --arch {})",
            self.dilation_cycle,
            self.arch.as_str()
        );
        anyhow::ensure!(
            self.classes == 0 || (2..=MAX_CLASSES).contains(&self.classes),
            "a class-conditional model has 2 to {MAX_CLASSES} classes (got {})",
            self.classes
        );
        anyhow::ensure!(
            self.dropout <= MAX_DROPOUT,
            "--dropout must be at most {} (got {})",
            MAX_DROPOUT as f32 / 100.0,
            self.dropout as f32 / 100.0
        );
        for (what, side) in [("height", self.height), ("width", self.width)] {
            anyhow::ensure!(
                (MIN_SIDE..=MAX_SIDE).contains(&side),
                "the image {what} must be {MIN_SIDE}–{MAX_SIDE} pixels (got {side})"
            );
        }
        Ok(())
    }

    /// "pixelcnn F=128 N=5", "gated F=64 L=8 conditional".
    pub fn describe(&self) -> String {
        let depth = match self.arch {
            Arch::Pixelcnn => "N",
            Arch::Gated => "L",
        };
        let dilated = if self.dilation_cycle > 1 {
            format!(" dilated 1–{}", 1 << (self.dilation_cycle - 1))
        } else {
            String::new()
        };
        let shape = if (self.height, self.width) != (DEFAULT_HEIGHT, DEFAULT_WIDTH) {
            format!(" {}x{}", self.height, self.width)
        } else {
            String::new()
        };
        let conditional = match self.classes {
            0 => String::new(),
            FASHION_CLASSES => " conditional".to_string(),
            n => format!(" conditional ({n} classes)"),
        };
        let dropout = if self.dropout > 0 {
            format!(" dropout {}", self.dropout as f32 / 100.0)
        } else {
            String::new()
        };
        format!(
            "{} F={} {depth}={}{dilated}{dropout}{conditional}{shape}",
            self.arch.as_str(),
            self.filters,
            self.depth,
        )
    }
}

/// Which causal mask a square kernel carries (a constructor of tap sets; kernels never assume one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Mask {
    /// Rows above the centre, and on the centre row the columns left of it.
    A,
    /// Mask A plus the centre tap.
    B,
    /// Every tap (a plain convolution).
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

/// One live kernel tap: where it sits in the PyTorch kernel, and the offset (dy, dx) of the input pixel it reads
/// relative to the output pixel (out-of-image reads are zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Tap {
    pub ky: usize,
    pub kx: usize,
    pub dy: i32,
    pub dx: i32,
}

/// What follows a convolution's sum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Activation {
    Identity,
    Relu,
}

/// A convolution with bias: `out = act(bias [+ class_bias[y]] + Σ_taps Σ_ci in[p + (dy, dx), ci] · w[tap, ci])`.
#[derive(Clone, Debug, Serialize)]
pub struct Conv {
    /// PyTorch-style parameter prefix, e.g. `blocks.2.masked` or `layers.0.v`.
    pub name: String,
    pub cin: usize,
    pub cout: usize,
    /// The PyTorch weight's kernel shape (kh, kw): the weight tensor is `[cout, cin, kh, kw]`.
    pub kernel: [usize; 2],
    /// PyTorch's `dilation` (both axes): neighbouring kernel taps read inputs this many pixels apart.
    pub dilation: usize,
    /// The images it runs on (taps that read outside them read zeros).
    pub image: ImageShape,
    /// Live taps, in raster order of the kernel. Taps outside this list are masked: never stored or multiplied.
    pub taps: Vec<Tap>,
    pub act: Activation,
    /// Parameter tensors ([`ParamTable`] indices): the packed weight `[taps, cin, cout]`, the bias `[cout]`, and
    /// for a conditional `pixelcnn` conv the class-bias table `[classes, cout]` added before the activation.
    pub weight: usize,
    pub bias: usize,
    pub class_bias: Option<usize>,
}

impl Conv {
    /// Rows of the packed weight (live taps × input channels).
    pub fn weight_rows(&self) -> usize {
        self.taps.len() * self.cin
    }

    /// Multiply-accumulates per image through live taps (padding taps included), the FLOP convention of the
    /// reference (`pixelcnn_torch.py flops`: 0.570 GFLOP per image for the default model).
    pub fn live_macs_per_image(&self) -> usize {
        self.image.pixels() * self.weight_rows() * self.cout
    }

    /// A conv over an arbitrary tap set (for tests of the kernels): the kernel is the taps' bounding box. Its
    /// parameter-tensor indices are 0 (weight), 1 (bias), none (class bias): it belongs to no network.
    pub fn with_taps(name: &str, cin: usize, cout: usize, offsets: &[(i32, i32)], act: Activation) -> Conv {
        let y0 = offsets.iter().map(|o| o.0).min().unwrap_or(0);
        let x0 = offsets.iter().map(|o| o.1).min().unwrap_or(0);
        let kh = (offsets.iter().map(|o| o.0).max().unwrap_or(0) - y0 + 1) as usize;
        let kw = (offsets.iter().map(|o| o.1).max().unwrap_or(0) - x0 + 1) as usize;
        let taps = offsets
            .iter()
            .map(|&(dy, dx)| Tap {
                ky: (dy - y0) as usize,
                kx: (dx - x0) as usize,
                dy,
                dx,
            })
            .collect();
        Conv {
            name: name.into(),
            cin,
            cout,
            kernel: [kh, kw],
            dilation: 1,
            image: ImageShape::DEFAULT,
            taps,
            act,
            weight: 0,
            bias: 1,
            class_bias: None,
        }
    }

    /// The same conv over images of `image`'s shape.
    pub fn on(self, image: ImageShape) -> Conv {
        Conv { image, ..self }
    }

    /// "MaskedConv2D A 7x7", "Conv2D 4x7", "Conv2D 1x4 (3 live taps)", "Conv2D 1x1 shifted by (-1, 0)", + ReLU.
    pub fn kind(&self) -> String {
        let [kh, kw] = self.kernel;
        let n = self.taps.len();
        let mut s = if n == kh * kw {
            format!("Conv2D {kh}x{kw}")
        } else if kh == kw && n == kh * kw / 2 {
            format!("MaskedConv2D A {kh}x{kw}")
        } else if kh == kw && n == kh * kw / 2 + 1 {
            format!("MaskedConv2D B {kh}x{kw}")
        } else {
            format!("Conv2D {kh}x{kw} ({n} live taps)")
        };
        let t = self.taps[0];
        if kh * kw == 1 && (t.dy, t.dx) != (0, 0) {
            s.push_str(&format!(" shifted by ({}, {})", t.dy, t.dx));
        }
        if self.dilation > 1 {
            s.push_str(&format!(" dilated {}", self.dilation));
        }
        if self.act == Activation::Relu {
            s.push_str(" + ReLU");
        }
        s
    }
}

/// A kernel's shape and dilation, as the model builder takes them.
#[derive(Clone, Copy, Debug)]
struct Kernel {
    shape: [usize; 2],
    dilation: usize,
}

impl Kernel {
    fn plain(shape: [usize; 2]) -> Kernel {
        Kernel { shape, dilation: 1 }
    }

    fn dilated(shape: [usize; 2], dilation: usize) -> Kernel {
        Kernel { shape, dilation }
    }
}

/// One step of the network. Activation 0 is the input image; layer `i` produces activation `i + 1`.
#[derive(Clone, Debug, Serialize)]
pub enum Layer {
    /// `out = act(conv(acts[input]) + bias [+ class_bias[y]])`; `conv` indexes [`Network::convs`].
    Conv { conv: usize, input: usize },
    /// `out = acts[a] + acts[b]`: a residual connection, or the sum of two convs.
    Add { a: usize, b: usize },
    /// `out = tanh(z[:C]) ⊙ σ(z[C:])` with `z = acts[input] [+ class_bias[y]]` (C = half the input channels).
    Gate { input: usize, class_bias: Option<usize> },
    /// `out = max(acts[input], 0)`.
    Relu { input: usize },
    /// Inverted dropout at rate `config.dropout_rate()` in training (`out = acts[input] · keep / (1 − rate)`, keep
    /// drawn per element from the step's key); `out = acts[input]` in evaluation and sampling.
    Dropout { input: usize },
}

impl Layer {
    /// The activations this layer reads.
    pub fn inputs(&self) -> Vec<usize> {
        match *self {
            Layer::Conv { input, .. }
            | Layer::Gate { input, .. }
            | Layer::Relu { input }
            | Layer::Dropout { input } => {
                vec![input]
            }
            Layer::Add { a, b } => vec![a, b],
        }
    }
}

/// What a parameter tensor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ParamKind {
    /// Conv `conv`'s live taps, packed `[taps, cin, cout]`; PyTorch `[cout, cin, kh, kw]` with masked taps zero.
    Weight { conv: usize },
    /// Conv `conv`'s bias `[cout]`.
    Bias { conv: usize },
    /// A class-bias table `[classes, channels]`: row y is added for images of class y.
    ClassBias { channels: usize },
}

/// One named parameter tensor.
#[derive(Clone, Debug, Serialize)]
pub struct ParamTensor {
    /// The PyTorch name, e.g. `blocks.0.conv1.weight`.
    pub name: String,
    /// The PyTorch shape (OIHW for conv weights).
    pub shape: Vec<usize>,
    pub kind: ParamKind,
    /// The packed dimensions `(logical, padded)`: the CPU layout is the logical row-major tensor, the GPU layout the
    /// padded one (channel dimensions rounded up to multiples of 4, zero padding).
    pub dims: Vec<(usize, usize)>,
    /// Offset in floats of the tensor in the flat CPU and GPU parameter vectors.
    pub cpu_offset: usize,
    pub gpu_offset: usize,
}

impl ParamTensor {
    /// Floats in the CPU (packed, unpadded) layout.
    pub fn cpu_len(&self) -> usize {
        self.dims.iter().map(|d| d.0).product()
    }

    /// Floats in the GPU (padded) layout.
    pub fn gpu_len(&self) -> usize {
        self.dims.iter().map(|d| d.1).product()
    }

    /// Parameters as PyTorch counts them (masked taps included).
    pub fn full_len(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Every parameter tensor of a network, in checkpoint order, with both flat layouts.
#[derive(Clone, Debug, Serialize)]
pub struct ParamTable {
    pub tensors: Vec<ParamTensor>,
    /// Length of the flat CPU parameter vector (alignment padding included).
    pub cpu_len: usize,
    /// Length of the flat GPU parameter vector.
    pub gpu_len: usize,
}

impl ParamTable {
    fn push(&mut self, name: String, shape: Vec<usize>, kind: ParamKind, dims: Vec<(usize, usize)>) -> usize {
        let t = ParamTensor {
            name,
            shape,
            kind,
            dims,
            cpu_offset: self.cpu_len,
            gpu_offset: self.gpu_len,
        };
        self.cpu_len += t.cpu_len().next_multiple_of(PARAM_ALIGN);
        self.gpu_len += t.gpu_len().next_multiple_of(PARAM_ALIGN);
        self.tensors.push(t);
        self.tensors.len() - 1
    }

    /// Tensor `i` inside a flat CPU parameter vector.
    pub fn cpu<'a>(&self, params: &'a [f32], i: usize) -> &'a [f32] {
        let t = &self.tensors[i];
        &params[t.cpu_offset..][..t.cpu_len()]
    }

    pub fn cpu_mut<'a>(&self, params: &'a mut [f32], i: usize) -> &'a mut [f32] {
        let t = &self.tensors[i];
        &mut params[t.cpu_offset..][..t.cpu_len()]
    }

    pub fn find(&self, name: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.name == name)
    }

    /// CPU layout → GPU layout (padding zero).
    pub fn to_gpu(&self, cpu: &[f32]) -> Vec<f32> {
        let mut gpu = vec![0.0; self.gpu_len];
        for t in &self.tensors {
            copy_padded(&t.dims, &cpu[t.cpu_offset..], &mut gpu[t.gpu_offset..], true);
        }
        gpu
    }

    /// GPU layout → CPU layout (padding dropped).
    pub fn to_cpu(&self, gpu: &[f32]) -> Vec<f32> {
        let mut cpu = vec![0.0; self.cpu_len];
        for t in &self.tensors {
            copy_padded(&t.dims, &gpu[t.gpu_offset..], &mut cpu[t.cpu_offset..], false);
        }
        cpu
    }
}

/// A row-major tensor of logical dims `(logical, padded)` in its padded layout (zero padding).
pub fn to_padded(dims: &[(usize, usize)], src: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; dims.iter().map(|d| d.1).product()];
    copy_padded(dims, src, &mut out, true);
    out
}

/// The inverse of [`to_padded`].
pub fn from_padded(dims: &[(usize, usize)], src: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; dims.iter().map(|d| d.0).product()];
    copy_padded(dims, src, &mut out, false);
    out
}

/// Copies a row-major tensor of logical dims into the padded layout (`to_padded`) or back.
fn copy_padded(dims: &[(usize, usize)], src: &[f32], dst: &mut [f32], to_padded: bool) {
    let n: usize = dims.iter().map(|d| d.0).product();
    for i in 0..n {
        // Decompose the logical index, recompose the padded one.
        let (mut rem, mut padded, mut stride) = (i, 0, 1);
        for &(logical, pad) in dims.iter().rev() {
            padded += (rem % logical) * stride;
            rem /= logical;
            stride *= pad;
        }
        if to_padded {
            dst[padded] = src[i];
        } else {
            dst[i] = src[padded];
        }
    }
}

/// Rounds a channel count up to the GPU's vector width.
pub fn pad4(c: usize) -> usize {
    c.div_ceil(4) * 4
}

/// The packed dims of `channels` split into `groups` equal groups, each padded to a multiple of 4 on the GPU.
pub fn channel_dims(channels: usize, groups: usize) -> Vec<(usize, usize)> {
    let per = channels / groups;
    if groups == 1 {
        vec![(channels, pad4(channels))]
    } else {
        vec![(groups, groups), (per, pad4(per))]
    }
}

/// When the incremental sampler computes an activation (see [`Network::schedule`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Schedule {
    /// At each pixel, right before that pixel is drawn: depends only on earlier pixels.
    Pixel,
    /// For a whole image row at once, after the row's last pixel is drawn (the gated net's vertical stack, which
    /// sees its own row).
    Row,
    /// For a whole image row at once, before the row's first pixel is drawn (right after the row above is
    /// complete): reads only earlier rows (the gated net's `v_to_h`, the vertical stack shifted down a row). One
    /// dispatch over the row instead of one per pixel.
    Ahead,
}

/// The whole network: its convolutions, the layer list, activations and parameter tensors.
#[derive(Clone, Debug)]
pub struct Network {
    pub config: Config,
    pub convs: Vec<Conv>,
    pub layers: Vec<Layer>,
    /// Channels of each activation (index 0 is the 1-channel input image).
    pub act_channels: Vec<usize>,
    /// A human name for each activation (`input`, `conv_in`, `blocks.0.add`, ...), for summaries and errors.
    pub act_names: Vec<String>,
    /// Channel groups of each activation: 2 for the input of a gate (its tanh and σ halves), else 1. On the GPU
    /// each group is padded to a multiple of 4 channels on its own, so both halves of a gate are whole vec4s.
    pub act_groups: Vec<usize>,
    pub params: ParamTable,
}

/// Builds a [`Network`] layer by layer.
struct Builder {
    convs: Vec<Conv>,
    layers: Vec<Layer>,
    act_channels: Vec<usize>,
    act_names: Vec<String>,
    act_groups: Vec<usize>,
    params: ParamTable,
    classes: usize,
    image: ImageShape,
}

impl Builder {
    fn layer(&mut self, layer: Layer, channels: usize, groups: usize, name: String) -> usize {
        self.layers.push(layer);
        self.act_channels.push(channels);
        self.act_groups.push(groups);
        self.act_names.push(name);
        self.act_channels.len() - 1
    }

    fn class_bias(&mut self, name: &str, channels: usize, groups: usize) -> Option<usize> {
        (self.classes > 0).then(|| {
            let mut dims = vec![(self.classes, self.classes)];
            dims.extend(channel_dims(channels, groups));
            self.params.push(
                format!("{name}.class_bias"),
                vec![self.classes, channels],
                ParamKind::ClassBias { channels },
                dims,
            )
        })
    }

    /// A conv of kernel `kernel`, whose tap (ky, kx) reads input offset `(origin.0 + d·ky, origin.1 + d·kx)` for
    /// dilation d = `kernel.dilation`, with the taps that `live` keeps.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: &str,
        input: usize,
        cout: usize,
        groups: usize,
        kernel: Kernel,
        origin: (i32, i32),
        live: impl Fn(usize, usize) -> bool,
        act: Activation,
        class_bias: bool,
    ) -> usize {
        let cin = self.act_channels[input];
        let gin = self.act_groups[input];
        let Kernel {
            shape: kernel,
            dilation,
        } = kernel;
        let d = dilation as i32;
        let mut taps = Vec::new();
        for ky in 0..kernel[0] {
            for kx in 0..kernel[1] {
                if live(ky, kx) {
                    taps.push(Tap {
                        ky,
                        kx,
                        dy: origin.0 + d * ky as i32,
                        dx: origin.1 + d * kx as i32,
                    });
                }
            }
        }
        let conv = self.convs.len();
        let mut dims = vec![(taps.len(), taps.len())];
        dims.extend(channel_dims(cin, gin));
        dims.extend(channel_dims(cout, groups));
        let weight = self.params.push(
            format!("{name}.weight"),
            vec![cout, cin, kernel[0], kernel[1]],
            ParamKind::Weight { conv },
            dims,
        );
        let bias = self.params.push(
            format!("{name}.bias"),
            vec![cout],
            ParamKind::Bias { conv },
            channel_dims(cout, groups),
        );
        let class_bias = if class_bias {
            self.class_bias(name, cout, groups)
        } else {
            None
        };
        self.convs.push(Conv {
            name: name.to_string(),
            cin,
            cout,
            kernel,
            dilation,
            image: self.image,
            taps,
            act,
            weight,
            bias,
            class_bias,
        });
        self.layer(Layer::Conv { conv, input }, cout, groups, name.to_string())
    }

    /// A dropout layer on `input` when the network has dropout, else `input` itself (no layer).
    fn dropout(&mut self, config: Config, input: usize, name: &str) -> usize {
        if config.dropout == 0 {
            return input;
        }
        let (c, g) = (self.act_channels[input], self.act_groups[input]);
        self.layer(Layer::Dropout { input }, c, g, name.to_string())
    }

    /// A square k×k conv with a causal mask (or none), centred on the output pixel.
    fn masked(&mut self, name: &str, input: usize, cout: usize, k: usize, mask: Mask, act: Activation) -> usize {
        let c = (k / 2) as i32;
        let cond = act == Activation::Relu;
        self.conv(
            name,
            input,
            cout,
            1,
            Kernel::plain([k, k]),
            (-c, -c),
            |ky, kx| mask.keeps(k, ky, kx),
            act,
            cond,
        )
    }
}

impl Network {
    pub fn new(config: Config) -> Network {
        let mut b = Builder {
            convs: Vec::new(),
            layers: Vec::new(),
            act_channels: vec![1],
            act_names: vec!["input".into()],
            act_groups: vec![1],
            params: ParamTable {
                tensors: Vec::new(),
                cpu_len: 0,
                gpu_len: 0,
            },
            classes: config.classes,
            image: config.image(),
        };
        match config.arch {
            Arch::Pixelcnn => build_pixelcnn(&mut b, config),
            Arch::Gated => build_gated(&mut b, config),
        }
        Network {
            config,
            convs: b.convs,
            layers: b.layers,
            act_channels: b.act_channels,
            act_names: b.act_names,
            act_groups: b.act_groups,
            params: b.params,
        }
    }

    /// Channels of activation `a` in the GPU layout (each group padded to a multiple of 4).
    pub fn gpu_channels(&self, a: usize) -> usize {
        let g = self.act_groups[a];
        g * pad4(self.act_channels[a] / g)
    }

    /// Index of the final activation (the logits, 1 channel).
    pub fn logits_act(&self) -> usize {
        self.act_channels.len() - 1
    }

    /// Length of the flat CPU parameter vector.
    pub fn param_len(&self) -> usize {
        self.params.cpu_len
    }

    /// Parameters as Keras/PyTorch count them (masked taps included): 532,673 for the default model.
    pub fn full_param_count(&self) -> usize {
        self.params.tensors.iter().map(ParamTensor::full_len).sum()
    }

    /// Parameters that can ever be non-zero (live taps, biases, class biases).
    pub fn live_param_count(&self) -> usize {
        self.params.tensors.iter().map(ParamTensor::cpu_len).sum()
    }

    /// Forward multiply-accumulates per image through live taps.
    pub fn live_macs_per_image(&self) -> usize {
        self.convs.iter().map(Conv::live_macs_per_image).sum()
    }

    /// Pixels per image.
    pub fn pixels(&self) -> usize {
        self.config.pixels()
    }

    pub fn image(&self) -> ImageShape {
        self.config.image()
    }

    pub fn width(&self) -> usize {
        self.config.width
    }

    /// Conv `c`'s packed weight `[taps, cin, cout]` inside a flat CPU parameter vector.
    pub fn weight<'a>(&self, params: &'a [f32], c: usize) -> &'a [f32] {
        self.params.cpu(params, self.convs[c].weight)
    }

    pub fn bias<'a>(&self, params: &'a [f32], c: usize) -> &'a [f32] {
        self.params.cpu(params, self.convs[c].bias)
    }

    /// Whether parameter tensor `i` enters the network's output (the last gated layer's vertical class bias is a
    /// tensor of the file format that nothing reads).
    pub fn tensor_is_used(&self, i: usize) -> bool {
        self.layers.iter().any(|l| match *l {
            Layer::Conv { conv, .. } => {
                let c = &self.convs[conv];
                c.weight == i || c.bias == i || c.class_bias == Some(i)
            }
            Layer::Gate { class_bias, .. } => class_bias == Some(i),
            _ => false,
        })
    }

    /// The layers that read each activation.
    pub fn consumers(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.act_channels.len()];
        for (l, layer) in self.layers.iter().enumerate() {
            for a in layer.inputs() {
                out[a].push(l);
            }
        }
        out
    }

    /// When the incremental sampler computes each activation, in the order it prefers:
    /// - [`Schedule::Ahead`] if everything it reads lies in earlier rows (or in this row of an earlier `Ahead`
    ///   activation): the whole row is computed before its first pixel;
    /// - [`Schedule::Pixel`] if, at pixel q, everything it reads is already known: pixel activations at raster
    ///   offsets ≤ 0 (earlier positions, or this position computed by an earlier layer; the input image strictly
    ///   before q), row activations of earlier rows, `Ahead` activations of this row or earlier ones;
    /// - otherwise [`Schedule::Row`]: computed once a row is complete, which needs every read to stay within rows ≤
    ///   the current one.
    ///
    /// Panics if an activation is none of these (a network that cannot be sampled).
    pub fn schedule(&self) -> Vec<Schedule> {
        let mut s = vec![Schedule::Pixel; self.act_channels.len()];
        for (l, layer) in self.layers.iter().enumerate() {
            // Input reads as (activation, dy, dx).
            let reads: Vec<(usize, i32, i32)> = match *layer {
                Layer::Conv { conv, input } => self.convs[conv].taps.iter().map(|t| (input, t.dy, t.dx)).collect(),
                _ => layer.inputs().into_iter().map(|a| (a, 0, 0)).collect(),
            };
            let ahead_ok = reads
                .iter()
                .all(|&(a, dy, _)| dy < 0 || (dy == 0 && a != 0 && s[a] == Schedule::Ahead));
            let pixel_ok = reads.iter().all(|&(a, dy, dx)| {
                let before = dy < 0 || (dy == 0 && dx < 0);
                match (a, s[a]) {
                    (0, _) => before,
                    (_, Schedule::Pixel) => before || (dy, dx) == (0, 0),
                    (_, Schedule::Row) => dy < 0,
                    (_, Schedule::Ahead) => dy <= 0,
                }
            });
            let row_ok = reads.iter().all(|&(_, dy, _)| dy <= 0);
            s[l + 1] = if ahead_ok {
                Schedule::Ahead
            } else if pixel_ok {
                Schedule::Pixel
            } else {
                assert!(
                    row_ok,
                    "layer {l} ({}) can be sampled neither per pixel nor per row",
                    self.act_names[l + 1]
                );
                Schedule::Row
            };
        }
        assert_eq!(
            s[self.logits_act()],
            Schedule::Pixel,
            "the logits must be computable per pixel"
        );
        s
    }

    /// Keras initialisation, seeded: glorot-uniform kernels over the *full* kernel's fans
    /// (fan_in = cin·kh·kw, fan_out = cout·kh·kw), zero biases and class biases. Masked taps are not stored.
    pub fn init_params(&self, seed: u64) -> Vec<f32> {
        let mut params = vec![0.0f32; self.params.cpu_len];
        let mut rng = crate::rng::SplitMix64::new(seed ^ 0x5EED_1417);
        for c in &self.convs {
            let kk = c.kernel[0] * c.kernel[1];
            let limit = (6.0 / ((c.cin * kk + c.cout * kk) as f64)).sqrt();
            let w = self.params.cpu_mut(&mut params, c.weight);
            // Draw the full OIHW kernel in PyTorch's order so that the values do not depend on the packing, then
            // keep only the live taps.
            for co in 0..c.cout {
                for ci in 0..c.cin {
                    for ky in 0..c.kernel[0] {
                        for kx in 0..c.kernel[1] {
                            let v = ((rng.next_f64() * 2.0 - 1.0) * limit) as f32;
                            if let Some(t) = c.taps.iter().position(|t| t.ky == ky && t.kx == kx) {
                                w[(t * c.cin + ci) * c.cout + co] = v;
                            }
                        }
                    }
                }
            }
        }
        params
    }

    /// A table of the layers as Keras prints it: name, kind, output shape, parameters.
    pub fn summary_rows(&self) -> Vec<SummaryRow> {
        let mut rows = vec![SummaryRow {
            layer: "input".into(),
            kind: "Input".into(),
            output_shape: [self.config.height, self.config.width, 1],
            params: 0,
        }];
        for (l, layer) in self.layers.iter().enumerate() {
            let (kind, params) = match *layer {
                Layer::Conv { conv, .. } => {
                    let c = &self.convs[conv];
                    let cb = c.class_bias.map_or(0, |i| self.params.tensors[i].full_len());
                    let kind = if cb > 0 {
                        format!("{} + class bias", c.kind())
                    } else {
                        c.kind()
                    };
                    (kind, self.params.tensors[c.weight].full_len() + c.cout + cb)
                }
                Layer::Add { .. } => ("Add".into(), 0),
                Layer::Gate { class_bias, .. } => match class_bias {
                    Some(i) => ("Gate tanh·σ + class bias".into(), self.params.tensors[i].full_len()),
                    None => ("Gate tanh·σ".into(), 0),
                },
                Layer::Relu { .. } => ("ReLU".into(), 0),
                Layer::Dropout { .. } => (format!("Dropout {} (training only)", self.config.dropout_rate()), 0),
            };
            rows.push(SummaryRow {
                layer: self.act_names[l + 1].clone(),
                kind,
                output_shape: [self.config.height, self.config.width, self.act_channels[l + 1]],
                params,
            });
        }
        rows.push(SummaryRow {
            layer: "sigmoid".into(),
            kind: "Sigmoid".into(),
            output_shape: [self.config.height, self.config.width, 1],
            params: 0,
        });
        rows
    }
}

/// masked conv A 7×7 → N × (1×1, masked B 3×3 to F/2, 1×1, + skip) → 2× 1×1 → 1×1 (logits).
fn build_pixelcnn(b: &mut Builder, config: Config) {
    let f = config.filters;
    let relu = Activation::Relu;
    let mut x = b.masked("conv_in", 0, f, 7, Mask::A, relu);
    for i in 0..config.depth {
        let p = format!("blocks.{i}");
        let c1 = b.masked(&format!("{p}.conv1"), x, f, 1, Mask::None, relu);
        let m = b.masked(&format!("{p}.masked"), c1, f / 2, 3, Mask::B, relu);
        let m = b.dropout(config, m, &format!("{p}.dropout"));
        let c2 = b.masked(&format!("{p}.conv2"), m, f, 1, Mask::None, relu);
        x = b.layer(Layer::Add { a: x, b: c2 }, f, 1, format!("{p}.add"));
    }
    for j in 0..2 {
        x = b.masked(&format!("head.{j}"), x, f, 1, Mask::None, relu);
    }
    b.masked("conv_out", x, 1, 1, Mask::None, Activation::Identity);
}

/// The Gated PixelCNN, exactly as issue "Class-conditional generation…" specifies (so that files interoperate):
/// per layer i (k = 7 for i = 0, else 3; c = k/2; dilation d = `config.dilation(i)`, 1 unless the layers are
/// dilated), with v₀ = h₀ = x:
///   V = v(v_i): (c+1)×k taps dy ∈ d·[−c, 0], dx ∈ d·[−c, c]      v_{i+1} = gate(V [+ v.class_bias[y]])
///   H = h(h_i): 1×(c+1) taps dx ∈ d·[−c, m] (m = −1 for i = 0) + v_to_h(V[r−1, q])
///   u = gate(H [+ h.class_bias[y]])                                h_{i+1} = h_out(u) (+ h_i if i > 0)
/// head: conv_out(ReLU(head.0(ReLU(h_L)))).
///
/// Dilated (`--dilation-cycle K`), layer i ≥ 1 reads rows r − d and r and columns q − d, q, q + d of the vertical
/// stack, and columns q − d and q of the horizontal one, with d = 2^((i − 1) mod K). Every sum of distinct powers
/// 1 … 2^(K−1) is reached, so after one cycle the vertical stack sees every row up to 3 + 2^K − 1 above and every
/// column within that distance, and the horizontal stack every pixel up to as far to the left: no blind spot, and
/// with K = 5 nothing out of reach on a 28×28 image (`receptive-field` shows it).
fn build_gated(b: &mut Builder, config: Config) {
    let f = config.filters;
    let id = Activation::Identity;
    let (mut v, mut h) = (0, 0);
    for i in 0..config.depth {
        let p = format!("layers.{i}");
        let k = if i == 0 { 7 } else { 3 };
        let c = k / 2;
        let d = config.dilation(i);
        let (ci, di) = (c as i32, d as i32);
        let vz = b.conv(
            &format!("{p}.v"),
            v,
            2 * f,
            2,
            Kernel::dilated([c + 1, k], d),
            (-ci * di, -ci * di),
            |_, _| true,
            id,
            false,
        );
        let v_cb = b.class_bias(&format!("{p}.v"), 2 * f, 2);
        let last_dx = if i == 0 { c } else { c + 1 }; // kx < last_dx: dx ≤ −1 for layer 0, dx ≤ 0 after
        let hz = b.conv(
            &format!("{p}.h"),
            h,
            2 * f,
            2,
            Kernel::dilated([1, c + 1], d),
            (0, -ci * di),
            |_, kx| kx < last_dx,
            id,
            false,
        );
        let vh = b.conv(
            &format!("{p}.v_to_h"),
            vz,
            2 * f,
            2,
            Kernel::plain([1, 1]),
            (-1, 0),
            |_, _| true,
            id,
            false,
        );
        let hsum = b.layer(Layer::Add { a: hz, b: vh }, 2 * f, 2, format!("{p}.h_sum"));
        let h_cb = b.class_bias(&format!("{p}.h"), 2 * f, 2);
        // The last layer's vertical output feeds nothing, so its gate is not computed (its class bias is still a
        // tensor of the file format, and stays as it is).
        if i + 1 < config.depth {
            v = b.layer(
                Layer::Gate {
                    input: vz,
                    class_bias: v_cb,
                },
                f,
                1,
                format!("{p}.v_gate"),
            );
        }
        let u = b.layer(
            Layer::Gate {
                input: hsum,
                class_bias: h_cb,
            },
            f,
            1,
            format!("{p}.h_gate"),
        );
        let u = b.dropout(config, u, &format!("{p}.dropout"));
        let out = b.conv(
            &format!("{p}.h_out"),
            u,
            f,
            1,
            Kernel::plain([1, 1]),
            (0, 0),
            |_, _| true,
            id,
            false,
        );
        h = if i > 0 {
            b.layer(Layer::Add { a: out, b: h }, f, 1, format!("{p}.skip"))
        } else {
            out
        };
    }
    let r = b.layer(Layer::Relu { input: h }, f, 1, "head.relu".into());
    let one = Kernel::plain([1, 1]);
    let h0 = b.conv("head.0", r, f, 1, one, (0, 0), |_, _| true, Activation::Relu, false);
    b.conv("conv_out", h0, 1, 1, one, (0, 0), |_, _| true, id, false);
}

#[derive(Clone, Debug, Serialize)]
pub struct SummaryRow {
    pub layer: String,
    pub kind: String,
    pub output_shape: [usize; 3],
    pub params: usize,
}

/// NLL conversions. The loss is the mean BCE per pixel; an image's NLL is the sum over its `pixels` pixels.
pub fn bits_per_dim(nats_per_image: f64, pixels: usize) -> f64 {
    nats_per_image / (pixels as f64 * std::f64::consts::LN_2)
}

/// The class names of a model with `classes` classes that names none: Fashion-MNIST's for 10 classes (every file
/// made before models carried their names was a Fashion-MNIST model), else the label numbers.
pub fn default_class_names(classes: usize) -> Vec<String> {
    if classes == FASHION_CLASSES {
        FASHION_CLASS_NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        (0..classes).map(|i| i.to_string()).collect()
    }
}

/// The class a name or number denotes among `names` (a model's class names, in label order): `sneaker`, `7`,
/// case-insensitive, `-`/`_`/space alike; Fashion-MNIST's names also take a few aliases (`tshirt`, `boot`).
pub fn parse_class(s: &str, names: &[String]) -> anyhow::Result<usize> {
    let norm = |x: &str| x.trim().to_lowercase().replace(['_', ' '], "-");
    let listing = || {
        let shown: Vec<&str> = names.iter().take(20).map(String::as_str).collect();
        let more = if names.len() > 20 { ", …" } else { "" };
        format!("{}{more}", shown.join(", "))
    };
    anyhow::ensure!(
        !names.is_empty(),
        "the model is not class-conditional: it takes no --class"
    );
    let want = norm(s);
    if let Some(i) = names.iter().position(|n| norm(n) == want) {
        return Ok(i);
    }
    if let Ok(n) = s.trim().parse::<usize>() {
        anyhow::ensure!(
            n < names.len(),
            "class {n} is out of range: classes are 0–{} ({})",
            names.len() - 1,
            listing()
        );
        return Ok(n);
    }
    let fashion = names.iter().map(String::as_str).eq(FASHION_CLASS_NAMES);
    let aliases = [
        ("tshirt", 0),
        ("t-shirt/top", 0),
        ("top", 0),
        ("trousers", 1),
        ("boot", 9),
        ("ankle-boots", 9),
    ];
    aliases
        .iter()
        .filter(|_| fashion)
        .find(|(a, _)| *a == want)
        .map(|&(_, i)| i)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "unknown class {s:?}: expected 0–{} or one of {}",
                names.len() - 1,
                listing()
            )
        })
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
        assert_eq!(net.config.pixels(), 784);
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
    fn param_tensors_are_aligned_and_disjoint() {
        for config in [Config::pixelcnn(6, 2), Config::gated(5, 3).conditional()] {
            let net = Network::new(config);
            let t = &net.params.tensors;
            for (i, a) in t.iter().enumerate() {
                assert_eq!(a.cpu_offset % PARAM_ALIGN, 0);
                assert_eq!(a.gpu_offset % PARAM_ALIGN, 0);
                if let Some(b) = t.get(i + 1) {
                    assert!(a.cpu_offset + a.cpu_len() <= b.cpu_offset);
                    assert!(a.gpu_offset + a.gpu_len() <= b.gpu_offset);
                }
            }
            let cpu: Vec<f32> = (0..net.param_len()).map(|i| i as f32).collect();
            let round = net.params.to_cpu(&net.params.to_gpu(&cpu));
            for (i, tensor) in t.iter().enumerate() {
                assert_eq!(net.params.cpu(&round, i), &cpu[tensor.cpu_offset..][..tensor.cpu_len()]);
            }
        }
    }

    #[test]
    fn gated_geometry_matches_the_specification() {
        let net = Network::new(Config::gated(4, 3).conditional());
        let by_name = |n: &str| net.convs.iter().find(|c| c.name == n).unwrap();
        let v0 = by_name("layers.0.v");
        assert_eq!((v0.kernel, v0.taps.len()), ([4, 7], 28));
        assert!(v0
            .taps
            .iter()
            .all(|t| (-3..=0).contains(&t.dy) && (-3..=3).contains(&t.dx)));
        let h0 = by_name("layers.0.h");
        assert_eq!(h0.kernel, [1, 4]);
        assert_eq!(h0.taps.iter().map(|t| t.dx).collect::<Vec<_>>(), vec![-3, -2, -1]);
        let h1 = by_name("layers.1.h");
        assert_eq!(h1.taps.iter().map(|t| t.dx).collect::<Vec<_>>(), vec![-1, 0]);
        let vh = by_name("layers.1.v_to_h");
        assert_eq!((vh.taps[0].dy, vh.taps[0].dx, vh.cin, vh.cout), (-1, 0, 8, 8));
        let names: Vec<&str> = net.params.tensors.iter().map(|t| t.name.as_str()).collect();
        for n in [
            "layers.0.v.class_bias",
            "layers.2.h.class_bias",
            "layers.1.h_out.weight",
            "head.0.bias",
        ] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        let sched = net.schedule();
        let v_gate = net.act_names.iter().position(|n| n == "layers.1.v_gate").unwrap();
        let h_gate = net.act_names.iter().position(|n| n == "layers.1.h_gate").unwrap();
        let v_to_h = net.act_names.iter().position(|n| n == "layers.1.v_to_h").unwrap();
        assert_eq!(
            (sched[v_gate], sched[v_to_h], sched[h_gate]),
            (Schedule::Row, Schedule::Ahead, Schedule::Pixel)
        );
        assert!(Network::new(Config::default())
            .schedule()
            .iter()
            .all(|&s| s == Schedule::Pixel));
    }

    /// The exhaustive-match guard: adding a layer kind breaks this match at compile time, and the test then asks
    /// for a network that uses the new kind, so that the CPU-vs-GPU tests (which run both architectures) cover it.
    fn kind_index(l: &Layer) -> usize {
        match l {
            Layer::Conv { .. } => 0,
            Layer::Add { .. } => 1,
            Layer::Gate { .. } => 2,
            Layer::Relu { .. } => 3,
            Layer::Dropout { .. } => 4,
        }
    }

    #[test]
    fn the_tested_architectures_use_every_layer_kind() {
        let mut seen = [false; 5];
        for config in [
            Config::pixelcnn(6, 2),
            Config::gated(5, 3).conditional(),
            Config::gated(4, 2).with_dropout(50),
        ] {
            for l in &Network::new(config).layers {
                seen[kind_index(l)] = true;
            }
        }
        assert_eq!(seen, [true; 5], "a layer kind is used by no tested network");
    }

    #[test]
    fn dropout_adds_layers_only_when_asked() {
        let plain = Network::new(Config::gated(4, 3));
        let dropped = Network::new(Config::gated(4, 3).with_dropout(50));
        assert_eq!(dropped.layers.len(), plain.layers.len() + 3);
        assert_eq!(
            dropped.params.cpu_len, plain.params.cpu_len,
            "dropout has no parameters"
        );
        let n = dropped.act_names.iter().filter(|n| n.ends_with(".dropout")).count();
        assert_eq!(n, 3);
        assert!(Config::gated(4, 3).with_dropout(95).validate().is_err());
    }

    #[test]
    fn classes_parse_by_name_and_number() {
        let fashion = default_class_names(10);
        assert_eq!(parse_class("sneaker", &fashion).unwrap(), 7);
        assert_eq!(parse_class("Ankle_Boot", &fashion).unwrap(), 9);
        assert_eq!(parse_class("boot", &fashion).unwrap(), 9);
        assert_eq!(parse_class("3", &fashion).unwrap(), 3);
        assert!(parse_class("10", &fashion).is_err() && parse_class("sock", &fashion).is_err());
        // A data set's own names, numbers among them: a name that is a number means that name.
        let own: Vec<String> = ["cat", "dog", "7"].iter().map(|s| s.to_string()).collect();
        assert_eq!(parse_class("Dog", &own).unwrap(), 1);
        assert_eq!(parse_class("7", &own).unwrap(), 2);
        assert_eq!(parse_class("0", &own).unwrap(), 0);
        assert!(parse_class("boot", &own).is_err() && parse_class("3", &own).is_err());
    }
}
