// elementwise.wgsl — the residual add and the ReLU gradient.
//
// Entry point `add`: out[p(r), c] = a[p(r), c] + b[p(r), c] for rows r < rows, vec4 columns c < c4.
//   Row → position as in conv.wgsl: r, or pixel·rows + r in single-pixel mode (pixel != 0xffffffff; the
//   sampler's position-major layout).
//   The residual's backward needs no kernel: both inputs receive the output's gradient (the host aliases them).
// Entry point `relu_backward`: out[i] = b[i] where a[i] > 0, else 0 (a = the layer's ReLU output y, b = dy),
//   for i < rows · c4 (pixel unused).
// Layouts: vec4<f32> [positions, c4]. Bindings: 0 uniform EltParams (dynamic offset), 1 a (read), 2 b (read),
//   3 out (read_write). Dispatch: one invocation per output vec4; id = gid.x + gid.y · 64 · num_workgroups.x.

struct EltParams {
    rows: u32,
    c4: u32,
    pixel: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> prm: EltParams;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> output: array<vec4<f32>>;

@compute @workgroup_size(64)
fn add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * 64u * nwg.x;
    let r = id / prm.c4;
    if (r >= prm.rows) {
        return;
    }
    var p = r;
    if (prm.pixel != 0xffffffffu) {
        p = prm.pixel * prm.rows + r;
    }
    let i = p * prm.c4 + id % prm.c4;
    output[i] = a[i] + b[i];
}

@compute @workgroup_size(64)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * 64u * nwg.x;
    if (i >= prm.rows * prm.c4) {
        return;
    }
    output[i] = select(vec4<f32>(0.0), b[i], a[i] > vec4<f32>(0.0));
}
