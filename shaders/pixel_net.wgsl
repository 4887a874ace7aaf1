// pixel_net.wgsl — the incremental sampler's step shaped for real GPUs: one dispatch runs every layer of the
// network at one pixel (or, for the gated net's vertical stack, at a whole row) of every image, and draws the
// pixel. One workgroup per image walks a layer program the host wrote from the network description, with a
// barrier between layers; this is the `net` version of the pixel kernels (the `layers` version serves CPU rasterisers).
//
// Entry point `pixel_net`, for image i = workgroup index and positions q0 .. q0 + npos − 1:
//   for each op of the program, in order:
//     CONV  out[q, i, n] = act(bias[n] [+ class_bias[label_i, n]] + Σ_t Σ_k in[q + off_t, i, k] · w[t·cin + k, n])
//     ADD   out = in0 + in1            GATE  out[c] = tanh(z[c] + β[c]) · σ(z[h + c] + β[h + c])
//     RELU  out = max(in0, 0)          COPY  out = in0 (dropout, which sampling does not drop)
//     SAMPLE  p = σ(logit[q0, i] / T); x[q0, i] = u(key, first_image + i, q0) < p
//   then storageBarrier + workgroupBarrier, so the next op sees this op's outputs.
// The convs read earlier positions from the activation caches, which earlier dispatches filled.
//
// Layouts: acts is one buffer holding every activation's cache, activation a at vec4 offset base_a as
//   [PIXELS, images, C4_a] (position-major); params is the GPU parameter vector (conv weight [n_taps·cin4·4, cout4],
//   bias [cout4], class bias [classes, C4]); taps is the tap table; labels u32 per image; probs f32 [images, PIXELS].
// The program (binding 1, a uniform buffer): vec4<u32> entries; entry a < n_acts is activation a's (base, C4);
//   op j at ops_at + 3j is (kind, in0, in1, out), (weight, bias, cin4, cout4), (tap0, n_taps, flags, class_bias).
// Bindings: 0 uniform NetParams (dynamic offset), 1 program (uniform), 2 acts (read_write), 3 params (read),
//   4 taps (read), 5 labels (read), 6 probs (read_write).
// Dispatch: `images` workgroups of 64 invocations; invocation lid computes items lid, lid + 64, ... of an op
//   (items = npos · C4_out).

struct NetParams {
    q0: u32,
    npos: u32,
    images: u32,
    n_ops: u32,
    ops_at: u32,
    key: u32,
    first_image: u32,
    temperature: f32,
}

const OP_CONV: u32 = 0u;
const OP_ADD: u32 = 1u;
const OP_GATE: u32 = 2u;
const OP_RELU: u32 = 3u;
const OP_SAMPLE: u32 = 4u;
const OP_COPY: u32 = 5u;
const NONE: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> prm: NetParams;
@group(0) @binding(1) var<uniform> program: array<vec4<u32>, 4096>;
@group(0) @binding(2) var<storage, read_write> acts: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> params: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> taps: array<vec2<i32>>;
@group(0) @binding(5) var<storage, read> labels: array<u32>;
@group(0) @binding(6) var<storage, read_write> probs: array<f32>;

// vec4 index of (activation a, pixel q, image i, column c).
fn at(a: u32, q: u32, i: u32, c: u32) -> u32 {
    let entry = program[a];
    return entry.x + (q * prm.images + i) * entry.y + c;
}

fn conv_item(op0: vec4<u32>, op1: vec4<u32>, op2: vec4<u32>, i: u32, q: u32, n: u32) -> vec4<f32> {
    let cin4 = op1.z;
    let cout4 = op1.w;
    var acc = params[op1.y + n];
    if (op2.w != NONE) {
        acc += params[op2.w + labels[i] * cout4 + n];
    }
    let y = i32(q / WIDTH);
    let x = i32(q % WIDTH);
    for (var t = 0u; t < op2.y; t++) {
        let tap = taps[op2.x + t];
        let sy = y + tap.x;
        let sx = x + tap.y;
        if (sy < 0 || sy >= i32(HEIGHT) || sx < 0 || sx >= i32(WIDTH)) {
            continue;
        }
        let src = at(op0.y, u32(sy) * WIDTH + u32(sx), i, 0u);
        var w = op1.x + t * cin4 * 4u * cout4 + n;
        for (var k = 0u; k < cin4; k++) {
            let a = acts[src + k];
            acc += a.x * params[w] + a.y * params[w + cout4] + a.z * params[w + 2u * cout4]
                 + a.w * params[w + 3u * cout4];
            w += 4u * cout4;
        }
    }
    if ((op2.z & FLAG_RELU) != 0u) {
        acc = max(acc, vec4<f32>(0.0));
    }
    return acc;
}

@compute @workgroup_size(64)
fn pixel_net(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = wid.x;
    for (var o = 0u; o < prm.n_ops; o++) {
        let base = prm.ops_at + 3u * o;
        let op0 = program[base];
        let op1 = program[base + 1u];
        let op2 = program[base + 2u];
        let c4 = program[op0.w].y;
        switch op0.x {
            case OP_CONV: {
                for (var item = lid; item < prm.npos * c4; item += 64u) {
                    let q = prm.q0 + item / c4;
                    let n = item % c4;
                    acts[at(op0.w, q, i, n)] = conv_item(op0, op1, op2, i, q, n);
                }
            }
            case OP_ADD: {
                for (var item = lid; item < prm.npos * c4; item += 64u) {
                    let q = prm.q0 + item / c4;
                    let n = item % c4;
                    acts[at(op0.w, q, i, n)] = acts[at(op0.y, q, i, n)] + acts[at(op0.z, q, i, n)];
                }
            }
            case OP_GATE: {
                for (var item = lid; item < prm.npos * c4; item += 64u) {
                    let q = prm.q0 + item / c4;
                    let n = item % c4;
                    var za = acts[at(op0.y, q, i, n)];
                    var zg = acts[at(op0.y, q, i, n + c4)];
                    if (op2.w != NONE) {
                        za += params[op2.w + labels[i] * 2u * c4 + n];
                        zg += params[op2.w + labels[i] * 2u * c4 + c4 + n];
                    }
                    acts[at(op0.w, q, i, n)] = tanh(za) * (1.0 / (1.0 + exp(-zg)));
                }
            }
            case OP_RELU: {
                for (var item = lid; item < prm.npos * c4; item += 64u) {
                    let q = prm.q0 + item / c4;
                    let n = item % c4;
                    acts[at(op0.w, q, i, n)] = max(acts[at(op0.y, q, i, n)], vec4<f32>(0.0));
                }
            }
            case OP_COPY: {
                for (var item = lid; item < prm.npos * c4; item += 64u) {
                    let q = prm.q0 + item / c4;
                    let n = item % c4;
                    acts[at(op0.w, q, i, n)] = acts[at(op0.y, q, i, n)];
                }
            }
            case OP_SAMPLE: {
                if (lid == 0u) {
                    let q = prm.q0;
                    let p = 1.0 / (1.0 + exp(-(acts[at(op0.y, q, i, 0u)].x / prm.temperature)));
                    let u = uniform_draw(prm.key, prm.first_image + i, q);
                    acts[at(op0.w, q, i, 0u)] = vec4<f32>(select(0.0, 1.0, u < p), 0.0, 0.0, 0.0);
                    probs[i * PIXELS + q] = p;
                }
            }
            default: {}
        }
        storageBarrier();
        workgroupBarrier();
    }
}
