// sample.wgsl — the Bernoulli draw of one pixel for every image of a batch, on the GPU.
//
// Entry point `sample_pixel`, for images i < count at raster pixel q, with at = i·PIXELS + q (image-major, the naive
// sampler) or q·stride + i (position-major, the incremental sampler; stride = its padded image count):
//     p = σ(logits[at] / temperature);  u = uniform(key, first_image + i, q);  image[at] = (u < p ? 1 : 0);
//     probs[i·PIXELS + q] = p
// uniform_draw() (in the prelude) is the counter-based hash of src/rng.rs, so the CPU and GPU samplers draw
// identical numbers.
// Layouts: logits, image: vec4<f32> [count · PIXELS] (lane .x) in either order; probs: f32 [count · PIXELS].
// Bindings: 0 uniform SampleParams (dynamic offset), 1 logits (read), 2 image (read_write), 3 probs (read_write).
// Dispatch: one invocation per image; id = gid.x + gid.y · 64 · num_workgroups.x.

struct SampleParams {
    count: u32,
    pixel: u32,
    key: u32,
    first_image: u32,
    stride: u32,    // 0: image-major; else position-major with this many images per position
    temperature: f32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> prm: SampleParams;
@group(0) @binding(1) var<storage, read> logits: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> image: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> probs: array<f32>;

@compute @workgroup_size(64)
fn sample_pixel(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * 64u * nwg.x;
    if (i >= prm.count) {
        return;
    }
    let at = select(prm.pixel * prm.stride + i, i * PIXELS + prm.pixel, prm.stride == 0u);
    let p = 1.0 / (1.0 + exp(-(logits[at].x / prm.temperature)));
    let u = uniform_draw(prm.key, prm.first_image + i, prm.pixel);
    image[at] = vec4<f32>(select(0.0, 1.0, u < p), 0.0, 0.0, 0.0);
    probs[i * PIXELS + prm.pixel] = p;
}
