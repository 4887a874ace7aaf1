// peak.wgsl — what this adapter can do at best, for `pixelcnn bench peak`: every other speed figure is stated as
// a percentage of these.
//
// Entry points (invocation id = gid.x + gid.y · WG · num_workgroups.x, `n` invocations):
//   fma_peak        CHAINS independent vec4 multiply-add chains per invocation, held in registers, each
//                   a ← fma(a, m, c) for 4 · iters steps (m, c from the uniform block, so nothing folds);
//                   out[id] = Σ chains (so nothing is dead). FLOPs: n · iters · 4 · CHAINS · 4 lanes · 2.
//   read_bandwidth  out[id] = Σ_{j < iters} src[id + j · n]: every invocation streams its own vec4s from a storage
//                   buffer, consecutive invocations reading consecutive vec4s. Bytes read: n · iters · 16.
// Layouts: out, src: vec4<f32>. Bindings: 0 uniform PeakParams (dynamic offset), 1 out (read_write), 2 src (read).
// Dispatch: ⌈n / WG⌉ workgroups of WG invocations, linear over x and y.

struct PeakParams {
    n: u32,
    iters: u32,
    m: f32,
    c: f32,
}

@group(0) @binding(0) var<uniform> prm: PeakParams;
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> src: array<vec4<f32>>;

const WG: u32 = 64u;
const CHAINS: u32 = 8u;

@compute @workgroup_size(WG)
fn fma_peak(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * WG * nwg.x;
    let m = vec4<f32>(prm.m);
    let c = vec4<f32>(prm.c);
    let seed = f32(id & 1023u) * 1e-6;
    //@for k in CHAINS {
    var a_$k = vec4<f32>(seed + ${k}.0, seed + 0.25, seed + 0.5, seed + 0.75);
    //@}
    for (var i = 0u; i < prm.iters; i++) {
        //@for u in 4 {
        //@for k in CHAINS {
        a_$k = fma(a_$k, m, c);
        //@}
        //@}
    }
    if (id < prm.n) {
        var s = vec4<f32>(0.0);
        //@for k in CHAINS {
        s += a_$k;
        //@}
        out[id] = s;
    }
}

@compute @workgroup_size(WG)
fn read_bandwidth(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * WG * nwg.x;
    if (id >= prm.n) {
        return;
    }
    var s = vec4<f32>(0.0);
    for (var j = 0u; j < prm.iters; j++) {
        s += src[id + j * prm.n];
    }
    out[id] = s;
}
