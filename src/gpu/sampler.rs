//! Sampling on the GPU. The images, every layer's activation cache and the random draws stay on the device;
//! the images and probabilities are read back once, at the end.
//!
//! * Incremental (default), following [`Network::schedule`]: for each pixel q in raster order, every
//!   pixel-scheduled layer is computed at position q only (its convs read the cached activations of earlier
//!   positions), then pixel q is drawn; once a row is complete, the row-scheduled layers (the gated net's
//!   vertical stack) are computed for that whole row, then the ahead-scheduled ones (its `v_to_h`, which reads
//!   only earlier rows) for the whole next row. A whole sample costs about one forward pass.
//!   - `layers` version (CPU rasterisers): each layer is a dispatch of its family's kernel at the pixel (a conv
//!     one `conv_forward` over the images' rows at that pixel, with a residual add and, on the raster kernels, the
//!     gate that follows fused into its epilogue: see [`pixel_fusion`]), recorded one image row per program.
//!   - `net` version (GPUs): one `pixel_net` dispatch per pixel runs every pixel-scheduled layer and the draw, and
//!     two per row: the row-scheduled layers, then the next row's ahead-scheduled ones.
//! * Naive (`--naive`): the original algorithm, a full forward pass over all 784 positions per pixel, still
//!   GPU-resident. For verification and as the benchmark baseline.

use super::buffers::{Tensor, View};
use super::kernels::pixel_net::{self, net_program, NetParams, NetProgram, NetViews, PROGRAM_BYTES};
use super::kernels::prelude::Rows;
use super::kernels::sample::{self, SamplePixel, SampleViews};
use super::layers::{self, Fused, GpuModel, Pass};
use super::record::Program;
use super::versions::PixelVersion;
use super::Gpu;
use crate::cpu::{SampleSpec, Samples};
use crate::model::{Network, Schedule};
use anyhow::{ensure, Result};

/// Images sampled together in one batch (bounded further by the per-buffer size limit).
pub const MAX_SAMPLE_BATCH: usize = 128;

/// What to sample (see [`SampleSpec`]), and how.
#[derive(Clone, Copy, Debug)]
pub struct SampleRequest<'a> {
    pub spec: SampleSpec<'a>,
    pub naive: bool,
    /// Stop after this many pixel steps (for timing the naive sampler on a prefix); None = all.
    pub max_steps: Option<usize>,
}

/// The sampler's devices and the model on each. On CPU rasterisers the images are split over several devices of
/// the same adapter, sampled in parallel threads, so that both cores work on the many small dispatches of a pixel
/// step. On llvmpipe the devices also run their dispatches inline, on the sampling threads, without worker pools
/// (see `Tuning::sampler_inline`): a dispatch then costs about 3 µs instead of a hand-off to the workers and back
/// (64 default-model images on the 2-core VM: 1.6–2.3 s on one inline device, 0.93–0.97 s on two). Elsewhere
/// there is one device.
pub struct Sampler {
    streams: Vec<(Gpu, GpuModel)>,
    /// The devices were opened without worker pools (see `Tuning::sampler_inline`).
    inline: bool,
}

impl Sampler {
    /// Opens the adapter (more than once on CPU rasterisers) and uploads the model to each device.
    pub fn new(net: &Network, params: &[f32]) -> Result<Sampler> {
        let first = Gpu::new()?;
        let tuning = first.kernels.tuning;
        let user_set = std::env::var_os("LP_NUM_THREADS").is_some_and(|v| !v.is_empty());
        if tuning.sampler_inline && !user_set {
            // llvmpipe sizes a device's worker pool from LP_NUM_THREADS when the device opens, and takes a value
            // without digits as unset. The sampler's devices open with "0"; then the variable is set to "", not
            // removed, so that devices opened later keep their pools: overwriting a variable swaps one pointer in
            // the environment, where removing it and adding it again may move the environment's array under
            // another thread's getenv (Mesa reads its options on every thread that opens a device, and the tests
            // open devices in parallel).
            drop(first);
            std::env::set_var("LP_NUM_THREADS", "0");
            let devices: Result<Vec<Gpu>> = (0..tuning.sampler_devices).map(|_| Gpu::new()).collect();
            std::env::set_var("LP_NUM_THREADS", "");
            return Self::upload(devices?, net, params, true);
        }
        let mut devices = vec![first];
        for _ in 1..tuning.sampler_devices {
            devices.push(Gpu::new()?);
        }
        Self::upload(devices, net, params, false)
    }

