//! The adapter's own limits (`shaders/peak.wgsl`), for `pixelcnn bench peak`: its vec4 multiply-add rate over
//! independent register chains, and its storage-read bandwidth. Every benchmark states its speed as a percentage
//! of the first. CPU twin: `cpu::fma_peak` and `cpu::read_bandwidth` compute the same outputs (the test checks
//! that the GPU did the work it is timed for).

use super::{Family, Launch, Uniform};
use crate::gpu::buffers::View;
use crate::gpu::record::{Label, Program};
use crate::gpu::Gpu;
use anyhow::Result;

pub const FAMILY: Family = Family {
    name: "peak",
    source: include_str!("../../../shaders/peak.wgsl"),
    prepend: &[],
    uniforms: &[PeakParams::layout],
};

uniform_struct! {
    /// `PeakParams` of peak.wgsl.
    pub struct PeakParams {
        pub n: u32,
        pub iters: u32,
        pub m: f32,
        pub c: f32,
    }
}

bindings! {
    /// The buffers of both peak entry points.
    pub struct PeakViews {
        out: 1 ReadWrite,
        src: 2 Read,
    }
}

/// Independent multiply-add chains per invocation in `fma_peak`: the CPU twin's
/// [`PEAK_CHAINS`](crate::cpu::PEAK_CHAINS), which the reference defines so that it imports nothing from the GPU backend.
pub const CHAINS: u32 = crate::cpu::PEAK_CHAINS;

/// The multiplier and addend of every chain step (a contraction towards c / (1 − m), so values stay finite).
pub const FMA_M: f32 = 0.999;
pub const FMA_C: f32 = 0.001;

/// What one peak dispatch does.
#[derive(Clone, Copy, Debug)]
pub struct PeakRun {
    /// Invocations.
    pub n: usize,
    /// Loop trips: 4 · CHAINS vec4 fmas each (`fma_peak`) or one vec4 load (`read_bandwidth`).
    pub iters: usize,
    /// Invocations per workgroup.
    pub workgroup: u32,
}

impl PeakRun {
    /// FLOPs of `fma_peak`.
    pub fn flops(&self) -> f64 {
        self.n as f64 * self.iters as f64 * 4.0 * CHAINS as f64 * 4.0 * 2.0
    }

    /// Bytes `read_bandwidth` reads.
    pub fn bytes(&self) -> f64 {
        self.n as f64 * self.iters as f64 * 16.0
    }

    fn uniform(&self) -> PeakParams {
        PeakParams {
            n: self.n as u32,
            iters: self.iters as u32,
            m: FMA_M,
            c: FMA_C,
        }
    }
}

/// `entry` ("fma_peak" or "read_bandwidth") over `run`.
pub fn peak(gpu: &Gpu, p: &mut Program, entry: &'static str, views: PeakViews, run: PeakRun) -> Result<()> {
    Launch {
        family: FAMILY.name,
        entry,
        consts: &[("WG", run.workgroup), ("CHAINS", CHAINS)],
        views,
        uniform: run.uniform(),
        workgroups: run.n.div_ceil(run.workgroup as usize),
        label: Label {
            what: format!("{entry} WG={}", run.workgroup),
            flops: if entry == "fma_peak" { run.flops() } else { 0.0 },
        },
    }
    .record(gpu, p)?;
    Ok(())
}

/// The views of a peak run: `out` of `n` vec4s, `src` of `n · iters` vec4s (read_bandwidth) or any buffer.
pub fn views(out: View, src: View) -> PeakViews {
    PeakViews { out, src }
}
