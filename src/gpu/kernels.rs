//! One function per WGSL entry point: it picks the kernel version the device was given (`versions.rs`), fills the
//! kernel's uniform block (`uniforms.rs`), picks the dispatch shape and appends the dispatch to a [`Program`].
//! The shader files document layouts and bindings; the CPU twin of each kernel has the same name in `cpu.rs`.

use super::buffers::View;
use super::record::{Label, Program};
use super::uniforms::{self, flags, Geometry};
use super::versions::{ConvVersion, PixelVersion};
use super::Gpu;
use crate::model::{HEIGHT, WIDTH};
use anyhow::{anyhow, Result};
use std::sync::Arc;

/// How a kernel reaches a binding (binding 0 is always the uniform block, with a dynamic offset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
    /// A read-only window bound as a uniform buffer (at most `max_uniform_buffer_binding_size` bytes).
    Uniform,
}
use Access::{Read, ReadWrite as Rw};

/// A compiled entry point with its explicit bind-group layout (explicit, so the uniform can use dynamic offsets).
pub struct Pipeline {
    /// `family:entry CONST=value ...`, the cache key.
    pub name: String,
    pub entry: String,
    /// The storage and window bindings, in the order a dispatch passes its views.
    pub bindings: Vec<(u32, Access)>,
    pub layout: wgpu::BindGroupLayout,
    /// None on a dry-run device ([`Gpu::dry_run`]), which records programs but never runs them.
    pub pipeline: Option<wgpu::ComputePipeline>,
}

/// A pipeline variant the host built: its family, entry point, template constants and expanded WGSL.
#[derive(Clone, Debug)]
pub struct Variant {
    pub family: String,
    pub entry: String,
    pub consts: Vec<(String, u32)>,
    pub source: String,
}

impl Gpu {
    /// The pipeline for `entry` of `shaders/<family>.wgsl` with its template constants set to `consts`, compiled
    /// once per process. Shader errors come back as errors, not panics.
    pub fn pipeline(
        &self,
        family: &str,
        entry: &str,
        consts: &[(&str, u32)],
        bindings: &[(u32, Access)],
    ) -> Result<Arc<Pipeline>> {
        let mut name = format!("{family}:{entry}");
        for (c, v) in consts {
            name.push_str(&format!(" {c}={v}"));
        }
        if let Some(p) = self.pipelines.lock().unwrap().get(&name) {
            return Ok(p.clone());
        }
        let src = super::shader::source(family, consts)?;
        self.variants.lock().unwrap().push(Variant {
            family: family.to_string(),
            entry: entry.to_string(),
            consts: consts.iter().map(|(c, v)| (c.to_string(), *v)).collect(),
            source: src.clone(),
        });
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&name),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: None,
            },
            count: None,
        }];
        for &(binding, a) in bindings {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match a {
                        Access::Uniform => wgpu::BufferBindingType::Uniform,
                        _ => wgpu::BufferBindingType::Storage { read_only: a == Read },
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let layout = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(&name),
            entries: &entries,
        });
        let pipeline_layout = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&name),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = (!self.dry_run).then(|| {
            self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&name),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(anyhow!("compiling {name}: {e}"));
        }
        let p = Arc::new(Pipeline {
            name: name.clone(),
            entry: entry.to_string(),
            bindings: bindings.to_vec(),
            layout,
            pipeline,
        });
        self.pipelines.lock().unwrap().insert(name, p.clone());
        Ok(p)
    }

    /// Every pipeline variant built so far on this device (for reports and the translation test).
    pub fn variants(&self) -> Vec<Variant> {
        self.variants.lock().unwrap().clone()
    }
}

fn groups64(invocations: usize) -> usize {
    invocations.div_ceil(64)
}

/// The geometry of one conv on the GPU: padded channel vec4s and where its taps sit in the tap table.
#[derive(Clone, Debug)]
pub struct ConvShape {
    pub cin4: usize,
    pub cout4: usize,
    pub tap0: usize,
    pub n_taps: usize,
    pub relu: bool,
    /// Live taps as (dy, dx), for the host-side planning of conv_pixel's windows.
    pub taps: Vec<(i32, i32)>,
    /// `blocks.0.masked 128→64 3x3 (5 taps)`, for profiles.
    pub name: String,
    /// Multiply-adds per output row (live taps × input channels × output channels), for profiles.
    pub macs_per_row: f64,
}

