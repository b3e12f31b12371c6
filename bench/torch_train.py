#!/usr/bin/env python3
"""Train the lvit models on CIFAR-100 with PyTorch (the reference run for lvit-train).

Reads the original cifar-100-binary files (train.bin / test.bin: records of 1 coarse byte,
1 fine byte, 3072 pixel bytes as R, G, B planes of 32x32) and trains on the fine labels.

Recipe (same flags as lvit-train where they overlap): AdamW (no decay on biases, norms,
pos_embed, cls_token, ripple logits; fused on CUDA), per-step schedule = linear warmup from 0 over
--warmup-epochs then cosine to --min-lr, label-smoothing cross entropy, random crop (zero pad 4)
+ horizontal flip, per-channel normalisation, grad-norm clipping, optional bf16 autocast and
torch.compile. The last partial training batch of each epoch is dropped (static shapes).

Input pipeline: the whole uint8 dataset is kept on the training device; each batch is gathered,
cropped and flipped there with one indexing op, so on CUDA the loader never limits the step.

Prints one JSON line per epoch:
  {"epoch", "train_loss", "test_top1", "test_top5", "img_per_s", "wall_s", "lr", "steps",
   "peak_mem_mb"}
img_per_s counts training images over training time only (evaluation excluded); wall_s is the
time since training started, evaluation included.

  python3 bench/torch_train.py --preset vit-cifar --device cuda --precision bf16 --epochs 100
  python3 bench/torch_train.py --preset vit-micro --device cpu --max-steps 20 --eval-limit 1000
"""
import argparse
import json
import math
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lvit_philox  # noqa: E402
import lvit_torch as lt  # noqa: E402
from torch_bench import add_model_args, config_from_args, make_optimizer, setup_precision  # noqa: E402

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
DEFAULT_DATA = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                             "..", "..", "shared", "data", "cifar-100-binary"))


def load_cifar100(path: str):
    """-> (images uint8 [N,3,32,32], fine labels int64 [N])."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 3074 != 0:
        raise ValueError(f"{path}: size {raw.size} is not a multiple of 3074 (CIFAR-100 record)")
    raw = raw.reshape(-1, 3074)
    labels = torch.from_numpy(raw[:, 1].astype(np.int64))
    images = torch.from_numpy(raw[:, 2:].reshape(-1, 3, 32, 32).copy())
    return images, labels


class DeviceAugment:
    """Random crop with zero padding + horizontal flip + normalisation, on the data's device."""

    def __init__(self, device, size=32, pad=4, flip=True, mean=CIFAR100_MEAN, std=CIFAR100_STD):
        self.size, self.pad, self.flip = size, pad, flip
        self.ar = torch.arange(size, device=device)
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0
        self.inv_std = 1.0 / (torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0)

    def normalise(self, x_u8):
        return (x_u8.float() - self.mean) * self.inv_std

    def __call__(self, x_u8, gen):
        b, p, s = x_u8.shape[0], self.pad, self.size
        dev = x_u8.device
        xp = F.pad(x_u8, (p, p, p, p))                           # zeros = black pixels
        oy = torch.randint(0, 2 * p + 1, (b, 1), device=dev, generator=gen)
        ox = torch.randint(0, 2 * p + 1, (b, 1), device=dev, generator=gen)
        flip = (torch.rand(b, 1, device=dev, generator=gen) < 0.5) & self.flip
        rows = oy + self.ar                                      # [B,S]
        cols = ox + torch.where(flip, s - 1 - self.ar, self.ar)  # [B,S]
        bi = torch.arange(b, device=dev).view(b, 1, 1)
        out = xp[bi, :, rows[:, :, None], cols[:, None, :]]      # [B,S,S,C]
        return self.normalise(out.permute(0, 3, 1, 2))


def lr_at(step, total, warmup, base, min_lr):
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (base - min_lr) * (1.0 + math.cos(math.pi * min(t, 1.0)))


