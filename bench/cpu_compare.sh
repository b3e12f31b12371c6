#!/usr/bin/env bash
# CPU training-step throughput of lvit next to the PyTorch version of the same models
# (bench/torch_bench.py), same thread count, same batch, interleaved so that both see the same
# machine state. Usage: bench/cpu_compare.sh [THREADS] [BATCH] [PRESETS...]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
batch=${2:-64}
shift 2 || true
presets=("$@")
[ ${#presets[@]} -gt 0 ] || presets=(vit-micro ripple-micro hydra-micro vit-cifar ripple-cifar hydra-cifar)
for p in "${presets[@]}"; do
  ./build/lvit-bench --presets "$p" --batch-size "$batch" --threads "$threads" --warmup 2 --steps "${STEPS:-5}" | grep "^{"
  python3 bench/torch_bench.py --preset "$p" --batch-size "$batch" --threads "$threads" --device cpu --warmup 2 --steps "${STEPS:-5}"
done
