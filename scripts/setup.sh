#!/usr/bin/env bash
# Create ./.venv (or $ISR_VENV) and install isr-metric with every extra and the test tools.
# Idempotent: re-running after the first install only reinstalls when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ISR_VENV:-.venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.isr-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
# (this workplace's pip config lists local index folders that may be absent: hide those warnings)
pip() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch: keep the user's own build if one is installed; otherwise install one. On machines that pin
# torch to a local wheel (a pip constraints file capping torch), take exactly that build.
if ! "$VENV/bin/python" -c "import torch, torchvision" >/dev/null 2>&1; then
  spec="${ISR_TORCH_SPEC:-}"
  if [ -z "$spec" ] && grep -qs "torch<=2.14.1" /etc/xdg/pip/constraints.txt; then
    spec="torch==2.14.1 torchvision==0.29.1"
  fi
  spec="${spec:-torch>=2.1 torchvision}"
  echo "[setup] installing $spec"
  # shellcheck disable=SC2086
  pip install -q $spec
fi
echo "[setup] installing isr-metric[dev] (editable)"
pip install -q -e ".[dev]"
echo "$want" > "$stamp"
