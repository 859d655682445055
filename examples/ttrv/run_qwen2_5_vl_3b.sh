#!/usr/bin/env bash
# TTRV with Qwen2.5-VL-3B-Instruct (Hugging Face format, local folder) on CUDA GPUs; see run_gpu.sh for the variables.
# Example: TRAIN_FILE=/data/ImageNet-R/train_20.json VAL_FILE=/data/ImageNet-R/test.json IMAGE_ROOT=/data \
#          bash examples/ttrv/run_qwen2_5_vl_3b.sh trainer.total_epochs=2
set -euo pipefail
export MODEL_PATH="${MODEL_PATH:-$HOME/models/Qwen2.5-VL-3B-Instruct}"
exec bash "$(dirname "${BASH_SOURCE[0]}")/run_gpu.sh" "$@"
