//! Recording dispatches. A [`Program`] is a list of kernel dispatches with their buffers and uniform blocks; once
//! finished it owns one uniform buffer (every dispatch's block at its own dynamic offset) and a cached bind group
//! per distinct set of buffers, so a program can be encoded again and again (every training step, every pixel of
//! the sampler) with no allocation beyond the command buffer.

use super::buffers::View;
use super::kernels::Pipeline;
use super::Gpu;
use std::collections::HashMap;
use std::sync::Arc;

/// What one dispatch is, for profiles: its kernel and layer shape, and the FLOPs it performs.
#[derive(Clone, Debug, Default)]
pub struct Label {
    /// e.g. `conv_forward raster 128→128 1x1 (1 taps)`.
    pub what: String,
    pub flops: f64,
}

/// Bytes of one uniform slot of a [`Program`]: every kernel's uniform block fits (checked by `tests/interface.rs`
/// and at every dispatch).
pub const UNIFORM_BYTES: usize = 64;

struct Step {
    pipeline: Arc<Pipeline>,
    views: Vec<View>,
    uniform: [u8; UNIFORM_BYTES],
    workgroups: [u32; 2],
    bind_group: usize,
    label: Label,
}

#[derive(Default)]
pub struct Program {
    steps: Vec<Step>,
    uniform_buffer: Option<wgpu::Buffer>,
    uniform_stride: usize,
    bind_groups: Vec<wgpu::BindGroup>,
}

/// `groups` workgroups spread over x and y so that no dimension exceeds 65,535 (kernels linearise them).
pub fn workgroups_for(groups: usize) -> [u32; 2] {
    let groups = groups.max(1);
    let y = groups.div_ceil(65_535);
    [groups.div_ceil(y) as u32, y as u32]
}

/// One line of a profile: a kernel and layer shape, its dispatches in one step, their time and FLOPs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProfileLine {
    pub kernel: String,
    pub dispatches: usize,
    pub seconds: f64,
    pub gflops_per_second: f64,
    /// GFLOP/s as a percentage of the adapter's measured multiply-add peak (`bench peak`), once a bench sets it.
    pub percent_of_peak: f64,
}