impl ConvShape {
    /// The uniform block of one of the three conv entries over `geo`'s rows: the shape's fields, `flags`, and
    /// zeros elsewhere (callers set the entry's own fields).
    fn params(&self, geo: Geometry, flags: u32) -> uniforms::ConvParams {
        uniforms::ConvParams {
            geo,
            cin4: self.cin4 as u32,
            cout4: self.cout4 as u32,
            tap0: self.tap0 as u32,
            n_taps: self.n_taps as u32,
            flags,
            ..Default::default()
        }
    }

    /// The profile label of `entry` on `rows` rows (or positions) with this shape.
    fn label(&self, gpu: &Gpu, entry: &str, rows: f64) -> Label {
        Label {
            what: format!("{entry} {:?} {}", gpu.kernels.conv, self.name).to_lowercase(),
            flops: 2.0 * self.macs_per_row * rows,
        }
    }

    /// The shape of `conv` on the GPU with `in_groups` / `out_groups` channel groups, its taps at `tap0` of the
    /// tap table.
    pub fn of(conv: &crate::model::Conv, in_groups: usize, out_groups: usize, tap0: usize) -> ConvShape {
        let c4 = |c: usize, g: usize| g * crate::model::pad4(c / g) / 4;
        ConvShape {
            cin4: c4(conv.cin, in_groups),
            cout4: c4(conv.cout, out_groups),
            tap0,
            n_taps: conv.taps.len(),
            relu: conv.act == crate::model::Activation::Relu,
            taps: conv.taps.iter().map(|t| (t.dy, t.dx)).collect(),
            name: format!(
                "{} {}→{} {}x{} ({} taps)",
                conv.name,
                conv.cin,
                conv.cout,
                conv.kernel[0],
                conv.kernel[1],
                conv.taps.len()
            ),
            macs_per_row: (conv.taps.len() * conv.cin * conv.cout) as f64,
        }
    }
}

/// What a conv reads as its input.
#[derive(Clone, Debug)]
pub enum ConvInput {
    /// An activation `[positions, cin4]` of vec4s.
    Floats(View),
    /// The u8 images themselves (cin4 = 1), 4 pixels per word.
    Bytes(View),
}

/// What a forward conv does after its sum.
#[derive(Clone, Debug)]
pub enum Epilogue {
    /// `output = act(sum + bias)`.
    Plain,
    /// Also `sum_out = act(...) + residual` (a fused residual add); `keep_output = false` skips the plain output.
    Residual {
        residual: View,
        sum_out: View,
        keep_output: bool,
    },
    /// The logits conv: per-pixel BCE against `target` (u8 images) into `loss`; `output` gets the gradient of the
    /// mean BCE (scaled by `scale`) when `grad`, else the logit.
    Loss {
        target: View,
        loss: View,
        grad: bool,
        scale: f32,
    },
}

/// The operands of a forward conv.
#[derive(Clone, Debug)]
pub struct ConvForward {
    pub input: ConvInput,
    pub weight: View,
    /// `[cout4]`, or a per-image table `[images, cout4]` when `per_image_bias`.
    pub bias: View,
    pub per_image_bias: bool,
    pub taps: View,
    pub output: View,
    pub epilogue: Epilogue,
}

/// Largest power of two ≤ min(n, cap).
fn pow2_at_most(n: usize, cap: usize) -> usize {
    let mut t = 1;
    while t * 2 <= n.min(cap) {
        t *= 2;
    }
    t
}

/// The conv family's version, its constants, and workgroups for `rows` rows × `cols4` output vec4 columns.
fn conv_pipeline_consts(gpu: &Gpu, rows: usize, cols4: usize) -> (&'static str, Vec<(&'static str, u32)>, usize) {
    let t = &gpu.kernels.tuning;
    match gpu.kernels.conv {
        ConvVersion::Raster => {
            let sg = gpu.kernels.subgroup.expect("raster kernels have a subgroup size") as usize;
            let tn = pow2_at_most(cols4, t.conv_tn as usize);
            let tm = t.conv_tm as usize;
            let groups = rows.div_ceil(tm * sg) * cols4.div_ceil(tn);
            (
                "conv_raster",
                vec![("SG", sg as u32), ("TM", tm as u32), ("TN", tn as u32)],
                groups,
            )
        }
        ConvVersion::Tiled => ("conv_tiled", vec![], rows.div_ceil(64) * cols4.div_ceil(16)),
    }
}