    /// Uploads the model to each device of the same adapter as the first.
    fn upload(devices: Vec<Gpu>, net: &Network, params: &[f32], inline: bool) -> Result<Sampler> {
        let name = devices[0].info.name.clone();
        let streams = devices
            .into_iter()
            .filter(|gpu| gpu.info.name == name)
            .map(|gpu| {
                let model = GpuModel::new(&gpu, net, params)?;
                Ok((gpu, model))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Sampler { streams, inline })
    }

    /// The first device and its model.
    pub fn first(&self) -> (&Gpu, &GpuModel) {
        (&self.streams[0].0, &self.streams[0].1)
    }

    pub fn adapter_name(&self) -> String {
        self.streams[0].0.adapter_name()
    }

    pub fn devices(&self) -> usize {
        self.streams.len()
    }

    /// Whether the devices run their dispatches on the sampling threads, without worker pools.
    pub fn inline(&self) -> bool {
        self.inline
    }

    /// The images each device samples: see [`split_images`].
    pub fn split(&self, count: usize) -> Vec<std::ops::Range<usize>> {
        split_images(count, self.devices())
    }

    /// Samples `req` over the devices; `progress(k)` is called (on this thread) as image-pixel steps complete,
    /// `count · 784` in all.
    pub fn sample(&self, req: SampleRequest, mut progress: impl FnMut(usize)) -> Result<Samples> {
        let parts = self.split(req.spec.count);
        if parts.len() <= 1 {
            let (gpu, model) = &self.streams[0];
            return sample(gpu, model, req, progress);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let results = std::thread::scope(|scope| {
            let threads: Vec<_> = parts
                .iter()
                .zip(&self.streams)
                .map(|(part, (gpu, model))| {
                    let spec = req.spec.slice(part.start, part.len(), model.net.pixels());
                    let sub = SampleRequest { spec, ..req };
                    let tx = tx.clone();
                    scope.spawn(move || sample(gpu, model, sub, |k| tx.send(k).unwrap_or(())))
                })
                .collect();
            drop(tx);
            for k in rx {
                progress(k);
            }
            threads
                .into_iter()
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a sampler thread panicked")))
                })
                .collect::<Result<Vec<Samples>>>()
        })?;
        let pixels = self.streams[0].1.net.pixels();
        let mut out = Samples {
            images: Vec::with_capacity(req.spec.count * pixels),
            probs: Vec::with_capacity(req.spec.count * pixels),
        };
        for s in results {
            out.images.extend(s.images);
            out.probs.extend(s.probs);
        }
        Ok(out)
    }
}

/// Splits `count` images over at most `devices` devices: contiguous slices of whole 8-image blocks (a raster
/// kernel's subgroup holds 8 images' rows, so smaller slices would leave lanes idle).
pub fn split_images(count: usize, devices: usize) -> Vec<std::ops::Range<usize>> {
    let per = count.div_ceil(devices.max(1)).next_multiple_of(8).max(8);
    (0..count).step_by(per).map(|s| s..(s + per).min(count)).collect()
}

