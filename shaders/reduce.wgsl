// reduce.wgsl — deterministic sums: each output is summed by one invocation in a fixed order.
//
// Entry point `reduce_chunks`: out[i] = Σ_{c < n_chunks} in[c · len + i]   (+ out[i] if ACCUMULATE)
//   Pass 2 of the weight gradient (in = partial sums per chunk, out = the conv's block in the gradient vector).
// Entry point `sum_images`: out[i] = (Σ_{j<784} in[4i·784 + j], ..., for images 4i..4i+3)   (+ out[i] if ACCUMULATE)
//   Per-image NLL from per-pixel BCE (in = 784 floats per image, viewed as 196 vec4s).
// Layouts: vec4<f32> arrays. Bindings: 0 uniform ReduceParams (dynamic offset), 1 in (read), 2 out (read_write).
// Dispatch: one invocation per output vec4; id = gid.x + gid.y · 64 · num_workgroups.x.

struct ReduceParams {
    len: u32,        // output vec4s
    n_chunks: u32,   // reduce_chunks: chunks; sum_images: number of images
    flags: u32,      // 1: accumulate
    _pad: u32,
}

@group(0) @binding(0) var<uniform> prm: ReduceParams;
@group(0) @binding(1) var<storage, read> input: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> output: array<vec4<f32>>;

@compute @workgroup_size(64)
fn reduce_chunks(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * 64u * nwg.x;
    if (i >= prm.len) {
        return;
    }
    var acc = vec4<f32>(0.0);
    for (var c = 0u; c < prm.n_chunks; c++) {
        acc += input[c * prm.len + i];
    }
    if ((prm.flags & 1u) != 0u) {
        acc += output[i];
    }
    output[i] = acc;
}

@compute @workgroup_size(64)
fn sum_images(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * 64u * nwg.x;
    if (i >= prm.len) {
        return;
    }
    var out = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        let image = i * 4u + j;
        if (image < prm.n_chunks) {
            var acc = vec4<f32>(0.0);
            for (var q = 0u; q < 196u; q++) {
                acc += input[image * 196u + q];
            }
            out[j] = acc.x + acc.y + acc.z + acc.w;
        }
    }
    if ((prm.flags & 1u) != 0u) {
        out += output[i];
    }
    output[i] = out;
}
