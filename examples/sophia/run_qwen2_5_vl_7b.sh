#!/usr/bin/env bash
# SOPHIA with Qwen2.5-VL-7B-Instruct (Hugging Face format, local folder) as the policy on CUDA GPUs; see run_gpu.sh for the
# variables. Example:
#   TRAIN_FILE=/data/train.json EVAL_FILE=/data/test.json IMAGE_ROOT=/data REASONER_URL=http://127.0.0.1:8000/v1 \
#   REASONER_MODEL=Qwen/QwQ-32B N_GPUS=8 bash examples/sophia/run_qwen2_5_vl_7b.sh
set -euo pipefail
export MODEL_PATH="${MODEL_PATH:-$HOME/models/Qwen2.5-VL-7B-Instruct}"
exec bash "$(dirname "${BASH_SOURCE[0]}")/run_gpu.sh" "$@"