/// The most images one batch may hold on this device (the activation caches must fit one binding).
pub fn batch_limit(gpu: &Gpu, net: &Network) -> usize {
    let pixels = net.pixels();
    let per_image: usize = (0..net.act_channels.len()).map(|a| net.gpu_channels(a)).sum::<usize>() * pixels * 4;
    let max = gpu
        .limits
        .max_storage_buffer_binding_size
        .min(gpu.limits.max_buffer_size) as usize;
    let fit = match gpu.kernels.pixel {
        // pixel_net keeps every cache in one buffer; the layers version one buffer per activation.
        PixelVersion::Net => max / per_image.max(1),
        PixelVersion::Layers => {
            let widest = (0..net.act_channels.len())
                .map(|a| net.gpu_channels(a))
                .max()
                .unwrap_or(4);
            max / (widest * pixels * 4)
        }
    };
    fit.min(MAX_SAMPLE_BATCH)
}

/// Samples on one device, in batches; `progress(k)` is called after every image row of every batch with the
/// image-pixel steps done (pixel steps × images in the batch).
pub fn sample(gpu: &Gpu, model: &GpuModel, req: SampleRequest, mut progress: impl FnMut(usize)) -> Result<Samples> {
    let spec = req.spec;
    let net = &model.net;
    let pixels = net.pixels();
    ensure!(
        spec.start_pixel <= pixels,
        "start pixel {} is past the image",
        spec.start_pixel
    );
    if net.config.is_conditional() {
        ensure!(
            spec.labels.is_some_and(|l| l.len() == spec.count),
            "a class-conditional model needs one label per image"
        );
    }
    let limit = batch_limit(gpu, net);
    ensure!(
        limit >= 1,
        "the sampler's caches for this model do not fit this adapter's largest buffer ({} MiB)",
        gpu.limits.max_storage_buffer_binding_size >> 20
    );
    let mut images = Vec::with_capacity(spec.count * pixels);
    let mut probs = Vec::with_capacity(spec.count * pixels);
    let mut done = 0;
    while done < spec.count {
        let batch = (spec.count - done).min(limit);
        let sub = spec.slice(done, batch, pixels);
        let s = sample_batch(gpu, model, sub, req.naive, req.max_steps, &mut |pixels| {
            progress(pixels * batch)
        })?;
        images.extend(s.images);
        probs.extend(s.probs);
        done += batch;
    }
    Ok(Samples { images, probs })
}

fn sample_batch(
    gpu: &Gpu,
    model: &GpuModel,
    spec: SampleSpec,
    naive: bool,
    max_steps: Option<usize>,
    progress: &mut impl FnMut(usize),
) -> Result<Samples> {
    let batch = Batch::new(gpu, model, &spec, naive)?;
    let (pixels, width) = (model.net.pixels(), model.net.width());
    let end = max_steps.map_or(pixels, |n| (spec.start_pixel + n).min(pixels));
    // One program per image row (`width` pixel steps), recorded while the GPU runs the row before, so the host's
    // recording overlaps the GPU's work; nothing is read back until the end.
    let mut in_flight: Option<(Program, wgpu::SubmissionIndex, usize)> = None;
    for row_start in (0..end).step_by(width) {
        let row = row_start..(row_start + width).min(end);
        let pixels = row.len();
        let p = batch.record_row(gpu, row)?;
        let submitted = p.submit(gpu);
        if let Some((_, index, pixels)) = in_flight.replace((p, submitted, pixels)) {
            gpu.wait_for(index)?;
            progress(pixels);
        }
    }
    if let Some((_, index, pixels)) = in_flight {
        gpu.wait_for(index)?;
        progress(pixels);
    }
    batch.read(gpu, &spec)
}

/// How a batch samples.
enum Method {
    /// Whole forward passes, image-major (the naive sampler).
    Naive,
    /// Layer by layer at each pixel, position-major.
    Layers,
    /// `pixel_net`: the whole pixel-scheduled network in one dispatch per pixel.
    Net(NetProgram, Tensor),
}

