#!/usr/bin/env bash
# TTRV on the embedded default: CPU, a tiny offline VLM, a shifted split of real handwritten digits.
# Sets up .venv on first use, builds the digits data and the tiny base model once, then trains.
# Any argument is passed through as a Hydra override, e.g.
#   bash examples/ttrv/run.sh data.train_files=[data/digits/test_blur_mc.json] trainer.total_epochs=1
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
bash scripts/setup_env.sh
PY="${VERL_VENV:-$ROOT/.venv}/bin/python"
export HF_HUB_OFFLINE=1 WANDB_MODE="${WANDB_MODE:-offline}" TOKENIZERS_PARALLELISM=false
[ -f data/digits/manifest.json ] || "$PY" -m verl.data.digits --out data/digits --seed 0
BASE=checkpoints/tiny_base/qwen2_5_vl
"$PY" -m recipes.ttrv.pretrain_base --arch qwen2_5_vl --data data/digits --out "$BASE"  # cached: no-op when up to date
exec "$PY" -m verl.trainer.main --config-dir recipes/ttrv/config --config-name ttrv_cpu_tiny "$@"
