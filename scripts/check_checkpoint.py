#!/usr/bin/env python3
"""Cross-checks an lvit checkpoint against PyTorch.

Loads RUN_DIR/model.safetensors (weights under timm's names, config in the metadata) into the
PyTorch reference model of bench/lvit_torch.py -- and, for softmax ViTs, into timm's own
VisionTransformer -- runs the first N CIFAR test images and compares the logits with the ones
`lvit-eval --dump-logits N FILE` wrote.

    ./build/lvit-eval --checkpoint runs/X/model.safetensors --dump-logits 64 /tmp/logits.bin
    python3 scripts/check_checkpoint.py runs/X/model.safetensors /tmp/logits.bin \
        --data-dir ../shared/data/cifar-100-binary
"""
import argparse
import dataclasses
import json
import os
import sys

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
import lvit_torch  # noqa: E402

MEAN = np.array([0.5071, 0.4865, 0.4409], dtype=np.float32)
STD = np.array([0.2673, 0.2564, 0.2762], dtype=np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("logits", help="raw float32 [N, classes] from lvit-eval --dump-logits")
    ap.add_argument("--data-dir", default="../shared/data/cifar-100-binary")
    args = ap.parse_args()

    with safe_open(args.checkpoint, "pt") as f:
        cfg_json = json.loads(f.metadata()["config"])
    fields = {f.name for f in dataclasses.fields(lvit_torch.ViTConfig)}
    cfg = lvit_torch.ViTConfig(**{k: v for k, v in cfg_json.items() if k in fields})
    state = load_file(args.checkpoint)
    ours = np.fromfile(args.logits, dtype=np.float32).reshape(-1, cfg.num_classes)
    n = ours.shape[0]

    raw = np.fromfile(os.path.join(args.data_dir, "test.bin"), dtype=np.uint8, count=n * 3074)
    img = raw.reshape(n, 3074)[:, 2:].reshape(n, 3, 32, 32).astype(np.float32) / 255.0
    x = torch.from_numpy((img - MEAN[None, :, None, None]) / STD[None, :, None, None])

    model = lvit_torch.build_model(cfg).eval()
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        ref = model(x).numpy()
    tol = 1e-4 * max(1.0, float(np.abs(ref).max()))
    err = float(np.abs(ref - ours).max())
    print(f"lvit_torch {cfg.attention_type}: max |logit diff| {err:.3g} (tol {tol:.3g}) over {n} images")
    ok = err <= tol
    if cfg.attention_type == "softmax":
        import timm
        vit = timm.create_model("vit_small_patch16_224", pretrained=False, img_size=cfg.image_size,
                                patch_size=cfg.patch_size, num_classes=cfg.num_classes,
                                embed_dim=cfg.dim, depth=cfg.depth, num_heads=cfg.num_heads,
                                mlp_ratio=cfg.mlp_ratio).eval()
        vit.load_state_dict(state, strict=True)
        with torch.no_grad():
            t = vit(x).numpy()
        terr = float(np.abs(t - ours).max())
        print(f"timm VisionTransformer: max |logit diff| {terr:.3g} (tol {tol:.3g}); "
              f"top-1 agreement {np.mean(t.argmax(1) == ours.argmax(1)) * 100:.1f}%")
        ok = ok and terr <= tol
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