/// One sampling batch on one device: its buffers (activation caches, class tables, labels, probabilities), and
/// how to record the programs of an image row.
struct Batch<'a> {
    model: &'a GpuModel,
    method: Method,
    /// Images per position (the incremental methods) or images (the naive one).
    rows: usize,
    count: usize,
    key: u32,
    temperature: f32,
    first_image: u32,
    start_pixel: usize,
    acts: Vec<View>,
    tables: Vec<Option<View>>,
    labels: Tensor,
    probs: Tensor,
    schedule: Vec<Schedule>,
    fused: Vec<Fused>,
}

impl<'a> Batch<'a> {
    fn new(gpu: &Gpu, model: &'a GpuModel, spec: &SampleSpec, naive: bool) -> Result<Batch<'a>> {
        let net = &model.net;
        // The naive sampler runs whole forward passes (image-major, as in training); the incremental one works
        // one pixel of every image at a time, so it keeps each pixel's images together (position-major, `rows`
        // images per position).
        let rows = spec.count;
        let pixels = net.pixels();
        let positions = rows * pixels;
        let probs = gpu.upload("sample probs", &vec![f32::NAN; spec.count * pixels])?;
        let mut labels = spec.labels.map(|l| l.to_vec()).unwrap_or_default();
        labels.resize(rows, 0);
        let label_tensor = gpu.tensor("sample labels", rows)?;
        gpu.write_bytes(
            &label_tensor,
            0,
            &layers::label_words(&labels, rows, net.config.classes),
        );
        let x = image_layout(spec, rows, naive, pixels);
        let method = if naive {
            Method::Naive
        } else if gpu.kernels.pixel == PixelVersion::Net {
            let prog = net_program(net, rows)?;
            let program = gpu.tensor("pixel_net program", PROGRAM_BYTES / 4)?;
            gpu.write_bytes(&program, 0, bytemuck::cast_slice(&prog.words));
            Method::Net(prog, program)
        } else {
            Method::Layers
        };
        let acts = match &method {
            Method::Net(prog, _) => {
                let cache = gpu.tensor("pixel_net caches", prog.cache_len4 * 4)?;
                (0..net.act_channels.len())
                    .map(|a| cache.slice(prog.words[a][0] as usize * 4, positions * net.gpu_channels(a)))
                    .collect()
            }
            _ => (0..net.act_channels.len())
                .map(|a| {
                    let len = positions * net.gpu_channels(a);
                    let t = gpu.tensor(&format!("sample act {}", net.act_names[a]), len)?;
                    Ok(t.slice(0, len))
                })
                .collect::<Result<Vec<View>>>()?,
        };
        gpu.write(&acts[0].tensor, acts[0].offset, &x);
        let tables = (0..net.layers.len())
            .map(|l| {
                layers::table_len(net, l, rows)
                    .map(|n| gpu.tensor(&format!("class table {l}"), n).map(|t| t.view()))
                    .transpose()
            })
            .collect::<Result<Vec<Option<View>>>>()?;
        let schedule = net.schedule();
        let fused = if naive {
            layers::fuse_residuals(net, false)
        } else {
            pixel_fusion(net, &schedule, &|l| model.gate_fusable(gpu, l))
        };
        let batch = Batch {
            model,
            method,
            rows,
            count: spec.count,
            key: spec.key,
            temperature: spec.temperature,
            first_image: spec.first_image,
            start_pixel: spec.start_pixel,
            acts,
            tables,
            labels: label_tensor,
            probs,
            schedule,
            fused,
        };
        // The class tables once, for the whole batch (pixel_net adds class biases itself).
        if !matches!(batch.method, Method::Net(..)) {
            let mut p = Program::new();
            layers::class_tables(gpu, &mut p, &batch.pass(Rows::image_major(net.image(), rows)))?;
            if !p.is_empty() && !gpu.dry_run {
                p.finish(gpu);
                p.submit(gpu);
            }
        }
        Ok(batch)
    }

    fn pass(&self, rows: Rows) -> Pass<'_> {
        Pass {
            model: self.model,
            acts: &self.acts,
            bytes: false,
            labels: Some(self.labels.slice(0, self.rows.next_multiple_of(4))),
            tables: &self.tables,
            rows,
            images: self.rows,
            dropout_key: None,
        }
    }

