//! GPU memory: storage buffers of 32-bit words (f32 activations and parameters, or packed u8 images), uploads and
//! readbacks. Every allocation goes through [`Gpu::tensor`], which refuses sizes the adapter cannot bind with a
//! clear error, and counts the bytes it allocated.
//!
//! Activations are `[positions, C4]` vec4 arrays (C4 = channels rounded up to 4 per channel group, padding lanes
//! zero); the parameter vector follows the GPU layout of the network's [`ParamTable`](crate::model::ParamTable).

use super::Gpu;
use crate::model::{pad4, PARAM_ALIGN};
use anyhow::{anyhow, ensure, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh tensor identity.
pub fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// A storage buffer of 32-bit words (a multiple of 4 of them), with an identity for bind-group caching.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub id: u64,
    pub buffer: Arc<wgpu::Buffer>,
    /// Length in 32-bit words.
    pub len: usize,
}

/// A range of a tensor, as bound to one kernel binding.
#[derive(Clone, Debug)]
pub struct View {
    pub tensor: Tensor,
    /// Offset and length in words; the offset is a multiple of [`PARAM_ALIGN`] (256 bytes).
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
        assert!(
            offset.is_multiple_of(PARAM_ALIGN) && offset + len <= self.len && len.is_multiple_of(4),
            "slice {offset}+{len} of a tensor of {}",
            self.len
        );
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
    /// A zero-filled storage tensor of `len` words. Refuses sizes the adapter cannot bind, with a clear error
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
        self.allocated.fetch_add(bytes, Ordering::Relaxed);
        Ok(Tensor {
            id: next_id(),
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

    /// Writes `data` at word offset `offset` (queued; visible to the next submit).
    pub fn write(&self, t: &Tensor, offset: usize, data: &[f32]) {
        self.write_bytes(t, offset * 4, bytemuck::cast_slice(data));
    }

    /// Writes raw bytes at byte offset `offset` (u8 images, u32 labels), padded to a multiple of 4.
    pub fn write_bytes(&self, t: &Tensor, offset: usize, data: &[u8]) {
        let mut bytes = data.to_vec();
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        self.queue.write_buffer(&t.buffer, offset as u64, &bytes);
    }

    /// Copies `len` words from `offset` back to the host (waits for all submitted work).
    pub fn read_range(&self, t: &Tensor, offset: usize, len: usize) -> Result<Vec<f32>> {
        let size = (pad4(len.max(1)) * 4) as u64;
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

/// Activations `[positions, C]` (CPU layout) → `[positions, C4]` (GPU layout of a 1-group activation).
pub fn pad_channels(data: &[f32], channels: usize) -> Vec<f32> {
    pad_groups(data, channels, 1)
}

/// `[positions, C4]` → `[positions, C]`.
pub fn unpad_channels(data: &[f32], channels: usize) -> Vec<f32> {
    unpad_groups(data, channels, 1)
}

/// `[positions, C]` with C split into `groups` equal groups → each group padded to a multiple of 4.
pub fn pad_groups(data: &[f32], channels: usize, groups: usize) -> Vec<f32> {
    let per = channels / groups;
    let stride = groups * pad4(per);
    let positions = data.len() / channels;
    let mut out = vec![0.0; positions * stride];
    for p in 0..positions {
        for g in 0..groups {
            out[p * stride + g * pad4(per)..][..per].copy_from_slice(&data[p * channels + g * per..][..per]);
        }
    }
    out
}

/// Inverse of [`pad_groups`].
pub fn unpad_groups(data: &[f32], channels: usize, groups: usize) -> Vec<f32> {
    let per = channels / groups;
    let stride = groups * pad4(per);
    let positions = data.len() / stride;
    let mut out = Vec::with_capacity(positions * channels);
    for p in 0..positions {
        for g in 0..groups {
            out.extend_from_slice(&data[p * stride + g * pad4(per)..][..per]);
        }
    }
    out
}
