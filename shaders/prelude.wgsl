// prelude.wgsl — prepended by the host (src/gpu/shader.rs) to every kernel family: flags, the row ↔ position
// geometry, and small helpers. Nothing here is an entry point.
//
// Flags (bits of a kernel's `flags` uniform, or of its FLAGS pipeline constant in the conv and elementwise families).
// Each has one meaning everywhere; `gpu::kernels::prelude::flags` mirrors them and a test checks that both sides agree.
const FLAG_RELU: u32 = 1u;        // apply max(·, 0) to the result
const FLAG_ACCUMULATE: u32 = 2u;  // add the result to what the output already holds
const FLAG_RESIDUAL: u32 = 4u;    // also write result + residual (a fused residual add)
const FLAG_MASK: u32 = 8u;        // multiply the result by [y > 0] (the gradient through a ReLU whose output is y)
const FLAG_LOSS_GRAD: u32 = 16u;  // loss epilogue: write the gradient of the mean BCE instead of the logit
const FLAG_BIAS: u32 = 32u;       // add the bias (gates and class tables: there is one)
const FLAG_NO_OUTPUT: u32 = 64u;  // skip the plain output (only the fused sum is needed)

// The image shape: HEIGHT × WIDTH = PIXELS positions per image, in raster order. Pipeline constants that the host
// sets from the model for every kernel that maps positions (a division by a constant is a multiplication; by a
// uniform it is, on a CPU rasteriser, a scalar division per lane: see ORDER below).
const HEIGHT: u32 = 28u;
const WIDTH: u32 = 28u;
const PIXELS: u32 = 784u;

// Geometry: how a kernel's rows map to (image, pixel) and back to buffer positions.
//   IMAGE_MAJOR (training, evaluation, the naive sampler): row r is position r = image · PIXELS + pixel.
//   POSITION_MAJOR (the incremental sampler's caches, `images` per pixel): row r is image r % images at pixel
//   first_pixel + r / images, stored at position pixel · images + image, so one pixel (or a run of pixels) of
//   every image is contiguous.
const IMAGE_MAJOR: u32 = 0u;
const POSITION_MAJOR: u32 = 1u;

struct Geometry {
    rows: u32,
    images: u32,
    first_pixel: u32,
    order: u32,
}

// ORDER: the rows' order fixed when the pipeline is built (the conv and elementwise families set it from the same
// Geometry they pass in the uniform block), or ORDER_FROM_UNIFORM to read `order` at run time. A fixed order lets
// the shader compiler drop the other order's arithmetic: `select` computes both sides, and a division by the
// runtime `images` becomes, on a CPU rasteriser, one scalar division per lane (the default model's weight
// gradients, which map four positions per step, took 6% less time without them; a training step 3% less).
const ORDER_FROM_UNIFORM: u32 = 2u;
const ORDER: u32 = 2u;

fn image_major(g: Geometry) -> bool {
    return select(g.order == IMAGE_MAJOR, ORDER == IMAGE_MAJOR, ORDER != ORDER_FROM_UNIFORM);
}

fn row_image(g: Geometry, r: u32) -> u32 {
    return select(r % g.images, r / PIXELS, image_major(g));
}

fn row_pixel(g: Geometry, r: u32) -> u32 {
    return select(g.first_pixel + r / g.images, r % PIXELS, image_major(g));
}

fn position(g: Geometry, image: u32, pixel: u32) -> u32 {
    return select(pixel * g.images + image, image * PIXELS + pixel, image_major(g));
}

// The buffer position that tap offset (dy, dx) reads for (image, y, x), or -1 in the zero padding.
fn tap_source(g: Geometry, image: u32, y: i32, x: i32, dy: i32, dx: i32) -> i32 {
    let sy = y + dy;
    let sx = x + dx;
    let inside = sy >= 0 && sy < i32(HEIGHT) && sx >= 0 && sx < i32(WIDTH);
    return select(-1, i32(position(g, image, u32(max(sy, 0)) * WIDTH + u32(max(sx, 0)))), inside);
}

// Workgroups of a dispatch are linear over x and y (a grid wider than 65,535 workgroups wraps into y).
fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// Pixel `pos` of a u8 image buffer read as packed u32 words (4 pixels per word, little-endian).
fn byte_of(word: u32, pos: u32) -> f32 {
    return f32((word >> ((pos & 3u) * 8u)) & 0xffu);
}

fn sigmoid(z: f32) -> f32 {
    return 1.0 / (1.0 + exp(-z));
}

// The counter-based uniform draw of src/rng.rs (PCG-RXS-M-XS), so that the CPU and GPU samplers draw identical
// numbers: bits = pcg(pcg(key ^ pcg(image)) ^ pixel); u = (bits >> 8) / 2^24.
fn pcg(x: u32) -> u32 {
    let state = x * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

fn uniform_draw(key: u32, img: u32, pixel: u32) -> f32 {
    let bits = pcg(pcg(key ^ pcg(img)) ^ pixel);
    return f32(bits >> 8u) * (1.0 / 16777216.0);
}
