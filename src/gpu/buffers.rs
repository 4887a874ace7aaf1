//! GPU memory: tensors (storage buffers of vec4<f32>), uploads, readbacks, and the parameter layout on the GPU.
//!
//! Every GPU tensor is an array of `vec4<f32>`: channel counts are padded to a multiple of 4 so that kernels can
//! use vector loads everywhere. Activations are `[positions, C4]` (C4 = channels rounded up to 4, padding lanes
//! zero); a conv's parameter block is `[T * Cin4 + 1, Cout4]` scalar rows (live taps × padded input channels, then
//! the bias), each row `Cout4` floats. Padding entries are zero and receive zero gradients, so they stay zero.

use super::Gpu;
use crate::model::{Network, PARAM_ALIGN};
use anyhow::{anyhow, ensure, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Rounds a channel count up to the vector width.
pub fn pad4(c: usize) -> usize {
    c.div_ceil(4) * 4
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A storage buffer of f32 values (a multiple of 4 of them), with an identity for bind-group caching.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub id: u64,
    pub buffer: Arc<wgpu::Buffer>,
    /// Length in f32s.
    pub len: usize,
}

/// A byte range of a tensor, as bound to one kernel binding.
#[derive(Clone, Debug)]
pub struct View {
    pub tensor: Tensor,
    /// Offset and length in f32s; the offset is a multiple of [`PARAM_ALIGN`] (256 bytes).
    pub offset: usize,
    pub len: usize,
}

impl Tensor {
    pub fn view(&self) -> View {
        View {
            tensor: self.clone(),
            offset: 0,
            len: self.len,
        }
    }

    pub fn slice(&self, offset: usize, len: usize) -> View {
        assert!(offset.is_multiple_of(PARAM_ALIGN) && offset + len <= self.len && len.is_multiple_of(4));
        View {
            tensor: self.clone(),
            offset,
            len,
        }
    }

    pub fn bytes(&self) -> u64 {
        (self.len * 4) as u64
    }
}

impl Gpu {
    /// A zero-filled storage tensor of `len` floats. Refuses sizes the adapter cannot bind, with a clear error
    /// rather than a wgpu panic.
    pub fn tensor(&self, label: &str, len: usize) -> Result<Tensor> {
        let len = pad4(len.max(4));
        let bytes = (len * 4) as u64;
        let max = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size);
        ensure!(
            bytes <= max,
            "GPU buffer `{label}` needs {:.1} MiB but this adapter binds at most {:.1} MiB per buffer; use a smaller --batch-size (or --count)",
            bytes as f64 / 1048576.0,
            max as f64 / 1048576.0
        );
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::UNIFORM
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Ok(Tensor {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            buffer: Arc::new(buffer),
            len,
        })
    }

    /// A tensor holding `data` (padded with zeros to a multiple of 4).
    pub fn upload(&self, label: &str, data: &[f32]) -> Result<Tensor> {
        let t = self.tensor(label, data.len())?;
        self.write(&t, 0, data);
        Ok(t)
    }

    /// Writes `data` at float offset `offset` (queued; visible to the next submit).
    pub fn write(&self, t: &Tensor, offset: usize, data: &[f32]) {
        let mut bytes: Vec<u8> = bytemuck::cast_slice(data).to_vec();
        bytes.resize(bytes.len().div_ceil(4) * 4, 0);
        self.queue.write_buffer(&t.buffer, (offset * 4) as u64, &bytes);
    }

    /// Copies `len` floats from `offset` back to the host (waits for all submitted work).
    pub fn read_range(&self, t: &Tensor, offset: usize, len: usize) -> Result<Vec<f32>> {
        let size = (pad4(len) * 4) as u64;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("readback"),
        });
        encoder.copy_buffer_to_buffer(&t.buffer, (offset * 4) as u64, &staging, 0, size);
        self.queue.submit([encoder.finish()]);
        let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        pollster::block_on(rx.receive())
            .ok_or_else(|| anyhow!("GPU readback was cancelled"))?
            .map_err(|e| anyhow!("GPU readback failed: {e}"))?;
        let view = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| anyhow!("GPU readback failed: {e:?}"))?;
        let out = bytemuck::cast_slice::<u8, f32>(&view)[..len].to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }

    pub fn read(&self, t: &Tensor) -> Result<Vec<f32>> {
        self.read_range(t, 0, t.len)
    }
}

