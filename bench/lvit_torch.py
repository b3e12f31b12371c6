#!/usr/bin/env python3
"""PyTorch reference implementation of the lvit Vision Transformer zoo.

Softmax ViT, RippleViT and HydraViT, written from docs in the shared DESIGN.md ("The three
attention mechanisms (exact math)", "Model presets"), with timm's VisionTransformer parameter
names and layouts so state dicts are interchangeable with the C++ framework (and, for the
softmax model, with ``timm.models.VisionTransformer(global_pool='token', class_token=True)``):

    patch_embed.proj.weight [D,3,p,p]  patch_embed.proj.bias [D]   (Conv2d, stride p)
    cls_token [1,1,D]  pos_embed [1,1+N,D]
    blocks.{i}.norm1.weight/bias [D]
    blocks.{i}.attn.qkv.weight [3D,D] / bias [3D]   (q, then k, then v; head h owns channels
                                                     h*d .. h*d+d-1 of each)
    blocks.{i}.attn.ripple_logits [H,S-1]           (ripple blocks only, and only when S > 1)
    blocks.{i}.attn.proj.weight [D,D] / bias [D]
    blocks.{i}.norm2.weight/bias [D]
    blocks.{i}.mlp.fc1.weight [hidden,D] / bias,  blocks.{i}.mlp.fc2.weight [D,hidden] / bias
    norm.weight/bias [D]   head.weight [classes,D] / bias

Design choices where DESIGN.md is silent (also listed in the project report):
  * Dropout follows timm with a single rate ``dropout`` used as timm's pos_drop_rate and
    proj_drop_rate: after adding pos_embed, after the attention output projection, after the
    MLP's GELU and after fc2. No attention-probability dropout and no head dropout (timm's
    ``drop_rate`` = head_drop is not used). drop_path is stochastic depth on both residual
    branches with timm's linear per-block schedule linspace(0, drop_path, depth).
  * Init follows timm >= 0.9 (``weight_init=''``): Linear weights trunc_normal(std .02, cut at
    +-2 absolute), Linear biases 0, pos_embed trunc_normal(std .02), cls_token normal(std 1e-6)
    (older timm, <= 0.6, used trunc_normal .02 for cls_token), LayerNorm ones/zeros, and the
    patch-embedding Conv2d keeps PyTorch's default reset_parameters (weight and bias
    uniform(+-1/sqrt(fan_in)), fan_in = 3*p*p) because timm's init only touches nn.Linear.
    Ripple logits start at beta_s = -log(S-1-s) (all alpha_s = 1/S).
  * Ripple with S = 1 has NO ripple_logits parameter (alpha_0 = 1, plain linear attention).
  * Hydra blocks ignore num_heads (the branches play that role); softmax blocks of a mixed
    Hydra model (hydra_layers < depth) use num_heads.
  * LayerNorm eps 1e-6; exact (erf) GELU; classifier reads the class token after the final norm.
  * Under CUDA autocast the Ripple and Hydra attention cores (after qkv, before proj) run in
    fp32: the telescoped Ripple sum has coefficients alpha_s - alpha_{s+1} of either sign and
    would cancel badly in bf16. qkv/proj/MLP GEMMs still run in bf16.

Note (follows from DESIGN.md's math, not a choice made here): every pair with the class token has
stage S-1, so alpha_{S-1} cancels between the class token's numerator and denominator; in the
LAST ripple block only the class token reaches the head, hence that block's ripple_logits get a
gradient only through eps (~1e-9): they are effectively frozen. Likewise, as in any softmax ViT,
the key-bias slice qkv.bias[D:2D] of softmax blocks has an exactly zero gradient.

Ripple implementations: ``ripple_impl="linear"`` (default; telescoped, O(S n d^2)) and
``"dense"`` (the O(n^2) reference). In eager PyTorch on an H200 (bf16, batch 256 / 128) the dense
form is faster at CIFAR size (n = 65: 52 vs 69 ms/step) and slower at Tiny ImageNet size
(n = 257: 148 vs 96 ms/step); torch_bench.py takes ``--ripple-impl``.

Run ``python3 bench/lvit_torch.py --selftest`` to check ripple dense == linear-time, S=1 ==
linear attention, hydra against its definition, softmax SDPA == explicit, and the softmax model
against timm's VisionTransformer with the same state dict. ``--params`` prints parameter counts.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

ATTENTION_TYPES = ("softmax", "ripple", "hydra")
RIPPLE_EPS = 1e-6
HYDRA_EPS = 1e-6


# ----------------------------------------------------------------------------- config / presets
@dataclass
class ViTConfig:
    image_size: int = 32
    patch_size: int = 4
    dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    num_classes: int = 100
    dropout: float = 0.0
    drop_path: float = 0.0
    attention_type: str = "softmax"
    ripple_stages: int = 3
    hydra_branches: int = 1
    hydra_layers: Optional[int] = None  # None -> depth
    layernorm_eps: float = 1e-6
    in_chans: int = 3
    # implementation switches (not part of the model's math)
    ripple_impl: str = "linear"  # "linear" (telescoped, O(S n d^2)) or "dense" (O(n^2) reference)
    exact_softmax: bool = False  # explicit softmax(q k^T / sqrt(d)) v instead of SDPA

    def __post_init__(self):
        assert self.attention_type in ATTENTION_TYPES, self.attention_type
        assert self.image_size % self.patch_size == 0
        assert self.dim % self.num_heads == 0
        if self.hydra_layers is None:
            self.hydra_layers = self.depth
        assert 0 <= self.hydra_layers <= self.depth
        assert self.ripple_stages >= 1
        assert self.dim % self.hydra_branches == 0
        assert self.ripple_impl in ("linear", "dense")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    def to_json_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("ripple_impl")
        d.pop("exact_softmax")
        return d


_CIFAR = dict(image_size=32, patch_size=4, dim=384, depth=12, num_heads=6, mlp_ratio=4.0,
              num_classes=100, dropout=0.1)
_TINY = dict(_CIFAR, image_size=64, num_classes=200)
_MICRO = dict(_CIFAR, dim=128, depth=4, num_heads=4)
_ATT = {"vit": dict(attention_type="softmax"),
        "ripple": dict(attention_type="ripple", ripple_stages=3),
        "hydra": dict(attention_type="hydra", hydra_branches=4)}
PRESETS = {f"{a}-{s}": dict(base, **att)
           for s, base in (("cifar", _CIFAR), ("tiny", _TINY), ("micro", _MICRO))
           for a, att in _ATT.items()}


def preset_config(name: str, **overrides) -> ViTConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    kw = dict(PRESETS[name])
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return ViTConfig(**kw)


# ----------------------------------------------------------------------------- ripple helpers
def ripple_levels(h: int, w: int) -> torch.Tensor:
    """[h*w, h*w] int64: l(i,j) = smallest s with the same dyadic block of side 2^s."""
    r = torch.arange(h * w) // w
    c = torch.arange(h * w) % w
    lev = torch.full((h * w, h * w), -1, dtype=torch.long)
    s = 0
    while (lev < 0).any():
        same = ((r[:, None] >> s) == (r[None, :] >> s)) & ((c[:, None] >> s) == (c[None, :] >> s))
        lev = torch.where((lev < 0) & same, torch.full_like(lev, s), lev)
        s += 1
    return lev


def ripple_stage_matrix(h: int, w: int, stages: int) -> torch.Tensor:
    """[1+h*w, 1+h*w] int64 lambda(i,j) incl. the class token (index 0) -> stage S-1."""
    n = 1 + h * w
    lam = torch.full((n, n), stages - 1, dtype=torch.long)
    lam[1:, 1:] = ripple_levels(h, w).clamp(max=stages - 1)
    return lam


def ripple_alphas(beta: Optional[torch.Tensor], stages: int, heads: int,
                  like: torch.Tensor) -> torch.Tensor:
    """Stick-breaking weights [H, S] from logits beta [H, S-1]."""
    if stages == 1:
        return torch.ones(heads, 1, dtype=like.dtype, device=like.device)
    sig = torch.sigmoid(beta.to(like.dtype))
    one_minus = 1.0 - sig
    # remaining[s] = prod_{s'<s} (1 - sig_s'), s = 0..S-1
    remaining = torch.cat([torch.ones_like(sig[:, :1]), torch.cumprod(one_minus, dim=1)], dim=1)
    return torch.cat([sig * remaining[:, :-1], remaining[:, -1:]], dim=1)


def ripple_init_logits(stages: int) -> torch.Tensor:
    return torch.tensor([-math.log(stages - 1 - s) for s in range(stages - 1)])


def ripple_dense(q, k, v, alpha, lam, eps=RIPPLE_EPS):
    """Dense O(n^2) reference. q,k,v: [B,H,N,d] (raw, phi applied here); alpha [H,S];
    lam [N,N] stage matrix."""
    fq, fk = F.elu(q) + 1.0, F.elu(k) + 1.0
    wgt = alpha[:, lam]  # [H,N,N]
    a = (fq @ fk.transpose(-2, -1)) * wgt
    return (a @ v) / (a.sum(-1, keepdim=True) + eps)


def _to_blocks(x, h, w, b):
    """x [B,H,h*w,d] grid tokens -> [B,H,nblocks,b*b,d] (zero padding to multiples of b)."""
    bz, hh, _, d = x.shape
    if b >= h and b >= w:  # one block holds the whole grid
        return x.reshape(bz, hh, 1, h * w, d)
    hp, wp = -(-h // b) * b, -(-w // b) * b
    x = x.reshape(bz, hh, h, w, d)
    if hp != h or wp != w:
        x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
    x = x.reshape(bz, hh, hp // b, b, wp // b, b, d).permute(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(bz, hh, (hp // b) * (wp // b), b * b, d)


def _from_blocks(x, h, w, b):
    """Inverse of _to_blocks; x [B,H,nblocks,b*b,e] -> [B,H,h*w,e]."""
    bz, hh, _, _, e = x.shape
    if b >= h and b >= w:
        return x.reshape(bz, hh, h * w, e)
    hp, wp = -(-h // b) * b, -(-w // b) * b
    x = x.reshape(bz, hh, hp // b, wp // b, b, b, e).permute(0, 1, 2, 4, 3, 5, 6)
    x = x.reshape(bz, hh, hp, wp, e)[:, :, :h, :w]
    return x.reshape(bz, hh, h * w, e)


_MORTON_CACHE: dict = {}


def _morton_order(h: int, w: int, device) -> Optional[tuple]:
    """For a square power-of-two grid: (perm, inverse) taking row-major grid tokens to Z-order
    (Morton) order, where every level-s dyadic block is a contiguous run of 4^s tokens.
    None for other grids (they take the padded block path)."""
    if h != w or h & (h - 1):
        return None
    key = (h, str(device))
    if key not in _MORTON_CACHE:
        idx = torch.arange(h * w)
        r, c = idx // w, idx % w
        code = torch.zeros_like(idx)
        for bit in range(max(h.bit_length(), 1)):
            code |= ((c >> bit) & 1) << (2 * bit)
            code |= ((r >> bit) & 1) << (2 * bit + 1)
        perm = torch.argsort(code)
        _MORTON_CACHE[key] = (perm.to(device), torch.argsort(perm).to(device))
    return _MORTON_CACHE[key]


def ripple_linear(q, k, v, alpha, h, w, eps=RIPPLE_EPS):
    """Telescoped linear-time form. q,k,v: [B,H,1+h*w,d] (class token first); alpha [H,S].

    num_i = alpha_{S-1} phi(q_i)^T KV_all + sum_{s<S-1} (alpha_s - alpha_{s+1}) phi(q_i)^T KV_{B_s(i)}
    and the same with z for the denominator; the class token belongs to no block. The
    denominator rides along as an extra all-ones column of v ([v | 1]: KV and z in one product).
    Level-s blocks hold m = 4^s tokens: m = 1 is elementwise, m < d goes through (Q_b K_b^T) V_b,
    otherwise through K_b^T V_b. Power-of-two square grids are put in Morton order once, so every
    block is a contiguous run (free views); other grids are zero-padded per level.
    """
    stages = alpha.shape[1]
    d = q.shape[-1]
    fq, fk = F.elu(q) + 1.0, F.elu(k) + 1.0
    va = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)          # [B,H,N,d+1]
    acc = alpha[:, -1].view(1, -1, 1, 1) * (fq @ (fk.transpose(-2, -1) @ va))
    if stages > 1:
        bz, hh, n1, _ = fq.shape
        gq, gk, gv = fq[:, :, 1:], fk[:, :, 1:], va[:, :, 1:]
        order = _morton_order(h, w, q.device)
        if order is not None and stages > 2:
            gq, gk, gv = gq[:, :, order[0]], gk[:, :, order[0]], gv[:, :, order[0]]
        g = None
        for s in range(stages - 1):
            b = 1 << s
            whole = b >= h and b >= w
            m = h * w if whole else b * b
            if m == 1:
                t = (gq * gk).sum(-1, keepdim=True) * gv
            else:
                if order is not None or whole:
                    qb, kb, vb = (x.reshape(bz, hh, -1, m, x.shape[-1]) for x in (gq, gk, gv))
                else:
                    qb, kb, vb = (_to_blocks(x, h, w, b) for x in (gq, gk, gv))
                if m < d:
                    t = (qb @ kb.transpose(-2, -1)) @ vb
                else:
                    t = qb @ (kb.transpose(-2, -1) @ vb)
                if order is not None or whole:
                    t = t.reshape(bz, hh, h * w, d + 1)
                else:
                    t = _from_blocks(t, h, w, b)
            t = (alpha[:, s] - alpha[:, s + 1]).view(1, -1, 1, 1) * t
            g = t if g is None else g + t
        if order is not None and stages > 2:
            g = g[:, :, order[1]]
        acc = acc + torch.cat([torch.zeros_like(acc[:, :, :1]), g], dim=2)
    return acc[..., :d] / (acc[..., d:] + eps)


def linear_attention(q, k, v, eps=RIPPLE_EPS):
    """Katharopoulos et al. 2020 with phi = elu + 1 (reference for ripple S=1)."""
    fq, fk = F.elu(q) + 1.0, F.elu(k) + 1.0
    kv = torch.einsum("bhnd,bhne->bhde", fk, v)
    z = fk.sum(2)
    num = torch.einsum("bhnd,bhde->bhne", fq, kv)
    den = torch.einsum("bhnd,bhd->bhn", fq, z).unsqueeze(-1)
    return num / (den + eps)


def hydra_core(q, k, v, branches, eps=HYDRA_EPS):
    """q,k,v [B,N,D] -> [B,N,D]; phi = per-branch L2 normalisation (x / max(||x||, eps))."""
    bz, n, dim = q.shape
    qn = F.normalize(q.reshape(bz, n, branches, dim // branches), dim=-1, eps=eps).reshape(bz, n, dim)
    kn = F.normalize(k.reshape(bz, n, branches, dim // branches), dim=-1, eps=eps).reshape(bz, n, dim)
    kv = (kn * v).sum(dim=1, keepdim=True)                 # [B,1,D]
    return qn * kv


def _fp32_core(fn, *xs):
    """Run an attention core in fp32 with autocast off (if autocast is on)."""
    dev = xs[0].device.type
    if torch.is_autocast_enabled(dev):
        with torch.autocast(device_type=dev, enabled=False):
            return fn(*[x.float() for x in xs])
    return fn(*xs)


# ----------------------------------------------------------------------------- modules
class DropPath(nn.Module):
    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class PatchEmbed(nn.Module):
    def __init__(self, patch, in_chans, dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, N, D], row-major grid


class Mlp(nn.Module):
    def __init__(self, dim, hidden, drop):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact erf GELU
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x):
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class SoftmaxAttention(nn.Module):
    def __init__(self, dim, heads, drop, exact=False):
        super().__init__()
        self.heads, self.head_dim, self.exact = heads, dim // heads, exact
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(drop)

    def forward(self, x):
        b, n, dim = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.exact:
            att = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim), dim=-1)
            o = att @ v
        else:
            o = F.scaled_dot_product_attention(q, k, v)
        return self.proj_drop(self.proj(o.transpose(1, 2).reshape(b, n, dim)))


class RippleAttention(nn.Module):
    def __init__(self, dim, heads, drop, grid, stages, impl="linear"):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.grid, self.stages, self.impl = grid, stages, impl
        self.qkv = nn.Linear(dim, 3 * dim)
        if stages > 1:
            self.ripple_logits = nn.Parameter(ripple_init_logits(stages).repeat(heads, 1))
        else:
            self.register_parameter("ripple_logits", None)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(drop)
        self.register_buffer("stage_matrix", ripple_stage_matrix(grid, grid, stages),
                             persistent=False)

    def reset_ripple_logits(self):
        if self.ripple_logits is not None:
            with torch.no_grad():
                self.ripple_logits.copy_(ripple_init_logits(self.stages).repeat(self.heads, 1))

    def alphas(self, like):
        return ripple_alphas(self.ripple_logits, self.stages, self.heads, like)

    def _core(self, q, k, v):
        alpha = self.alphas(q)
        if self.impl == "dense":
            return ripple_dense(q, k, v, alpha, self.stage_matrix)
        return ripple_linear(q, k, v, alpha, self.grid, self.grid)

    def forward(self, x):
        b, n, dim = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        o = _fp32_core(self._core, q, k, v).to(q.dtype)
        return self.proj_drop(self.proj(o.transpose(1, 2).reshape(b, n, dim)))


class HydraAttention(nn.Module):
    def __init__(self, dim, branches, drop):
        super().__init__()
        self.branches = branches
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(drop)

    def forward(self, x):
        b, n, dim = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, dim).unbind(2)
        o = _fp32_core(lambda a, bb, c: hydra_core(a, bb, c, self.branches), q, k, v)
        return self.proj_drop(self.proj(o.to(q.dtype)))


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig, attn: nn.Module, drop_path: float):
        super().__init__()
        hidden = int(cfg.dim * cfg.mlp_ratio)
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.layernorm_eps)
        self.attn = attn
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.layernorm_eps)
        self.mlp = Mlp(cfg.dim, hidden, cfg.dropout)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x):
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


def block_attention_kind(cfg: ViTConfig, i: int) -> str:
    if cfg.attention_type == "hydra":
        return "hydra" if i >= cfg.depth - cfg.hydra_layers else "softmax"
    return cfg.attention_type


class LViT(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        g = cfg.grid
        n = g * g
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, cfg.dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + n, cfg.dim))
        self.pos_drop = nn.Dropout(cfg.dropout)
        dpr = [x.item() for x in torch.linspace(0, cfg.drop_path, cfg.depth)]
        blocks = []
        for i in range(cfg.depth):
            kind = block_attention_kind(cfg, i)
            if kind == "softmax":
                attn = SoftmaxAttention(cfg.dim, cfg.num_heads, cfg.dropout, cfg.exact_softmax)
            elif kind == "ripple":
                attn = RippleAttention(cfg.dim, cfg.num_heads, cfg.dropout, g, cfg.ripple_stages,
                                       cfg.ripple_impl)
            else:
                attn = HydraAttention(cfg.dim, cfg.hydra_branches, cfg.dropout)
            blocks.append(Block(cfg, attn, dpr[i]))
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.layernorm_eps)
        self.head = nn.Linear(cfg.dim, cfg.num_classes)
        self.init_weights()

    def init_weights(self):
        """timm (>= 0.9) default init; see module docstring."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02, a=-2.0, b=2.0)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                m.reset_parameters()
            elif isinstance(m, RippleAttention):
                m.reset_ripple_logits()

    def set_ripple_impl(self, impl: str):
        for m in self.modules():
            if isinstance(m, RippleAttention):
                m.impl = impl

    def forward_features(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        x = self.pos_drop(x + self.pos_embed)
        return self.norm(self.blocks(x))

    def forward(self, x):
        return self.head(self.forward_features(x)[:, 0])


def build_model(cfg: ViTConfig) -> LViT:
    return LViT(cfg)


# ----------------------------------------------------------------------------- golden / optim
def decay_param_names(model: nn.Module) -> list[str]:
    """Names of the weights that get weight decay: the 2-D+ weights of Linear/Conv layers."""
    names = []
    for mname, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            names.append(f"{mname}.weight" if mname else "weight")
    return names


def adamw_param_groups(model: nn.Module, weight_decay: float):
    """[decay group, no-decay group]. No decay on biases, LayerNorm weights, pos_embed,
    cls_token and ripple_logits."""
    decay = set(decay_param_names(model))
    dec, nodec = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (dec if n in decay else nodec).append(p)
    return [{"params": dec, "weight_decay": weight_decay},
            {"params": nodec, "weight_decay": 0.0}]


@torch.no_grad()
def randomize_for_golden(model: nn.Module, seed: int):
    """Give every parameter non-trivial random values of sensible scale (f32-exact), so that
    gradient tests exercise biases, LayerNorm affine, cls/pos and ripple logits too."""
    gen = torch.Generator().manual_seed(seed)

    def randn(shape):
        return torch.randn(shape, generator=gen, dtype=torch.float32)

    for name, p in sorted(model.named_parameters()):
        shp = p.shape
        if name.endswith("ripple_logits"):
            stages = shp[1] + 1
            val = ripple_init_logits(stages).float().expand(shp) + 0.75 * randn(shp)
        elif name in ("cls_token", "pos_embed"):
            val = 0.3 * randn(shp)
        elif name.endswith(".bias"):
            val = 0.1 * randn(shp)
        elif name.endswith(".weight") and p.ndim == 1:  # LayerNorm gain
            val = 1.0 + 0.2 * randn(shp)
        elif name.endswith(".weight"):
            fan_in = p[0].numel()
            val = randn(shp) / math.sqrt(fan_in)
        else:
            raise ValueError(f"randomize_for_golden: unhandled parameter {name}")
        p.copy_(val.to(p.dtype))
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- self-test
def _close(a, b, tol, what):
    err = (a - b).abs().max().item()
    scale = max(b.abs().max().item(), 1e-30)
    ok = err <= tol * max(scale, 1.0)
    print(f"  {'ok ' if ok else 'FAIL'} {what}: max|diff| = {err:.3e} (scale {scale:.3e})")
    assert ok, what
    return err


def _selftest():
    torch.manual_seed(0)
    dt = torch.float64
    print("ripple levels / stage matrix")
    lev = ripple_levels(4, 4)
    # brute force check of the definition
    for i in range(16):
        for j in range(16):
            ri, ci, rj, cj = i // 4, i % 4, j // 4, j % 4
            s = 0
            while not ((ri >> s) == (rj >> s) and (ci >> s) == (cj >> s)):
                s += 1
            assert lev[i, j].item() == s
    lam = ripple_stage_matrix(4, 4, 3)
    assert set(lam[1:, 1:].unique().tolist()) == {0, 1, 2}
    assert (lam[0] == 2).all() and (lam[:, 0] == 2).all()
    print("  ok levels 0,1,2 all occur on a 4x4 grid; class-token pairs at stage S-1")

    print("stick-breaking alphas")
    for S in (1, 2, 3, 4, 5):
        a = ripple_alphas(ripple_init_logits(S).repeat(3, 1) if S > 1 else None, S, 3,
                          torch.zeros((), dtype=dt))
        assert torch.allclose(a, torch.full_like(a, 1.0 / S)), (S, a)
        if S > 1:
            a = ripple_alphas(torch.randn(3, S - 1, dtype=dt), S, 3, torch.zeros((), dtype=dt))
            assert torch.allclose(a.sum(1), torch.ones(3, dtype=dt))
    print("  ok init -> all alpha = 1/S (S=1..5); random beta -> sum alpha = 1")

    print("ripple dense vs linear-time (float64, values and gradients)")
    cases = [(4, 4, 3, 8), (8, 8, 3, 8), (8, 8, 4, 8), (8, 8, 4, 16), (8, 8, 2, 4),
             (6, 5, 3, 8), (4, 4, 5, 8), (16, 16, 5, 8), (8, 8, 1, 8), (3, 7, 4, 2)]
    for (h, w, S, d) in cases:
        bz, H = 2, 3
        n = 1 + h * w
        q, k, v = (torch.randn(bz, H, n, d, dtype=dt, requires_grad=True) for _ in range(3))
        beta = (torch.randn(H, S - 1, dtype=dt) if S > 1 else torch.zeros(H, 0, dtype=dt))
        beta.requires_grad_(True)
        alpha = ripple_alphas(beta if S > 1 else None, S, H, q)
        lam = ripple_stage_matrix(h, w, S)
        od = ripple_dense(q, k, v, alpha, lam)
        ol = ripple_linear(q, k, v, alpha, h, w)
        _close(ol, od, 1e-12, f"h={h} w={w} S={S} d={d} forward")
        go = torch.randn_like(od)
        gd = torch.autograd.grad(od, [q, k, v] + ([beta] if S > 1 else []), go,
                                     retain_graph=True)
        gl = torch.autograd.grad(ol, [q, k, v] + ([beta] if S > 1 else []), go)
        for nm, a, b in zip("qkvb", gl, gd):
            _close(a, b, 1e-11, f"h={h} w={w} S={S} d={d} grad {nm}")

    print("ripple S=1 == plain linear attention (Katharopoulos et al.)")
    q, k, v = (torch.randn(2, 3, 65, 8, dtype=dt) for _ in range(3))
    ref = linear_attention(q, k, v)
    one = torch.ones(3, 1, dtype=dt)
    _close(ripple_dense(q, k, v, one, ripple_stage_matrix(8, 8, 1)), ref, 1e-12, "dense S=1")
    _close(ripple_linear(q, k, v, one, 8, 8), ref, 1e-12, "linear-time S=1")
    m1 = RippleAttention(32, 4, 0.0, 8, 1)
    assert m1.ripple_logits is None and "ripple_logits" not in dict(m1.named_parameters())
    print("  ok S=1 module has no ripple_logits parameter")
    # all-equal alphas (any S) also reduce to linear attention (eps scales with 1/alpha)
    a3 = torch.full((3, 3), 1.0 / 3, dtype=dt)
    _close(ripple_linear(q, k, v, a3, 8, 8), linear_attention(q, k, v, eps=3e-6), 1e-12,
           "S=3 with alpha=1/3 everywhere == linear attention with eps*3")

    print("hydra core vs definition")
    bz, n, D = 2, 17, 32
    for B in (1, 2, 4, 32):
        q, k, v = (torch.randn(bz, n, D, dtype=dt) for _ in range(3))
        ref = torch.empty_like(q)
        c = D // B
        for bb in range(B):
            sl = slice(bb * c, (bb + 1) * c)
            pq = q[..., sl] / q[..., sl].norm(dim=-1, keepdim=True).clamp_min(1e-6)
            pk = k[..., sl] / k[..., sl].norm(dim=-1, keepdim=True).clamp_min(1e-6)
            kv = sum(pk[:, t] * v[:, t, sl] for t in range(n))
            ref[..., sl] = pq * kv[:, None]
        _close(hydra_core(q, k, v, B), ref, 1e-12, f"hydra B={B}")

    print("softmax SDPA vs explicit")
    cfg = ViTConfig(image_size=16, patch_size=4, dim=32, depth=2, num_heads=4, num_classes=10)
    m = LViT(cfg).double()
    randomize_for_golden(m, 1)
    x = torch.randn(3, 3, 16, 16, dtype=dt)
    y1 = m(x)
    for blk in m.blocks:
        blk.attn.exact = True
    _close(m(x), y1, 1e-12, "SDPA == explicit softmax (model logits)")

    print("model vs timm VisionTransformer (same state dict)")
    try:
        import timm
        from timm.models.vision_transformer import VisionTransformer
        tv = VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4,
                               mlp_ratio=4.0, num_classes=10, qkv_bias=True,
                               global_pool="token").double().eval()
        ours = m.state_dict()
        theirs = tv.state_dict()
        assert set(ours) == set(theirs), (set(ours) ^ set(theirs))
        for kk in ours:
            assert ours[kk].shape == theirs[kk].shape, kk
        tv.load_state_dict(ours, strict=True)
        _close(m(x), tv(x), 1e-12, f"logits vs timm {timm.__version__}")
    except ImportError:
        print("  (timm not installed; skipped)")

    print("linear-time ripple model == dense ripple model (float64)")
    cfg = ViTConfig(image_size=16, patch_size=4, dim=32, depth=2, num_heads=4, num_classes=10,
                    attention_type="ripple", ripple_stages=3)
    m = LViT(cfg).double()
    randomize_for_golden(m, 2)
    yl = m(x)
    m.set_ripple_impl("dense")
    _close(m(x), yl, 1e-12, "ripple model logits")
    names = dict(m.named_parameters())
    assert names["blocks.0.attn.ripple_logits"].shape == (4, 2)

    print("AdamW groups")
    dec = set(decay_param_names(m))
    expect = {"patch_embed.proj.weight", "head.weight"} | {
        f"blocks.{i}.{s}.weight" for i in range(2) for s in ("attn.qkv", "attn.proj", "mlp.fc1",
                                                              "mlp.fc2")}
    assert dec == expect, dec ^ expect
    print(f"  ok {len(dec)} decayed weights; no decay on biases/LN/pos/cls/ripple_logits")

    print("bf16 autocast smoke (cpu)")
    for att in ATTENTION_TYPES:
        mm = LViT(ViTConfig(image_size=16, patch_size=4, dim=32, depth=2, num_heads=4,
                            num_classes=10, attention_type=att, hydra_branches=2))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = mm(torch.randn(2, 3, 16, 16))
        out.float().sum().backward()
        assert torch.isfinite(out.float()).all()
    print("  ok")
    print("SELFTEST PASSED")


def _print_params():
    for name in sorted(PRESETS):
        cfg = preset_config(name)
        m = LViT(cfg)
        print(json.dumps({"preset": name, "params": count_params(m)}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--selftest", action="store_true")
    ap.add_argument("--params", action="store_true", help="print parameter counts of presets")
    args = ap.parse_args(argv)
    if args.selftest:
        _selftest()
    if args.params:
        _print_params()
    if not (args.selftest or args.params):
        ap.print_help()


if __name__ == "__main__":
    main()
