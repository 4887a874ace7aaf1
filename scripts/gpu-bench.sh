#!/usr/bin/env bash
# gpu-bench.sh — every speed figure of pixelcnn on this machine's GPU in one command (at most ~8 minutes),
# beside PyTorch's on the same GPU when torch with CUDA is installed. Writes one JSON file.
#
#   scripts/gpu-bench.sh [PIXELCNN_BINARY] [OUT.json]
#
# PIXELCNN_BINARY defaults to target/release/pixelcnn (build it anywhere with `cargo build --release`; it needs
# no files at run time). OUT defaults to gpu-bench.json. The reference is ../shared/reference/pixelcnn_torch.py
# (or $PIXELCNN_TORCH_REFERENCE). Set WGPU_ADAPTER_NAME to pick an adapter (see `pixelcnn devices`).
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bin="${1:-$here/target/release/pixelcnn}"
out="${2:-gpu-bench.json}"
ref="${PIXELCNN_TORCH_REFERENCE:-$here/../shared/reference/pixelcnn_torch.py}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
[ -x "$bin" ] || { echo "no pixelcnn binary at $bin (cargo build --release)" >&2; exit 1; }

# Every step has its own limit, and all of them together stop at TOTAL seconds (8 minutes), however slow the
# adapter: on a GPU each step takes seconds; on a CPU rasteriser the later steps may be cut short.
TOTAL=${GPU_BENCH_SECONDS:-470}
step() { # name, seconds limit, command...
    local name=$1 limit=$2; shift 2
    local left=$((TOTAL - SECONDS))
    [ "$left" -lt "$limit" ] && limit=$left
    echo "== $name (limit ${limit} s): $*" >&2
    if [ "$limit" -le 0 ]; then
        echo "   skipped: the ${TOTAL} s budget is spent" >&2
        echo "null" > "$tmp/$name.json"
        return
    fi
    local t0=$SECONDS
    if timeout "$limit" "$@" > "$tmp/$name.json" 2> "$tmp/$name.err"; then
        echo "   done in $((SECONDS - t0)) s" >&2
    else
        echo "   FAILED or timed out after $((SECONDS - t0)) s: $(tail -n 3 "$tmp/$name.err")" >&2
        echo "null" > "$tmp/$name.json"
    fi
}

step devices 30 "$bin" devices --json
step train_default 120 "$bin" bench train --json --batch-size 128 --steps 5
step train_small 60 "$bin" bench train --json --filters 32 --blocks 2 --batch-size 128 --steps 10
step train_gated 120 "$bin" bench train --json --arch gated --filters 64 --layers 8 --conditional --batch-size 128 --steps 3
step sample_default 90 "$bin" bench sample --json --count 64
step sample_gated 90 "$bin" bench sample --json --count 64 --arch gated --filters 64 --layers 8 --conditional

torch_note="skipped: no torch with CUDA"
if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null && [ -f "$ref" ]; then
    torch_note="ran"
    step torch_train_tf32 60 python3 "$ref" --device cuda --json bench-train
    step torch_train_fp32 60 python3 "$ref" --device cuda --no-tf32 --json bench-train
    step torch_sample 60 python3 "$ref" --device cuda --json bench-sample --steps 112 28
else
    echo "== PyTorch reference $torch_note" >&2
fi

python3 - "$tmp" "$out" "$torch_note" <<'PY'
import json, os, sys, datetime, platform
tmp, out, torch_note = sys.argv[1:4]
def load(name):
    p = os.path.join(tmp, name + ".json")
    if not os.path.exists(p):
        return None
    lines = [l for l in open(p).read().splitlines() if l.strip()]
    try:
        return json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        return {"unparsed": lines[-5:]}
names = ["devices", "train_default", "train_small", "train_gated", "sample_default", "sample_gated",
         "torch_train_tf32", "torch_train_fp32", "torch_sample"]
result = {"when": datetime.datetime.utcnow().isoformat() + "Z", "host": platform.node(), "pytorch": torch_note}
result.update({n: load(n) for n in names})
adapters = result.get("devices") or []
result["adapter"] = next((a for a in adapters if a.get("selected")), None)
json.dump(result, open(out, "w"), indent=1)
def fig(n, k):
    v = result.get(n)
    return v.get(k) if isinstance(v, dict) else None
print(f"wrote {out}")
for n in ["train_default", "train_small", "train_gated"]:
    print(f"  {n}: {fig(n, 'images_per_second')} images/s, {fig(n, 'gflops')} GFLOP/s")
for n in ["sample_default", "sample_gated"]:
    print(f"  {n}: incremental {fig(n, 'incremental_seconds')} s for 64 images, {fig(n, 'dispatches_per_pixel')} dispatches/pixel")
for n in ["torch_train_tf32", "torch_train_fp32"]:
    print(f"  {n}: {fig(n, 'images_per_s')} images/s")
PY
