//! Which backend runs the math: the `--device` of the commands that train, evaluate, sample and score.

/// Which backend runs the math.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Device {
    /// WGSL compute shaders through wgpu (Vulkan, Metal, DX12).
    Gpu,
    /// The plain Rust reference (slow; for tests and machines without any GPU driver).
    Cpu,
}
