#!/usr/bin/env bash
# SOPHIA on CPU: digit-pair questions, a tiny captioner VLM (the policy) and a tiny text reasoner.
# Sets up .venv on first use, builds the data and both tiny models once (cached), runs one round of
# caption -> reason -> reward -> select -> update -> evaluate, and prints base -> SOPHIA accuracy.
# Any argument is a Hydra dotted override of recipes/sophia/config/sophia_cpu_tiny.yaml, e.g.
#   bash examples/sophia/run.sh select.alpha=0.5 trainer.experiment_name=alpha05
#   bash examples/sophia/run.sh trainer.backend=ray trainer.n_gpus_per_node=2    # two Ray workers
#   bash examples/sophia/run.sh reason.backend=http reason.http.base_url=http://127.0.0.1:8000/v1 \
#       reason.http.model=Qwen/QwQ-32B reason.http.api_key_env=null
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
bash scripts/setup_env.sh
PY="${VERL_VENV:-$ROOT/.venv}/bin/python"
export HF_HUB_OFFLINE=1 WANDB_MODE="${WANDB_MODE:-offline}" TOKENIZERS_PARALLELISM=false
THREADS="${SOPHIA_THREADS:-2}"
"$PY" -m recipes.sophia.pairs --out data/sophia_pairs --seed 0                      # cached: no-op when present
"$PY" -m recipes.sophia.pretrain_captioner --out checkpoints/sophia/captioner --threads "$THREADS"  # cached
"$PY" -m recipes.sophia.pretrain_reasoner --out checkpoints/sophia/reasoner --threads "$THREADS"    # cached
export VERL_CPU_THREADS_PER_WORKER="${VERL_CPU_THREADS_PER_WORKER:-$THREADS}"
exec "$PY" -m recipes.sophia.main --config-dir recipes/sophia/config --config-name sophia_cpu_tiny "$@"
