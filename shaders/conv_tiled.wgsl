// conv_tiled.wgsl — the same three convolutions as conv_raster.wgsl (same entry-point names, uniform block,
// bindings and results), shaped for real GPUs: the `tiled` kernel version. It needs no subgroups, so it also
// serves adapters without them (wgpu's GL backend).
//
//   conv_forward          out[r, n]  = act(bias[n] + Σ_t Σ_k in[src(r, +off_t), k] · w[t·cin + k, n])
//                                      [+ residual → aux_out]; with LOSS the logit's BCE and its gradient
//   conv_backward_data    dx[r, ci]  = [mask ·] Σ_t Σ_co dz[src(r, −off_t), co] · w[t·cin + ci, co]  (+= dx)
//   conv_backward_weight  partial[c, t·cin + k, n] = Σ_{p in chunk c} in[src(p, +off_t), k] · dz[p, n]
//                         partial[c, bias_row, n]  = Σ_{p in chunk c} dz[p, n]
//
// Shape: a workgroup of 64 invocations computes a 64-row × 16-vec4 output tile (weight gradient: 16 row groups
// of 4 scalar rows × 8 vec4 columns over one chunk of positions). The operands of each step of KC input vec4s
// (weight gradient: KP positions) are staged in workgroup memory by all 64 invocations with consecutive
// invocations reading consecutive addresses, then every invocation accumulates a 4 × 4 vec4 register tile
// (weight gradient: 4 × 2, with per-step sums): 64 f32 accumulators, which a GPU keeps in registers.
//
// Layouts and geometry: as conv_raster.wgsl. Bindings, the uniform block and the forward epilogue:
// conv_common.wgsl, which the host prepends.
// Dispatch: workgroups of 64, linear over x and y.
//   conv_forward / conv_backward_data: ⌈rows / 64⌉ · ⌈cols4 / 16⌉ workgroups, column blocks fastest.
//   conv_backward_weight: n_chunks · ⌈groups / 16⌉ · ⌈cout4 / 8⌉ workgroups, column blocks fastest, then row
//   blocks, then chunks.


// Input vec4s per step (forward and backward-data), positions per step (weight gradient).
const KC: u32 = 4u;
const KP: u32 = 16u;

var<workgroup> tile_a: array<vec4<f32>, 256>;   // [64 rows][KC] or [KP positions][16 groups]
var<workgroup> tile_b: array<vec4<f32>, 256>;   // [KC·4 scalar rows][16 cols] or [64 input channels][KC] or [KP][8]

fn load_input(pos: i32, stride: u32, k: u32, live: bool) -> vec4<f32> {
    let p = u32(max(pos, 0));
//@if BYTES {
    let v = vec4<f32>(byte_of(input[p >> 2u], p), 0.0, 0.0, 0.0);
//@}
//@if !BYTES {
    let v = input[p * stride + k];
//@}
    return select(vec4<f32>(0.0), v, pos >= 0 && live);
}


// The buffer position read for tile row `r` of this workgroup at tap offset (dy, dx) (−1: padding or past rows).
fn tile_source(row0: u32, r: u32, dy: i32, dx: i32) -> i32 {
    let g = prm.geo;
    let row = row0 + r;
    let rc = min(row, g.rows - 1u);
    let img = row_image(g, rc);
    let q = row_pixel(g, rc);
    let src = tap_source(g, img, i32(q / WIDTH), i32(q % WIDTH), dy, dx);
    return select(-1, src, row < g.rows);
}

