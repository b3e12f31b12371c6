#!/usr/bin/env python3
"""Softmax attention alone in PyTorch, per SDPA backend (the comparison point for
lvit-attention-bench's softmax rows): forward and backward of F.scaled_dot_product_attention on
the ViT shapes, bf16, [B, H, N, d] views of one packed qkv tensor as the models make them.

Prints one line per shape and backend: milliseconds per call (CUDA events, median of 20 after 3
warm-up calls), forward and backward timed separately as lvit-attention-bench does. A backend
that cannot run a shape is reported as such.

  python3 bench/torch_sdpa.py
"""
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = [(256, 65, 6, 64, "vit-cifar"), (128, 257, 6, 64, "vit-tiny"),
          (512, 65, 6, 64, "vit-cifar b512"), (256, 65, 4, 32, "vit-micro")]
BACKENDS = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
            ("efficient", SDPBackend.EFFICIENT_ATTENTION)]


def median_ms(fn):
    for _ in range(3):
        fn()
    times = []
    for _ in range(20):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def main():
    dev = torch.device("cuda")
    print(torch.cuda.get_device_name(0), "torch", torch.__version__)
    gen = torch.Generator(device=dev).manual_seed(0)
    for B, N, H, d, what in SHAPES:
        qkv = torch.randn(B, N, 3, H, d, device=dev, dtype=torch.bfloat16, generator=gen)
        q, k, v = (qkv[:, :, i].transpose(1, 2).detach().requires_grad_() for i in range(3))
        g = torch.randn(B, H, N, d, device=dev, dtype=torch.bfloat16, generator=gen)
        flop = 4.0 * B * H * N * N * d
        for name, backend in BACKENDS:
            try:
                with sdpa_kernel(backend):
                    out = F.scaled_dot_product_attention(q, k, v)
                    fwd = median_ms(lambda: F.scaled_dot_product_attention(q, k, v))
                    bwd = median_ms(lambda: torch.autograd.grad(out, (q, k, v), g,
                                                                retain_graph=True))
            except RuntimeError as e:
                print(f"{what:15s} B {B:4d} N {N:4d} H {H} d {d:3d}  {name:9s}  not run: "
                      f"{str(e).splitlines()[0][:80]}")
                continue
            print(f"{what:15s} B {B:4d} N {N:4d} H {H} d {d:3d}  {name:9s}  fwd {fwd:7.3f} ms "
                  f"({flop / fwd / 1e9:5.1f} TFLOP/s)  bwd {bwd:7.3f} ms "
                  f"({2.5 * flop / bwd / 1e9:5.1f} TFLOP/s)")


if __name__ == "__main__":
    main()