    /// The programs of pixels `row` (within one image row), finished.
    fn record_row(&self, gpu: &Gpu, row: std::ops::Range<usize>) -> Result<Program> {
        let net = &self.model.net;
        let (image, width) = (net.image(), net.width());
        let mut p = Program::new();
        for q in row {
            match &self.method {
                Method::Net(prog, program) => {
                    let n_ops = if q >= self.start_pixel {
                        prog.pixel_ops.1
                    } else {
                        prog.pixel_ops.1 - 1
                    };
                    let u = NetParams {
                        q0: q as u32,
                        npos: 1,
                        images: self.rows as u32,
                        n_ops: n_ops as u32,
                        ops_at: prog.pixel_ops.0 as u32,
                        key: self.key,
                        first_image: self.first_image,
                        temperature: self.temperature,
                    };
                    // The ops `(at, n)` over the whole image row that starts at position `row0`.
                    let row = |(at, n): (usize, usize), row0: usize| NetParams {
                        q0: row0 as u32,
                        npos: width as u32,
                        n_ops: n as u32,
                        ops_at: at as u32,
                        ..u
                    };
                    if q == 0 && prog.ahead_ops.1 > 0 {
                        self.net_dispatch(gpu, &mut p, program, row(prog.ahead_ops, 0))?;
                    }
                    self.net_dispatch(gpu, &mut p, program, u)?;
                    if q % width == width - 1 {
                        if prog.row_ops.1 > 0 {
                            self.net_dispatch(gpu, &mut p, program, row(prog.row_ops, q + 1 - width))?;
                        }
                        if prog.ahead_ops.1 > 0 && q + 1 < net.pixels() {
                            self.net_dispatch(gpu, &mut p, program, row(prog.ahead_ops, q + 1))?;
                        }
                    }
                    continue;
                }
                Method::Naive => {
                    if q >= self.start_pixel {
                        let pass = self.pass(Rows::image_major(image, self.rows));
                        for (l, &f) in self.fused.iter().enumerate() {
                            layers::layer_forward(gpu, &mut p, &pass, l, f, None)?;
                        }
                    }
                }
                Method::Layers => {
                    if q == 0 {
                        self.row_pass(gpu, &mut p, Schedule::Ahead, 0)?;
                    }
                    let pass = self.pass(Rows::position_major(image, self.rows, q, 1));
                    for (l, &f) in self.fused.iter().enumerate() {
                        if self.schedule[l + 1] == Schedule::Pixel {
                            layers::layer_forward(gpu, &mut p, &pass, l, f, None)?;
                        }
                    }
                }
            }
            if q >= self.start_pixel {
                let naive = matches!(self.method, Method::Naive);
                let views = SampleViews {
                    logits: self.acts[net.logits_act()].clone(),
                    image: self.acts[0].clone(),
                    probs: self.probs.view(),
                };
                let op = SamplePixel {
                    count: self.count,
                    pixel: q,
                    key: self.key,
                    first_image: self.first_image,
                    stride: if naive { 0 } else { self.rows },
                    temperature: self.temperature,
                    image,
                };
                sample::sample_pixel(gpu, &mut p, views, op)?;
            }
            if matches!(self.method, Method::Layers) && q % width == width - 1 {
                self.row_pass(gpu, &mut p, Schedule::Row, q + 1 - width)?;
                if q + 1 < net.pixels() {
                    self.row_pass(gpu, &mut p, Schedule::Ahead, q + 1)?;
                }
            }
        }
        p.finish(gpu);
        Ok(p)
    }