/// `out = act(conv(input) + bias)` at the rows of `geo`, with the epilogue `op.epilogue`.
pub fn conv_forward(gpu: &Gpu, p: &mut Program, shape: &ConvShape, op: ConvForward, geo: Geometry) -> Result<()> {
    let (family, mut consts, groups) = conv_pipeline_consts(gpu, geo.rows(), shape.cout4);
    let (input, bytes) = match op.input {
        ConvInput::Floats(v) => (v, false),
        ConvInput::Bytes(v) => (v, true),
    };
    let loss = matches!(op.epilogue, Epilogue::Loss { .. });
    consts.push(("BYTES", bytes as u32));
    consts.push(("LOSS", loss as u32));
    let pipe = gpu.pipeline(
        family,
        "conv_forward",
        &consts,
        &[(1, Read), (2, Read), (3, Read), (4, Read), (5, Rw), (6, Read), (7, Rw)],
    )?;
    let mut fl = if shape.relu { flags::RELU } else { 0 };
    let mut scale = 0.0;
    let (aux_in, aux_out) = match op.epilogue {
        Epilogue::Plain => (gpu.dummy.view(), gpu.dummy_rw.view()),
        Epilogue::Residual {
            residual,
            sum_out,
            keep_output,
        } => {
            fl |= flags::RESIDUAL | if keep_output { 0 } else { flags::NO_OUTPUT };
            (residual, sum_out)
        }
        Epilogue::Loss {
            target,
            loss,
            grad,
            scale: s,
        } => {
            fl |= if grad { flags::LOSS_GRAD } else { 0 };
            scale = s;
            (target, loss)
        }
    };
    let u = uniforms::ConvParams {
        bias_stride: if op.per_image_bias { shape.cout4 as u32 } else { 0 },
        loss_scale: scale,
        ..shape.params(geo, fl)
    };
    let label = shape.label(gpu, "conv_forward", geo.rows() as f64);
    p.dispatch(
        pipe,
        vec![input, op.weight, op.bias, op.taps, op.output, aux_in, aux_out],
        bytemuck::bytes_of(&u),
        groups,
        label,
    );
    Ok(())
}

/// `dx (+)= [mask ·] conv^T(dz)` at the rows of `geo` (positions of the conv's input), reading the weight in place.
/// `mask`: the conv's input activation, when it is a ReLU output (the gradient then goes through that ReLU).
#[allow(clippy::too_many_arguments)]
pub fn conv_backward_data(
    gpu: &Gpu,
    p: &mut Program,
    shape: &ConvShape,
    weight: View,
    taps: View,
    dz: View,
    dx: View,
    mask: Option<View>,
    accumulate: bool,
    geo: Geometry,
) -> Result<()> {
    let (family, mut consts, groups) = conv_pipeline_consts(gpu, geo.rows(), shape.cin4);
    consts.push(("BYTES", 0));
    consts.push(("LOSS", 0));
    let pipe = gpu.pipeline(
        family,
        "conv_backward_data",
        &consts,
        &[(1, Read), (2, Read), (4, Read), (5, Rw), (6, Read)],
    )?;
    let fl = if accumulate { flags::ACCUMULATE } else { 0 } | if mask.is_some() { flags::MASK } else { 0 };
    let u = shape.params(geo, fl);
    let label = shape.label(gpu, "conv_backward_data", geo.rows() as f64);
    p.dispatch(
        pipe,
        vec![dz, weight, taps, dx, mask.unwrap_or_else(|| gpu.dummy.view())],
        bytemuck::bytes_of(&u),
        groups,
        label,
    );
    Ok(())
}

/// Positions per chunk and chunks of the weight-gradient reduction over `positions` positions.
pub fn wgrad_chunks(gpu: &Gpu, positions: usize) -> (usize, usize) {
    let chunk = gpu.kernels.tuning.wgrad_chunk.next_multiple_of(16);
    (chunk, positions.div_ceil(chunk))
}

/// Words of the partial-sum buffer the weight gradient of `shape` needs over `positions` positions.
pub fn wgrad_partial_len(gpu: &Gpu, shape: &ConvShape, positions: usize) -> usize {
    let (_, n_chunks) = wgrad_chunks(gpu, positions);
    n_chunks * (shape.n_taps * shape.cin4 * 4 + 1) * shape.cout4 * 4
}

