// elementwise.wgsl — the layers and gradients that are not convolutions: residual add, ReLU, the gated unit.
//
// Entry points, for rows r < geo.rows (positions through the prelude's Geometry) and vec4 columns c < c4:
//   add            out[o] = a[o] + b[o]
//   accumulate     out[o] = a[o]                  (+ out[o] with FLAG_ACCUMULATE): a gradient reaching an input
//   relu_forward   out[o] = max(a[o], 0)
//   relu_backward  out[o] = a[o] > 0 ? b[o] : 0   (+ out[o] with FLAG_ACCUMULATE): a = the ReLU's output y, b = dy
//   gate_forward   out[p, c] = tanh(z[p, c] + β[c]) · σ(z[p, h + c] + β[h + c])     (c < c4 = h, the half width)
//   gate_backward  dz[p, c] = d · (1 − t²) · s,  dz[p, h + c] = d · t · s · (1 − s)  (t, s as above, d = dout)
//   dropout        out[o] = a[o] · keep / (1 − rate)   (+ out[o] with FLAG_ACCUMULATE), image-major rows only:
//                  lane l of vec4 o is kept when uniform_draw(key, o, l) ≥ rate, rate = DROP_PERCENT / 100, key =
//                  the first word of c_in (the training step's, written before each step). Forward and backward alike.
//   where z = a, β = b[image · bias_stride] (the class bias, only with FLAG_BIAS), dout = c_in, and o = position ·
//   c4 + c. The gate's input keeps each half padded to h vec4s (the GPU layout of 2-group activations), so both
//   halves are whole vec4s.
// Layouts: vec4<f32> [positions, channels4]. Bindings: 0 uniform EltParams (dynamic offset; the flags are the
//   FLAGS pipeline constant, the rows' order the prelude's ORDER), 1 a (read), 2 b (read), 3 out (read_write),
//   4 c_in (read). Dispatch: one invocation per output vec4 (rows · c4), 64 per workgroup, linear over x and y.

struct EltParams {
    geo: Geometry,
    c4: u32,
    bias_stride: u32,
    _pad0: u32,
    _pad1: u32,
}

// The FLAG_* bits of this dispatch, fixed when the pipeline is built rather than read from the uniform block: a CPU
// rasteriser runs both sides of every branch under an execution mask, so a dead `if` around a load still costs its
// loop over the lanes (see conv_common.wgsl).
const FLAGS: u32 = 0u;

@group(0) @binding(0) var<uniform> prm: EltParams;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> output: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> c_in: array<vec4<f32>>;

// Dropout's rate in percent, fixed when the pipeline is built (a network's dropout never changes).
const DROP_PERCENT: u32 = 0u;

// The invocation's number, linear over x and y.
fn invocation(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * 64u * nwg.x;
}

// (row, column) of the invocation, or rows past the end.
fn row_of(gid: vec3<u32>, nwg: vec3<u32>) -> vec2<u32> {
    let id = invocation(gid, nwg);
    return vec2<u32>(id / prm.c4, id % prm.c4);
}

fn index_of(rc: vec2<u32>) -> u32 {
    let g = prm.geo;
    return position(g, row_image(g, rc.x), row_pixel(g, rc.x)) * prm.c4 + rc.y;
}

const PAST_THE_END: u32 = 0xffffffffu;

// The buffer index of invocation `id`'s vec4, or PAST_THE_END. Image-major rows are the positions themselves, so
// the index is the invocation's own number, with no division by the runtime c4 (which a CPU rasteriser runs one
// lane at a time); the prelude's ORDER is fixed per pipeline, so the other branch compiles away.
fn element_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    if (ORDER == IMAGE_MAJOR) {
        let id = invocation(gid, nwg);
        return select(PAST_THE_END, id, id < prm.geo.rows * prm.c4);
    }
    let rc = row_of(gid, nwg);
    return select(PAST_THE_END, index_of(rc), rc.x < prm.geo.rows);
}

fn store(i: u32, v: vec4<f32>) {
    var x = v;
    if ((FLAGS & FLAG_ACCUMULATE) != 0u) {
        x += output[i];
    }
    output[i] = x;
}

@compute @workgroup_size(64)
fn add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = element_index(gid, nwg);
    if (i == PAST_THE_END) {
        return;
    }
    output[i] = a[i] + b[i];
}

@compute @workgroup_size(64)
fn accumulate(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = element_index(gid, nwg);
    if (i == PAST_THE_END) {
        return;
    }
    store(i, a[i]);
}

@compute @workgroup_size(64)
fn relu_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = element_index(gid, nwg);
    if (i == PAST_THE_END) {
        return;
    }
    output[i] = max(a[i], vec4<f32>(0.0));
}

@compute @workgroup_size(64)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = element_index(gid, nwg);
    if (i == PAST_THE_END) {
        return;
    }
    store(i, select(vec4<f32>(0.0), b[i], a[i] > vec4<f32>(0.0)));
}

// tanh and σ of the two halves at (row, column), with the class bias where flagged.
fn gate_halves(rc: vec2<u32>) -> array<vec4<f32>, 2> {
    let g = prm.geo;
    let img = row_image(g, rc.x);
    let zi = position(g, img, row_pixel(g, rc.x)) * 2u * prm.c4 + rc.y;
    var za = a[zi];
    var zg = a[zi + prm.c4];
    if ((FLAGS & FLAG_BIAS) != 0u) {
        let bi = img * prm.bias_stride + rc.y;
        za += b[bi];
        zg += b[bi + prm.c4];
    }
    return array<vec4<f32>, 2>(tanh(za), 1.0 / (1.0 + exp(-zg)));
}

@compute @workgroup_size(64)
fn gate_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let rc = row_of(gid, nwg);
    if (rc.x >= prm.geo.rows) {
        return;
    }
    let ts = gate_halves(rc);
    output[index_of(rc)] = ts[0] * ts[1];
}

@compute @workgroup_size(64)
fn gate_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let rc = row_of(gid, nwg);
    if (rc.x >= prm.geo.rows) {
        return;
    }
    let ts = gate_halves(rc);
    let t = ts[0];
    let s = ts[1];
    let d = c_in[index_of(rc)];
    let g = prm.geo;
    let zi = position(g, row_image(g, rc.x), row_pixel(g, rc.x)) * 2u * prm.c4 + rc.y;
    output[zi] = d * (1.0 - t * t) * s;
    output[zi + prm.c4] = d * t * s * (1.0 - s);
}

@compute @workgroup_size(64)
fn dropout(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = element_index(gid, nwg);
    if (i == PAST_THE_END) {
        return;
    }
    let key = bitcast<u32>(c_in[0].x);
    let rate = f32(DROP_PERCENT) / 100.0;
    let u = vec4<f32>(uniform_draw(key, i, 0u), uniform_draw(key, i, 1u), uniform_draw(key, i, 2u),
                      uniform_draw(key, i, 3u));
    let scale = 1.0 / (1.0 - rate);
    store(i, select(vec4<f32>(0.0), a[i] * scale, u >= vec4<f32>(rate)));
}
