#!/usr/bin/env bash
# SOPHIA on a real checkpoint with CUDA GPUs and the paper's hyper-parameters (recipes/sophia/config/sophia.yaml):
# K = 8 captions per image, N = 8 reasonings per caption, batch 512, lr 2e-5 cosine to a quarter, weight decay
# 0.05, vision tower frozen, alpha = 0.75 (strict), shortest correct trajectory.
# Usage: MODEL_PATH=/models/InternVL3-8B-hf TRAIN_FILE=/data/train.json EVAL_FILE=/data/test.json \
#        IMAGE_ROOT=/data/images REASONER_URL=http://127.0.0.1:8000/v1 REASONER_MODEL=Qwen/QwQ-32B N_GPUS=8 \
#        bash examples/sophia/run_gpu.sh [overrides]
# TRAIN_FILE / EVAL_FILE: TTRV JSON or verl parquet, every record with a gold answer. The reasoner is any
# OpenAI-compatible server, e.g. `python -m verl.workers.rollout.vllm_server --model /models/QwQ-32B --port 8000`
# on GPUs of its own (REASONER_API_KEY_ENV names the variable holding a key; unset for a keyless local server).
# The model is read from a local folder (no download). Install the GPU extra first: pip install -e .[gpu].
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
: "${MODEL_PATH:?set MODEL_PATH to a local policy model folder}"
: "${TRAIN_FILE:?set TRAIN_FILE to the training questions with gold answers (TTRV JSON or verl parquet)}"
: "${EVAL_FILE:?set EVAL_FILE to held-out questions with gold answers}"
: "${REASONER_URL:?set REASONER_URL to the reasoner server, e.g. http://127.0.0.1:8000/v1}"
: "${REASONER_MODEL:?set REASONER_MODEL to the model name the server serves}"
PY="${PYTHON:-python}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
args=(
  "actor_rollout_ref.model.path=$MODEL_PATH"
  "data.dir=."
  "data.train_file=$TRAIN_FILE"
  "data.eval_file=$EVAL_FILE"
  "reason.http.base_url=$REASONER_URL"
  "reason.http.model=$REASONER_MODEL"
  "reason.http.api_key_env=${REASONER_API_KEY_ENV:-null}"
  "trainer.device=cuda"
  "trainer.n_gpus_per_node=${N_GPUS:-1}"
  "trainer.experiment_name=${EXPERIMENT:-$(basename "$MODEL_PATH")_$(basename "$TRAIN_FILE" | sed 's/\.[a-z]*$//')}"
)
[ -n "${IMAGE_ROOT:-}" ] && args+=("data.image_root=$IMAGE_ROOT")
exec "$PY" -m recipes.sophia.main --config-dir recipes/sophia/config --config-name sophia "${args[@]}" "$@"
