#!/usr/bin/env bash
# The CUDA backend's accuracy check (docs/RESULTS.md): 30 epochs of vit-cifar on CIFAR-100 in
# lvit and in bench/torch_train.py, the same recipe, per seed, lvit first; then the summary
# table of bench/accuracy_table.py (final top-1 / top-5, training loss, wall time, and top-1's
# mean and standard deviation per framework).
#   bench/gpu_accuracy.sh DATA_DIR [seeds] [frameworks]   e.g. bench/gpu_accuracy.sh data 0,1,2
# DATA_DIR holds train.bin and test.bin of cifar-100-binary. frameworks: lvit,torch (default).
# BUILD (build-gpu), OUT (runs/accuracy), EPOCHS (30) and PRECISION (bf16) override the defaults;
# DROPOUT (unset: the preset's 0.1) sets --dropout in both frameworks; DROPOUT_SEED sets
# --dropout-seed in both (other masks on the seed's weights and batches); TORCH_ARGS adds flags to
# torch_train.py (e.g. TORCH_ARGS=--lvit-dropout: PyTorch with lvit's dropout masks).
set -euo pipefail
data=${1:?usage: bench/gpu_accuracy.sh DATA_DIR [seeds] [frameworks]}
seeds=${2:-0,1}
frameworks=${3:-lvit,torch}
build=${BUILD:-build-gpu}
out=${OUT:-runs/accuracy}
epochs=${EPOCHS:-30}
precision=${PRECISION:-bf16}
extra=()
[ -n "${DROPOUT:-}" ] && extra+=(--dropout "$DROPOUT")
[ -n "${DROPOUT_SEED:-}" ] && extra+=(--dropout-seed "$DROPOUT_SEED")
workers=$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))  # loader threads; two cores left for the step
for f in train.bin test.bin; do
  [ -f "$data/$f" ] || { echo "error: $data/$f: missing (cifar-100-binary)" >&2; exit 1; }
done
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
runs=()
for s in ${seeds//,/ }; do
  tag=$s${DROPOUT_SEED:+-ds$DROPOUT_SEED}  # run names: seed-dropoutseed when DROPOUT_SEED is set
  if [[ ,$frameworks, == *,lvit,* ]]; then
    "$build/lvit-train" --dataset cifar100 --data-dir "$data" --preset vit-cifar --epochs "$epochs" \
      --batch-size 512 --eval-batch-size 500 --lr 1e-3 --min-lr 1e-5 --weight-decay 0.05 \
      --warmup-epochs 3 --label-smoothing 0.1 --clip-grad 1.0 --precision "$precision" \
      --device cuda --workers "$workers" --seed "$s" --out "$out/lvit-$precision-$tag" \
      --log-format jsonl --no-progress "${extra[@]}" > "$out/lvit-$precision-$tag.log"
    runs+=("lvit-$precision:$out/lvit-$precision-$tag/metrics.jsonl")
  fi
  if [[ ,$frameworks, == *,torch,* ]]; then
    python3 bench/torch_train.py --preset vit-cifar --device cuda --precision "$precision" \
      --compile --epochs "$epochs" --batch-size 512 --eval-batch-size 500 --lr 1e-3 \
      --min-lr 1e-5 --warmup-epochs 3 --weight-decay 0.05 --label-smoothing 0.1 --clip-grad 1.0 \
      --seed "$s" --data-dir "$data" "${extra[@]}" ${TORCH_ARGS:-} \
      > "$out/torch-$precision-$tag.jsonl"
    runs+=("torch-$precision:$out/torch-$precision-$tag.jsonl")
  fi
done
python3 bench/accuracy_table.py "${runs[@]}"
