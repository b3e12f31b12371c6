"""lvit's dropout masks in PyTorch: Philox4x32-10 (core/rng.h) and the mask rule of ops::dropout.

Element i of the stream (seed, offset) is word i % 4 of the Philox block with counter
(i // 4, offset) and key seed; a dropout with probability p keeps element i iff that word is at
least Philox::keep_threshold(p) = ceil(p 2^24) 2^8 (p as float32). A model's dropout generator
starts at offset 0 with seed = run seed + 1, and every dropout call takes the next offset.

The arithmetic is on int64 tensors holding uint32 values (the 32 x 32 -> 64-bit products in 16-bit
halves), so it runs on any device and under torch.compile.
    python3 bench/lvit_philox.py   # self-test: Random123's known answers and lvit's masks
"""
import math

import torch

_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_MASK32 = 0xFFFFFFFF


def _mul_hi_lo(a, m: int):
    """(high, low) 32-bit halves of a * m for int64 tensors a < 2^32 and a 32-bit constant m."""
    a_lo, a_hi = a & 0xFFFF, a >> 16
    m_lo, m_hi = m & 0xFFFF, m >> 16
    mid = a_lo * m_hi + a_hi * m_lo                        # < 2^33
    low_full = a_lo * m_lo + ((mid & 0xFFFF) << 16)       # < 2^33
    high = (a_hi * m_hi + (mid >> 16) + (low_full >> 32)) & _MASK32
    return high, low_full & _MASK32


def philox_block(c0, c1, c2, c3, seed: int):
    """Philox4x32-10 of counters (c0, c1, c2, c3) (int64 tensors of uint32 values), key = seed."""
    k0, k1 = seed & _MASK32, (seed >> 32) & _MASK32
    for _ in range(10):
        hi0, lo0 = _mul_hi_lo(c0, _M0)
        hi1, lo1 = _mul_hi_lo(c2, _M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
    return c0, c1, c2, c3


def stream_words(seed: int, offset, n: int, device=None):
    """Words 0 .. n-1 of the stream (seed, offset) as an int64 tensor. offset: int or a 0-dim
    int64 tensor (a tensor keeps torch.compile from specialising on its value)."""
    blocks = (n + 3) // 4
    blk = torch.arange(blocks, dtype=torch.int64, device=device)
    off = torch.as_tensor(offset, dtype=torch.int64, device=device)
    zero = torch.zeros_like(blk)
    off_lo, off_hi = zero + (off & _MASK32), zero + ((off >> 32) & _MASK32)
    w = philox_block(blk & _MASK32, blk >> 32, off_lo, off_hi, seed)
    return torch.stack(w, dim=1).reshape(-1)[:n]


def keep_threshold(p: float) -> int:
    """Philox::keep_threshold: keep iff word >= this (p rounded to float32 first)."""
    if p <= 0:
        return 0
    p32 = torch.tensor(p, dtype=torch.float32)
    return int(math.ceil((p32 * 16777216.0).item())) << 8


def keep_mask(seed: int, offset, shape, p: float, device=None):
    """lvit's dropout keep mask (bool, `shape`) for the stream (seed, offset)."""
    n = math.prod(shape)
    return (stream_words(seed, offset, n, device) >= keep_threshold(p)).reshape(shape)


class LvitDropout(torch.nn.Module):
    """nn.Dropout with lvit's masks. The modules of one model share `counter`, a 0-dim int64
    tensor holding the offset of the step's first dropout call; the module at `site` (its rank in
    the forward's call order) uses offset counter + site. The trainer moves counter on by the
    number of sites after each step, as lvit's generator advances."""

    def __init__(self, p: float, seed: int, counter: torch.Tensor, site: int):
        super().__init__()
        self.p, self.seed, self.site = p, seed, site
        self.threshold = keep_threshold(p)
        # A buffer (one tensor shared by the modules), so that torch.compile reads its value at
        # every call instead of baking it in.
        self.register_buffer("counter", counter, persistent=False)

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        words = stream_words(self.seed, self.counter + self.site, x.numel(), x.device)
        keep = (words >= self.threshold).reshape(x.shape)
        return torch.where(keep, x * (1.0 / (1.0 - self.p)), torch.zeros_like(x))


def _self_test():
    kats = [((0, 0, 0, 0), 0, (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8)),
            ((0xffffffff,) * 4, 0xffffffffffffffff,
             (0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd)),
            ((0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), (0x299f31d0 << 32) | 0xa4093822,
             (0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1))]
    for ctr, key, want in kats:
        got = philox_block(*(torch.tensor([c], dtype=torch.int64) for c in ctr), key)
        assert tuple(int(g) for g in got) == want, (ctr, [hex(int(g)) for g in got])
    print("Philox4x32-10 known answers: ok")
    # lvit's ops::dropout on 1,000 ones (CPU, the GPU draws the same masks): how many it dropped
    # and the first ten dropped elements, for three (seed, offset, p).
    lvit = [(3, 0, 0.1, 114, [32, 33, 56, 71, 72, 74, 82, 116, 120, 125]),
            (3, 1, 0.1, 99, [7, 8, 36, 47, 52, 66, 79, 81, 98, 103]),
            (4, (1 << 33) + 5, 1 / 3, 323, [2, 3, 4, 7, 12, 16, 18, 19, 20, 21])]
    for seed, offset, p, count, first in lvit:
        dropped = (~keep_mask(seed, offset, (1000,), p)).nonzero().flatten().tolist()
        assert len(dropped) == count and dropped[:10] == first, (seed, offset, p, dropped[:10])
    print("lvit's dropout masks: ok")


if __name__ == "__main__":
    _self_test()