/// The gradients of a conv's weight and bias, in two deterministic passes: per-chunk partial sums over the
/// positions of `geo`, then their sum in chunk order (`reduce_chunks`).
#[allow(clippy::too_many_arguments)]
pub fn conv_backward_weight(
    gpu: &Gpu,
    p: &mut Program,
    shape: &ConvShape,
    input: ConvInput,
    taps: View,
    dz: View,
    partial: View,
    grad_weight: View,
    grad_bias: View,
    geo: Geometry,
) -> Result<()> {
    let positions = geo.rows();
    let (chunk, n_chunks) = wgrad_chunks(gpu, positions);
    let (input, bytes) = match input {
        ConvInput::Floats(v) => (v, false),
        ConvInput::Bytes(v) => (v, true),
    };
    let row_groups = shape.n_taps * shape.cin4 + 1;
    let t = &gpu.kernels.tuning;
    let (family, consts, groups) = match gpu.kernels.conv {
        ConvVersion::Raster => {
            let sg = gpu.kernels.subgroup.expect("raster kernels have a subgroup size");
            // Lanes own output columns: TN per lane, as few as keep every lane busy.
            let tn = pow2_at_most(shape.cout4.div_ceil(sg as usize), t.wgrad_tn as usize);
            // Row blocks of equal size, so that the last is not a sliver (33 groups: 3 blocks of 11, not 16+16+1).
            let ti = row_groups.div_ceil(row_groups.div_ceil(t.wgrad_ti as usize));
            let consts = vec![
                ("SG", sg),
                ("TI", ti as u32),
                ("TN", tn as u32),
                ("BYTES", bytes as u32),
                ("LOSS", 0),
            ];
            let col_blocks = shape.cout4.div_ceil(sg as usize * tn);
            ("conv_raster", consts, n_chunks * row_groups.div_ceil(ti) * col_blocks)
        }
        ConvVersion::Tiled => (
            "conv_tiled",
            vec![("BYTES", bytes as u32), ("LOSS", 0)],
            n_chunks * row_groups.div_ceil(16) * shape.cout4.div_ceil(8),
        ),
    };
    let pipe = gpu.pipeline(
        family,
        "conv_backward_weight",
        &consts,
        &[(1, Read), (4, Read), (8, Read), (9, Rw)],
    )?;
    let u = uniforms::ConvParams {
        chunk: chunk as u32,
        n_chunks: n_chunks as u32,
        ..shape.params(geo, 0)
    };
    let label = shape.label(gpu, "conv_backward_weight", positions as f64);
    p.dispatch(
        pipe,
        vec![input, taps, dz, partial.clone()],
        bytemuck::bytes_of(&u),
        groups,
        label,
    );
    let len4 = (shape.n_taps * shape.cin4 * 4 + 1) * shape.cout4;
    reduce_chunks(
        gpu,
        p,
        partial,
        grad_weight,
        grad_bias,
        len4,
        len4 - shape.cout4,
        n_chunks,
    )
}

/// `out0 ‖ out1 = Σ_c in[c · len4 + i]` over vec4s, the first `split` vec4s into out0.
#[allow(clippy::too_many_arguments)]
pub fn reduce_chunks(
    gpu: &Gpu,
    p: &mut Program,
    input: View,
    out0: View,
    out1: View,
    len4: usize,
    split: usize,
    n_chunks: usize,
) -> Result<()> {
    let u = uniforms::ReduceParams {
        len: len4 as u32,
        n_chunks: n_chunks as u32,
        flags: 0,
        split: split as u32,
    };
    let pipe = gpu.pipeline("reduce", "reduce_chunks", &[], &[(1, Read), (2, Rw), (3, Rw)])?;
    p.dispatch(
        pipe,
        vec![input, out0, out1],
        bytemuck::bytes_of(&u),
        groups64(len4),
        Label::default(),
    );
    Ok(())
}

/// Per-image sums of the per-pixel losses: `out[i] (+)= Σ_q loss[i · 784 + q]`.
pub fn sum_images(gpu: &Gpu, p: &mut Program, loss: View, output: View, images: usize, accumulate: bool) -> Result<()> {
    let len4 = images.div_ceil(4);
    let u = uniforms::ReduceParams {
        len: len4 as u32,
        n_chunks: images as u32,
        flags: if accumulate { flags::ACCUMULATE } else { 0 },
        split: 0,
    };
    let pipe = gpu.pipeline("reduce", "sum_images", &[], &[(1, Read), (2, Rw)])?;
    p.dispatch(
        pipe,
        vec![loss, output],
        bytemuck::bytes_of(&u),
        groups64(len4),
        Label::default(),
    );
    Ok(())
}

