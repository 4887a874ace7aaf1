#!/usr/bin/env bash
# A pilot at fixed CPU-time budgets: trains NAME with the given flags until the process has used the first budget of
# CPU seconds (user + system, all threads, from /proc, so a pilot that shares the machine is not cut short by it),
# stops it with SIGTERM (which saves last.safetensors), evaluates the validation split (the Polyak average where it
# counts, and the raw parameters), then resumes it (bit-exactly: `train --resume`) until the next budget, and so on.
# Prints one JSON line per budget (cumulative CPU seconds, steps, both NLLs) and appends it to
# runs/pilots/results.jsonl; the run directory keeps metrics.jsonl and the checkpoint.
#
#   scripts/pilot.sh NAME BUDGETS DATA [train flags…]      BUDGETS: CPU seconds, comma-separated, increasing
#   PIXELCNN=target/release/pixelcnn PILOT_EVAL_LIMIT=2000 scripts/pilot.sh mnist-plain 1200,2400 \
#       ../shared/data/binarized-mnist --arch pixelcnn --filters 64 --blocks 8
#
# PILOT_EVAL_LIMIT evaluates only the first N validation images (default: all).
set -euo pipefail
name=$1 budgets=$2 data=$3
shift 3
bin=${PIXELCNN:-target/release/pixelcnn}
out=runs/pilots/$name
mkdir -p runs/pilots
limit=()
[ -n "${PILOT_EVAL_LIMIT:-}" ] && limit=(--limit "$PILOT_EVAL_LIMIT")
tick=$(getconf CLK_TCK)
spent=0
first=1
for budget in ${budgets//,/ }; do
    if [ "$first" = 1 ]; then
        "$bin" train --data "$data" --out "$out" --epochs 1000 --save-every 5 --epoch-samples 0 "$@" 2>>"$out.log" &
    else
        "$bin" train --resume "$out/last.safetensors" --data "$data" --save-every 5 --epoch-samples 0 2>>"$out.log" &
    fi
    pid=$!
    first=0
    cpu=0
    while kill -0 "$pid" 2>/dev/null; do
        if stat=$(cat "/proc/$pid/stat" 2>/dev/null); then
            # Fields 14 and 15 (utime, stime) after the command name, which may hold spaces: count from its ')'.
            cpu=$(echo "${stat##*) }" | awk -v t="$tick" '{ printf "%d", ($12 + $13) / t }')
        fi
        if [ $((spent + cpu)) -ge "$budget" ]; then
            kill -TERM "$pid"
            break
        fi
        sleep 5
    done
    wait "$pid" || true
    spent=$((spent + cpu))
    val() { "$bin" eval --checkpoint "$out/last.safetensors" --data "$data" --split val "${limit[@]}" --json "$@" 2>/dev/null \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["nll_nats_per_image"])'; }
    steps=$(grep -oE 'done: [0-9]+ steps' "$out.log" | tail -1 | grep -oE '[0-9]+' || echo null)
    echo "{\"pilot\": \"$name\", \"cpu_seconds\": $spent, \"steps\": $steps, \"flags\": \"$*\", \"val_images\": \"${PILOT_EVAL_LIMIT:-all}\", \"val_nll_average\": $(val), \"val_nll_raw\": $(val --raw-weights)}" \
        | tee -a runs/pilots/results.jsonl
done