/// Where each conv's block lives in the flat GPU parameter vector (padded channels, aligned blocks).
#[derive(Clone, Debug)]
pub struct GpuParamLayout {
    pub offsets: Vec<usize>,
    /// Floats in each block: `(T * Cin4 + 1) * Cout4`.
    pub lens: Vec<usize>,
    pub total: usize,
}

impl GpuParamLayout {
    pub fn new(net: &Network) -> Self {
        let mut offsets = Vec::new();
        let mut lens = Vec::new();
        let mut total = 0;
        for c in &net.convs {
            let len = (c.taps.len() * pad4(c.cin) + 1) * pad4(c.cout);
            offsets.push(total);
            lens.push(len);
            total += len.div_ceil(PARAM_ALIGN) * PARAM_ALIGN;
        }
        GpuParamLayout { offsets, lens, total }
    }

    /// CPU layout (model.rs) → GPU layout.
    pub fn pack(&self, net: &Network, cpu: &[f32]) -> Vec<f32> {
        let mut gpu = vec![0.0; self.total];
        for (i, c) in net.convs.iter().enumerate() {
            let (cin4, cout4) = (pad4(c.cin), pad4(c.cout));
            let src = net.block(cpu, i);
            let dst = &mut gpu[self.offsets[i]..][..self.lens[i]];
            for t in 0..c.taps.len() {
                for ci in 0..c.cin {
                    for co in 0..c.cout {
                        dst[(t * cin4 + ci) * cout4 + co] = src[(t * c.cin + ci) * c.cout + co];
                    }
                }
            }
            for co in 0..c.cout {
                dst[c.taps.len() * cin4 * cout4 + co] = src[c.weight_rows() * c.cout + co];
            }
        }
        gpu
    }

    /// GPU layout → CPU layout (padding dropped).
    pub fn unpack(&self, net: &Network, gpu: &[f32]) -> Vec<f32> {
        let mut cpu = vec![0.0; net.param_len];
        for (i, c) in net.convs.iter().enumerate() {
            let (cin4, cout4) = (pad4(c.cin), pad4(c.cout));
            let src = &gpu[self.offsets[i]..][..self.lens[i]];
            let dst = net.block_mut(&mut cpu, i);
            for t in 0..c.taps.len() {
                for ci in 0..c.cin {
                    for co in 0..c.cout {
                        dst[(t * c.cin + ci) * c.cout + co] = src[(t * cin4 + ci) * cout4 + co];
                    }
                }
            }
            for co in 0..c.cout {
                dst[c.weight_rows() * c.cout + co] = src[c.taps.len() * cin4 * cout4 + co];
            }
        }
        cpu
    }
}

/// Activations `[positions, C]` (CPU layout) → `[positions, C4]` (GPU layout).
pub fn pad_channels(data: &[f32], channels: usize) -> Vec<f32> {
    let c4 = pad4(channels);
    if c4 == channels {
        return data.to_vec();
    }
    let mut out = vec![0.0; data.len() / channels * c4];
    for (src, dst) in data.chunks(channels).zip(out.chunks_mut(c4)) {
        dst[..channels].copy_from_slice(src);
    }
    out
}

/// `[positions, C4]` → `[positions, C]`.
pub fn unpad_channels(data: &[f32], channels: usize) -> Vec<f32> {
    let c4 = pad4(channels);
    data.chunks(c4)
        .flat_map(|row| row[..channels].iter().copied())
        .collect()
}