/// One elementwise entry point of elementwise.wgsl over `c4` output vec4 columns at the rows of `geo`.
#[allow(clippy::too_many_arguments)]
fn elementwise(
    gpu: &Gpu,
    p: &mut Program,
    entry: &str,
    a: View,
    b: Option<View>,
    out: View,
    c_in: Option<View>,
    c4: usize,
    fl: u32,
    bias_stride: usize,
    geo: Geometry,
) -> Result<()> {
    let u = uniforms::EltParams {
        geo,
        c4: c4 as u32,
        flags: fl,
        bias_stride: bias_stride as u32,
        _pad: 0,
    };
    let pipe = gpu.pipeline("elementwise", entry, &[], &[(1, Read), (2, Read), (3, Rw), (4, Read)])?;
    let label = Label {
        what: format!("{entry} {}", c4 * 4),
        flops: 0.0,
    };
    p.dispatch(
        pipe,
        vec![
            a,
            b.unwrap_or_else(|| gpu.dummy.view()),
            out,
            c_in.unwrap_or_else(|| gpu.dummy.view()),
        ],
        bytemuck::bytes_of(&u),
        groups64(geo.rows() * c4),
        label,
    );
    Ok(())
}

/// `out = a + b` over `c4` vec4 columns at the rows of `geo`.
pub fn add(gpu: &Gpu, p: &mut Program, a: View, b: View, out: View, c4: usize, geo: Geometry) -> Result<()> {
    elementwise(gpu, p, "add", a, Some(b), out, None, c4, 0, 0, geo)
}

/// `out (+)= src`: a gradient reaching an activation.
pub fn accumulate(gpu: &Gpu, p: &mut Program, src: View, out: View, c4: usize, acc: bool, geo: Geometry) -> Result<()> {
    let fl = if acc { flags::ACCUMULATE } else { 0 };
    elementwise(gpu, p, "accumulate", src, None, out, None, c4, fl, 0, geo)
}

/// `out = max(x, 0)`.
pub fn relu_forward(gpu: &Gpu, p: &mut Program, x: View, out: View, c4: usize, geo: Geometry) -> Result<()> {
    elementwise(gpu, p, "relu_forward", x, None, out, None, c4, 0, 0, geo)
}

/// `out (+)= dy · [y > 0]`.
#[allow(clippy::too_many_arguments)]
pub fn relu_backward(
    gpu: &Gpu,
    p: &mut Program,
    y: View,
    dy: View,
    out: View,
    c4: usize,
    acc: bool,
    geo: Geometry,
) -> Result<()> {
    let fl = if acc { flags::ACCUMULATE } else { 0 };
    elementwise(gpu, p, "relu_backward", y, Some(dy), out, None, c4, fl, 0, geo)
}

/// `out = tanh(z[:h] + β) · σ(z[h:] + β)` with `h` = `half4` vec4s and β a per-image table `[images, 2·half4]`.
pub fn gate_forward(
    gpu: &Gpu,
    p: &mut Program,
    z: View,
    bias: Option<View>,
    out: View,
    half4: usize,
    geo: Geometry,
) -> Result<()> {
    let fl = if bias.is_some() { flags::BIAS } else { 0 };
    elementwise(gpu, p, "gate_forward", z, bias, out, None, half4, fl, 2 * half4, geo)
}

/// `dz (+)=` the gradient of [`gate_forward`] with respect to z, from `dout`.
#[allow(clippy::too_many_arguments)]
pub fn gate_backward(
    gpu: &Gpu,
    p: &mut Program,
    z: View,
    bias: Option<View>,
    dout: View,
    dz: View,
    half4: usize,
    geo: Geometry,
) -> Result<()> {
    let fl = if bias.is_some() { flags::BIAS } else { 0 };
    elementwise(
        gpu,
        p,
        "gate_backward",
        z,
        bias,
        dz,
        Some(dout),
        half4,
        fl,
        2 * half4,
        geo,
    )
}