    /// The layers of schedule `which`, over the image row that starts at position `row0` (the `layers` version).
    fn row_pass(&self, gpu: &Gpu, p: &mut Program, which: Schedule, row0: usize) -> Result<()> {
        let net = &self.model.net;
        let pass = self.pass(Rows::position_major(net.image(), self.rows, row0, net.width()));
        for (l, &f) in self.fused.iter().enumerate() {
            if self.schedule[l + 1] == which {
                layers::layer_forward(gpu, p, &pass, l, f, None)?;
            }
        }
        Ok(())
    }

    fn net_dispatch(&self, gpu: &Gpu, p: &mut Program, program: &Tensor, u: NetParams) -> Result<()> {
        let m = self.model;
        let views = NetViews {
            program: program.view(),
            acts: self.acts[0].tensor.view(),
            params: m.params.slice(0, m.net.params.gpu_len),
            taps: m.taps.view(),
            labels: self.labels.view(),
            probs: self.probs.view(),
        };
        pixel_net::pixel_net(gpu, p, views, u, m.net.image())
    }

    /// The images and probabilities, read back once at the end.
    fn read(&self, gpu: &Gpu, spec: &SampleSpec) -> Result<Samples> {
        let naive = matches!(self.method, Method::Naive);
        let pixels = self.model.net.pixels();
        let x = gpu.read_range(&self.acts[0].tensor, self.acts[0].offset, self.rows * pixels * 4)?;
        let mut images = vec![0u8; spec.count * pixels];
        for i in 0..spec.count {
            for q in 0..pixels {
                let at = if naive { i * pixels + q } else { q * self.rows + i };
                images[i * pixels + q] = x[at * 4] as u8;
            }
        }
        let probs = gpu.read_range(&self.probs, 0, spec.count * pixels)?;
        Ok(Samples { images, probs })
    }
}

/// The starting images (as vec4 floats, lane x) in the sampler's layout.
fn image_layout(spec: &SampleSpec, rows: usize, naive: bool, pixels: usize) -> Vec<f32> {
    let start = crate::cpu::starting_images(spec.init, spec.count, spec.start_pixel, pixels);
    let mut x = vec![0.0f32; rows * pixels * 4];
    for i in 0..spec.count {
        for q in 0..pixels {
            let at = if naive { i * pixels + q } else { q * rows + i };
            x[at * 4] = start[i * pixels + q] as f32;
        }
    }
    x
}

/// Fusion for the incremental sampler's `layers` version. A conv takes over the Add that alone consumes it when
/// both run on the same schedule and the Add's other operand is ready when the conv runs (an earlier layer of that
/// schedule, or an activation of a schedule computed before it: `Ahead` before `Pixel`, both before `Row`); then
/// [`layers::fuse_gates`] over layers of the same schedule, where `gate_fusable(l)`.
pub fn pixel_fusion(net: &Network, schedule: &[Schedule], gate_fusable: &dyn Fn(usize) -> bool) -> Vec<Fused> {
    let phase = |s: Schedule| match s {
        Schedule::Ahead => 0,
        Schedule::Pixel => 1,
        Schedule::Row => 2,
    };
    let ready = |conv_out: usize, add_out: usize, other: usize| {
        let (mine, theirs) = (phase(schedule[conv_out]), phase(schedule[other]));
        schedule[add_out] == schedule[conv_out] && (theirs < mine || (theirs == mine && other < conv_out))
    };
    let mut plan = layers::fuse_residuals_where(net, false, &ready);
    layers::fuse_gates(net, &mut plan, false, &|a, b| schedule[a] == schedule[b], gate_fusable);
    plan
}

/// A request for `labels.len()` images of class 0 from scratch, for recording programs without running them.
fn probe_spec<'a>(model: &GpuModel, labels: &'a [u8]) -> SampleSpec<'a> {
    SampleSpec {
        count: labels.len(),
        key: 0,
        first_image: 0,
        labels: model.net.config.is_conditional().then_some(labels),
        init: None,
        start_pixel: 0,
        temperature: 1.0,
    }
}

