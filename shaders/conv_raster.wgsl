// conv_raster.wgsl — convolutions over live taps as register-tiled implicit GEMMs, shaped for CPU rasterisers
// (lavapipe / llvmpipe): the `raster` kernel version. `conv_tiled.wgsl` computes the same for real GPUs.
//
// Entry points (every sum runs over the live taps t of the host's tap table and the input channels):
//   conv_forward          out[r, n]  = act(bias[n] + Σ_t Σ_k in[src(r, +off_t), k] · w[t·cin + k, n])
//                                      [+ residual → aux_out]; with LOSS the logit's BCE and its gradient
//   conv_backward_data    dx[r, ci]  = [mask ·] Σ_t Σ_co dz[src(r, −off_t), co] · w[t·cin + ci, co]  (+= dx)
//   conv_backward_weight  partial[c, t·cin + k, n] = Σ_{p in chunk c} in[src(p, +off_t), k] · dz[p, n]
//                         (lanes own output columns here: per position each lane loads its TN dz vectors and one
//                         input vector of the tile's TI row groups, which subgroupBroadcast hands round; TU
//                         positions per step)
//                         partial[c, bias_row, n]  = Σ_{p in chunk c} dz[p, n]
//                         (chunks are then summed in a fixed order by reduce_chunks: no float atomics)
// Rows map to buffer positions through the prelude's Geometry (image-major for training, position-major for
// the sampler). off_t = (dy, dx) = taps[tap0 + t]; reads outside the image are zero.
//
// Layouts (vec4<f32>, channels padded to multiples of 4 with zeros):
//   activations [positions, C4];  weight [n_taps · cin4·4 scalar rows, cout4]: row t·cin4·4 + k holds tap t and
//   input channel k, read in place by every entry (no transposed copy); bias [cout4], or a per-image table
//   [images, cout4] when BIAS_TABLE = 1. With BYTES the input is the u8 image itself (4 pixels per u32 word,
//   cin4 = 1), so batches are uploaded as bytes and never expanded on the host; only channel 0 is live then, and
//   the kernels skip the three padding channels (their weight rows and gradients stay zero).
//
// Why this shape: llvmpipe runs a subgroup of SG invocations as one SIMD row and turns every load whose address
// differs per lane into a loop over the lanes (tens of nanoseconds per vec4), while arithmetic is cheap. So each
// lane owns TM output rows × TN output vec4 columns in registers (every index a compile-time constant, unrolled
// by the template: a dynamically indexed local array would live in memory), and the 4·TN weight vectors a step
// needs are loaded once per subgroup — lane i loads vector i — and handed round with subgroupBroadcast. Loads
// per step: TM input vectors + 4·TN/SG weight vectors, for 16·TM·TN multiply-adds per lane.
//
// Bindings, the uniform block and the forward epilogue: conv_common.wgsl, which the host prepends.
//   conv_forward uses 1–7, conv_backward_data 1 (= dz), 2, 4, 5, 6 (both also 10, 11 for a weight in several
//   uniform windows); conv_backward_weight 1, 4, 8, 9.
// Dispatch: one subgroup (SG invocations) per workgroup, linear over x and y.
//   conv_forward / conv_backward_data: ⌈rows / (TM·SG)⌉ · ⌈cols4 / TN⌉ workgroups, column blocks fastest
//   (cols4 = cout4 forward, cin4 backward-data).
//   conv_backward_weight: n_chunks · ⌈groups / TI⌉ · ⌈cout4 / (SG·TN)⌉ workgroups (groups = n_taps · cin4 + 1 row
//   groups of 4 scalar rows, the last the bias), column blocks fastest, then row blocks, then chunks.
// Needs subgroups of exactly SG invocations.


// Subgroup size, register tile (TM rows × TN vec4 columns; TI row groups in the weight gradient), variants.
const SG: u32 = 8u;
const TM: u32 = 4u;
const TN: u32 = 8u;
const TI: u32 = 4u;
// Positions per step of conv_backward_weight (its pairwise sums are written for 4).
const TU: u32 = 4u;

// Input vector k of buffer position `pos` (row stride `stride` vec4s), zero where pos < 0 (the padding).
// Branch-free: every lane loads from a clamped address, then selects.
fn load_input(pos: i32, stride: u32, k: u32) -> vec4<f32> {
    let p = u32(max(pos, 0));
//@if BYTES {
    let v = vec4<f32>(byte_of(input[p >> 2u], p), 0.0, 0.0, 0.0);
//@}
//@if !BYTES {
    let v = input[p * stride + k];
//@}
    return select(vec4<f32>(0.0), v, pos >= 0);
}