fn class_kernel(
    gpu: &Gpu,
    p: &mut Program,
    entry: &str,
    views: [View; 4],
    u: uniforms::ClassParams,
    n: usize,
) -> Result<()> {
    let pipe = gpu.pipeline("class_bias", entry, &[], &[(1, Read), (2, Read), (3, Read), (4, Rw)])?;
    p.dispatch(
        pipe,
        views.to_vec(),
        bytemuck::bytes_of(&u),
        groups64(n),
        Label::default(),
    );
    Ok(())
}

/// The per-image bias table `out[i] = [bias +] class_bias[labels[i]]` for `images` images, `c4` vec4 columns.
#[allow(clippy::too_many_arguments)]
pub fn class_bias_add(
    gpu: &Gpu,
    p: &mut Program,
    bias: Option<View>,
    class_bias: View,
    labels: View,
    out: View,
    images: usize,
    c4: usize,
) -> Result<()> {
    let u = uniforms::ClassParams {
        images: images as u32,
        c4: c4 as u32,
        classes: crate::model::CLASSES as u32,
        flags: if bias.is_some() { flags::BIAS } else { 0 },
    };
    let a = bias.unwrap_or_else(|| gpu.dummy.view());
    class_kernel(gpu, p, "class_bias_add", [a, class_bias, labels, out], u, images * c4)
}

/// The gradient of a class-bias table from a pre-activation gradient `grad` (image-major `[images · 784, c4]`):
/// per-image sums into `sums`, then per-class sums in image order into `out` — deterministic.
#[allow(clippy::too_many_arguments)]
pub fn class_bias_backward(
    gpu: &Gpu,
    p: &mut Program,
    grad: View,
    labels: View,
    sums: View,
    out: View,
    images: usize,
    c4: usize,
) -> Result<()> {
    let classes = crate::model::CLASSES;
    let u = uniforms::ClassParams {
        images: images as u32,
        c4: c4 as u32,
        classes: classes as u32,
        flags: 0,
    };
    let d = gpu.dummy.view();
    class_kernel(
        gpu,
        p,
        "image_sums",
        [grad, d.clone(), labels.clone(), sums.clone()],
        u,
        images * c4,
    )?;
    class_kernel(gpu, p, "class_bias_backward", [sums, d, labels, out], u, classes * c4)
}

/// Adam's uniform block for a step size `lr_t`.
pub fn adam_uniform(n4: usize, lr_t: f32, cfg: &crate::cpu::AdamConfig) -> Vec<u8> {
    let u = uniforms::AdamParams {
        n4: n4 as u32,
        lr_t,
        beta1: cfg.beta1 as f32,
        beta2: cfg.beta2 as f32,
        eps: cfg.eps as f32,
        _pad: [0; 3],
    };
    bytemuck::bytes_of(&u).to_vec()
}

/// One Adam update of the whole parameter vector; returns the dispatch index so the step size can be rewritten.
#[allow(clippy::too_many_arguments)]
pub fn adam_update(
    gpu: &Gpu,
    p: &mut Program,
    params: View,
    grads: View,
    m: View,
    v: View,
    lr_t: f32,
    cfg: &crate::cpu::AdamConfig,
) -> Result<usize> {
    let n4 = params.len / 4;
    let pipe = gpu.pipeline("adam", "adam_update", &[], &[(1, Rw), (2, Read), (3, Rw), (4, Rw)])?;
    Ok(p.dispatch(
        pipe,
        vec![params, grads, m, v],
        &adam_uniform(n4, lr_t, cfg),
        groups64(n4),
        Label::default(),
    ))
}

/// Draws pixel `pixel` of `count` images from their logits, writing the image and the probability. `stride` 0:
/// logits and image are image-major; else position-major with `stride` images per position.
#[allow(clippy::too_many_arguments)]
pub fn sample_pixel(
    gpu: &Gpu,
    p: &mut Program,
    logits: View,
    image: View,
    probs: View,
    count: usize,
    pixel: usize,
    key: u32,
    first_image: u32,
    stride: usize,
) -> Result<()> {
    let u = uniforms::SampleParams {
        count: count as u32,
        pixel: pixel as u32,
        key,
        first_image,
        stride: stride as u32,
        _pad: [0; 3],
    };
    let pipe = gpu.pipeline("sample", "sample_pixel", &[], &[(1, Read), (2, Rw), (3, Rw)])?;
    p.dispatch(
        pipe,
        vec![logits, image, probs],
        bytemuck::bytes_of(&u),
        groups64(count),
        Label::default(),
    );
    Ok(())
}

