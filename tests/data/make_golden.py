#!/usr/bin/env python3
"""Write the whole-model golden files the C++ tests compare against (llm.c test_gpt2 style).

    python3 tests/data/make_golden.py            # writes tests/data/golden_*.safetensors

One file per model: golden_softmax, golden_ripple, golden_hydra (Hydra in both blocks) and
golden_hydra_mixed (hydra_layers = 1: block 0 softmax, block 1 Hydra). Tiny model: image 16,
patch 4 (4x4 grid, so ripple levels 0, 1, 2 all occur), dim 32, depth 2, 4 heads, MLP ratio 4,
10 classes, LayerNorm eps 1e-6, dropout 0 (deterministic); ripple S = 3, hydra B = 2.

Each file holds (all f32 unless stated):
  <param name>          every parameter under its model (timm) name, the values the test must
                        load (random, from bench/lvit_torch.randomize_for_golden, not the init)
  input    [4,3,16,16]  random normal (already "normalised")
  labels   [4] i64
  logits   [4,10]
  loss     []           cross entropy, label_smoothing 0.1, mean over the batch
  grad.<param name>     d loss / d param at the initial parameters
  adamw_losses [3]      loss before each of 3 torch.optim.AdamW steps on the same batch
                        (lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0.05 on the decay
                        group only = Linear/Conv weights, foreach=False, no grad clipping)
  final.<param name>    parameters after the 3 steps
Metadata: "config" (JSON model config), "optimizer" (JSON: the AdamW settings and the names in
the decay group), "zero_grad_entries" (JSON, see below), "note".

Entries whose gradient is zero in exact arithmetic ("zero_grad_entries": {name: [begin, end)}
over the flattened tensor):
  * the key-bias slice qkv.bias[D:2D] of every softmax block: softmax_j(q_i.(k_j + b)) does not
    depend on b (q_i.b is constant over j);
  * ripple_logits of the LAST ripple block: only the class token's output reaches the head, and
    every pair with the class token has stage S-1, so alpha_{S-1} cancels between numerator and
    denominator (it survives only through eps = 1e-6: |grad| ~ 1e-9).
Their reference gradients are roundoff (f64) or eps-sized; an f32 implementation gets roundoff of
~1e-7 there, and AdamW (eps 1e-8) turns any such gradient into an update of up to lr per step.
So compare grad.* with an absolute tolerance scaled by the largest gradient of the model, and
final.* of these entries with atol = steps * lr (3e-3). Measured with torch f32 against these
files: grad abs err <= 7.2e-7 (max |grad| 0.4 .. 1.6), final err on other entries <= 4e-6.

Precision: parameters and input are drawn in f32 (so the saved values are exactly what the C++
side loads); the reference forward/backward/AdamW is then computed in float64 from those
f32-exact values, and the results (logits, loss, grads, losses, final params) are rounded to f32
for storage. The reference therefore carries no f32 accumulation error of its own; the C++ test
should derive tolerances from f32 only. Softmax blocks use the explicit softmax (not SDPA) and
ripple blocks the dense O(n^2) form.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))
import lvit_torch as lt  # noqa: E402

BASE = dict(image_size=16, patch_size=4, dim=32, depth=2, num_heads=4, mlp_ratio=4.0,
            num_classes=10, dropout=0.0, drop_path=0.0, layernorm_eps=1e-6)
VARIANTS = {
    "softmax": dict(attention_type="softmax"),
    "ripple": dict(attention_type="ripple", ripple_stages=3),
    "hydra": dict(attention_type="hydra", hydra_branches=2, hydra_layers=2),
    "hydra_mixed": dict(attention_type="hydra", hydra_branches=2, hydra_layers=1),
}
ADAMW = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)
LABEL_SMOOTHING = 0.1
STEPS = 3
BATCH = 4


def config_json(cfg: lt.ViTConfig) -> dict:
    d = cfg.to_json_dict()
    at = cfg.attention_type
    keep = ["image_size", "patch_size", "dim", "depth", "num_heads", "mlp_ratio", "num_classes",
            "attention_type", "layernorm_eps", "dropout", "drop_path"]
    if at == "ripple":
        keep += ["ripple_stages"]
    if at == "hydra":
        keep += ["hydra_branches", "hydra_layers"]
    out = {k: d[k] for k in keep}
    out["mlp_ratio"] = int(out["mlp_ratio"]) if float(out["mlp_ratio"]).is_integer() else out["mlp_ratio"]
    return out


def zero_grad_entries(model, cfg) -> dict:
    """Entries with an analytically zero gradient (see the module docstring)."""
    zero = {}
    D = cfg.dim
    for i, blk in enumerate(model.blocks):
        if isinstance(blk.attn, lt.SoftmaxAttention):
            zero[f"blocks.{i}.attn.qkv.bias"] = [D, 2 * D]
    last = cfg.depth - 1
    if isinstance(model.blocks[last].attn, lt.RippleAttention) and cfg.ripple_stages > 1:
        zero[f"blocks.{last}.attn.ripple_logits"] = [0, cfg.num_heads * (cfg.ripple_stages - 1)]
    return zero


def make(name: str, spec: dict, seed: int) -> dict:
    cfg = lt.ViTConfig(**BASE, **spec, ripple_impl="dense", exact_softmax=True)
    torch.manual_seed(seed)
    model = lt.LViT(cfg)
    lt.randomize_for_golden(model, seed)
    gen = torch.Generator().manual_seed(seed + 1000)
    x32 = torch.randn(BATCH, 3, cfg.image_size, cfg.image_size, generator=gen)
    labels = torch.randint(0, cfg.num_classes, (BATCH,), generator=gen)

    out = {}
    for n, p in model.named_parameters():
        out[n] = p.detach().float().clone()
    out["input"] = x32.clone()
    out["labels"] = labels.clone()

    model = model.double().train()  # dropout is 0: train() changes nothing but is the real mode
    x = x32.double()
    opt = torch.optim.AdamW(lt.adamw_param_groups(model, ADAMW["weight_decay"]), lr=ADAMW["lr"],
                            betas=ADAMW["betas"], eps=ADAMW["eps"], foreach=False)
    losses = []
    for step in range(STEPS):
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits, labels, label_smoothing=LABEL_SMOOTHING)
        loss.backward()
        losses.append(loss.item())
        if step == 0:
            out["logits"] = logits.detach().float()
            out["loss"] = loss.detach().float().reshape(())
            for n, p in model.named_parameters():
                assert p.grad is not None, n
                out[f"grad.{n}"] = p.grad.detach().float().clone()
        opt.step()
    out["adamw_losses"] = torch.tensor(losses, dtype=torch.float32)
    for n, p in model.named_parameters():
        out[f"final.{n}"] = p.detach().float().clone()

    zero = zero_grad_entries(model, cfg)
    gmax = max(out[f"grad.{n}"].abs().max().item() for n, _ in model.named_parameters())
    for n, (b, e) in zero.items():
        g = out[f"grad.{n}"].flatten()[b:e].abs().max().item()
        assert g < 1e-7 * gmax, (n, g, gmax)
    meta = {
        "config": json.dumps(config_json(cfg)),
        "optimizer": json.dumps({
            "type": "AdamW", "lr": ADAMW["lr"], "beta1": ADAMW["betas"][0],
            "beta2": ADAMW["betas"][1], "eps": ADAMW["eps"],
            "weight_decay": ADAMW["weight_decay"], "steps": STEPS, "foreach": False,
            "grad_clip": None, "label_smoothing": LABEL_SMOOTHING,
            "decay": sorted(lt.decay_param_names(model)),
        }),
        "zero_grad_entries": json.dumps(zero),
        "note": "reference computed in float64 from the f32 parameters/input, stored as f32; "
                "made by tests/data/make_golden.py, torch " + torch.__version__,
    }
    return out, meta, cfg, losses


def main():
    total = 0
    for i, (name, spec) in enumerate(VARIANTS.items()):
        tensors, meta, cfg, losses = make(name, spec, seed=1234 + i)
        tensors = {k: v.contiguous() for k, v in tensors.items()}
        path = os.path.join(HERE, f"golden_{name}.safetensors")
        save_file(tensors, path, metadata=meta)
        os.chmod(path, 0o644)
        size = os.path.getsize(path)
        total += size
        nparam = sum(v.numel() for k, v in tensors.items()
                     if not k.startswith(("grad.", "final.")) and k not in
                     ("input", "labels", "logits", "loss", "adamw_losses"))
        print(f"{path}: {len(tensors)} tensors, {nparam} params, {size} bytes, "
              f"losses {['%.6f' % l for l in losses]}")
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
