// wgrad.wgsl — weight and bias gradients of a conv, reduced deterministically in two passes (no float atomics).
//
// Entry point `conv_backward_weight` (pass 1) writes per-chunk partial sums:
//     partial[c, t·cin4·4 + k, n] = Σ_{p in chunk c} in[src(p, t), k] · dz[p, n]
//     partial[c, bias_row, n]     = Σ_{p in chunk c} dz[p, n]
// Entry point `reduce_chunks` lives in reduce.wgsl (pass 2) and sums the chunks in a fixed order.
//
// Layouts (vec4<f32>): in [positions, cin4]; dz [positions, cout4];
//   partial [n_chunks, n_taps·cin4·4 + 1 scalar rows, cout4].
// Bindings: 0 uniform WgradParams (dynamic offset), 1 in (read), 2 dz (read), 3 partial (read_write).
// Dispatch: one invocation per (chunk, row group, output vec4 column); a row group is 4 scalar rows sharing a
//   tap and an input vec4 (so one vec4 load of `in` feeds 16 FMAs), plus one group for the bias row.
//   id = gid.x + gid.y · 64 · num_workgroups.x; col fastest, then row group, then chunk.

struct WgradParams {
    positions: u32,
    cin4: u32,
    cout4: u32,
    n_taps: u32,
    kernel: u32,
    chunk: u32,      // positions per chunk
    n_chunks: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> prm: WgradParams;
@group(0) @binding(1) var<storage, read> input: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> dz: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> partial: array<vec4<f32>>;

@compute @workgroup_size(64)
fn conv_backward_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * 64u * nwg.x;
    let cout4 = prm.cout4;
    let groups = prm.n_taps * prm.cin4 + 1u;
    let col = id % cout4;
    let g = (id / cout4) % groups;
    let c = id / (cout4 * groups);
    if (c >= prm.n_chunks) {
        return;
    }
    let p0 = c * prm.chunk;
    let p1 = min(p0 + prm.chunk, prm.positions);
    let rows = prm.n_taps * prm.cin4 * 4u + 1u;
    let base = c * rows * cout4 + col;
    if (g == groups - 1u) {
        var acc = vec4<f32>(0.0);
        for (var p = p0; p < p1; p++) {
            acc += dz[p * cout4 + col];
        }
        partial[base + (rows - 1u) * cout4] = acc;
        return;
    }
    let t = g / prm.cin4;
    let k = g % prm.cin4;
    let half = i32(prm.kernel / 2u);
    let dy = i32(t / prm.kernel) - half;
    let dx = i32(t % prm.kernel) - half;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var p = p0; p < p1; p++) {
        let y = i32((p % 784u) / 28u) + dy;
        let x = i32(p % 28u) + dx;
        if (y >= 0 && y < 28 && x >= 0 && x < 28) {
            let src = (p / 784u) * 784u + u32(y * 28 + x);
            let a = input[src * prm.cin4 + k];
            let d = dz[p * cout4 + col];
            a0 += a.x * d;
            a1 += a.y * d;
            a2 += a.z * d;
            a3 += a.w * d;
        }
    }
    let r = g * 4u;
    partial[base + r * cout4] = a0;
    partial[base + (r + 1u) * cout4] = a1;
    partial[base + (r + 2u) * cout4] = a2;
    partial[base + (r + 3u) * cout4] = a3;
}
