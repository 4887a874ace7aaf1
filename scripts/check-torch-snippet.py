#!/usr/bin/env python3
"""Runs the PyTorch code blocks of README.md's *Checkpoint format* section, exactly as written there, and checks
that the modules they define load each given checkpoint strictly and compute, in float64, the same per-image NLLs
as `pixelcnn eval --json` on the first test images: −log p(x) for unconditional models; for conditional ones
−log p(x|y) with the true labels and the marginal −log (1/10 Σ_y p(x|y)).

    scripts/check-torch-snippet.py [CHECKPOINT ...] [--random] [--limit N] [--data DIR] [--bin PATH]

Without checkpoints it checks the shipped model (the README's own `load()` default). With --random it also makes
checkpoints outside the project, as a PyTorch user would: the README's modules with random weights (both
architectures, conditional or not), saved by `safetensors.torch.save_file(model.state_dict())` without metadata,
and evaluated by pixelcnn on the GPU and with the CPU reference (`--device cpu`). Needs python3 with torch,
safetensors and numpy, the Fashion-MNIST IDX files (default ../shared/data/fashion-mnist or $PIXELCNN_DATA; a
folder of binarized-MNIST `.amat` files instead, for unconditional models such as assets/binarized-mnist) and
a built binary (default target/release/pixelcnn). Prints the max relative error per checkpoint and exits 1 when
one exceeds --tolerance (default 1e-4).
"""
import argparse, json, math, os, re, subprocess, sys

import fashion_mnist as fm

here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ap = argparse.ArgumentParser()
ap.add_argument("checkpoints", nargs="*")
ap.add_argument("--limit", type=int, default=200)
ap.add_argument("--data", default=os.environ.get("PIXELCNN_DATA", os.path.join(here, "..", "shared", "data", "fashion-mnist")))
ap.add_argument("--bin", default=os.path.join(here, "target", "release", "pixelcnn"))
ap.add_argument("--tolerance", type=float, default=1e-4)
ap.add_argument("--random", action="store_true", help="also check random-weight checkpoints made here, on GPU and CPU")
args = ap.parse_args()

# The README's blocks, from the section's first ```python to the reference's renaming block (not run).
readme = open(os.path.join(here, "docs", "checkpoint-format.md")).read()
section = readme[readme.index("PyTorch modules for both networks"):readme.index("The PyTorch reference `pixelcnn_torch.py`")]
blocks = re.findall(r"```python\n(.*?)```", section, re.S)
assert len(blocks) >= 3, f"expected the README's module and loader blocks, found {len(blocks)}"
os.chdir(here)  # the README's load() default is relative to the repository
env = {}
exec("\n".join(blocks), env)  # defines the modules and load(), and loads the shipped model
torch, F = env["torch"], env["F"]

if any(os.path.exists(os.path.join(args.data, "binarized_mnist_test.amat" + gz)) for gz in ("", ".gz")):
    # Statically binarized MNIST (no labels: for unconditional models such as assets/binarized-mnist.safetensors).
    x = torch.tensor(fm.amat(args.data, "binarized_mnist_test.amat")[:args.limit], dtype=torch.float64)
    labels = None
else:
    x = torch.tensor(fm.binarized(fm.images(args.data, "t10k-images-idx3-ubyte")[:args.limit]), dtype=torch.float64)
    labels = torch.tensor(fm.labels(args.data, "t10k-labels-idx1-ubyte")[:args.limit])

checks = [(p, "gpu") for p in args.checkpoints or ["assets/pixelcnn.safetensors"]]
if args.random:
    import tempfile
    from safetensors.torch import save_file
    tmp = tempfile.mkdtemp()
    torch.manual_seed(0)
    for name, make in [("pixelcnn", lambda: env["PixelCNN"](16, 2)), ("pixelcnn_cond", lambda: env["PixelCNN"](16, 2, 10)),
                       ("gated", lambda: env["GatedPixelCNN"](12, 3)), ("gated_cond", lambda: env["GatedPixelCNN"](12, 3, 10))]:
        model = make()
        with torch.no_grad():
            for p in model.parameters():  # random everywhere, class tables and biases included, at a scale that
                p.copy_(torch.randn_like(p) * 0.3)  # keeps the logits in a sensible range
        path = os.path.join(tmp, name + ".safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
        checks += [(path, "gpu"), (path, "cpu")]

worst = 0.0
for path, device in checks:
    model = env["load"](path).double()
    # The README's load() reads a file's model tensors: for a training checkpoint that keeps a Polyak average,
    # those are its raw parameters, which pixelcnn evaluates with --raw-weights (model-only files are unaffected).
    out = subprocess.run([args.bin, "eval", "--checkpoint", path, "--split", "test", "--limit", str(args.limit),
                          "--data", args.data, "--device", device, "--raw-weights", "--json"],
                         capture_output=True, text=True, check=True)
    ours = json.loads(out.stdout)
    with torch.no_grad():
        nll = lambda y: F.binary_cross_entropy_with_logits(model(x, y), x, reduction="none").sum((1, 2, 3))
        if ours["conditional"]:
            given = nll(labels)
            per_class = torch.stack([nll(torch.full_like(labels, c)) for c in range(10)])
            marginal = -(torch.logsumexp(-per_class, 0) - math.log(10))
            pairs = [("marginal", marginal, ours["nll_per_image"]),
                     ("given label", given, ours["nll_given_label_per_image"])]
        else:
            pairs = [("unconditional", nll(None), ours["nll_per_image"])]
    for what, theirs, mine in pairs:
        mine = torch.tensor(mine, dtype=torch.float64)
        rel = ((theirs - mine).abs() / theirs.abs()).max().item()
        worst = max(worst, rel)
        print(f"{path} ({device}): {what}: {len(mine)} images, torch float64 mean {theirs.mean().item():.4f}, "
              f"pixelcnn {mine.mean().item():.4f} nats, max relative difference {rel:.2e}")
print(f"worst relative difference {worst:.2e} (tolerance {args.tolerance:g})")
sys.exit(0 if worst <= args.tolerance else 1)
