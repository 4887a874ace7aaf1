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
// Dispatch: a workgroup of WGN invocations (one per output vec4 column n) covers RG row groups (4 scalar rows each:
//   one tap and one input vec4) of one chunk; workgroups are linear over x and y (wg = wid.x + wid.y ·
//   num_workgroups.x), column blocks fastest, then row blocks, then chunks. Every lane of a workgroup reads the
//   same input vec4s (uniform loads, which CPU rasterisers perform once) and its own column of dz.
//   Row group n_taps · cin4 is the bias row (input 1).

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

// Workgroup width (output vec4 columns) and row groups per invocation; the host substitutes per layer.
const WGN: u32 = 32u;
const RG: u32 = 4u;

@compute @workgroup_size(WGN)
fn conv_backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let wg = wid.x + wid.y * nwg.x;
    let cout4 = prm.cout4;
    let groups = prm.n_taps * prm.cin4 + 1u;
    let col_blocks = (cout4 + WGN - 1u) / WGN;
    let row_blocks = (groups + RG - 1u) / RG;
    let c = wg / (col_blocks * row_blocks);
    if (c >= prm.n_chunks) {
        return;
    }
    let col_raw = (wg % col_blocks) * WGN + lid;
    let col = min(col_raw, cout4 - 1u);
    let g0 = ((wg / col_blocks) % row_blocks) * RG;
    let p0 = c * prm.chunk;
    let p1 = min(p0 + prm.chunk, prm.positions);
    let half = i32(prm.kernel / 2u);
    var acc: array<array<vec4<f32>, 4>, RG>;
    for (var j = 0u; j < RG; j++) {
        for (var i = 0u; i < 4u; i++) {
            acc[j][i] = vec4<f32>(0.0);
        }
    }
    for (var p = p0; p < p1; p++) {
        let d = dz[p * cout4 + col];
        let py = i32((p % 784u) / 28u);
        let px = i32(p % 28u);
        let base = (p / 784u) * 784u;
        for (var j = 0u; j < RG; j++) {
            // Branch-free, so that the load stays uniform across the workgroup: clamp the address, then select.
            let g = g0 + j;
            let t = g / prm.cin4;
            let y = py + i32(t / prm.kernel) - half;
            let x = px + i32(t % prm.kernel) - half;
            let live = g + 1u < groups && y >= 0 && y < 28 && x >= 0 && x < 28;
            let at = (base + u32(clamp(y, 0, 27) * 28 + clamp(x, 0, 27))) * prm.cin4 + g % prm.cin4;
            var a = select(vec4<f32>(0.0), input[select(0u, at, live)], live);
            a = select(a, vec4<f32>(1.0, 0.0, 0.0, 0.0), g + 1u == groups);
            acc[j][0] += a.x * d;
            acc[j][1] += a.y * d;
            acc[j][2] += a.z * d;
            acc[j][3] += a.w * d;
        }
    }
    if (col_raw >= cout4) {
        return;
    }
    let rows = prm.n_taps * prm.cin4 * 4u + 1u;
    let out = c * rows * cout4 + col;
    for (var j = 0u; j < RG; j++) {
        let g = g0 + j;
        if (g + 1u < groups) {
            for (var i = 0u; i < 4u; i++) {
                partial[out + (g * 4u + i) * cout4] = acc[j][i];
            }
        } else if (g + 1u == groups) {
            partial[out + (rows - 1u) * cout4] = acc[j][0];
        }
    }
}
