#!/usr/bin/env python3
"""Real-data check against the PyTorch reference: the same run as

    pixelcnn train --data DIR --filters 32 --blocks 2 --batch-size 32 --steps 200 --limit 6400

trained with ../shared/reference/pixelcnn_torch.py's model instead: the first 6,400 of the 54,000 training images
(Keras validation_split 0.1), pixels binarized at >= 85, Adam lr 5e-4 eps 1e-7, one shuffled epoch of 200 steps,
then the validation NLL on the last 6,000 training images in nats/image.

    python3 scripts/torch-real-data.py DATA_DIR [--reference PATH] [--seed S]
"""
import argparse, importlib.util, json, os, time

import numpy as np
import torch
import torch.nn.functional as F

import fashion_mnist as fm


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--reference", default=os.path.join(os.path.dirname(__file__), "../../shared/reference/pixelcnn_torch.py"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--filters", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--limit", type=int, default=6400)
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("ref", args.reference)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)

    x = torch.from_numpy(fm.binarized(fm.images(args.data, "train-images-idx3-ubyte")).astype(np.float32))
    split_at = int(len(x) * (1 - 0.1))
    train, val = x[:split_at][: args.limit], x[split_at:]
    torch.manual_seed(args.seed)
    model = ref.PixelCNN(args.filters, args.blocks).train()
    opt = torch.optim.Adam(model.parameters(), lr=5e-4, eps=1e-7)
    start = time.time()
    step = 0
    while step < args.steps:
        for idx in torch.randperm(len(train)).split(args.batch):
            if step == args.steps:
                break
            opt.zero_grad(set_to_none=True)
            ref.loss_fn(model, train[idx]).backward()
            opt.step()
            step += 1
    train_s = time.time() - start
    model.eval()
    total = 0.0
    with torch.no_grad():
        for chunk in val.split(500):
            logits = model.logits(chunk)
            total += F.binary_cross_entropy_with_logits(logits, chunk, reduction="sum").item()
    print(json.dumps({"val_nll_nats_per_image": total / len(val), "val_images": len(val), "steps": step,
                      "train_seconds": train_s, "seed": args.seed}))


if __name__ == "__main__":
    main()
