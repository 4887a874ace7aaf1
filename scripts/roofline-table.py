#!/usr/bin/env python3
"""The README's roofline table from `pixelcnn bench train --profile --json` (or `bench sample --profile --json`).

    pixelcnn bench train --profile --json > train.json && scripts/roofline-table.py train.json

Groups the profile's lines by kernel and layer shape (the blocks of a network share shapes), and prints a markdown
table: time per step, dispatches, GFLOP/s over live taps, % of the adapter's measured peak, and what bounds the
kernel, judged from the figures:
  * no FLOPs (elementwise, reductions, Adam): memory — every element is loaded and stored once;
  * under 0.5 ms per dispatch: the dispatch hand-off (tens to hundreds of microseconds on a CPU rasteriser);
  * a conv at or above 45% of the peak: compute — the register tile's multiply-adds dominate;
  * any other conv: loads and stores — on llvmpipe every storage load or store whose address differs per lane is
    a loop over the lanes, so a conv with few multiply-adds per loaded or stored value (few input channels or taps,
    one output column, a per-image bias or a residual in its epilogue) spends its time there.
"""
import json
import re
import sys


def shape_key(kernel: str) -> str:
    # "conv_forward raster blocks.3.masked 128→64 3x3 (5 taps)" → "conv_forward raster blocks.*.masked 128→64 ..."
    return re.sub(r"\b(blocks|layers|head)\.\d+", r"\1.*", kernel)


def bound(k: str, seconds: float, dispatches: int, gflops: float, pct: float) -> str:
    if gflops == 0:
        return "memory (no arithmetic to speak of)"
    if seconds / dispatches < 5e-4:
        return "dispatch hand-off"
    if pct >= 45:
        return "compute"
    return "loads and stores"


def main() -> None:
    r = json.load(open(sys.argv[1]))
    peak = r.get("peak_gflops")
    groups: dict = {}
    for line in r["profile"]:
        k = shape_key(line["kernel"])
        g = groups.setdefault(k, {"seconds": 0.0, "dispatches": 0, "flop": 0.0})
        g["seconds"] += line["seconds"]
        g["dispatches"] += line["dispatches"]
        g["flop"] += line["gflops_per_second"] * line["seconds"]
    total = sum(g["seconds"] for g in groups.values())
    print(f"| kernel and layer shape | ms | share | dispatches | GFLOP/s | % of peak | bound by |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for k, g in sorted(groups.items(), key=lambda kv: -kv[1]["seconds"]):
        gf = g["flop"] / g["seconds"] if g["seconds"] else 0.0
        pct = 100 * gf / peak if peak else 0.0
        print(f"| `{k}` | {g['seconds'] * 1e3:.1f} | {100 * g['seconds'] / total:.1f}% | {g['dispatches']} | "
              f"{gf:.1f} | {pct:.0f}% | {bound(k, g['seconds'], g['dispatches'], gf, pct)} |")
    print(f"\nSum of the dispatches run one by one: {total * 1e3:.0f} ms; peak {peak:.1f} GFLOP/s.")


if __name__ == "__main__":
    main()
