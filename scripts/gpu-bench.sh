#!/usr/bin/env bash
# gpu-bench.sh — everything a machine with a GPU should measure, in one command of at most ~8 minutes
# (GPU_BENCH_SECONDS, default 470): the adapter and the kernel choice, the adapter's own peak (`bench peak`), the
# training and sampling benchmarks with their per-kernel profiles, PyTorch's fp32 and TF32 training step and its
# sampler on the same GPU (when torch with CUDA is installed), and then, in the time that is left, the seed's own
# recipe (`pixelcnn train` with its defaults: F=128 N=5, batch 128) for as many full epochs as fit, followed by
# `eval` of the last complete epoch on the whole test set and a sample grid from it.
#
#   scripts/gpu-bench.sh [PIXELCNN_BINARY] [OUT_DIR]
#
# PIXELCNN_BINARY defaults to target/release/pixelcnn (build it anywhere with `cargo build --release`; it needs no
# other file at run time). OUT_DIR (default gpu-bench/, or $OUT when that is set, as on the `device` machines)
# receives gpu-bench.json — every figure, with null for each step that was skipped or failed — the logs of every
# step, the model of the last complete epoch (model.safetensors, the Polyak-averaged weights) and its samples.png.
# The training data: $GPU_BENCH_DATA, else $PIXELCNN_DATA, else ../shared/data/fashion-mnist (the four IDX .gz
# files); without it the training steps are skipped. The PyTorch reference: $PIXELCNN_TORCH_REFERENCE, else
# ../shared/reference/pixelcnn_torch.py. Set WGPU_ADAPTER_NAME to pick an adapter (see `pixelcnn devices`).
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bin="${1:-$here/target/release/pixelcnn}"
out="${2:-${OUT:-gpu-bench}}"
ref="${PIXELCNN_TORCH_REFERENCE:-$here/../shared/reference/pixelcnn_torch.py}"
data="${GPU_BENCH_DATA:-${PIXELCNN_DATA:-$here/../shared/data/fashion-mnist}}"
[ -x "$bin" ] || { echo "no pixelcnn binary at $bin (cargo build --release)" >&2; exit 1; }
mkdir -p "$out/logs" || exit 1
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

# Every step has its own limit, and all of them together stop at TOTAL seconds, however slow the adapter: on a GPU
# the benchmarks take seconds each and leave minutes for training; on a CPU rasteriser later steps are cut short.
TOTAL=${GPU_BENCH_SECONDS:-470}
# Seconds kept back from training for the evaluation and the sample grid after it.
RESERVE=${GPU_BENCH_RESERVE:-60}
step() { # name, seconds limit, command... — stdout to logs/NAME.json, stderr to logs/NAME.err
    local name=$1 limit=$2; shift 2
    local left=$((TOTAL - SECONDS))
    [ "$left" -lt "$limit" ] && limit=$left
    echo "== $name (limit ${limit} s): $*" >&2
    if [ "$limit" -le 0 ]; then
        echo "   skipped: the ${TOTAL} s budget is spent" >&2
        echo "null" > "$out/logs/$name.json"
        return 1
    fi
    local t0=$SECONDS
    if timeout "$limit" "$@" > "$out/logs/$name.json" 2> "$out/logs/$name.err"; then
        echo "   done in $((SECONDS - t0)) s" >&2
    else
        echo "   FAILED or timed out after $((SECONDS - t0)) s: $(tail -n 3 "$out/logs/$name.err")" >&2
        echo "null" > "$out/logs/$name.json"
        return 1
    fi
}
skip() { # name, why
    echo "== $1 skipped: $2" >&2
    echo "null" > "$out/logs/$1.json"
}

step devices 30 "$bin" devices --json
step peak 60 "$bin" bench peak --json
peak=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['peak_gflops'])" "$out/logs/peak.json" 2>/dev/null)
peak_arg=()
[ -n "$peak" ] && peak_arg=(--peak "$peak")
step train_default 120 "$bin" bench train --json --profile --batch-size 128 --steps 5 "${peak_arg[@]}"
step train_small 60 "$bin" bench train --json --filters 32 --blocks 2 --batch-size 128 --steps 10 "${peak_arg[@]}"
step train_shipped 60 "$bin" bench train --json --filters 64 --blocks 8 --conditional --batch-size 32 --steps 10 "${peak_arg[@]}"
step sample_default 90 "$bin" bench sample --json --profile --count 64 "${peak_arg[@]}"
step sample_gated 60 "$bin" bench sample --json --count 64 --arch gated --filters 64 --layers 8 --conditional "${peak_arg[@]}"

torch_note="skipped: no torch with CUDA"
if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null && [ -f "$ref" ]; then
    torch_note="ran"
    step torch_train_tf32 60 python3 "$ref" --device cuda --json bench-train --wait-quiet 0
    step torch_train_fp32 60 python3 "$ref" --device cuda --no-tf32 --json bench-train --wait-quiet 0
    step torch_sample 60 python3 "$ref" --device cuda --json bench-sample --wait-quiet 0 --batches 64 --full 64
