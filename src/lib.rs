//! pixelcnn: PixelCNNs (the seed's network and the Gated PixelCNN, optionally class-conditional) on binarized
//! Fashion-MNIST, trained and sampled in WGSL compute shaders through wgpu, with a plain CPU reference that every
//! kernel is tested against.

pub mod baselines;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod cpu;
pub mod data;
pub mod device;
pub mod dir_lock;
pub mod download;
pub mod evaluate;
pub mod fsio;
pub mod gpu;
pub mod grid;
pub mod image_out;
pub mod inspect;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod rng;
pub mod runtime_dir;
pub mod sampling;
pub mod train;
