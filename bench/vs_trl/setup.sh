#!/usr/bin/env bash
# Creates bench/vs_trl/.venv: the peer (TRL, pinned by setup.py's `bench` extra: trl==1.16.0) beside CPU torch, kept apart
# from the project's own environment so the test suite never depends on it. Idempotent.
# torch==2.13.0 (the CPU build on disk) goes in first so nothing pulls a CUDA build; transformers
# keeps the project's range; our package is installed --no-deps (the TRL side imports only
# verl.rewards for answer extraction).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${BENCH_VENV:-$HERE/.venv}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.bench-install-stamp"
WANT="$(cat "$ROOT/setup.py" "$HERE/setup.sh" | sha256sum | cut -c1-16)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
TRL="$(grep -o '"trl==[^"]*"' "$ROOT/setup.py" | tr -d '"')"  # the `bench` extra's pin
TRANSFORMERS="$(grep -E '^transformers' "$ROOT/requirements.txt" | cut -d' ' -f1)"
# --no-deps on our package, then exactly the peer and what both sides of the benchmark import.
"$VENV/bin/python" -m pip install -q -e "$ROOT" --no-deps
"$VENV/bin/python" -m pip install -q "torch==2.13.0" "$TRANSFORMERS" "$TRL" accelerate datasets pillow numpy
TV="$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
case "$TV" in
  *+cpu) ;;
  *) echo "[bench] expected a CPU torch in $VENV, got $TV" >&2; exit 1 ;;
esac
"$VENV/bin/python" -c 'import trl, transformers; print(f"[bench] trl {trl.__version__}, transformers {transformers.__version__}")'
echo "$WANT" > "$STAMP"
