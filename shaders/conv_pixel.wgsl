// conv_pixel.wgsl — a conv at one pixel q of every image: the incremental sampler's step on CPU rasterisers
// (lavapipe). Same arithmetic as `conv_forward` in single-pixel mode, shaped for a GEMM with few rows.
//
// Entry point `conv_pixel` computes, for images i < rows and output vec4 columns n < cout4,
//     out[q·rows + i, n] = [residual[q·rows + i, n] +] act( [bias[n]] + [out[q·rows + i, n]] + Σ_s Σ_t Σ_k
//                              in_s[t, i, k] · w_s[t·cin + k, n] )
// over up to SEGMENTS segments s. A segment is a run of taps that lie on the same kernel row and inside the image,
// so that their input pixels are consecutive: `input_s` is a window of the position-major activation cache
// starting at the run's first pixel, `weight_s` the window of the packed weight starting at the run's first tap.
// The host (`kernels::pixel_runs`) splits a conv into runs that fit the 64 KiB uniform-binding limit and skips taps
// in the zero padding; a whole 7×7 or 3×3 masked conv is usually one dispatch. A conv with more runs than
// SEGMENTS is several dispatches chained through `out`: the first adds the bias, later ones accumulate, the last
// applies the ReLU and adds the residual (the sampler fuses each block's residual add into its last conv).
//
// Why this shape: a CPU rasteriser runs SG invocations as one SIMD row and turns every *storage* load into a loop
// over the lanes (a store-forwarding stall per lane and component), while a *uniform*-buffer load is a plain
// vector gather — so both GEMM operands come through uniform windows. Each lane owns one output vec4 column n (its
// four weight loads per input vector are distinct and useful) for SG images; each lane loads the input vector of
// one image, and the SG vectors are passed round with subgroupShuffle, in registers. Every dispatch costs tens of
// microseconds of thread hand-off there, hence the segments: one dispatch per conv instead of one per run.
//
// Template: each `//@for s in SEGMENTS` block is repeated for s = 0 .. SEGMENTS−1 (see src/gpu/shader.rs), so
// segment s binds its windows at 4 + 2s and 5 + 2s: WGSL has no arrays of uniform buffers in wgpu.
//
// Layouts (vec4<f32>): input_s [taps_s, rows, cin4]; weight_s [taps_s·cin4·4, cout4] (windows of the conv's packed
//   weight); bias [cout4], or a per-image table [rows, cout4] (bias_stride = cout4); out and residual
//   [784 · rows, cout4] position-major.
// Bindings: 0 uniform PixelParams (dynamic offset), 1 bias (read), 2 out (read_write), 3 residual (read; any
//   buffer when unused), 4 + 2s input_s (uniform, 64 KiB), 5 + 2s weight_s (uniform, 64 KiB). Windows are
//   always bound at 64 KiB (buffers carry a tail); unused segments (taps 0) repeat segment 0's windows.
// Dispatch: one subgroup of SG invocations per workgroup; workgroup g (linear over x and y) covers images
//   [(g / col_groups)·SG, +SG) and columns [(g % col_groups)·SG, +SG), col_groups = ⌈cout4 / SG⌉. rows must be a
//   multiple of SG. Needs the SUBGROUP feature and subgroups of exactly SG invocations.

struct PixelParams {
    rows: u32,      // images per position (padded)
    cin4: u32,
    cout4: u32,
    flags: u32,     // FLAG_RELU, FLAG_BIAS (first dispatch of a conv), FLAG_ACCUMULATE (later ones), FLAG_RESIDUAL
    pixel: u32,     // q
    bias_stride: u32,
    _pad0: u32,
    _pad1: u32,
    taps: array<vec4<u32>, 2>,  // taps of segment s at taps[s / 4][s % 4] (0: unused)
}

alias Window = array<vec4<f32>, 4096>;

@group(0) @binding(0) var<uniform> prm: PixelParams;
@group(0) @binding(1) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> output: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> residual: array<vec4<f32>>;
//@for s in SEGMENTS {
@group(0) @binding(${4+2*s}) var<uniform> input_$s: Window;
@group(0) @binding(${5+2*s}) var<uniform> weight_$s: Window;
//@}

const SG: u32 = 8u;
const SEGMENTS: u32 = 5u;

// acc[m] += Σ_j a_m[j] · w_j, where a_m is lane m's input vector.
fn accumulate(acc: ptr<function, array<vec4<f32>, SG>>, a: vec4<f32>, w0: vec4<f32>, w1: vec4<f32>,
              w2: vec4<f32>, w3: vec4<f32>) {
    for (var m = 0u; m < SG; m++) {
        let am = subgroupShuffle(a, m);
        (*acc)[m] = fma(vec4<f32>(am.w), w3, fma(vec4<f32>(am.z), w2, fma(vec4<f32>(am.y), w1,
                    fma(vec4<f32>(am.x), w0, (*acc)[m]))));
    }
}

@compute @workgroup_size(SG)
fn conv_pixel(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(subgroup_invocation_id) lane: u32) {
    let g = wid.x + wid.y * nwg.x;
    let cout4 = prm.cout4;
    let cin4 = prm.cin4;
    let col_groups = (cout4 + SG - 1u) / SG;
    let col = (g % col_groups) * SG + lane;
    let img0 = (g / col_groups) * SG;
    // Lanes past the last column compute a clamped copy and never write.
    let n = min(col, cout4 - 1u);
    var acc: array<vec4<f32>, SG>;
    for (var m = 0u; m < SG; m++) {
        acc[m] = vec4<f32>(0.0);
    }
    //@for s in SEGMENTS {
    for (var t = 0u; t < prm.taps[$s / 4u][$s % 4u]; t++) {
        let src = (t * prm.rows + img0 + lane) * cin4;
        var w = t * cin4 * 4u * cout4 + n;
        for (var k = 0u; k < cin4; k++) {
            accumulate(&acc, input_$s[src + k], weight_$s[w], weight_$s[w + cout4], weight_$s[w + 2u * cout4],
                       weight_$s[w + 3u * cout4]);
            w += 4u * cout4;
        }
    }
    //@}
    if (col >= cout4 || img0 >= prm.rows) {
        return;
    }
    for (var m = 0u; m < SG; m++) {
        var b = vec4<f32>(0.0);
        if ((prm.flags & FLAG_BIAS) != 0u) {
            b = bias[(img0 + m) * prm.bias_stride + n];
        }
        let o = (prm.pixel * prm.rows + img0 + m) * cout4 + n;
        var v = acc[m] + b;
        if ((prm.flags & FLAG_ACCUMULATE) != 0u) {
            v += output[o];
        }
        if ((prm.flags & FLAG_RELU) != 0u) {
            v = max(v, vec4<f32>(0.0));
        }
        if ((prm.flags & FLAG_RESIDUAL) != 0u) {
            v += residual[o];
        }
        output[o] = v;
    }
}
