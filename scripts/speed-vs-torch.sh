#!/bin/bash
# Side-by-side training speed: `pixelcnn bench train` against the PyTorch reference
# (../shared/reference/pixelcnn_torch.py, eager, float32, Adam) on the same machine, alternating the two so that both
# see the same load. For each configuration it runs ROUNDS rounds of (ours, torch), each a median over timed steps,
# and prints the median images/s of each side, their ratio, and each process's peak resident memory.
#
#   scripts/speed-vs-torch.sh [ROUNDS]        (needs python3 with torch; the binary from cargo build --release)
#
# Environment: PIXELCNN (binary, default target/release/pixelcnn), REFERENCE (path to pixelcnn_torch.py).
set -euo pipefail
ROUNDS=${1:-3}
BIN=${PIXELCNN:-target/release/pixelcnn}
REF=${REFERENCE:-../shared/reference/pixelcnn_torch.py}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
[ -x "$BIN" ] || { echo "no binary at $BIN: run cargo build --release" >&2; exit 1; }
[ -f "$REF" ] || { echo "no PyTorch reference at $REF (set REFERENCE)" >&2; exit 1; }

# The reference's bench only builds its default model; this wrapper times any F and N with the same loop.
cat > "$OUT/torch_step.py" <<'EOF'
import importlib.util, json, resource, statistics, sys, time
import torch
spec = importlib.util.spec_from_file_location("ref", sys.argv[1]); ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)
filters, n_res, batch, steps = map(int, sys.argv[2:6])
torch.manual_seed(0)
model = ref.PixelCNN(filters, n_res).train()
opt = torch.optim.Adam(model.parameters(), lr=5e-4, eps=1e-7)
x = (torch.rand(batch, 1, ref.H, ref.W) >= 0.33).float()
def step():
    opt.zero_grad(set_to_none=True)
    loss = ref.loss_fn(model, x)
    loss.backward()
    opt.step()
for _ in range(2):
    step()
times = []
for _ in range(steps):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
med = statistics.median(times)
print(json.dumps({"images_per_second": batch / med, "step_seconds_median": med, "threads": torch.get_num_threads(),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
EOF

# name F N batch steps
CONFIGS=("default 128 5 128 3" "default 128 5 32 5" "F64N5 64 5 64 5" "F32N2 32 2 64 10")
printf '%-8s %5s %10s %10s %7s %10s %10s\n' config batch ours_img/s torch_img/s ratio ours_MiB torch_MiB
for c in "${CONFIGS[@]}"; do
  read -r name f n b s <<< "$c"
  ours=(); torch=(); ours_mem=0; torch_mem=0
  for _ in $(seq "$ROUNDS"); do
    /usr/bin/time -f %M -o "$OUT/mem" "$BIN" bench train --filters "$f" --blocks "$n" --batch-size "$b" --steps "$s" --json \
      > "$OUT/ours.json" 2>/dev/null
    ours+=("$(python3 -c "import json; print(json.load(open('$OUT/ours.json'))['images_per_second'])")")
    ours_mem=$(( $(cat "$OUT/mem") / 1024 ))
    python3 "$OUT/torch_step.py" "$REF" "$f" "$n" "$b" "$s" > "$OUT/torch.json"
    torch+=("$(python3 -c "import json; print(json.load(open('$OUT/torch.json'))['images_per_second'])")")
    torch_mem=$(python3 -c "import json; print(int(json.load(open('$OUT/torch.json'))['peak_rss_mib']))")
  done
  python3 - "$name" "$b" "$ours_mem" "$torch_mem" "${ours[*]}" "${torch[*]}" <<'EOF'
import statistics, sys
name, b, om, tm, ours, torch = sys.argv[1:]
o = [float(v) for v in ours.split()]; t = [float(v) for v in torch.split()]
mo, mt = statistics.median(o), statistics.median(t)
print(f"{name:<8} {b:>5} {mo:>10.1f} {mt:>10.1f} {mo / mt:>6.2f}x {om:>10} {tm:>10}   ours {['%.1f' % v for v in o]} torch {['%.1f' % v for v in t]}")
EOF
done