/// Bytes of each uniform window `conv_pixel` binds (its WGSL arrays are this big; buffers carry this much tail).
pub const WINDOW_BYTES: usize = 65536;

/// Words of tail every tensor that `conv_pixel` reads through a window needs.
pub const WINDOW_TAIL: usize = WINDOW_BYTES / 4;

/// Most segments `conv_pixel` is compiled with (a masked 3×3 conv over 128 images has 5 runs of one tap).
pub const MAX_SEGMENTS: usize = 5;

/// A run of taps for one `conv_pixel` segment: `taps` consecutive live taps from `tap0`, all on one kernel row and
/// inside the image, whose input pixels start at `first_pixel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapRun {
    pub tap0: usize,
    pub taps: usize,
    pub first_pixel: usize,
}

/// Why `conv_pixel` cannot serve a conv, if it cannot.
pub fn conv_pixel_unfit(
    gpu: &Gpu,
    shape: &ConvShape,
    weight: &View,
    input: &View,
    rows: usize,
    max_bytes: usize,
) -> Option<String> {
    if gpu.kernels.pixel != PixelVersion::ConvPixel {
        return Some("the device's pixel kernels are not conv_pixel".into());
    }
    let sg = gpu.kernels.subgroup? as usize;
    let tap_bytes = shape.cin4 * 4 * shape.cout4 * 16;
    let pixel_bytes = rows * shape.cin4 * 16;
    let align = gpu.limits.min_uniform_buffer_offset_alignment as usize;
    let checks = [
        (
            max_bytes <= WINDOW_BYTES && (gpu.limits.max_uniform_buffer_binding_size as usize) >= WINDOW_BYTES,
            "64 KiB uniform windows do not fit the adapter",
        ),
        (tap_bytes <= max_bytes, "one tap's weights exceed a window"),
        (pixel_bytes <= max_bytes, "one pixel's inputs exceed a window"),
        (rows.is_multiple_of(sg), "the images are not a multiple of the subgroup"),
        (
            pixel_bytes.is_multiple_of(align) && tap_bytes.is_multiple_of(align),
            "windows would be misaligned",
        ),
        (
            (weight.offset * 4).is_multiple_of(align) && (input.offset * 4).is_multiple_of(align),
            "buffers are misaligned",
        ),
        (
            weight.offset + weight.len + WINDOW_TAIL <= weight.tensor.len
                && input.offset + input.len + WINDOW_TAIL <= input.tensor.len,
            "buffers lack the window tail",
        ),
    ];
    checks.iter().find(|(ok, _)| !ok).map(|(_, why)| why.to_string())
}

/// Splits a conv at pixel `q` into [`TapRun`]s whose input and weight windows fit `max_bytes`. An empty list means
/// every tap reads the zero padding (the output is act(bias)). Call [`conv_pixel_unfit`] first.
pub fn pixel_runs(shape: &ConvShape, rows: usize, q: usize, max_bytes: usize) -> Vec<TapRun> {
    let tap_bytes = shape.cin4 * 4 * shape.cout4 * 16;
    let pixel_bytes = rows * shape.cin4 * 16;
    let per_run = (max_bytes / tap_bytes).min(max_bytes / pixel_bytes);
    let (y, x) = ((q / WIDTH) as i32, (q % WIDTH) as i32);
    let mut runs: Vec<TapRun> = Vec::new();
    for (t, &(dy, dx)) in shape.taps.iter().enumerate() {
        let (ty, tx) = (y + dy, x + dx);
        if ty < 0 || ty >= HEIGHT as i32 || tx < 0 || tx >= WIDTH as i32 {
            continue;
        }
        let pixel = ty as usize * WIDTH + tx as usize;
        match runs.last_mut() {
            Some(r) if r.tap0 + r.taps == t && r.first_pixel + r.taps == pixel && r.taps < per_run => r.taps += 1,
            _ => runs.push(TapRun {
                tap0: t,
                taps: 1,
                first_pixel: pixel,
            }),
        }
    }
    runs
}

/// Segments (tap runs) one `conv_pixel` dispatch takes: two uniform windows each.
pub fn pixel_segments(gpu: &Gpu) -> usize {
    let uniforms = gpu.limits.max_uniform_buffers_per_shader_stage as usize;
    (uniforms.saturating_sub(1) / 2).clamp(1, MAX_SEGMENTS)
}

