// conv_common.wgsl — the interface shared by the conv families `conv_raster.wgsl` and `conv_tiled.wgsl`, which
// compute the same three entry points (conv_forward, conv_backward_data, conv_backward_weight) with different tiles:
// the uniform block, the bindings, the BYTES / LOSS / GATE variants and the forward epilogue (ReLU, residual, fused
// loss, fused gate).
// The host prepends it (after the prelude) to both families, so the two versions can never disagree on a binding.
//
// Bindings: 0 uniform ConvParams (dynamic offset), 1 input (read), 2 weight (read, or uniform with
//   WEIGHT_UNIFORM), 3 bias (read), 4 taps (read), 5 output (read_write), 6 aux_in (read: residual, ReLU output
//   for the mask, or LOSS's target image bytes), 7 aux_out (read_write: residual sum, or LOSS's per-pixel loss),
//   8 dz (read), 9 partial (read_write), 10 and 11 the weight's uniform windows 1 and 2 (see WEIGHT_WINDOWS),
//   12 gate_bias (read) and 13 gate_out (read_write): GATE's class-bias table and gated output.
// Variants: BYTES (the input is the u8 image, 4 pixels per u32 word), LOSS (one output channel, the BCE loss and
//   its gradient fused into the epilogue), GATE (the raster version's conv_forward only: a gated unit fused into
//   the epilogue, so that the incremental sampler computes a gated layer's conv and gate in one dispatch).

