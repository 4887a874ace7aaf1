// conv_pixel.wgsl — a conv at one pixel q of every image: the incremental sampler's step on CPU rasterisers
// (lavapipe). Same arithmetic as `conv_forward` in single-pixel mode, shaped for a GEMM with few rows.
//
// Entry point `conv_pixel` computes, for images i < rows and output vec4 columns n < cout4,
//     out[q·rows + i, n] (+)= act( [bias[n]] + Σ_{t < n_taps} Σ_k in[t, i, k] · w[t·cin + k, n] )
// for one run of taps that lie on the same kernel row and inside the image, so that their input pixels are
// consecutive: `in` is a window of the position-major activation cache starting at the first tap's pixel,
// `w` the window of the packed block holding those taps' rows. The host splits a conv into such runs (and into
// runs that fit the 64 KiB uniform-binding limit), skips taps in the zero padding, and chains the dispatches:
// the first adds the bias, later ones accumulate into `out`, the last applies the ReLU.
//
// Why this shape: a CPU rasteriser runs SG invocations as one SIMD row and turns every *storage* load into a loop
// over the lanes (a store-forwarding stall per lane and component), while a *uniform*-buffer load is a plain
// vector gather — so both operands come through uniform windows. Each lane owns one output vec4 column n (its
// four weight loads per input vector are distinct and useful) for SG images; each lane loads the input vector of
// one image, and the SG vectors are passed round with subgroupShuffle, in registers.
//
// Layouts (vec4<f32>): in window [n_taps, rows, cin4]; weight window [n_taps·cin4·4, cout4]; block = the conv's
//   whole packed block (bias row at vec4 index bias_at); out [784 · rows, cout4] position-major.
// Bindings: 0 uniform PixelParams (dynamic offset), 1 in window (uniform, 64 KiB), 2 weight window (uniform,
//   64 KiB), 3 block (read), 4 out (read_write). Windows are always bound at 64 KiB (buffers carry a tail).
// Dispatch: one subgroup of SG invocations per workgroup; workgroup s (linear over x and y) covers images
//   [(s / col_groups)·SG, +SG) and columns [(s % col_groups)·SG, +SG), col_groups = ⌈cout4 / SG⌉. rows must be a
//   multiple of SG. Needs the SUBGROUP feature and subgroups of exactly SG invocations.

struct PixelParams {
    rows: u32,      // images per position (padded)
    cin4: u32,
    cout4: u32,
    n_taps: u32,    // taps in this run
    flags: u32,     // 1: ReLU, 2: add the bias, 4: accumulate into out
    pixel: u32,     // q
    bias_at: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> prm: PixelParams;
@group(0) @binding(1) var<uniform> input: array<vec4<f32>, 4096>;
@group(0) @binding(2) var<uniform> weight: array<vec4<f32>, 4096>;
@group(0) @binding(3) var<storage, read> block: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> output: array<vec4<f32>>;

const SG: u32 = 8u;

@compute @workgroup_size(SG)
fn conv_pixel(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(subgroup_invocation_id) lane: u32) {
    let s = wid.x + wid.y * nwg.x;
    let cout4 = prm.cout4;
    let cin4 = prm.cin4;
    let col_groups = (cout4 + SG - 1u) / SG;
    let col = (s % col_groups) * SG + lane;
    let img0 = (s / col_groups) * SG;
    // Lanes past the last column compute a clamped copy and never write.
    let n = min(col, cout4 - 1u);
    var acc: array<vec4<f32>, SG>;
    for (var m = 0u; m < SG; m++) {
        acc[m] = vec4<f32>(0.0);
    }
    for (var t = 0u; t < prm.n_taps; t++) {
        let src = (t * prm.rows + img0 + lane) * cin4;
        var w = t * cin4 * 4u * cout4 + n;
        for (var k = 0u; k < cin4; k++) {
            let a = input[src + k];
            let w0 = weight[w];
            let w1 = weight[w + cout4];
            let w2 = weight[w + 2u * cout4];
            let w3 = weight[w + 3u * cout4];
            for (var m = 0u; m < SG; m++) {
                let am = subgroupShuffle(a, m);
                acc[m] = fma(vec4<f32>(am.w), w3, fma(vec4<f32>(am.z), w2, fma(vec4<f32>(am.y), w1, fma(vec4<f32>(am.x), w0, acc[m]))));
            }
            w += 4u * cout4;
        }
    }
    if (col >= cout4 || img0 >= prm.rows) {
        return;
    }
    var bias = vec4<f32>(0.0);
    if ((prm.flags & 2u) != 0u) {
        bias = block[prm.bias_at + n];
    }
    for (var m = 0u; m < SG; m++) {
        let o = (prm.pixel * prm.rows + img0 + m) * cout4 + n;
        var v = acc[m] + bias;
        if ((prm.flags & 4u) != 0u) {
            v += output[o];
        }
        if ((prm.flags & 1u) != 0u) {
            v = max(v, vec4<f32>(0.0));
        }
        output[o] = v;
    }
}
