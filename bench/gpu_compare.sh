#!/usr/bin/env bash
# lvit-bench next to bench/torch_bench.py (torch.compile, bf16 autocast, fused AdamW, SDPA) on
# the same GPU, in one run: one JSON line per (model, batch) from each. Used for docs/PERF.md.
#   bench/gpu_compare.sh [presets] [batches]      e.g. bench/gpu_compare.sh vit-cifar 128,512
# BUILD (default build-gpu), STEPS (20), PRECISION (bf16) and COMPILE (1) override the defaults.
set -euo pipefail
presets=${1:-vit-cifar,ripple-cifar,hydra-cifar}
batches=${2:-128,512}
build=${BUILD:-build-gpu}
steps=${STEPS:-20}
precision=${PRECISION:-bf16}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
"$build/lvit-bench" --device cuda --presets "$presets" --batch-size "$batches" \
  --precision "$precision" --warmup 3 --steps "$steps" | grep "^{"
compile=()
[ "${COMPILE:-1}" = 1 ] && compile=(--compile)
for p in ${presets//,/ }; do
  for b in ${batches//,/ }; do
    python3 bench/torch_bench.py --preset "$p" --batch-size "$b" --device cuda \
      --precision "$precision" "${compile[@]}" --warmup 5 --steps "$steps" | tail -1
  done
done
