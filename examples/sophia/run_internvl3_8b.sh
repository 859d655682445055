#!/usr/bin/env bash
# SOPHIA with InternVL3-8B-hf (Hugging Face format, local folder) as the policy on CUDA GPUs; see run_gpu.sh for the
# variables. Example:
#   TRAIN_FILE=/data/train.json EVAL_FILE=/data/test.json IMAGE_ROOT=/data REASONER_URL=http://127.0.0.1:8000/v1 \
#   REASONER_MODEL=Qwen/QwQ-32B N_GPUS=8 bash examples/sophia/run_internvl3_8b.sh
set -euo pipefail
export MODEL_PATH="${MODEL_PATH:-$HOME/models/InternVL3-8B-hf}"
exec bash "$(dirname "${BASH_SOURCE[0]}")/run_gpu.sh" "$@"