@torch.no_grad()
def use_lvit_dropout(model, cfg, key, dev):
    """Replaces the model's dropout modules by lvit_philox.LvitDropout in lvit's call order (the
    position dropout, then per block the attention's projection, the MLP's GELU and fc2
    dropouts: offsets 0, 1, 2, ... of each step) with Philox key `key` (lvit's dropout seed: run
    seed + 1, or lvit-train's --dropout-seed). Returns the new modules, which share one offset
    counter."""
    if cfg.drop_path > 0:
        raise SystemExit("error: --lvit-dropout: drop_path > 0 is not supported (lvit draws its "
                         "stochastic-depth masks from the same generator, in its own order)")
    counter = torch.zeros((), dtype=torch.int64, device=dev)
    sites = []

    def replace(parent, name):
        old = getattr(parent, name)
        if not isinstance(old, torch.nn.Dropout):
            raise SystemExit(f"error: --lvit-dropout: {name} is not a dropout module")
        new = lvit_philox.LvitDropout(old.p, key, counter, len(sites))
        setattr(parent, name, new)
        sites.append(new)

    replace(model, "pos_drop")
    for block in model.blocks:
        replace(block.attn, "proj_drop")
        replace(block.mlp, "drop1")
        replace(block.mlp, "drop2")
    return sites


@torch.no_grad()
def evaluate(model, images, labels, aug, autocast, batch, limit=None):
    model.eval()
    n = images.shape[0] if not limit else min(limit, images.shape[0])
    top1 = torch.zeros((), device=images.device)
    top5 = torch.zeros((), device=images.device)
    for i in range(0, n, batch):
        x = aug.normalise(images[i:min(i + batch, n)])
        y = labels[i:min(i + batch, n)]
        with autocast():
            logits = model(x)
        pred = logits.float().topk(5, dim=1).indices
        top1 += (pred[:, 0] == y).sum()
        top5 += (pred == y[:, None]).any(dim=1).sum()
    model.train()
    return top1.item() / n, top5.item() / n


