//! pixelcnn: PixelCNNs (the seed's network and the Gated PixelCNN, optionally class-conditional) on binarized
//! Fashion-MNIST, trained and sampled in WGSL compute shaders through wgpu, with a plain CPU reference that every
//! kernel is tested against.

pub mod baselines;
pub mod bench;
pub mod checkpoint;
pub mod cpu;
pub mod data;
pub mod download;
pub mod evaluate;
pub mod gpu;
pub mod grid;
pub mod inspect;
pub mod model;
pub mod plot;
pub mod rng;
pub mod sampling;
pub mod train;
pub mod util;
