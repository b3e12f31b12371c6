"""PyTorch side of lvit-loss-probe (bench/loss_probe.cpp): a checkpoint's label-smoothed loss on
the first N CIFAR-100 training images (no augmentation) in eval mode and in train mode (dropout
on), the latter averaged over R dropout draws (torch.manual_seed(1000 + r)). The model is
bench/lvit_torch.py's, with the checkpoint's weights (lvit-train's model.safetensors or
torch_train.py --save: the same names) and the config from its metadata.

  python3 bench/loss_probe.py --checkpoint RUN/model.safetensors --data-dir DIR
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lvit_torch as lt  # noqa: E402
from torch_train import CIFAR100_MEAN, CIFAR100_STD, load_cifar100  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data-dir", required=True, help="folder holding train.bin (cifar-100-binary)")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    a = ap.parse_args()
    with safe_open(a.checkpoint, "pt") as f:
        meta = f.metadata() or {}
    if "config" not in meta:
        sys.exit(f"error: {a.checkpoint}: no model config in the safetensors metadata")
    cfg = lt.ViTConfig(**{k: v for k, v in json.loads(meta["config"]).items()
                          if k in lt.ViTConfig.__dataclass_fields__})
    model = lt.LViT(cfg).to(a.device)
    model.load_state_dict(load_file(a.checkpoint), strict=True)
    n = a.batches * a.batch_size
    path = os.path.join(a.data_dir, "train.bin")
    try:
        images, labels = load_cifar100(path)
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    if images.shape[0] < n:
        sys.exit(f"error: {path}: {images.shape[0]} CIFAR-100 records, fewer than {n}")
    x = images[:n].to(device=a.device, dtype=torch.float32) / 255
    mean = torch.tensor(CIFAR100_MEAN, device=a.device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR100_STD, device=a.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    y = labels[:n].to(a.device)
    bf16 = a.precision == "bf16" and a.device.startswith("cuda")

    def mean_loss():
        s = 0.0
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            for b in range(a.batches):
                sl = slice(b * a.batch_size, (b + 1) * a.batch_size)
                s += F.cross_entropy(model(x[sl]).float(), y[sl],
                                     label_smoothing=a.label_smoothing).item()
        return s / a.batches

    model.eval()
    eval_loss = mean_loss()
    model.train()
    losses = []
    for r in range(a.draws):
        torch.manual_seed(1000 + r)
        losses.append(mean_loss())
    m = float(np.mean(losses))
    sem = float(np.std(losses)) / math.sqrt(a.draws)
    print(f"torch: {n} images, eval-mode loss {eval_loss:.5f}, train-mode loss {m:.5f} +- "
          f"{sem:.5f} ({a.draws} dropout draws, dropout {cfg.dropout:g})")


if __name__ == "__main__":
    main()