@compute @workgroup_size(64)
fn conv_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let g = prm.geo;
    let wg = workgroup_index(wid, nwg);
    let cin4 = prm.cin4;
    let cout4 = prm.cout4;
    let col_blocks = (cout4 + 15u) / 16u;
    let col0 = (wg % col_blocks) * 16u;
    let row0 = (wg / col_blocks) * 64u;
    let tr = lid / 4u;   // rows tr + 16i
    let tc = lid % 4u;   // columns tc + 4j
    //@for i in 4 {
    let img_$i = row_image(g, min(row0 + tr + ${i*16}u, g.rows - 1u));
    //@for j in 4 {
    var acc_$i_$j = bias_of(img_$i, col0 + tc + ${j*4}u);
    //@}
    //@}
    for (var t = 0u; t < prm.n_taps; t++) {
        let tap = taps[prm.tap0 + t];
        for (var k0 = 0u; k0 < cin4; k0 += KC) {
            //@for e in 4 {
            let ia_$e = lid + ${e*64}u;
            let ka_$e = k0 + ia_$e % KC;
            tile_a[ia_$e] = load_input(tile_source(row0, ia_$e / KC, tap.x, tap.y), cin4, min(ka_$e, cin4 - 1u),
                                       ka_$e < cin4);
            let rb_$e = ia_$e / 16u;   // scalar row kk·4 + j of the step
            let kb_$e = k0 + rb_$e / 4u;
            let wrow_$e = (t * cin4 + min(kb_$e, cin4 - 1u)) * 4u + rb_$e % 4u;
            let cb_$e = col0 + ia_$e % 16u;
            tile_b[ia_$e] = select(vec4<f32>(0.0), weight[wrow_$e * cout4 + min(cb_$e, cout4 - 1u)],
                                   kb_$e < cin4 && cb_$e < cout4);
            //@}
            workgroupBarrier();
            for (var kk = 0u; kk < KC; kk++) {
                //@for i in 4 {
                let a_$i = tile_a[(tr + ${i*16}u) * KC + kk];
                //@}
                //@for j in 4 {
                let b0_$j = tile_b[(kk * 4u) * 16u + tc + ${j*4}u];
                let b1_$j = tile_b[(kk * 4u + 1u) * 16u + tc + ${j*4}u];
                let b2_$j = tile_b[(kk * 4u + 2u) * 16u + tc + ${j*4}u];
                let b3_$j = tile_b[(kk * 4u + 3u) * 16u + tc + ${j*4}u];
                //@for i in 4 {
                acc_$i_$j = fma(vec4<f32>(a_$i.w), b3_$j, fma(vec4<f32>(a_$i.z), b2_$j,
                            fma(vec4<f32>(a_$i.y), b1_$j, fma(vec4<f32>(a_$i.x), b0_$j, acc_$i_$j))));
                //@}
                //@}
            }
            workgroupBarrier();
        }
    }
    //@for i in 4 {
    let row_$i = row0 + tr + ${i*16}u;
    if (row_$i < g.rows) {
        let pos_$i = position(g, img_$i, row_pixel(g, row_$i));
        //@for j in 4 {
        if (col0 + tc + ${j*4}u < cout4) {
            forward_epilogue(acc_$i_$j, col0 + tc + ${j*4}u, pos_$i);
        }
        //@}
    }
    //@}
}

@compute @workgroup_size(64)
fn conv_backward_data(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let g = prm.geo;
    let wg = workgroup_index(wid, nwg);
    let cin4 = prm.cin4;
    let cout4 = prm.cout4;
    let col_blocks = (cin4 + 15u) / 16u;
    let col0 = (wg % col_blocks) * 16u;
    let row0 = (wg / col_blocks) * 64u;
    let tr = lid / 4u;
    let tc = lid % 4u;
    //@for i in 4 {
    //@for j in 4 {
    var acc_$i_$j = vec4<f32>(0.0);
    //@}
    //@}
    for (var t = 0u; t < prm.n_taps; t++) {
        let tap = taps[prm.tap0 + t];
        for (var k0 = 0u; k0 < cout4; k0 += KC) {
            //@for e in 4 {
            let ia_$e = lid + ${e*64}u;
            let ka_$e = k0 + ia_$e % KC;
            tile_a[ia_$e] = load_input(tile_source(row0, ia_$e / KC, -tap.x, -tap.y), cout4, min(ka_$e, cout4 - 1u),
                                       ka_$e < cout4);
            // tile_b[ci][kk] = w[t·cin + 4·col0 + ci, k0 + kk] (input channel rows of the tile's 16 columns).
            let ci_$e = 4u * col0 + ia_$e / KC;
            tile_b[ia_$e] = select(vec4<f32>(0.0),
                                   weight[(t * cin4 * 4u + min(ci_$e, cin4 * 4u - 1u)) * cout4 + min(ka_$e, cout4 - 1u)],
                                   ci_$e < cin4 * 4u && ka_$e < cout4);
            //@}
            workgroupBarrier();
            for (var kk = 0u; kk < KC; kk++) {
                //@for i in 4 {
                let a_$i = tile_a[(tr + ${i*16}u) * KC + kk];
                //@}
                //@for j in 4 {
                let c_$j = (tc + ${j*4}u) * 4u;
                let b0_$j = tile_b[c_$j * KC + kk];
                let b1_$j = tile_b[(c_$j + 1u) * KC + kk];
                let b2_$j = tile_b[(c_$j + 2u) * KC + kk];
                let b3_$j = tile_b[(c_$j + 3u) * KC + kk];
                //@for i in 4 {
                acc_$i_$j = fma(vec4<f32>(a_$i.w), vec4<f32>(b0_$j.w, b1_$j.w, b2_$j.w, b3_$j.w),
                            fma(vec4<f32>(a_$i.z), vec4<f32>(b0_$j.z, b1_$j.z, b2_$j.z, b3_$j.z),
                            fma(vec4<f32>(a_$i.y), vec4<f32>(b0_$j.y, b1_$j.y, b2_$j.y, b3_$j.y),
                            fma(vec4<f32>(a_$i.x), vec4<f32>(b0_$j.x, b1_$j.x, b2_$j.x, b3_$j.x), acc_$i_$j))));
                //@}
                //@}
            }
            workgroupBarrier();
        }
    }
    //@for i in 4 {
    let row_$i = row0 + tr + ${i*16}u;
    if (row_$i < g.rows) {
        let at_$i = position(g, row_image(g, row_$i), row_pixel(g, row_$i)) * cin4;
        //@for j in 4 {
        if (col0 + tc + ${j*4}u < cin4) {
            let o = at_$i + col0 + tc + ${j*4}u;
            var v = acc_$i_$j;
//@if !LOSS {
            if ((FLAGS & FLAG_MASK) != 0u) {
                v = select(vec4<f32>(0.0), v, aux_in[o] > vec4<f32>(0.0));
            }
//@}
            if ((FLAGS & FLAG_ACCUMULATE) != 0u) {
                v += output[o];
            }
            output[o] = v;
        }
        //@}
    }
    //@}
}

