#!/bin/bash
# Side-by-side speed on this machine, alternating the programs so that all see the same load:
#   * the adapter's peak (`pixelcnn bench peak`), the roofline every figure below is a percentage of;
#   * training: `pixelcnn bench train` against the PyTorch reference (../shared/reference/pixelcnn_torch.py, eager,
#     float32, Adam) for several configurations — ROUNDS rounds of (ours, [before], torch), each a median over its
#     timed steps — with the median images/s of each, their ratio, our GFLOP/s as % of the peak, and peak memory;
#   * sampling: `pixelcnn bench sample --count 64`, ROUNDS runs (and the same of the BEFORE binary).
#
#   scripts/speed-vs-torch.sh [ROUNDS]        (needs python3 with torch; the binary from cargo build --release)
#
# Environment: PIXELCNN (binary, default target/release/pixelcnn), BEFORE (an older pixelcnn binary to compare
# with, optional), REFERENCE (path to pixelcnn_torch.py), SPEED_JSON (also write every figure there).
set -euo pipefail
ROUNDS=${1:-3}
BIN=${PIXELCNN:-target/release/pixelcnn}
BEFORE=${BEFORE:-}
REF=${REFERENCE:-../shared/reference/pixelcnn_torch.py}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
[ -x "$BIN" ] || { echo "no binary at $BIN: run cargo build --release" >&2; exit 1; }
[ -f "$REF" ] || { echo "no PyTorch reference at $REF (set REFERENCE)" >&2; exit 1; }
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$OUT}"

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
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$@"; }

peaks=()
for _ in $(seq "$ROUNDS"); do
  "$BIN" bench peak --json > "$OUT/peak.json" 2>/dev/null
  peaks+=("$(field "$OUT/peak.json" peak_gflops)")
done
PEAK=$(python3 -c "import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))" "${peaks[@]}")
echo "peak: ${PEAK} GFLOP/s (median of ${peaks[*]}); $(field "$OUT/peak.json" adapter)"

# name F N batch steps extra-flags-of-ours (the reference has no class-conditional model: the shipped model's
# configuration is compared with its unconditional twin, which does the same convolutions)
CONFIGS=("default 128 5 128 3 -" "default 128 5 32 5 -" "F64N5 64 5 64 5 -" "F32N2 32 2 64 10 -"
         "shipped 64 8 32 10 --conditional")
printf '%-8s %5s %10s %8s %10s %10s %7s %10s %10s\n' config batch ours_img/s %peak before_img/s torch_img/s ratio \
  ours_MiB torch_MiB
for c in "${CONFIGS[@]}"; do
  read -r name f n b s extra <<< "$c"
  flags=(--filters "$f" --blocks "$n" --batch-size "$b" --steps "$s")
  [ "$extra" != "-" ] && flags+=("$extra")
  ours=(); gf=(); before=(); torch=(); ours_mem=0; torch_mem=0
  for _ in $(seq "$ROUNDS"); do
    /usr/bin/time -f %M -o "$OUT/mem" "$BIN" bench train "${flags[@]}" --peak "$PEAK" --json > "$OUT/ours.json" 2>/dev/null
    ours+=("$(field "$OUT/ours.json" images_per_second)")
    gf+=("$(field "$OUT/ours.json" gflops)")
    ours_mem=$(( $(cat "$OUT/mem") / 1024 ))
    if [ -n "$BEFORE" ]; then
      "$BEFORE" bench train "${flags[@]}" --json > "$OUT/before.json" 2>/dev/null
      before+=("$(field "$OUT/before.json" images_per_second)")
    fi
    python3 "$OUT/torch_step.py" "$REF" "$f" "$n" "$b" "$s" > "$OUT/torch.json"
    torch+=("$(field "$OUT/torch.json" images_per_second)")
    torch_mem=$(python3 -c "import json; print(int(json.load(open('$OUT/torch.json'))['peak_rss_mib']))")
  done
  python3 - "$name" "$b" "$ours_mem" "$torch_mem" "$PEAK" "${ours[*]}" "${gf[*]}" "${before[*]:-}" "${torch[*]}" <<'EOF'
import json, os, statistics, sys
name, b, om, tm, peak, ours, gf, before, torch = sys.argv[1:]
o = [float(v) for v in ours.split()]; g = [float(v) for v in gf.split()]; t = [float(v) for v in torch.split()]
bf = [float(v) for v in before.split()]
mo, mt, mg = statistics.median(o), statistics.median(t), statistics.median(g)
mb = statistics.median(bf) if bf else None
pct = 100 * mg / float(peak)
print(f"{name:<8} {b:>5} {mo:>10.1f} {pct:>7.1f}% {(f'{mb:.1f}' if mb else '-'):>10} {mt:>10.1f} {mo / mt:>6.2f}x {om:>10} {tm:>10}"
      f"   ours {['%.1f' % v for v in o]} before {['%.1f' % v for v in bf]} torch {['%.1f' % v for v in t]}")
if os.environ.get("SPEED_JSON"):
    with open(os.environ["SPEED_JSON"], "a") as f:
        f.write(json.dumps({"train": name, "batch": int(b), "ours": o, "gflops": g, "percent_of_peak": pct,
                            "before": bf, "torch": t, "peak_gflops": float(peak)}) + "\n")
EOF
done

samples=(); before_samples=()
for _ in $(seq "$ROUNDS"); do
  "$BIN" bench sample --count 64 --naive-pixels 1 --peak "$PEAK" --json > "$OUT/sample.json" 2>/dev/null
  samples+=("$(field "$OUT/sample.json" incremental_seconds)")
  if [ -n "$BEFORE" ]; then
    "$BEFORE" bench sample --count 64 --naive-pixels 1 --json > "$OUT/sample_before.json" 2>/dev/null
    before_samples+=("$(field "$OUT/sample_before.json" incremental_seconds)")
  fi
done
python3 - "${samples[*]}" "${before_samples[*]:-}" <<'EOF'
import json, os, statistics, sys
s = [float(v) for v in sys.argv[1].split()]; b = [float(v) for v in sys.argv[2].split()]
print(f"sample 64 images: {statistics.median(s):.2f} s (runs {['%.2f' % v for v in s]})"
      + (f", before {statistics.median(b):.2f} s (runs {['%.2f' % v for v in b]})" if b else ""))
if os.environ.get("SPEED_JSON"):
    with open(os.environ["SPEED_JSON"], "a") as f:
        f.write(json.dumps({"sample_64_seconds": s, "before": b}) + "\n")
EOF
