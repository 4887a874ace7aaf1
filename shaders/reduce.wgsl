// reduce.wgsl — deterministic sums: each output is summed by one invocation in a fixed order.
//
// Entry point `reduce_chunks`: s[i] = Σ_{c < n_chunks} in[c · len + i] for i < len vec4s, written to out0[i] for
//   i < split and to out1[i − split] after (+ what is there with FLAG_ACCUMULATE). Pass 2 of a weight gradient:
//   `in` holds one partial sum per chunk of positions, out0 the weight's gradient and out1 its bias's.
// Entry point `sum_images`: out[i] = (Σ_{j<PIXELS} in[4i·PIXELS + j], ..., for images 4i..4i+3) (+= with
//   FLAG_ACCUMULATE): each image's NLL from the per-pixel BCE (in = PIXELS floats per image). When PIXELS is a
//   multiple of 4 an image is PIXELS / 4 whole vec4s, summed lane-wise (784: 196); otherwise images straddle
//   vec4s and it sums the floats one by one, in pixel order.
// Layouts: vec4<f32> arrays. Bindings: 0 uniform ReduceParams (dynamic offset), 1 in (read), 2 out0 (read_write),
//   3 out1 (read_write; reduce_chunks only). Dispatch: one invocation per output vec4, 64 per workgroup, linear
//   over x and y.

struct ReduceParams {
    len: u32,        // reduce_chunks: vec4s per chunk; sum_images: output vec4s
    n_chunks: u32,   // reduce_chunks: chunks; sum_images: number of images
    flags: u32,
    split: u32,      // reduce_chunks: vec4s that go to out0
}

@group(0) @binding(0) var<uniform> prm: ReduceParams;
@group(0) @binding(1) var<storage, read> input: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out0: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out1: array<vec4<f32>>;

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
    let acc_ = (prm.flags & FLAG_ACCUMULATE) != 0u;
    if (i < prm.split) {
        if (acc_) {
            acc += out0[i];
        }
        out0[i] = acc;
    } else {
        if (acc_) {
            acc += out1[i - prm.split];
        }
        out1[i - prm.split] = acc;
    }
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
            if (PIXELS % 4u == 0u) {
                var acc = vec4<f32>(0.0);
                for (var q = 0u; q < PIXELS / 4u; q++) {
                    acc += input[image * (PIXELS / 4u) + q];
                }
                out[j] = acc.x + acc.y + acc.z + acc.w;
            } else {
                var acc = 0.0;
                for (var q = image * PIXELS; q < (image + 1u) * PIXELS; q++) {
                    acc += input[q / 4u][q % 4u];
                }
                out[j] = acc;
            }
        }
    }
    if ((prm.flags & FLAG_ACCUMULATE) != 0u) {
        out += out0[i];
    }
    out0[i] = out;
}