/// Dispatches per pixel of the incremental sampler for `count` images on this device (one batch of them, as many
/// as fit: see [`batch_limit`]): the programs of one interior image row (row 1, every pixel drawn, with the
/// row-end layers), recorded but not run.
pub fn dispatches_per_pixel(gpu: &Gpu, model: &GpuModel, count: usize) -> Result<f64> {
    let labels = vec![0u8; count.min(batch_limit(gpu, &model.net)).max(1)];
    let spec = probe_spec(model, &labels);
    let batch = Batch::new(gpu, model, &spec, false)?;
    let width = model.net.width();
    let p = batch.record_row(gpu, width..2 * width)?;
    Ok(p.len() as f64 / width as f64)
}

/// The profile of one interior image row (row 1) of the incremental sampler for `count` images on this device (one
/// batch of them, as many as fit), run dispatch by dispatch (see [`Program::profile`]).
pub fn profile_row(gpu: &Gpu, model: &GpuModel, count: usize) -> Result<Vec<crate::gpu::record::ProfileLine>> {
    let labels = vec![0u8; count.min(batch_limit(gpu, &model.net)).max(1)];
    let spec = probe_spec(model, &labels);
    let batch = Batch::new(gpu, model, &spec, false)?;
    let width = model.net.width();
    batch.record_row(gpu, 0..width)?.submit(gpu);
    gpu.wait()?;
    batch.record_row(gpu, width..2 * width)?.profile(gpu)
}

/// Records (without running) the programs of every sampler — incremental and naive, an image row of each — so
/// that every pipeline variant they use is built (for the translation test on a dry-run device).
pub fn record_all(gpu: &Gpu, model: &GpuModel, count: usize) -> Result<()> {
    let labels = vec![0u8; count];
    let spec = probe_spec(model, &labels);
    for naive in [false, true] {
        let batch = Batch::new(gpu, model, &spec, naive)?;
        batch.record_row(gpu, 0..model.net.width())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Config;

    /// Dispatches per pixel of the `layers` sampler under a fusion plan: the pixel-scheduled layers that run.
    fn per_pixel(net: &Network, schedule: &[Schedule], plan: &[Fused]) -> usize {
        (0..net.layers.len())
            .filter(|&l| schedule[l + 1] == Schedule::Pixel && plan[l] != Fused::Done)
            .count()
    }

    #[test]
    fn a_gated_layer_takes_two_dispatches_per_pixel_where_its_gate_fuses() {
        let layers = 4;
        let net = Network::new(Config::gated(8, layers).dilated(2).conditional());
        let schedule = net.schedule();
        // Per layer the h conv (with v_to_h's Add and the gate) and h_out (with the skip Add; layer 0 has none),
        // then the head's ReLU, its 1×1 and the logits.
        let fused = pixel_fusion(&net, &schedule, &|_| true);
        assert_eq!(per_pixel(&net, &schedule, &fused), 2 * layers + 3);
        let gated = fused.iter().filter(|f| matches!(f, Fused::Gated { .. })).count();
        // Every h conv, and every v conv but the last layer's (whose gate is not computed).
        assert_eq!(gated, 2 * layers - 1);
        // Where the kernels cannot fuse a gate, the gate is a dispatch of its own.
        let unfused = pixel_fusion(&net, &schedule, &|_| false);
        assert_eq!(per_pixel(&net, &schedule, &unfused), 3 * layers + 3);
        // In training every gate of the gated net fuses too, keeping its input for the backward pass.
        let mut plan = layers::fuse_residuals(&net, true);
        layers::fuse_gates(&net, &mut plan, true, &|_, _| true, &|_| true);
        let kept: Vec<bool> = plan
            .iter()
            .filter_map(|f| match f {
                Fused::Gated { keep_pre, .. } => Some(*keep_pre),
                _ => None,
            })
            .collect();
        assert_eq!(kept, vec![true; 2 * layers - 1]);
    }
}
