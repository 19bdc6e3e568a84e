#!/usr/bin/env bash
# Reproduce every experiment (a few minutes on 2 cores): pip install ".[train,plot]" first.
set -euo pipefail
cd "$(dirname "$0")/.."
python experiments/run_all.py "$@"
