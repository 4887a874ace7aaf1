#!/usr/bin/env bash
# The figures the README's model tables show, for one class-conditional checkpoint, measured the way the shipped
# file is: `pixelcnn eval` on all 10,000 test images (marginal −log p(x), −log p(x|y) and the Bayes classifier),
# then scripts/judge-samples.py at temperature 1 and 0.8 (class agreement and classifier
# score). Prints one markdown table row; the raw outputs stay in the output folder.
#
#   scripts/model-report.sh CHECKPOINT [OUT_DIR]      (default OUT_DIR: a fresh folder under /tmp)
#
# Needs a release build (target/release/pixelcnn, or $PIXELCNN_BIN), the IDX files ($PIXELCNN_DATA or
# ../shared/data/fashion-mnist) and python3 with torch, numpy and pillow for the judge. About 10–15 minutes on the
# 2-core VM for the F=64 N=8 conditional model (the marginal needs one pass per class).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
ckpt=${1:?usage: scripts/model-report.sh CHECKPOINT [OUT_DIR]}
out=${2:-$(mktemp -d /tmp/model-report.XXXXXX)}
bin=${PIXELCNN_BIN:-$here/target/release/pixelcnn}
export PIXELCNN_DATA=${PIXELCNN_DATA:-$here/../shared/data/fashion-mnist}
[ -f "$ckpt" ] || { echo "model-report: no checkpoint at $ckpt" >&2; exit 2; }
[ -x "$bin" ] || { echo "model-report: no binary at $bin (cargo build --release, or set PIXELCNN_BIN)" >&2; exit 2; }
mkdir -p "$out"

# The judge samples with --class, so only a class-conditional model can be reported: asked of a one-image eval
# (a second), before the whole test set's ten minutes.
"$bin" eval --checkpoint "$ckpt" --limit 1 --json > "$out/probe.json"
python3 -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1]))["conditional"] else "model-report: " + sys.argv[2] + " is not class-conditional")' "$out/probe.json" "$ckpt"
"$bin" eval --checkpoint "$ckpt" --json > "$out/eval.json"
for t in 1 0.8; do
    python3 "$here/scripts/judge-samples.py" --checkpoint "$ckpt" --temperature "$t" --bin "$bin" > "$out/judge-T$t.txt"
    tail -n 1 "$out/judge-T$t.txt" > "$out/judge-T$t.json"
done

python3 - "$ckpt" "$out" <<'EOF'
import json, sys
ckpt, out = sys.argv[1], sys.argv[2]
e = json.load(open(f"{out}/eval.json"))
j = {t: json.load(open(f"{out}/judge-T{t}.json")) for t in ("1", "0.8")}
assert e["images"] == 10000, f"eval ran on {e['images']} images, not the whole test set"
given = f"{e['nll_given_label_nats_per_image']:.2f}"
bayes = f"{100 * e['classifier_accuracy']:.1f}%"
print("| checkpoint | marginal −log p(x), test | −log p(x\\|y), test | Bayes classifier "
      "| `--class K` judged K (T = 1 / 0.8) | classifier score (T = 1 / 0.8) |")
print("|---|---:|---:|---:|---:|---:|")
print(f"| {ckpt} | **{e['nll_nats_per_image']:.2f}** ({e['bits_per_dim']:.4f} bits/dim) | {given} | {bayes} "
      f"| {100 * j['1']['class_agreement']:.1f}% / {100 * j['0.8']['class_agreement']:.1f}% "
      f"| {j['1']['mix_classifier_score']:.2f} / {j['0.8']['mix_classifier_score']:.2f} |")
print(f"(raw outputs in {out})")
EOF