else
    [ -f "$ref" ] || torch_note="skipped: no PyTorch reference at $ref"
    for n in torch_train_tf32 torch_train_fp32 torch_sample; do skip "$n" "${torch_note#skipped: }"; done
fi

# The seed's recipe for the time that is left: train (SIGTERM at the deadline saves and stops), then the last
# complete epoch's model, its test NLL and a grid.
run="$out/run"
train_seconds=$((TOTAL - SECONDS - RESERVE))
if [ ! -e "$data/train-images-idx3-ubyte.gz" ] && [ ! -e "$data/train-images-idx3-ubyte" ]; then
    for n in train_recipe export eval sample; do skip "$n" "no Fashion-MNIST at $data"; done
elif [ "$train_seconds" -le 30 ]; then
    for n in train_recipe export eval sample; do skip "$n" "only $train_seconds s left for training"; done
else
    echo "== train_recipe (${train_seconds} s): the seed's defaults, as many full epochs as fit" >&2
    t0=$SECONDS
    timeout --signal=TERM --kill-after=30 "$train_seconds" "$bin" train --data "$data" --out "$run" --json \
        --epoch-samples 0 > "$out/logs/train_recipe.json" 2> "$out/logs/train_recipe.err"
    echo "   stopped after $((SECONDS - t0)) s (exit $?)" >&2
    last=$(ls "$run"/epoch_*.safetensors 2>/dev/null | sort | tail -n 1)
    if [ -z "$last" ]; then
        for n in export eval sample; do skip "$n" "no epoch completed in ${train_seconds} s"; done
    else
        step export 30 "$bin" export "$last" --out "$out/model.safetensors"
        step eval 120 "$bin" eval --checkpoint "$out/model.safetensors" --data "$data" --json
        step sample 60 "$bin" sample --checkpoint "$out/model.safetensors" --count 64 --out "$out/samples.png" --json
    fi
fi
cp "$run/metrics.jsonl" "$out/logs/train_metrics.jsonl" 2>/dev/null

python3 - "$out" "$torch_note" "$TOTAL" "$SECONDS" <<'PY'
import json, os, sys, datetime, platform
out, torch_note, total, elapsed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def load(name):
    p = os.path.join(out, "logs", name + ".json")
    if not os.path.exists(p):
        return None
    lines = [l for l in open(p).read().splitlines() if l.strip()]
    try:
        return json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        return {"unparsed": lines[-5:]}
names = ["devices", "peak", "train_default", "train_small", "train_shipped", "sample_default", "sample_gated",
         "torch_train_tf32", "torch_train_fp32", "torch_sample", "export", "eval", "sample"]
result = {"when": datetime.datetime.now(datetime.timezone.utc).isoformat(), "host": platform.node(),
          "budget_seconds": total, "seconds": elapsed, "pytorch": torch_note}
result.update({n: load(n) for n in names})
# The recipe's epochs: one metrics line each (the JSON lines `train --json` printed, ending with its summary).
epochs = []
metrics = os.path.join(out, "logs", "train_metrics.jsonl")
if os.path.exists(metrics):
    epochs = [json.loads(l) for l in open(metrics) if l.strip()]
complete = [e for e in epochs if not e.get("partial")]
result["train_recipe"] = {
    "epochs_completed": len(complete),
    "images_per_second": complete[-1]["images_per_second"] if complete else None,
    "epochs": epochs,
} if epochs else None
adapters = result.get("devices") or []
result["adapter"] = next((a for a in adapters if a.get("selected")), None)
json.dump(result, open(os.path.join(out, "gpu-bench.json"), "w"), indent=1)
def fig(n, k):
    v = result.get(n)
    return v.get(k) if isinstance(v, dict) else None
print(f"wrote {out}/gpu-bench.json ({elapsed} s of {total})")
print(f"  peak: {fig('peak', 'peak_gflops')} GFLOP/s, storage reads {fig('peak', 'read_gb_per_s')} GB/s")
for n in ["train_default", "train_small", "train_shipped"]:
    print(f"  {n}: {fig(n, 'images_per_second')} images/s, {fig(n, 'gflops')} GFLOP/s, {fig(n, 'percent_of_peak')}% of peak")
for n in ["sample_default", "sample_gated"]:
    print(f"  {n}: {fig(n, 'incremental_seconds')} s for 64 images, {fig(n, 'dispatches_per_pixel')} dispatches/pixel")
for n in ["torch_train_tf32", "torch_train_fp32"]:
    print(f"  {n}: {fig(n, 'images_per_s')} images/s")
r = result["train_recipe"]
print(f"  recipe: {r['epochs_completed'] if r else None} epochs, {r['images_per_second'] if r else None} images/s, "
      f"test NLL {fig('eval', 'nll_nats_per_image')}")
PY
