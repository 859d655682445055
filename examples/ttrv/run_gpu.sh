#!/usr/bin/env bash
# TTRV on a real checkpoint with CUDA GPUs and the paper's hyper-parameters (recipes/ttrv/config/ttrv.yaml).
# Usage: MODEL_PATH=/models/Qwen2.5-VL-7B-Instruct TRAIN_FILE=/data/ImageNet-A/train_20.json \
#        VAL_FILE=/data/ImageNet-A/test.json IMAGE_ROOT=/data/images N_GPUS=4 bash examples/ttrv/run_gpu.sh [overrides]
# The model is read from a local folder (no download); TTRV JSON image paths are resolved under IMAGE_ROOT.
# Install the GPU extra first: pip install -e .[gpu]  (vLLM; without it the HF rollout engine is used).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
: "${MODEL_PATH:?set MODEL_PATH to a local model folder}"
: "${TRAIN_FILE:?set TRAIN_FILE to the unlabeled adaptation set (TTRV JSON or verl parquet)}"
VAL_FILE="${VAL_FILE:-$TRAIN_FILE}"
PY="${PYTHON:-python}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
args=(
  "actor_rollout_ref.model.path=$MODEL_PATH"
  "data.train_files=[$TRAIN_FILE]"
  "data.val_files=[$VAL_FILE]"
  "trainer.device=cuda"
  "trainer.n_gpus_per_node=${N_GPUS:-1}"
  "trainer.experiment_name=${EXPERIMENT:-$(basename "$MODEL_PATH")_$(basename "$(dirname "$TRAIN_FILE")")}"
)
[ -n "${IMAGE_ROOT:-}" ] && args+=("data.image_root=$IMAGE_ROOT")
exec "$PY" -m verl.trainer.main --config-dir recipes/ttrv/config --config-name ttrv "${args[@]}" "$@"
