#!/usr/bin/env bash
# Redraws every README picture that shows the shipped model, with the README's own commands, into one folder:
# the class grid and the even mix (at T = 1 and T = 0.8), the completions, the sampling animation, the receptive
# field at (27, 27), the surprise heatmaps and the completion of the drawn t-shirt. Run it when a new
# model is shipped, then copy the pictures into assets/ and update the README's figures from the printed output.
# With the model that drew assets/ it redraws them byte for byte (it prints which files differ from assets/).
#
#   scripts/shipped-assets.sh [CHECKPOINT] [OUT_DIR]
#       CHECKPOINT  default assets/pixelcnn.safetensors
#       OUT_DIR     default a fresh folder under /tmp
#
# Needs a release build (target/release/pixelcnn, or $PIXELCNN_BIN) and the IDX files ($PIXELCNN_DATA or
# ../shared/data/fashion-mnist) for the completions of test images. Under a minute on the 2-core VM.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
ckpt=$(realpath -m "${1:-$here/assets/pixelcnn.safetensors}")
out=$(realpath -m "${2:-$(mktemp -d /tmp/shipped-assets.XXXXXX)}")
bin=$(realpath -m "${PIXELCNN_BIN:-$here/target/release/pixelcnn}")
export PIXELCNN_DATA=$(realpath -m "${PIXELCNN_DATA:-$here/../shared/data/fashion-mnist}")
ckpt=$(realpath -m --relative-to="$here" "$ckpt")
# From the project root, so that the pictures' captions name the files as the README's commands do.
cd "$here"
[ -f "$ckpt" ] || { echo "shipped-assets: no checkpoint at $ckpt" >&2; exit 2; }
[ -x "$bin" ] || { echo "shipped-assets: no binary at $bin (cargo build --release, or set PIXELCNN_BIN)" >&2; exit 2; }
mkdir -p "$out"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
ex=assets/examples
run() { echo "\$ pixelcnn $*" | sed "s|$out/||g; s|$scratch/||g"; "$bin" "$@" --checkpoint "$ckpt"; }

run sample --class all --count 10 --out "$out/classes.png"
run sample --count 36 --out "$out/samples.png"
run sample --class all --count 10 --temperature 0.8 --out "$out/classes_t08.png"
run sample --count 36 --temperature 0.8 --out "$out/samples_t08.png"
run complete --count 6 --samples 4 --out "$out/completions.png"
run sample --count 16 --scale 3 --animate "$out/sampling.gif" --out "$scratch/sampling.png"
run receptive-field --pixel 27,27 --out "$out/receptive_field_shipped_27.png"
run score "$ex/test_0000.png" "$ex/test_0001.png" --heatmap "$out/surprise.png"
run score "$ex/my_tshirt.png" --resize --invert --heatmap "$out/my_tshirt_surprise.png"
run complete --image "$ex/my_tshirt.png" --resize --invert --out "$out/my_tshirt_completions.png"

echo
echo "pictures in $out; against assets/:"
for f in "$out"/*.png "$out"/*.gif; do
    name=$(basename "$f")
    if [ ! -f "$here/assets/$name" ]; then
        echo "  $name: new"
    elif cmp -s "$f" "$here/assets/$name"; then
        echo "  $name: identical"
    else
        echo "  $name: differs"
    fi
done
