// bce.wgsl — sigmoid + binary cross-entropy from logits, and its gradient.
//
// Entry point `bce_loss_grad`, for every position p < positions (z = logit, x = target pixel, both lane .x):
//     loss[p] = max(z, 0) − z·x + log(1 + exp(−|z|))          (the stable softplus form)
//     grad[p] = ((σ(z) − x) · scale, 0, 0, 0)                   scale = 1 / (batch · 784): the mean's gradient
// Layouts: logits, target, grad: vec4<f32> [positions] (1 channel padded to 4); loss: f32 [positions].
// Bindings: 0 uniform BceParams (dynamic offset), 1 logits (read), 2 targets (read), 3 grad (read_write),
//   4 loss (read_write). Dispatch: one invocation per position; id = gid.x + gid.y · 64 · num_workgroups.x.

struct BceParams {
    positions: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> prm: BceParams;
@group(0) @binding(1) var<storage, read> logits: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> targets: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> grad: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;

@compute @workgroup_size(64)
fn bce_loss_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let p = gid.x + gid.y * 64u * nwg.x;
    if (p >= prm.positions) {
        return;
    }
    let z = logits[p].x;
    let x = targets[p].x;
    loss[p] = max(z, 0.0) - z * x + log(1.0 + exp(-abs(z)));
    let s = 1.0 / (1.0 + exp(-z));
    grad[p] = vec4<f32>((s - x) * prm.scale, 0.0, 0.0, 0.0);
}
