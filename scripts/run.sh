#!/usr/bin/env bash
# The main job: set-up (first run only), then the pipeline in training/main.py
# (prepare data, train, evaluate, index, export, serve). Extra arguments are Hydra
# overrides, e.g. `scripts/run.sh dataset=ml100k stages=[data,baselines]`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RECSYS_STACK=full bash scripts/setup.sh
VENV="${RECSYS_VENV:-$ROOT/.venv}"
export PATH="$VENV/bin:$PATH"
# torch's OpenMP threads otherwise spin while waiting, which wastes a shared
# machine's cores (a 10x slowdown measured on 2 busy cores).
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
exec python training/main.py "$@"
