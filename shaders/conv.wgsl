// conv.wgsl — masked / 1x1 convolution as an implicit GEMM over the live taps only.
//
// Entry point `conv_forward` computes, for output rows r < rows and output column-vectors n < cout4:
//     out[p(r), n] = act( bias[n] + Σ_t Σ_k in[src(p(r), t), k] · w[t·cin + k, n] )        (+ out[p(r), n] if ACCUMULATE)
// The same kernel runs the *backward-data* pass of a conv: with `in` = dz, `w` = the transposed block from
// `transpose_weights` and NEGATE_TAPS set, it computes dx[q] = Σ_t Σ_co dz[q − off_t, co] · w[t, ci, co].
//
// Layouts (all vec4<f32>, channel counts padded to multiples of 4):
//   in     [positions, cin4]          positions = images · 784, raster order inside an image
//   weight [(n_taps · cin4·4 + 1) scalar rows, cout4]   live tap t, input channel k → row t·cin4·4 + k; last row = bias
//   out    [positions, cout4]
// Taps: a masked k×k kernel keeps a prefix of its taps in raster order (A: ⌊k²/2⌋ taps, B: ⌊k²/2⌋+1, 1×1: 1),
// so tap t sits at (t / k, t % k) and reads the input at offset (t / k − k/2, t % k − k/2); masked taps are never
// visited. Out-of-image reads are the zero padding.
// Rows and positions: over all positions (pixel == 0xffffffff) row r is position r of the image-major layout
// (image r / 784, pixel r % 784, position i·784 + p). In single-pixel mode (the incremental sampler's generic
// path) row r is image r at pixel `pixel`, and the buffers are position-major: position (i, p) sits at p·rows + i,
// so that one pixel of every image is contiguous (as `conv_pixel` needs for its uniform windows).
//
// Bindings: 0 uniform ConvParams (dynamic offset), 1 in (read), 2 weight (read), 3 out (read_write).
// Dispatch: a workgroup of 64 invocations covers 64·TM rows × TN output vec4 columns; workgroups are linear over
//   x and y (wg = wid.x + wid.y · num_workgroups.x), column blocks fastest.

struct ConvParams {
    rows: u32,
    cin4: u32,
    cout4: u32,
    n_taps: u32,
    kernel: u32,
    flags: u32,     // 1: ReLU, 2: add bias row, 4: accumulate into out, 8: negate tap offsets (backward-data)
    pixel: u32,
    bias_row: u32,  // scalar row index of the bias
}

@group(0) @binding(0) var<uniform> prm: ConvParams;
@group(0) @binding(1) var<storage, read> input: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> weight: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> output: array<vec4<f32>>;

// Register tile of one invocation: TM output rows (positions) × TN output vec4 columns. The host may substitute
// other values. All invocations of a workgroup share the same output columns, so the weight loads of a workgroup
// are uniform (the same address in every lane): CPU rasterisers load them once, GPUs serve them from cache.
const TM: u32 = 4u;
const TN: u32 = 32u;

fn image_of(r: u32) -> u32 {
    return select(r, r / 784u, prm.pixel == 0xffffffffu);
}

fn pixel_of(r: u32) -> u32 {
    return select(prm.pixel, r % 784u, prm.pixel == 0xffffffffu);
}

fn position(image: u32, pixel: u32) -> u32 {
    return select(pixel * prm.rows + image, image * 784u + pixel, prm.pixel == 0xffffffffu);
}