struct ConvParams {
    geo: Geometry,
    cin4: u32,
    cout4: u32,
    tap0: u32,
    n_taps: u32,
    chunk: u32,         // conv_backward_weight: positions per chunk (a multiple of SG)
    n_chunks: u32,
    loss_scale: f32,    // LOSS: 1 / (images · PIXELS), the gradient of the mean
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> prm: ConvParams;
//@if BYTES {
@group(0) @binding(1) var<storage, read> input: array<u32>;
//@}
//@if !BYTES {
@group(0) @binding(1) var<storage, read> input: array<vec4<f32>>;
//@}
//@if WEIGHT_UNIFORM {
@group(0) @binding(2) var<uniform> weight: array<vec4<f32>, WEIGHT_VEC4S>;
//@}
//@if !WEIGHT_UNIFORM {
@group(0) @binding(2) var<storage, read> weight: array<vec4<f32>>;
//@}
//@if WEIGHT_VEC4S_1 {
@group(0) @binding(10) var<uniform> weight_1: array<vec4<f32>, WEIGHT_VEC4S_1>;
//@}
//@if WEIGHT_VEC4S_2 {
@group(0) @binding(11) var<uniform> weight_2: array<vec4<f32>, WEIGHT_VEC4S_2>;
//@}
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> taps: array<vec2<i32>>;
@group(0) @binding(5) var<storage, read_write> output: array<vec4<f32>>;
//@if LOSS {
@group(0) @binding(6) var<storage, read> aux_in: array<u32>;
@group(0) @binding(7) var<storage, read_write> aux_out: array<f32>;
//@}
//@if !LOSS {
@group(0) @binding(6) var<storage, read> aux_in: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> aux_out: array<vec4<f32>>;
//@}
// GATE's operands (see gate_epilogue): the gate's per-image class-bias table and the gated output.
@group(0) @binding(12) var<storage, read> gate_bias: array<vec4<f32>>;
@group(0) @binding(13) var<storage, read_write> gate_out: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> dz: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read_write> partial: array<vec4<f32>>;

const BYTES: u32 = 0u;
const LOSS: u32 = 0u;
// GATE (conv_forward of the raster version, with one column block holding every output column: TN = cout4): the
// conv is followed by a gated unit of the same layer schedule, computed in the epilogue (see gate_epilogue).
const GATE: u32 = 0u;
// What a layer does around its sum is fixed when its pipeline is built, not read from the uniform block, because a
// CPU rasteriser runs both sides of every branch under an execution mask: a dead `if` around a load or store still
// costs its loop over the lanes (a runtime flag cost conv_forward 10% on lavapipe). With constants the shader
// compiler drops the dead code. FLAGS: the FLAG_* bits of this dispatch. BIAS_TABLE: 1 when the bias is a per-image
// table [images, cout4] (a class-conditional conv), 0 for one row. (The rows' order is the prelude's ORDER.)
const FLAGS: u32 = 0u;
const BIAS_TABLE: u32 = 0u;
// WEIGHT_UNIFORM: the weight is bound as uniform buffers (the raster version). llvmpipe loads a uniform buffer at
// per-lane addresses with vector gathers, and a storage buffer with a loop over the lanes and a branch per
// component (Mesa 22.3's gallivm `emit_load_ubo` and `emit_load_mem`): 1×1 convs 4–9% faster in training. A weight
// larger than one uniform binding (64 KiB on lavapipe) is split by taps into WEIGHT_WINDOWS windows of
// TAPS_PER_WINDOW taps: `weight` (binding 2, WEIGHT_VEC4S vec4s), `weight_1` (10) and `weight_2` (11), each with
// its own copy of the tap loop (`weight_window_N`), so that every load names its binding (the default model's
// masked 3×3 convs: 160 KiB in three windows). With one window (or storage) TAPS_PER_WINDOW exceeds any tap count.
const WEIGHT_UNIFORM: u32 = 0u;
const WEIGHT_VEC4S: u32 = 1u;
const WEIGHT_WINDOWS: u32 = 1u;
const TAPS_PER_WINDOW: u32 = 65536u;
const WEIGHT_VEC4S_1: u32 = 0u;
const WEIGHT_VEC4S_2: u32 = 0u;

// Vector i of the weight's window 0, 1 or 2 (window 0 is the whole weight when there is one window).
fn weight_window_0(i: u32) -> vec4<f32> {
    return weight[i];
}
//@if WEIGHT_VEC4S_1 {
fn weight_window_1(i: u32) -> vec4<f32> {
    return weight_1[i];
}
//@}
//@if WEIGHT_VEC4S_2 {
fn weight_window_2(i: u32) -> vec4<f32> {
    return weight_2[i];
}
//@}

// The accumulators start from the bias (the CPU reference's order), read per image for per-image tables.
fn bias_of(image: u32, col: u32) -> vec4<f32> {
    return bias[image * BIAS_TABLE * prm.cout4 + min(col, prm.cout4 - 1u)];
}

fn forward_epilogue(acc: vec4<f32>, col: u32, pos: u32) {
    var v = acc;
    if ((FLAGS & FLAG_RELU) != 0u) {
        v = max(v, vec4<f32>(0.0));
    }
    let o = pos * prm.cout4 + col;
//@if LOSS {
    // One output channel: the logit is lane x.
    let z = v.x;
    let x = byte_of(aux_in[pos >> 2u], pos);
    aux_out[pos] = max(z, 0.0) - z * x + log(1.0 + exp(-abs(z)));
    if ((FLAGS & FLAG_LOSS_GRAD) != 0u) {
        v = vec4<f32>((sigmoid(z) - x) * prm.loss_scale, 0.0, 0.0, 0.0);
    }
    output[o] = v;
//@}
//@if !LOSS {
    if ((FLAGS & FLAG_NO_OUTPUT) == 0u) {
        output[o] = v;
    }
    if ((FLAGS & FLAG_RESIDUAL) != 0u) {
        aux_out[o] = v + aux_in[o];
    }
//@}
}

// The GATE epilogue at buffer position `pos` of image `image`, for output vec4 column c of the first half and its
// partner c + h of the second (h = cout4 / 2, the gate's half width): the pre-gate sum z = act(acc) [+ residual]
// goes to `output` (unless FLAG_NO_OUTPUT), and gate_out[pos, c] = tanh(z[c] [+ β[c]]) · σ(z[c + h] [+ β[c + h]])
// with the gate's class bias β = gate_bias[image] (FLAG_BIAS): the conv, then the Add and the Gate layers of the CPU
// reference, in their order.
//@if GATE {
fn gate_epilogue(acc_a: vec4<f32>, acc_g: vec4<f32>, c: u32, image: u32, pos: u32) {
    let h = prm.cout4 / 2u;
    var za = acc_a;
    var zg = acc_g;
    if ((FLAGS & FLAG_RELU) != 0u) {
        za = max(za, vec4<f32>(0.0));
        zg = max(zg, vec4<f32>(0.0));
    }
    let o = pos * prm.cout4 + c;
    if ((FLAGS & FLAG_RESIDUAL) != 0u) {
        za += aux_in[o];
        zg += aux_in[o + h];
    }
    if ((FLAGS & FLAG_NO_OUTPUT) == 0u) {
        output[o] = za;
        output[o + h] = zg;
    }
    if ((FLAGS & FLAG_BIAS) != 0u) {
        za += gate_bias[image * prm.cout4 + c];
        zg += gate_bias[image * prm.cout4 + c + h];
    }
    gate_out[pos * h + c] = tanh(za) * (1.0 / (1.0 + exp(-zg)));
}
//@}