/// `out = [residual +] act(conv(input) + bias)` at pixel `q` of `rows` images (position-major buffers) with the
/// `conv_pixel` kernel: [`pixel_segments`] runs of taps per dispatch, dispatches chained through `out`.
#[allow(clippy::too_many_arguments)]
pub fn conv_pixel(
    gpu: &Gpu,
    p: &mut Program,
    shape: &ConvShape,
    weight: &View,
    bias: View,
    per_image_bias: bool,
    input: &View,
    residual: Option<View>,
    output: View,
    rows: usize,
    q: usize,
    runs: &[TapRun],
) -> Result<()> {
    let sg = gpu.kernels.subgroup.expect("conv_pixel has a subgroup size");
    let (cin4, cout4) = (shape.cin4, shape.cout4);
    let tap_len = cin4 * 4 * cout4 * 4;
    let pixel_len = rows * cin4 * 4;
    let groups = rows.div_ceil(sg as usize) * cout4.div_ceil(sg as usize);
    let segments = pixel_segments(gpu);
    let mut bindings = vec![(1, Read), (2, Rw), (3, Read)];
    for s in 0..segments as u32 {
        bindings.push((4 + 2 * s, Access::Uniform));
        bindings.push((5 + 2 * s, Access::Uniform));
    }
    let pipe = gpu.pipeline(
        "conv_pixel",
        "conv_pixel",
        &[("SG", sg), ("SEGMENTS", segments as u32)],
        &bindings,
    )?;
    // With every tap in the zero padding one dispatch over no taps still writes act(bias).
    let empty = [TapRun {
        tap0: 0,
        taps: 0,
        first_pixel: 0,
    }];
    let runs = if runs.is_empty() { &empty[..] } else { runs };
    let window = |v: &View, offset: usize| View {
        tensor: v.tensor.clone(),
        offset: v.offset + offset,
        len: WINDOW_TAIL,
    };
    let dispatches = runs.len().div_ceil(segments);
    for (d, chunk) in runs.chunks(segments).enumerate() {
        let (first, last) = (d == 0, d + 1 == dispatches);
        let mut fl = if first { flags::BIAS } else { flags::ACCUMULATE };
        if last && shape.relu {
            fl |= flags::RELU;
        }
        if last && residual.is_some() {
            fl |= flags::RESIDUAL;
        }
        let mut u = uniforms::PixelParams {
            rows: rows as u32,
            cin4: cin4 as u32,
            cout4: cout4 as u32,
            flags: fl,
            pixel: q as u32,
            bias_stride: if per_image_bias { cout4 as u32 } else { 0 },
            ..Default::default()
        };
        let mut views = vec![
            bias.clone(),
            output.clone(),
            residual.clone().unwrap_or_else(|| gpu.dummy.view()),
        ];
        for s in 0..segments {
            // Unused segments (no taps) bind the first run's windows again.
            let run = chunk.get(s).unwrap_or(&chunk[0]);
            u.taps[s] = if s < chunk.len() { run.taps as u32 } else { 0 };
            views.push(window(input, run.first_pixel * pixel_len));
            views.push(window(weight, run.tap0 * tap_len));
        }
        let flops = 2.0 * chunk.iter().map(|r| r.taps).sum::<usize>() as f64 * (cin4 * cout4 * 16 * rows) as f64;
        let label = Label {
            what: format!("conv_pixel {}", shape.name),
            flops,
        };
        p.dispatch(pipe.clone(), views, bytemuck::bytes_of(&u), groups, label);
    }
    Ok(())
}

/// One step of `pixel_net`: every op of `program` from op `ops_at` (`n_ops` of them) at positions q0 .. q0 + npos
/// of `images` images.
#[allow(clippy::too_many_arguments)]
pub fn pixel_net(
    gpu: &Gpu,
    p: &mut Program,
    program: View,
    acts: View,
    params: View,
    taps: View,
    labels: View,
    probs: View,
    u: uniforms::NetParams,
) -> Result<()> {
    let pipe = gpu.pipeline(
        "pixel_net",
        "pixel_net",
        &[],
        &[(1, Access::Uniform), (2, Rw), (3, Read), (4, Read), (5, Read), (6, Rw)],
    )?;
    let label = Label {
        what: format!("pixel_net {} positions", u.npos),
        flops: 0.0,
    };
    p.dispatch(
        pipe,
        vec![program, acts, params, taps, labels, probs],
        bytemuck::bytes_of(&u),
        u.images as usize,
        label,
    );
    Ok(())
}
