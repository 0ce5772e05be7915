#!/usr/bin/env bash
# The test command: set-up (first run only), lint, format check, type check, tests.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RECSYS_STACK=full bash scripts/setup.sh
VENV="${RECSYS_VENV:-$ROOT/.venv}"
export PATH="$VENV/bin:$PATH"
# torch's OpenMP threads otherwise spin while waiting, which wastes a shared
# machine's cores (a 10x slowdown measured on 2 busy cores).
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
: "${RECSYS_DATA_DIR:=$ROOT/../shared/datasets}"
export RECSYS_DATA_DIR

# The Redis event-path tests start their own redis-server; install it when
# missing and we are allowed to (root on Debian/Ubuntu).
if ! command -v redis-server >/dev/null 2>&1 && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  echo "test: installing redis-server (Debian package)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
    || echo "test: could not install redis-server; Redis tests will be skipped"
fi

echo "== ruff check"; ruff check src tests training serving
echo "== ruff format --check"; ruff format --check src tests training serving
echo "== mypy src"; mypy
echo "== pytest"; python -m pytest "$@"
