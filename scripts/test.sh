#!/usr/bin/env bash
# The test command of README: sets up the environment (idempotent), lints, runs the whole suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/algos -x`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup_env.sh
VENV="${VERL_VENV:-$ROOT/.venv}"
"$VENV/bin/ruff" check verl recipes scripts tests
set +e
"$VENV/bin/python" -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: treating as failure" >&2
  exit 1
fi
exit "$rc"
