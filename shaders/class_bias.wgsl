// class_bias.wgsl — class conditioning: the per-image bias table and the deterministic per-class gradient sum.
//
// Entry points (c < c4 vec4 columns, i < images, y < classes):
//   class_bias_add       table[i, c] = [bias[c] +] class_bias[labels[i], c]       (bias only with FLAG_BIAS)
//     A conditional conv or gate then reads its bias per image from `table` (bias_stride = c4).
//   image_sums           sums[i, c] = Σ_{q < PIXELS} grad[i · PIXELS + q, c]            (image-major, in pixel order)
//   class_bias_backward  out[y, c] = Σ_{i with labels[i] = y} sums[i, c]        (in image order)
//   Two passes in a fixed order, no float atomics: the same inputs give the same bits.
// Layouts: vec4<f32> [rows, c4]; labels: u32 per image. Bindings: 0 uniform ClassParams (dynamic offset),
//   1 a (read: bias, grad or sums), 2 class_bias (read), 3 labels (read), 4 out (read_write).
// Dispatch: one invocation per output vec4, 64 per workgroup, linear over x and y.

struct ClassParams {
    images: u32,
    c4: u32,
    classes: u32,
    flags: u32,
}

@group(0) @binding(0) var<uniform> prm: ClassParams;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> class_bias: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> labels: array<u32>;
@group(0) @binding(4) var<storage, read_write> output: array<vec4<f32>>;

@compute @workgroup_size(64)
fn class_bias_add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * 64u * nwg.x;
    if (id >= prm.images * prm.c4) {
        return;
    }
    let i = id / prm.c4;
    let c = id % prm.c4;
    var v = class_bias[min(labels[i], prm.classes - 1u) * prm.c4 + c];
    if ((prm.flags & FLAG_BIAS) != 0u) {
        v = a[c] + v;
    }
    output[id] = v;
}

@compute @workgroup_size(64)
fn image_sums(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * 64u * nwg.x;
    if (id >= prm.images * prm.c4) {
        return;
    }
    let i = id / prm.c4;
    let c = id % prm.c4;
    var acc = vec4<f32>(0.0);
    for (var q = 0u; q < PIXELS; q++) {
        acc += a[(i * PIXELS + q) * prm.c4 + c];
    }
    output[id] = acc;
}

@compute @workgroup_size(64)
fn class_bias_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * 64u * nwg.x;
    if (id >= prm.classes * prm.c4) {
        return;
    }
    let y = id / prm.c4;
    let c = id % prm.c4;
    var acc = vec4<f32>(0.0);
    for (var i = 0u; i < prm.images; i++) {
        if (labels[i] == y) {
            acc += a[i * prm.c4 + c];
        }
    }
    output[id] = acc;
}