@compute @workgroup_size(64)
fn conv_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let wg = wid.x + wid.y * nwg.x;
    let col_blocks = (prm.cout4 + TN - 1u) / TN;
    let col0 = (wg % col_blocks) * TN;
    let row0 = ((wg / col_blocks) * 64u + lid) * TM;
    if (row0 >= prm.rows) {
        return;
    }
    var img: array<u32, TM>;
    var pos: array<u32, TM>;
    var py: array<i32, TM>;
    var px: array<i32, TM>;
    var acc: array<array<vec4<f32>, TN>, TM>;
    for (var m = 0u; m < TM; m++) {
        let r = min(row0 + m, prm.rows - 1u);
        img[m] = image_of(r);
        let q = pixel_of(r);
        pos[m] = position(img[m], q);
        py[m] = i32(q / 28u);
        px[m] = i32(q % 28u);
        for (var n = 0u; n < TN; n++) {
            acc[m][n] = vec4<f32>(0.0);
        }
    }
    let half = i32(prm.kernel / 2u);
    let sign = select(1, -1, (prm.flags & 8u) != 0u);
    let cin4 = prm.cin4;
    let cout4 = prm.cout4;
    // Columns past the end (cout4 not a multiple of TN) read column cout4 − 1 and are never written.
    var cols: array<u32, TN>;
    for (var n = 0u; n < TN; n++) {
        cols[n] = min(col0 + n, cout4 - 1u);
    }
    for (var t = 0u; t < prm.n_taps; t++) {
        let dy = sign * (i32(t / prm.kernel) - half);
        let dx = sign * (i32(t % prm.kernel) - half);
        var src: array<i32, TM>;
        for (var m = 0u; m < TM; m++) {
            let y = py[m] + dy;
            let x = px[m] + dx;
            let inside = y >= 0 && y < 28 && x >= 0 && x < 28;
            src[m] = select(-1, i32(position(img[m], u32(y * 28 + x)) * cin4), inside);
        }
        var wrow = (t * cin4) * 4u * cout4;
        for (var k = 0u; k < cin4; k++) {
            var a: array<vec4<f32>, TM>;
            for (var m = 0u; m < TM; m++) {
                a[m] = select(vec4<f32>(0.0), input[u32(max(src[m], 0)) + k], src[m] >= 0);
            }
            for (var n = 0u; n < TN; n++) {
                let w0 = weight[wrow + cols[n]];
                let w1 = weight[wrow + cout4 + cols[n]];
                let w2 = weight[wrow + 2u * cout4 + cols[n]];
                let w3 = weight[wrow + 3u * cout4 + cols[n]];
                for (var m = 0u; m < TM; m++) {
                    acc[m][n] += a[m].x * w0 + a[m].y * w1 + a[m].z * w2 + a[m].w * w3;
                }
            }
            wrow += 4u * cout4;
        }
    }
    for (var n = 0u; n < TN; n++) {
        if (col0 + n >= cout4) {
            break;
        }
        var bias = vec4<f32>(0.0);
        if ((prm.flags & 2u) != 0u) {
            bias = weight[prm.bias_row * cout4 + col0 + n];
        }
        for (var m = 0u; m < TM; m++) {
            if (row0 + m < prm.rows) {
                var v = acc[m][n] + bias;
                if ((prm.flags & 1u) != 0u) {
                    v = max(v, vec4<f32>(0.0));
                }
                let o = pos[m] * cout4 + col0 + n;
                if ((prm.flags & 4u) != 0u) {
                    v += output[o];
                }
                output[o] = v;
            }
        }
    }
}

// Entry point `transpose_weights`: the block for backward-data. For live tap t,
//     wt[t·cout4·4 + co, ci] = w[t·cin4·4 + ci, co]
// with prm.cin4 / prm.cout4 / prm.n_taps describing the *forward* conv; `wt` has no bias row.
// Bindings: 1 w (read) as `input`, 3 wt (read_write) as `output` (binding 2 is bound but unused).
// Dispatch: one invocation per vec4 of wt (n_taps · cout4·4 · cin4 of them), linear ids as above.
@compute @workgroup_size(64)
fn transpose_weights(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * 64u * nwg.x;
    let cin = prm.cin4 * 4u;
    let cout = prm.cout4 * 4u;
    if (id >= prm.n_taps * cout * prm.cin4) {
        return;
    }
    let row = id / prm.cin4;       // t·cout + co
    let ci0 = (id % prm.cin4) * 4u;
    let t = row / cout;
    let co = row % cout;
    var v: vec4<f32>;
    for (var j = 0u; j < 4u; j++) {
        let e = (t * cin + ci0 + j) * cout + co;
        v[j] = input[e / 4u][e % 4u];
    }
    output[id] = v;
}
