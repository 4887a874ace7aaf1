#!/usr/bin/env python3
"""Judges class-conditional samples with an independent classifier, the way a user would check `sample --class`.

Trains a small CNN on the binarized Fashion-MNIST training images (the project's binarization, v >= 85 → 1),
reports its test accuracy, then has a model sample N images of every class (`pixelcnn sample --class all
--save-each`) and of a draw without --class, and reports how often the classifier names each class's samples as
that class (chance: 10%), and how confidently and how evenly it classifies the draw without --class.

    scripts/judge-samples.py [--checkpoint PATH] [--count N] [--seed S] [--temperature T] [--data DIR] [--bin PATH]
                             [--unconditional OLD.safetensors]

`--temperature T` samples at temperature T (`pixelcnn sample --temperature`; 1 draws from the model as it is).

Needs python3 with torch, numpy and pillow, the IDX files and a built binary. The classifier is trained with a fixed seed
(2 epochs, about a minute on 2 cores).
"""
import argparse, json, os, subprocess, sys, tempfile

import numpy as np
import torch, torch.nn as nn, torch.nn.functional as F

import fashion_mnist as fm

here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ap = argparse.ArgumentParser()
ap.add_argument("--checkpoint", default=os.path.join(here, "assets", "pixelcnn.safetensors"))
ap.add_argument("--count", type=int, default=50, help="samples per class")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (1: the model as it is)")
ap.add_argument("--data", default=os.environ.get("PIXELCNN_DATA", os.path.join(here, "..", "shared", "data", "fashion-mnist")))
ap.add_argument("--bin", default=os.path.join(here, "target", "release", "pixelcnn"))
ap.add_argument("--unconditional", help="also judge this unconditional checkpoint's samples by their predicted classes")
args = ap.parse_args()

NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]

def images(name):
    return torch.tensor(fm.binarized(fm.images(args.data, name)), dtype=torch.float32)

def labels(name):
    return torch.tensor(fm.labels(args.data, name))

torch.manual_seed(0)
xtr, ytr = images("train-images-idx3-ubyte"), labels("train-labels-idx1-ubyte")
xte, yte = images("t10k-images-idx3-ubyte"), labels("t10k-labels-idx1-ubyte")
net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1),
                    nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 49, 128), nn.ReLU(), nn.Linear(128, 10))
cache = os.path.join(tempfile.gettempdir(), "pixelcnn-judge-classifier.pt")
opt = torch.optim.Adam(net.parameters(), 1e-3)
for epoch in range(0 if os.path.exists(cache) else 2):
    perm = torch.randperm(len(xtr))
    for i in range(0, len(xtr), 128):
        b = perm[i:i + 128]
        opt.zero_grad()
        F.cross_entropy(net(xtr[b]), ytr[b]).backward()
        opt.step()
if os.path.exists(cache):
    net.load_state_dict(torch.load(cache))
else:
    torch.save(net.state_dict(), cache)
net.eval()
with torch.no_grad():
    acc = (net(xte).argmax(1) == yte).float().mean().item()
print(f"classifier: test accuracy {acc:.3f} on the 10,000 binarized test images")

def sample(checkpoint, extra):
    d = tempfile.mkdtemp()
    subprocess.run([args.bin, "sample", "--checkpoint", checkpoint, "--seed", str(args.seed), "--save-each", d,
                    "--temperature", str(args.temperature), "--out", os.path.join(d, "grid.png")] + extra,
                   check=True, capture_output=True)
    from PIL import Image
    files = sorted(f for f in os.listdir(d) if f.startswith("sample_"))
    x = np.stack([np.asarray(Image.open(os.path.join(d, f)).convert("L").resize((28, 28), Image.NEAREST)) for f in files])
    return torch.tensor(x[:, None] >= 128, dtype=torch.float32)

result = {"classifier_test_accuracy": acc, "samples_per_class": args.count, "temperature": args.temperature}
with torch.no_grad():
    x = sample(args.checkpoint, ["--class", "all", "--count", str(args.count)])
    pred = net(x).argmax(1).reshape(10, args.count)
    per_class = (pred == torch.arange(10)[:, None]).float().mean(1)
    result["per_class"] = {NAMES[c]: round(per_class[c].item(), 3) for c in range(10)}
    result["class_agreement"] = per_class.mean().item()
    print(f"{args.checkpoint}: --class K samples classified as K: {per_class.mean().item():.3f} (chance 0.100)")
    print("  class        as K   classified as (counts per class, in the order above)")
    for c in range(10):
        counts = torch.bincount(pred[c], minlength=10).tolist()
        print(f"  {NAMES[c]:<11} {per_class[c].item():5.2f}   {counts}")
    # Without --class a conditional model draws an even mix. Two scores of such a draw: the classifier's mean
    # top probability (is each sample clearly some garment?) and the classifier score exp(E_x KL(p(y|x) || p(y))),
    # the inception score with this classifier: 1 for blobs it cannot tell apart, 10 for confident, even classes.
    def score(what, key, x):
        p = F.softmax(net(x), 1)
        kl = (p * (p.clamp_min(1e-12).log() - p.mean(0, keepdim=True).log())).sum(1)
        result[f"{key}_mean_max_probability"] = p.max(1).values.mean().item()
        result[f"{key}_classifier_score"] = kl.mean().exp().item()
        result[f"{key}_predicted_classes"] = torch.bincount(p.argmax(1), minlength=10).tolist()
        print(f"{what} ({len(x)} images): mean top probability {result[f'{key}_mean_max_probability']:.3f}, "
              f"classifier score {result[f'{key}_classifier_score']:.2f} of 10, "
              f"predicted classes {result[f'{key}_predicted_classes']}")

    n = 10 * args.count
    score("test images, the ceiling", "test_images", xte[:n])
    score(f"{args.checkpoint} without --class", "mix", sample(args.checkpoint, ["--count", str(n)]))
    if args.unconditional:
        score(f"{args.unconditional} without --class", "unconditional", sample(args.unconditional, ["--count", str(n)]))
print(json.dumps(result))
