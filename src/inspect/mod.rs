//! Looking inside a model: what `sample --animate`, `receptive-field`, `score`, `complete --image` and the
//! per-epoch sample grids of `train` compute and draw.
//!
//! * [`animation`]: the sample grid as the sampler draws it, pixel by pixel in raster order, as an animated GIF.
//! * [`receptive_field`]: which input pixels can change the prediction at one pixel, from the model's own backward
//!   pass (the CPU reference's input gradient), with the blind spot of the plain network.
//! * [`score`]: a user's images under the model: NLL, bits/dim, each pixel's surprise −log p(x_q | past) and, for
//!   a class-conditional model, p(y | x).
//! * [`user_image`]: reading a user's image file (any size, grey or colour) into a binarized 28×28 image, the way
//!   the data set is binarized.
//! * [`epoch_samples`]: the small sample grid `train` writes at the end of every epoch.
//! * [`draw`]: colour canvases, text, colour maps and legends for the pictures above.

pub mod animation;
pub mod draw;
pub mod epoch_samples;
pub mod receptive_field;
pub mod score;
pub mod user_image;
