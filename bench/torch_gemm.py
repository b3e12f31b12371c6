#!/usr/bin/env python3
"""torch.mm GFLOP/s on the six GEMMs of a ViT-S training step at batch 64 (M = 64 x 65 tokens),
the comparison point for lvit-gemm-bench (same shapes, same transposes, 1 and 2 threads, and
like it the best of --reps timed calls after one warm-up).

  python3 bench/torch_gemm.py [--reps 10]
"""
import argparse
import time

import torch

# (M, N, K, trans_a, trans_b, what): C[M,N] = op(A) op(B), row-major, as in bench/gemm_bench.cpp.
SHAPES = [
    (4160, 1152, 384, False, True, "qkv forward"),
    (4160, 1536, 384, False, True, "fc1 forward"),
    (4160, 384, 1536, False, True, "fc2 forward"),
    (4160, 384, 1152, False, False, "qkv input grad"),
    (1152, 384, 4160, True, False, "qkv weight grad"),
    (1536, 384, 4160, True, False, "fc1 weight grad"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    torch.manual_seed(0)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for m, n, k, ta, tb, what in SHAPES:
            # Stored as lvit stores them; .t() gives torch the same transposed views.
            a = torch.randn(k, m) if ta else torch.randn(m, k)
            b = torch.randn(n, k) if tb else torch.randn(k, n)
            op_a = a.t() if ta else a
            op_b = b.t() if tb else b
            out = torch.empty(m, n)
            torch.mm(op_a, op_b, out=out)
            sec = float("inf")
            for _ in range(args.reps):
                t0 = time.perf_counter()
                torch.mm(op_a, op_b, out=out)
                sec = min(sec, time.perf_counter() - t0)
            print(f"threads {threads}  {what:<16} M {m:5d} N {n:5d} K {k:5d}  "
                  f"{2.0 * m * n * k / sec / 1e9:6.1f} GFLOP/s")


if __name__ == "__main__":
    main()
