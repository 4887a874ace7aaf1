//! Recording dispatches. A [`Program`] is a list of kernel dispatches with their buffers and uniform blocks; once
//! finished it owns one uniform buffer (every dispatch's block at its own dynamic offset) and a cached bind group
//! per distinct set of buffers, so a program can be encoded again and again (every training step, every pixel of
//! the sampler) with no allocation beyond the command buffer.

use super::buffers::View;
use super::kernels::Pipeline;
use super::Gpu;
use std::collections::HashMap;
use std::sync::Arc;

/// Bytes of every uniform block (each kernel's parameter struct is at most this big).
pub const UNIFORM_BYTES: usize = 64;

struct Step {
    pipeline: Arc<Pipeline>,
    views: Vec<View>,
    uniform: [u8; UNIFORM_BYTES],
    workgroups: [u32; 2],
    bind_group: usize,
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

impl Program {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a dispatch of `pipeline` over `groups` workgroups; returns its index (for [`Program::set_uniform`]).
    pub fn dispatch(&mut self, pipeline: Arc<Pipeline>, views: Vec<View>, uniform: &[u8], groups: usize) -> usize {
        assert!(self.uniform_buffer.is_none(), "program already finished");
        assert_eq!(
            views.len(),
            pipeline.storage.len(),
            "kernel {} takes {} buffers",
            pipeline.name,
            pipeline.storage.len()
        );
        let mut block = [0u8; UNIFORM_BYTES];
        block[..uniform.len()].copy_from_slice(uniform);
        self.steps.push(Step {
            pipeline,
            views,
            uniform: block,
            workgroups: workgroups_for(groups),
            bind_group: 0,
        });
        self.steps.len() - 1
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
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
                for (i, v) in s.views.iter().enumerate() {
                    entries.push(wgpu::BindGroupEntry {
                        binding: i as u32 + 1,
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
            pass.set_pipeline(&s.pipeline.pipeline);
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

    /// Runs every dispatch on its own and waits for it, summing the wall time per kernel (for tuning; the
    /// submit-and-wait overhead of each dispatch is included).
    pub fn profile(&self, gpu: &Gpu) -> anyhow::Result<Vec<(String, f64, usize)>> {
        let mut totals: Vec<(String, f64, usize)> = Vec::new();
        for i in 0..self.steps.len() {
            let t = std::time::Instant::now();
            self.submit_range(gpu, i..i + 1);
            gpu.wait()?;
            let dt = t.elapsed().as_secs_f64();
            let name = &self.steps[i].pipeline.name;
            match totals.iter_mut().find(|(n, _, _)| n == name) {
                Some(e) => {
                    e.1 += dt;
                    e.2 += 1;
                }
                None => totals.push((name.clone(), dt, 1)),
            }
        }
        totals.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(totals)
    }

    /// Submits the whole program without waiting.
    pub fn submit(&self, gpu: &Gpu) -> wgpu::SubmissionIndex {
        self.submit_range(gpu, 0..self.steps.len())
    }
}