@compute @workgroup_size(64)
fn conv_backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let g = prm.geo;
    let wg = workgroup_index(wid, nwg);
    let cin4 = prm.cin4;
    let cout4 = prm.cout4;
    let groups = prm.n_taps * cin4 + 1u;
    let col_blocks = (cout4 + 7u) / 8u;
    let row_blocks = (groups + 15u) / 16u;
    let c = wg / (col_blocks * row_blocks);
    if (c >= prm.n_chunks) {
        return;
    }
    let col0 = (wg % col_blocks) * 8u;
    let g0 = ((wg / col_blocks) % row_blocks) * 16u;
    let tg = lid / 4u;   // this invocation's row group g0 + tg
    let tc = lid % 4u;   // columns tc and tc + 4
    // Sums over each step of KP positions (`step_*`) are added to the chunk's totals (`acc_*`), so that no f32
    // running sum grows over more than chunk / KP terms: 32 + 32 accumulators per invocation.
    //@for r in 4 {
    //@for j in 2 {
    var acc_$r_$j = vec4<f32>(0.0);
    //@}
    //@}
    // Staging: invocation lid loads group lid % 16 of positions lid / 16 + 4e (operand a), and column lid % 8 of
    // positions lid / 8 + 8e (operand b).
    let sg = g0 + lid % 16u;
    let s_tap = taps[prm.tap0 + min(sg / cin4, prm.n_taps - 1u)];
    let s_bias = sg == groups - 1u;
    let s_col = col0 + lid % 8u;
    let p0 = c * prm.chunk;
    let p1 = min(p0 + prm.chunk, g.rows);
    for (var pp0 = p0; pp0 < p1; pp0 += KP) {
        //@for e in 4 {
        let p_$e = pp0 + lid / 16u + ${e*4}u;
        let live_$e = p_$e < p1;
        let pc_$e = min(p_$e, g.rows - 1u);
        let img_$e = row_image(g, pc_$e);
        let q_$e = row_pixel(g, pc_$e);
        let src_$e = tap_source(g, img_$e, i32(q_$e / WIDTH), i32(q_$e % WIDTH), s_tap.x, s_tap.y);
        tile_a[(lid / 16u + ${e*4}u) * 16u + lid % 16u] = select(load_input(src_$e, cin4, sg % cin4, live_$e && sg < groups),
                          vec4<f32>(select(0.0, 1.0, live_$e), 0.0, 0.0, 0.0), s_bias);
        //@}
        //@for e in 2 {
        let pb_$e = pp0 + lid / 8u + ${e*8}u;
        let pbc_$e = min(pb_$e, g.rows - 1u);
        let at_$e = position(g, row_image(g, pbc_$e), row_pixel(g, pbc_$e)) * cout4;
        tile_b[(lid / 8u + ${e*8}u) * 8u + lid % 8u] = select(vec4<f32>(0.0), dz[at_$e + min(s_col, cout4 - 1u)],
                                                             pb_$e < p1 && s_col < cout4);
        //@}
        workgroupBarrier();
        //@for r in 4 {
        //@for j in 2 {
        var step_$r_$j = vec4<f32>(0.0);
        //@}
        //@}
        for (var pp = 0u; pp < KP; pp++) {
            let a = tile_a[pp * 16u + tg];
            //@for j in 2 {
            let d_$j = tile_b[pp * 8u + tc + ${j*4}u];
            step_0_$j = fma(vec4<f32>(a.x), d_$j, step_0_$j);
            step_1_$j = fma(vec4<f32>(a.y), d_$j, step_1_$j);
            step_2_$j = fma(vec4<f32>(a.z), d_$j, step_2_$j);
            step_3_$j = fma(vec4<f32>(a.w), d_$j, step_3_$j);
            //@}
        }
        //@for r in 4 {
        //@for j in 2 {
        acc_$r_$j += step_$r_$j;
        //@}
        //@}
        workgroupBarrier();
    }
    let rows = prm.n_taps * cin4 * 4u + 1u;
    let out = c * rows * cout4;
    let gi = g0 + tg;
    if (gi < groups) {
        //@for j in 2 {
        if (col0 + tc + ${j*4}u < cout4) {
            if (gi == groups - 1u) {
                partial[out + (rows - 1u) * cout4 + col0 + tc + ${j*4}u] = acc_0_$j;
            } else {
                //@for r in 4 {
                partial[out + (gi * 4u + ${r}u) * cout4 + col0 + tc + ${j*4}u] = acc_$r_$j;
                //@}
            }
        }
        //@}
    }
}
