#!/usr/bin/env bash
# TTRV with InternVL3-2B-hf (Hugging Face format, local folder) on CUDA GPUs; see run_gpu.sh for the variables.
# Example: TRAIN_FILE=/data/ImageNet-R/train_20.json VAL_FILE=/data/ImageNet-R/test.json IMAGE_ROOT=/data \
#          bash examples/ttrv/run_internvl3_2b.sh trainer.total_epochs=2
set -euo pipefail
export MODEL_PATH="${MODEL_PATH:-$HOME/models/InternVL3-2B-hf}"
exec bash "$(dirname "${BASH_SOURCE[0]}")/run_gpu.sh" "$@"
