// adam.wgsl — the Adam update with Keras semantics, and the Polyak average of the parameters, over the whole flat
// parameter vector at once.
//
// Entry point `adam_update`, element-wise for i < n4 (vec4s):
//     m ← m + (g − m)(1 − β1);   v ← v + (g² − v)(1 − β2);   θ ← θ − lr_t · m / (√v + ε)
// lr_t = lr · √(1 − β2^t) / (1 − β1^t) is computed on the host in f64 each step (both bias corrections).
// Entry point `ema_update`, after adam_update in every training step: ema ← ema − rate · (ema − θ), with
// rate = 1 − decay (the exponential moving average of openai/pixel-cnn and TensorFlow, decay 0.9995 by default).
// Layouts: params, grads, m, v, ema: vec4<f32> [n4], the GPU parameter layout (padding entries have zero gradients
// and stay zero). Bindings: 0 uniform AdamParams (dynamic offset), 1 params (read_write), 2 grads (read),
//   3 m (read_write), 4 v (read_write), 5 ema (read_write; ema_update only). Dispatch: one invocation per vec4;
//   id = gid.x + gid.y · 64 · num_workgroups.x.

struct AdamParams {
    n4: u32,
    lr_t: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    ema_rate: f32,      // ema_update: 1 − decay
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> prm: AdamParams;
@group(0) @binding(1) var<storage, read_write> params: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> grads: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> m: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> v: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> ema: array<vec4<f32>>;

@compute @workgroup_size(64)
fn adam_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * 64u * nwg.x;
    if (i >= prm.n4) {
        return;
    }
    let g = grads[i];
    let mi = m[i] + (g - m[i]) * (1.0 - prm.beta1);
    let vi = v[i] + (g * g - v[i]) * (1.0 - prm.beta2);
    m[i] = mi;
    v[i] = vi;
    params[i] = params[i] - prm.lr_t * mi / (sqrt(vi) + prm.eps);
}

@compute @workgroup_size(64)
fn ema_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * 64u * nwg.x;
    if (i >= prm.n4) {
        return;
    }
    let e = ema[i];
    ema[i] = e - prm.ema_rate * (e - params[i]);
}