@compute @workgroup_size(SG)
fn conv_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(subgroup_invocation_id) lane: u32) {
    let g = prm.geo;
    let wg = workgroup_index(wid, nwg);
    let cin4 = prm.cin4;
    let cout4 = prm.cout4;
    let col_blocks = (cout4 + TN - 1u) / TN;
    let col0 = (wg % col_blocks) * TN;
    let row0 = (wg / col_blocks) * (TM * SG) + lane;
    //@for m in TM {
    let row_$m = row0 + ${m*SG}u;
    let r_$m = min(row_$m, g.rows - 1u);
    let img_$m = row_image(g, r_$m);
    let q_$m = row_pixel(g, r_$m);
    let y_$m = i32(q_$m / WIDTH);
    let x_$m = i32(q_$m % WIDTH);
    //@}
    // The accumulators start from the bias: one row, or a per-image table read at each row's image. Image-major
    // rows of a lane (positions row0, row0 + SG, …, row0 + (TM−1)·SG) span at most two images, its first and last
    // row's, when an image has more than (TM−1)·SG pixels, so it loads those two and picks; otherwise (images
    // smaller than 5×5), and for position-major rows (the sampler), each row loads its own image's.
    //@for n in TN {
    let b_$n = bias_of(img_0, col0 + ${n}u);
    //@for m in TM {
    var acc_$m_$n = b_$n;
    //@}
    //@}
    if (BIAS_TABLE != 0u) {
        if (ORDER == IMAGE_MAJOR && (TM - 1u) * SG < PIXELS) {
            //@for n in TN {
            let bl_$n = bias_of(img_${TM-1}, col0 + ${n}u);
            //@for m in TM {
            acc_$m_$n = select(b_$n, bl_$n, img_$m != img_0);
            //@}
            //@}
        } else {
            //@for m in TM {
            //@for n in TN {
            acc_$m_$n = bias_of(img_$m, col0 + ${n}u);
            //@}
            //@}
        }
    }
    // Weight vector i of a step (i < 4·TN: input lane j = i / TN, column n = i % TN) is loaded by lane i % SG of
    // load l = i / SG. Lanes past 4·TN load a clamped copy that nobody reads.
    //@for l in ${(4*TN+SG-1)/SG} {
    let wj_$l = min((${l*SG}u + lane) / TN, 3u);
    let wn_$l = min(col0 + (${l*SG}u + lane) % TN, cout4 - 1u);
    //@}
    // One copy of the tap loop per window of the weight (conv_common.wgsl's WEIGHT_WINDOWS; usually one).
    //@for win in WEIGHT_WINDOWS {
    for (var t = ${win}u * TAPS_PER_WINDOW; t < min(${win + 1}u * TAPS_PER_WINDOW, prm.n_taps); t++) {
        let tap = taps[prm.tap0 + t];
        //@for m in TM {
        let src_$m = tap_source(g, img_$m, y_$m, x_$m, tap.x, tap.y);
        //@}
        var w = (t - ${win}u * TAPS_PER_WINDOW) * cin4 * 4u * cout4;
        for (var k = 0u; k < cin4; k++) {
            //@for m in TM {
            let a_$m = load_input(src_$m, cin4, k);
            //@}
//@if BYTES {
            // The image has one channel: only weight row 0 of the step is live (rows 1–3 are channel padding).
            //@for l in ${(TN+SG-1)/SG} {
            let wl_$l = weight_window_$win(w + min(col0 + ${l*SG}u + lane, cout4 - 1u));
            //@}
            //@for n in TN {
            let w0_$n = subgroupBroadcast(wl_${n/SG}, ${n%SG}u);
            //@for m in TM {
            acc_$m_$n = fma(vec4<f32>(a_$m.x), w0_$n, acc_$m_$n);
            //@}
            //@}
//@}
//@if !BYTES {
            //@for l in ${(4*TN+SG-1)/SG} {
            let wl_$l = weight_window_$win(w + wj_$l * cout4 + wn_$l);
            //@}
            //@for n in TN {
            let w0_$n = subgroupBroadcast(wl_${n/SG}, ${n%SG}u);
            let w1_$n = subgroupBroadcast(wl_${(TN+n)/SG}, ${(TN+n)%SG}u);
            let w2_$n = subgroupBroadcast(wl_${(2*TN+n)/SG}, ${(2*TN+n)%SG}u);
            let w3_$n = subgroupBroadcast(wl_${(3*TN+n)/SG}, ${(3*TN+n)%SG}u);
            //@for m in TM {
            acc_$m_$n = fma(vec4<f32>(a_$m.w), w3_$n, fma(vec4<f32>(a_$m.z), w2_$n,
                        fma(vec4<f32>(a_$m.y), w1_$n, fma(vec4<f32>(a_$m.x), w0_$n, acc_$m_$n))));
            //@}
            //@}
//@}
            w += 4u * cout4;
        }
    }
    //@}
    //@if GATE {
    // One column block holds both halves of the gate's input (TN = cout4, col0 = 0): columns n and n + TN/2.
    //@for m in TM {
    if (row_$m < g.rows) {
        let pos_$m = position(g, img_$m, q_$m);
        //@for n in ${TN/2} {
        gate_epilogue(acc_$m_$n, acc_$m_${n + TN/2}, ${n}u, img_$m, pos_$m);
        //@}
    }
    //@}
    //@}
    //@if !GATE {
    //@for m in TM {
    if (row_$m < g.rows) {
        let pos_$m = position(g, img_$m, q_$m);
        //@for n in TN {
        if (col0 + ${n}u < cout4) {
            forward_epilogue(acc_$m_$n, col0 + ${n}u, pos_$m);
        }
        //@}
    }
    //@}
    //@}
}

