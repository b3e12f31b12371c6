#!/usr/bin/env python3
"""PyTorch training-step throughput of the lvit models (the comparison point for lvit-bench).

One step = forward, label-smoothing cross entropy, backward, grad-norm clip (1.0), AdamW step
(fused on CUDA; no weight decay on biases/norms/pos/cls/ripple logits), on a fixed synthetic batch
that lives on the device. Prints one JSON line:

  {"model", "batch", "device", "precision", "compile", "threads", "img_per_s", "step_ms",
   "peak_mem_mb", "torch_version", "device_name", ...}

Timing: --warmup untimed steps, then --steps timed steps; time.perf_counter on CPU, CUDA events
around the timed loop on GPU. peak_mem_mb is torch.cuda.max_memory_allocated on CUDA and the
process's peak RSS (ru_maxrss) on CPU.

  python3 bench/torch_bench.py --preset vit-micro --batch-size 32 --device cpu --steps 3
  python3 bench/torch_bench.py --preset ripple-cifar --batch-size 256 --device cuda --precision bf16

Ripple uses the linear-time form unless --ripple-impl dense. Preset fields can be overridden
(--dim, --depth, --heads, --ripple-stages, --hydra-branches, --hydra-layers, --dropout, ...).
"""
import argparse
import contextlib
import json
import os
import platform
import resource
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lvit_torch as lt  # noqa: E402

_ATT_PREFIX = {"softmax": "vit", "ripple": "ripple", "hydra": "hydra"}


def add_model_args(ap: argparse.ArgumentParser):
    ap.add_argument("--preset", default="vit-cifar", choices=sorted(lt.PRESETS))
    ap.add_argument("--attention-type", "--attention_type", dest="attention_type",
                    choices=lt.ATTENTION_TYPES, default=None,
                    help="override the preset's attention (e.g. --preset vit-cifar "
                         "--attention-type ripple == ripple-cifar)")
    for name, typ in (("image-size", int), ("patch-size", int), ("dim", int), ("depth", int),
                      ("heads", int), ("mlp-ratio", float), ("num-classes", int),
                      ("dropout", float), ("drop-path", float), ("ripple-stages", int),
                      ("hydra-branches", int), ("hydra-layers", int)):
        ap.add_argument(f"--{name}", type=typ, default=None)
    ap.add_argument("--ripple-impl", choices=("linear", "dense"), default="linear")


def config_from_args(args) -> lt.ViTConfig:
    preset = args.preset
    if args.attention_type is not None:
        preset = _ATT_PREFIX[args.attention_type] + "-" + preset.split("-", 1)[1]
    args.preset = preset
    return lt.preset_config(
        preset, image_size=args.image_size, patch_size=args.patch_size, dim=args.dim,
        depth=args.depth, num_heads=args.heads, mlp_ratio=args.mlp_ratio,
        num_classes=args.num_classes, dropout=args.dropout, drop_path=args.drop_path,
        ripple_stages=args.ripple_stages, hydra_branches=args.hydra_branches,
        hydra_layers=args.hydra_layers, ripple_impl=args.ripple_impl)


def setup_precision(precision: str, device: str):
    """Returns an autocast context factory."""
    if device == "cuda":
        tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
    if precision == "bf16":
        return lambda: torch.autocast(device_type=device, dtype=torch.bfloat16)
    return contextlib.nullcontext


def make_optimizer(model, lr, weight_decay, device, betas=(0.9, 0.999)):
    groups = lt.adamw_param_groups(model, weight_decay)
    kw = dict(lr=lr, betas=betas, eps=1e-8)
    if device == "cuda":
        kw["fused"] = True
    return torch.optim.AdamW(groups, **kw)


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return name


def main(argv=None):
    ap = argparse.ArgumentParser(description="PyTorch training-step throughput")
    add_model_args(ap)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--precision", choices=("fp32", "tf32", "bf16"), default="fp32")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--clip-grad", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    cfg = config_from_args(args)
    autocast = setup_precision(args.precision, args.device)

    model = lt.LViT(cfg).to(dev).train()
    opt = make_optimizer(model, args.lr, args.weight_decay, args.device)
    fwd = torch.compile(model) if args.compile else model

    x = torch.randn(args.batch_size, cfg.in_chans, cfg.image_size, cfg.image_size, device=dev)
    y = torch.randint(0, cfg.num_classes, (args.batch_size,), device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast():
            logits = fwd(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=args.label_smoothing)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
        opt.step()
        return loss.detach()

    for _ in range(args.warmup):
        loss = step()
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(args.steps):
            loss = step()
        end.record()
        torch.cuda.synchronize()
        total_ms = start.elapsed_time(end)
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            loss = step()
        total_ms = (time.perf_counter() - t0) * 1e3
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    step_ms = total_ms / max(args.steps, 1)
    print(json.dumps({
        "model": args.preset,
        "attention_type": cfg.attention_type,
        "batch": args.batch_size,
        "device": args.device,
        "precision": args.precision,
        "compile": bool(args.compile),
        "threads": torch.get_num_threads() if args.device == "cpu" else args.threads,
        "img_per_s": round(args.batch_size * 1e3 / step_ms, 2),
        "step_ms": round(step_ms, 3),
        "peak_mem_mb": round(peak, 1),
        "params": lt.count_params(model),
        "steps": args.steps,
        "warmup": args.warmup,
        "final_loss": round(loss.item(), 4),
        "torch_version": torch.__version__,
        "device_name": device_name(args.device),
    }))


if __name__ == "__main__":
    main()