def main(argv=None):
    ap = argparse.ArgumentParser(description="Train lvit models on CIFAR-100 with PyTorch")
    add_model_args(ap)
    ap.add_argument("--data-dir", default=DEFAULT_DATA)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--eval-batch-size", type=int, default=500)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr", type=float, default=1e-5)
    ap.add_argument("--warmup-epochs", type=float, default=5.0)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--beta2", type=float, default=0.999)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--clip-grad", type=float, default=1.0, help="<= 0 disables")
    ap.add_argument("--crop-pad", type=int, default=4)
    ap.add_argument("--no-flip", action="store_true")
    ap.add_argument("--device", choices=("cpu", "cuda"),
                    default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--precision", choices=("fp32", "tf32", "bf16"), default="bf16")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-steps", type=int, default=None,
                    help="stop after this many optimizer steps (schedule still spans --epochs)")
    ap.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N test images")
    ap.add_argument("--log-interval", type=int, default=0, help="step log to stderr every N steps")
    ap.add_argument("--out", default=None, help="also append the JSON lines to this file")
    ap.add_argument("--save", default=None, help="write the final weights (safetensors)")
    ap.add_argument("--lvit-dropout", action="store_true",
                    help="draw the dropout masks from lvit's Philox streams (bench/lvit_philox.py:"
                         " seed + 1, one offset per call in lvit's order) instead of PyTorch's")
    ap.add_argument("--dropout-seed", type=int, default=None,
                    help="other dropout masks on --seed's weights and data order: PyTorch's "
                         "generator reseeded after the model is built, or with --lvit-dropout "
                         "the Philox key (lvit-train's --dropout-seed; default seed + 1)")
    args = ap.parse_args(argv)
    if args.dropout_seed is not None and args.dropout_seed < 0:
        raise SystemExit(f"error: --dropout-seed {args.dropout_seed} must be non-negative")

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    cfg = config_from_args(args)
    if cfg.image_size != 32 or cfg.num_classes != 100:
        raise SystemExit(f"CIFAR-100 needs image_size 32 and 100 classes (preset {args.preset} "
                         f"has {cfg.image_size}, {cfg.num_classes}); use a *-cifar/*-micro preset")
    autocast = setup_precision(args.precision, args.device)

    tr_x, tr_y = load_cifar100(os.path.join(args.data_dir, "train.bin"))
    te_x, te_y = load_cifar100(os.path.join(args.data_dir, "test.bin"))
    tr_x, tr_y, te_x, te_y = (t.to(dev) for t in (tr_x, tr_y, te_x, te_y))
    aug = DeviceAugment(dev, pad=args.crop_pad, flip=not args.no_flip)
    gen = torch.Generator(device=dev)
    gen.manual_seed(args.seed)

    model = lt.LViT(cfg).to(dev).train()
    lvit_sites = None
    if args.lvit_dropout:
        key = args.seed + 1 if args.dropout_seed is None else args.dropout_seed
        lvit_sites = use_lvit_dropout(model, cfg, key, dev)
    elif args.dropout_seed is not None:
        torch.manual_seed(args.dropout_seed)  # the data order and augmentation draw from `gen`
    opt = make_optimizer(model, args.lr, args.weight_decay, args.device, betas=(0.9, args.beta2))
    fwd = torch.compile(model) if args.compile else model

    n_train = tr_x.shape[0]
    steps_per_epoch = n_train // args.batch_size
    total_steps = steps_per_epoch * args.epochs
    warmup_steps = int(round(args.warmup_epochs * steps_per_epoch))
    print(json.dumps({"config": cfg.to_json_dict(), "preset": args.preset,
                      "params": lt.count_params(model), "steps_per_epoch": steps_per_epoch,
                      "total_steps": total_steps, "device": args.device,
                      "precision": args.precision, "compile": bool(args.compile),
                      "torch_version": torch.__version__}), file=sys.stderr)

    out_f = open(args.out, "a") if args.out else None
    step = 0
    t_start = time.perf_counter()
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for epoch in range(1, args.epochs + 1):
        perm = torch.randperm(n_train, device=dev, generator=gen)
        loss_sum = torch.zeros((), device=dev)
        n_steps = 0
        t0 = time.perf_counter()
        for i in range(steps_per_epoch):
            if args.max_steps is not None and step >= args.max_steps:
                break
            lr = lr_at(step, total_steps, warmup_steps, args.lr, args.min_lr)
            for g in opt.param_groups:
                g["lr"] = lr
            idx = perm[i * args.batch_size:(i + 1) * args.batch_size]
            x = aug(tr_x[idx], gen)
            y = tr_y[idx]
            opt.zero_grad(set_to_none=True)
            with autocast():
                logits = fwd(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=args.label_smoothing)
            loss.backward()
            if args.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
            opt.step()
            if lvit_sites is not None:  # lvit's generator: the next step's calls, next offsets
                lvit_sites[0].counter.add_(len(lvit_sites))
            loss_sum += loss.detach()
            n_steps += 1
            step += 1
            if args.log_interval and step % args.log_interval == 0:
                print(f"epoch {epoch} step {step}/{total_steps} loss {loss.item():.4f} lr {lr:.2e}",
                      file=sys.stderr, flush=True)
        if args.device == "cuda":
            torch.cuda.synchronize()
        train_s = time.perf_counter() - t0
        if n_steps == 0:
            break
        top1, top5 = evaluate(model, te_x, te_y, aug, autocast, args.eval_batch_size,
                              args.eval_limit)
        peak = (torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
        rec = {"epoch": epoch, "train_loss": round(loss_sum.item() / n_steps, 5),
               "test_top1": round(top1, 5), "test_top5": round(top5, 5),
               "img_per_s": round(n_steps * args.batch_size / train_s, 2),
               "wall_s": round(time.perf_counter() - t_start, 2), "lr": lr, "steps": step,
               "peak_mem_mb": round(peak, 1)}
        line = json.dumps(rec)
        print(line, flush=True)
        if out_f:
            out_f.write(line + "\n")
            out_f.flush()
        if args.max_steps is not None and step >= args.max_steps:
            break
    if out_f:
        out_f.close()
    if args.save:
        from safetensors.torch import save_file
        sd = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(sd, args.save, metadata={"config": json.dumps(cfg.to_json_dict()),
                                           "step": str(step)})


if __name__ == "__main__":
    main()
