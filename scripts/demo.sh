#!/usr/bin/env bash
# The main job on the built-in demo: builds a small demo set from scikit-image's photos, judges it
# with offline judges and writes report.json / per_sample.csv / report.html to ./isr_demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${ISR_VENV:-.venv}"
exec "$VENV/bin/isr" demo --out "${1:-isr_demo}"