@compute @workgroup_size(SG)
fn conv_backward_data(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(subgroup_invocation_id) lane: u32) {
    let g = prm.geo;
    let wg = workgroup_index(wid, nwg);
    let cin4 = prm.cin4;
    let cout4 = prm.cout4;
    let col_blocks = (cin4 + TN - 1u) / TN;
    let col0 = (wg % col_blocks) * TN;
    let row0 = (wg / col_blocks) * (TM * SG) + lane;
    //@for m in TM {
    let row_$m = row0 + ${m*SG}u;
    let r_$m = min(row_$m, g.rows - 1u);
    let img_$m = row_image(g, r_$m);
    let q_$m = row_pixel(g, r_$m);
    let y_$m = i32(q_$m / WIDTH);
    let x_$m = i32(q_$m % WIDTH);
    //@for n in TN {
    var acc_$m_$n = vec4<f32>(0.0);
    //@}
    //@}
    // Weight vector i of a step is scalar row 4·col0 + i (input channel) at the step's dz vector k: the rows of
    // output column n are i = 4n .. 4n + 3.
    //@for l in ${(4*TN+SG-1)/SG} {
    let wi_$l = min(4u * col0 + ${l*SG}u + lane, cin4 * 4u - 1u);
    //@}
    //@for win in WEIGHT_WINDOWS {
    for (var t = ${win}u * TAPS_PER_WINDOW; t < min(${win + 1}u * TAPS_PER_WINDOW, prm.n_taps); t++) {
        let tap = taps[prm.tap0 + t];
        //@for m in TM {
        let src_$m = tap_source(g, img_$m, y_$m, x_$m, -tap.x, -tap.y);
        //@}
        let wt = (t - ${win}u * TAPS_PER_WINDOW) * cin4 * 4u;
        for (var k = 0u; k < cout4; k++) {
            //@for m in TM {
            let a_$m = load_input(src_$m, cout4, k);
            //@}
            //@for l in ${(4*TN+SG-1)/SG} {
            let wl_$l = weight_window_$win((wt + wi_$l) * cout4 + k);
            //@}
            //@for n in TN {
            let w0_$n = subgroupBroadcast(wl_${(4*n)/SG}, ${(4*n)%SG}u);
            let w1_$n = subgroupBroadcast(wl_${(4*n+1)/SG}, ${(4*n+1)%SG}u);
            let w2_$n = subgroupBroadcast(wl_${(4*n+2)/SG}, ${(4*n+2)%SG}u);
            let w3_$n = subgroupBroadcast(wl_${(4*n+3)/SG}, ${(4*n+3)%SG}u);
            //@for m in TM {
            // Σ_k dz_k · w_j[k] for the four input channels j, as a chain of fused multiply-adds over k.
            acc_$m_$n = fma(vec4<f32>(a_$m.w), vec4<f32>(w0_$n.w, w1_$n.w, w2_$n.w, w3_$n.w),
                        fma(vec4<f32>(a_$m.z), vec4<f32>(w0_$n.z, w1_$n.z, w2_$n.z, w3_$n.z),
                        fma(vec4<f32>(a_$m.y), vec4<f32>(w0_$n.y, w1_$n.y, w2_$n.y, w3_$n.y),
                        fma(vec4<f32>(a_$m.x), vec4<f32>(w0_$n.x, w1_$n.x, w2_$n.x, w3_$n.x), acc_$m_$n))));
            //@}
            //@}
        }
    }
    //@}
    //@for m in TM {
    if (row_$m < g.rows) {
        let at_$m = position(g, img_$m, q_$m) * cin4;
        //@for n in TN {
        if (col0 + ${n}u < cin4) {
            let o = at_$m + col0 + ${n}u;
            var v = acc_$m_$n;
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

@compute @workgroup_size(SG)
fn conv_backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(subgroup_invocation_id) lane: u32) {
    let g = prm.geo;
    let wg = workgroup_index(wid, nwg);
    let cin4 = prm.cin4;
    let cout4 = prm.cout4;
    let groups = prm.n_taps * cin4 + 1u;
    let col_blocks = (cout4 + SG * TN - 1u) / (SG * TN);
    let row_blocks = (groups + TI - 1u) / TI;
    let c = wg / (col_blocks * row_blocks);
    if (c >= prm.n_chunks) {
        return;
    }
    let col0 = (wg % col_blocks) * SG * TN;
    let g0 = ((wg / col_blocks) % row_blocks) * TI;
    // Lane `lane` owns output columns col0 + lane + SG·n, and loads the input vectors of row groups
    // g0 + lane + SG·l, which every lane then receives by subgroupBroadcast.
    //@for l in ${(TI+SG-1)/SG} {
    let gl_$l = g0 + ${l*SG}u + lane;
    let tap_$l = taps[prm.tap0 + min(gl_$l / cin4, prm.n_taps - 1u)];
    let kv_$l = gl_$l % cin4;
    let bias_row_$l = gl_$l == groups - 1u;
    let live_row_$l = gl_$l < groups;
    //@}
    //@for n in TN {
    let col_$n = min(col0 + lane + ${n*SG}u, cout4 - 1u);
    //@}
    //@for i in TI {
    //@for n in TN {
    var acc_$i_$n = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    //@}
    //@}
    let p0 = c * prm.chunk;
    let p1 = min(p0 + prm.chunk, g.rows);
    // Four positions per step: each accumulator takes their pairwise sum, one load and store per four products
    // (the accumulators live in memory on CPU rasterisers) and a running sum of chunk / 4 terms. Positions past
    // the chunk read a clamped position and a zero dz.
    for (var p = p0; p < p1; p += TU) {
        //@for u in TU {
        let pu_$u = p + ${u}u;
        let pc_$u = min(pu_$u, p1 - 1u);
        let img_$u = row_image(g, pc_$u);
        let q_$u = row_pixel(g, pc_$u);
        let y_$u = i32(q_$u / WIDTH);
        let x_$u = i32(q_$u % WIDTH);
        let at_$u = position(g, img_$u, q_$u) * cout4;
        //@for n in TN {
        let d_$u_$n = select(vec4<f32>(0.0), dz[at_$u + col_$n], pu_$u < p1);
        //@}
        //@for l in ${(TI+SG-1)/SG} {
        let xl_$u_$l = select(select(vec4<f32>(0.0), load_input(tap_source(g, img_$u, y_$u, x_$u, tap_$l.x, tap_$l.y), cin4, kv_$l), live_row_$l),
                              vec4<f32>(1.0, 0.0, 0.0, 0.0), bias_row_$l);
        //@}
        //@}
        //@for i in TI {
        //@for u in TU {
        let x_$u_$i = subgroupBroadcast(xl_$u_${i/SG}, ${i%SG}u);
        //@}
        //@for n in TN {
        //@for j in ${4-3*BYTES} {
        acc_$i_$n[$j] += fma(vec4<f32>(x_1_$i[$j]), d_1_$n, vec4<f32>(x_0_$i[$j]) * d_0_$n)
                       + fma(vec4<f32>(x_3_$i[$j]), d_3_$n, vec4<f32>(x_2_$i[$j]) * d_2_$n);
        //@}
        //@}
        //@}
    }
    let rows = prm.n_taps * cin4 * 4u + 1u;
    let out = c * rows * cout4;
    //@for i in TI {
    if (g0 + ${i}u < groups) {
        //@for n in TN {
        if (col0 + lane + ${n*SG}u < cout4) {
            if (g0 + ${i}u == groups - 1u) {
                partial[out + (rows - 1u) * cout4 + col_$n] = acc_$i_$n[0];
            } else {
                //@for j in 4 {
                partial[out + ((g0 + ${i}u) * 4u + ${j}u) * cout4 + col_$n] = acc_$i_$n[${j}];
                //@}
            }
        }
        //@}
    }
    //@}
}
