#!/usr/bin/env bash
# One pilot at a fixed CPU-time budget: trains NAME with the given flags until the process has used BUDGET CPU
# seconds (user + system, all threads, from /proc; so a pilot that shares the machine is not cut short by it), stops
# it with SIGTERM (which saves last.safetensors), then evaluates the validation split with the Polyak average and
# with the raw parameters. Prints one JSON line; the run directory keeps metrics.jsonl and the checkpoint.
#
#   scripts/pilot.sh NAME BUDGET DATA [train flags…]
#   PIXELCNN=target/release/pixelcnn scripts/pilot.sh mnist-plain 2400 ../shared/data/binarized-mnist \
#       --arch pixelcnn --filters 64 --blocks 8
set -euo pipefail
name=$1 budget=$2 data=$3
shift 3
bin=${PIXELCNN:-target/release/pixelcnn}
out=runs/pilots/$name
mkdir -p runs/pilots
"$bin" train --data "$data" --out "$out" --epochs 1000 --save-every 5 --epoch-samples 0 "$@" 2>"$out.log" &
pid=$!
tick=$(getconf CLK_TCK)
cpu=0
while kill -0 "$pid" 2>/dev/null; do
    if stat=$(cat "/proc/$pid/stat" 2>/dev/null); then
        # Fields 14 and 15 (utime, stime) after the command name, which may hold spaces: count from its ')'.
        cpu=$(echo "${stat##*) }" | awk -v t="$tick" '{ printf "%d", ($12 + $13) / t }')
    fi
    if [ "$cpu" -ge "$budget" ]; then
        kill -TERM "$pid"
        break
    fi
    sleep 5
done
wait "$pid" || true
val() { "$bin" eval --checkpoint "$out/last.safetensors" --data "$data" --split val --json "$@" 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["nll_nats_per_image"])'; }
steps=$(grep -oE 'done: [0-9]+ steps' "$out.log" | grep -oE '[0-9]+' || echo null)
echo "{\"pilot\": \"$name\", \"cpu_seconds\": $cpu, \"steps\": $steps, \"flags\": \"$*\", \"val_nll_average\": $(val), \"val_nll_raw\": $(val --raw-weights)}" | tee -a runs/pilots/results.jsonl
