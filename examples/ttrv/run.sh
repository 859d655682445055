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
export HF_HUB_OFFLINE=1 WANDB_MODE="${WANDB_MODE:-offline}" TOKENIZERS_PARALLELISM=false HF_HUB_DISABLE_PROGRESS_BARS=1
[ -f data/digits/manifest.json ] || "$PY" -m verl.data.digits --out data/digits --seed 0
BASE=checkpoints/tiny_base/qwen2_5_vl
"$PY" -m recipes.ttrv.pretrain_base --arch qwen2_5_vl --data data/digits --out "$BASE"  # cached: no-op when up to date
"$PY" -m verl.trainer.main --config-dir recipes/ttrv/config --config-name ttrv_cpu_tiny "$@"
# Where it all went: the run folder of this config and these overrides, and plots of its metrics.
RUN_DIR="$("$PY" -c 'import sys; from verl.config.loader import load_config
t = load_config("ttrv_cpu_tiny", sys.argv[1:], config_dir="recipes/ttrv/config").trainer
print(f"{t.log_dir}/{t.project_name}/{t.experiment_name}")' "$@")"
if [ -f "$RUN_DIR/metrics.jsonl" ]; then
  "$PY" scripts/plot_metrics.py "$RUN_DIR/metrics.jsonl" --out "$RUN_DIR/plots" > /dev/null
  echo "plots: $RUN_DIR/plots/ (accuracy.png, rewards.png, entropy.png, timing.png)"
else
  echo "plots: none (no metrics.jsonl: add jsonl to trainer.logger)"
fi
echo "in $RUN_DIR/: metrics.jsonl, summary.json, val_predictions_step<N>.jsonl, engine.log, worker_<rank>.log"