impl Program {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a dispatch of `pipeline` over `groups` workgroups with `views` bound to its storage bindings (in
    /// the pipeline's binding order); returns its index (for [`Program::set_uniform`]).
    pub fn dispatch(
        &mut self,
        pipeline: Arc<Pipeline>,
        views: Vec<View>,
        uniform: &[u8],
        groups: usize,
        label: Label,
    ) -> usize {
        assert!(self.uniform_buffer.is_none(), "program already finished");
        assert_eq!(
            views.len(),
            pipeline.bindings.len(),
            "kernel {} takes {} buffers",
            pipeline.name,
            pipeline.bindings.len()
        );
        assert!(
            uniform.len() <= UNIFORM_BYTES,
            "uniform block of {} exceeds the slot",
            pipeline.name
        );
        let mut block = [0u8; UNIFORM_BYTES];
        block[..uniform.len()].copy_from_slice(uniform);
        self.steps.push(Step {
            pipeline,
            views,
            uniform: block,
            workgroups: workgroups_for(groups),
            bind_group: 0,
            label,
        });
        self.steps.len() - 1
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The names of the kernels of every dispatch, in order (for tests and reports).
    pub fn kernels(&self) -> Vec<&str> {
        self.steps.iter().map(|s| s.pipeline.entry.as_str()).collect()
    }

    /// Uploads the uniform blocks and creates the bind groups (shared between dispatches with the same buffers).
    pub fn finish(&mut self, gpu: &Gpu) {
        let stride = UNIFORM_BYTES.next_multiple_of(gpu.limits.min_uniform_buffer_offset_alignment as usize);
        let mut bytes = vec![0u8; stride * self.steps.len().max(1)];
        for (i, s) in self.steps.iter().enumerate() {
            bytes[i * stride..][..UNIFORM_BYTES].copy_from_slice(&s.uniform);
        }
        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("uniforms"),
            size: bytes.len() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        gpu.queue.write_buffer(&buffer, 0, &bytes);
        // (kernel, [(tensor id, offset, len)]) → bind group index.
        type Key = (String, Vec<(u64, usize, usize)>);
        let mut cache: HashMap<Key, usize> = HashMap::new();
        for s in &mut self.steps {
            let key = (
                s.pipeline.name.clone(),
                s.views.iter().map(|v| (v.tensor.id, v.offset, v.len)).collect(),
            );
            s.bind_group = *cache.entry(key).or_insert_with(|| {
                let mut entries = vec![wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &buffer,
                        offset: 0,
                        size: std::num::NonZeroU64::new(UNIFORM_BYTES as u64),
                    }),
                }];
                for (&(binding, _), v) in s.pipeline.bindings.iter().zip(&s.views) {
                    entries.push(wgpu::BindGroupEntry {
                        binding,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &v.tensor.buffer,
                            offset: (v.offset * 4) as u64,
                            size: std::num::NonZeroU64::new((v.len * 4) as u64),
                        }),
                    });
                }
                self.bind_groups
                    .push(gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some(&s.pipeline.name),
                        layout: &s.pipeline.layout,
                        entries: &entries,
                    }));
                self.bind_groups.len() - 1
            });
        }
        self.uniform_buffer = Some(buffer);
        self.uniform_stride = stride;
    }

    /// Replaces the uniform block of dispatch `step` (e.g. Adam's step size), visible to the next submit.
    pub fn set_uniform(&self, gpu: &Gpu, step: usize, uniform: &[u8]) {
        let buffer = self.uniform_buffer.as_ref().expect("finish() the program first");
        gpu.queue
            .write_buffer(buffer, (step * self.uniform_stride) as u64, uniform);
    }

    /// Records dispatches `range` into one compute pass.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder, range: std::ops::Range<usize>) {
        assert!(self.uniform_buffer.is_some(), "finish() the program first");
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: None,
            timestamp_writes: None,
        });
        for i in range {
            let s = &self.steps[i];
            pass.set_pipeline(
                s.pipeline
                    .pipeline
                    .as_ref()
                    .expect("a dry-run program cannot be encoded"),
            );
            pass.set_bind_group(0, &self.bind_groups[s.bind_group], &[(i * self.uniform_stride) as u32]);
            pass.dispatch_workgroups(s.workgroups[0], s.workgroups[1], 1);
        }
    }

    /// Submits the dispatches `range` (one command buffer, one compute pass) without waiting.
    pub fn submit_range(&self, gpu: &Gpu, range: std::ops::Range<usize>) -> wgpu::SubmissionIndex {
        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("program") });
        self.encode(&mut encoder, range);
        gpu.queue.submit([encoder.finish()])
    }

    /// Runs every dispatch on its own and waits for it, summing the wall time per kernel and layer shape (for
    /// tuning; the submit-and-wait overhead of each dispatch is included). Sorted by time, largest first.
    pub fn profile(&self, gpu: &Gpu) -> anyhow::Result<Vec<ProfileLine>> {
        let start = std::time::Instant::now();
        self.profile_by(gpu, || start.elapsed().as_secs_f64())
    }

    /// [`Program::profile`] with another clock (seconds from any origin), e.g. the process's CPU time, which other
    /// processes on a shared machine disturb less than wall time does (for tuning experiments).
    pub fn profile_by(&self, gpu: &Gpu, clock: impl Fn() -> f64) -> anyhow::Result<Vec<ProfileLine>> {
        let mut totals: Vec<(String, f64, usize, f64)> = Vec::new();
        for i in 0..self.steps.len() {
            let t = clock();
            self.submit_range(gpu, i..i + 1);
            gpu.wait()?;
            let dt = clock() - t;
            let label = &self.steps[i].label;
            let what = if label.what.is_empty() {
                self.steps[i].pipeline.name.clone()
            } else {
                label.what.clone()
            };
            match totals.iter_mut().find(|e| e.0 == what) {
                Some(e) => {
                    e.1 += dt;
                    e.2 += 1;
                    e.3 += label.flops;
                }
                None => totals.push((what, dt, 1, label.flops)),
            }
        }
        totals.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(totals
            .into_iter()
            .map(|(kernel, seconds, dispatches, flops)| ProfileLine {
                kernel,
                dispatches,
                seconds,
                gflops_per_second: flops / seconds.max(1e-12) / 1e9,
                percent_of_peak: 0.0,
            })
            .collect())
    }

    /// Submits the whole program without waiting.
    pub fn submit(&self, gpu: &Gpu) -> wgpu::SubmissionIndex {
        self.submit_range(gpu, 0..self.steps.len())
    }
}
