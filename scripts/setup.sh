#!/usr/bin/env bash
# Creates .venv and installs the pinned stack into it; a second run with the same
# requirement files and the same device choice only checks a stamp and returns.
#
# Device choice: RECSYS_DEVICE=cpu|gpu forces one; otherwise "gpu" when
# `nvidia-smi -L` lists a GPU, else "cpu". Called by scripts/run.sh and
# scripts/test.sh, or run directly.
#
# RECSYS_STACK=realtime installs only what the real-time service needs
# (requirements/realtime.txt: events, profiles, segments, privacy, Redis, the
# collector; no torch), e.g. a consumer's own venv on an optimized interpreter;
# RECSYS_MYPYC=1 also compiles its per-event modules with mypyc (needs a C compiler):
#   PYTHON=/usr/bin/python3.11 RECSYS_STACK=realtime RECSYS_MYPYC=1 \
#     RECSYS_VENV=.venv-realtime scripts/setup.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RECSYS_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"
stack="${RECSYS_STACK:-full}"
if [[ "$stack" != "full" && "$stack" != "realtime" ]]; then
  echo "setup: RECSYS_STACK must be full or realtime, not '$stack'" >&2
  exit 2
fi
mypyc="${RECSYS_MYPYC:-0}"
if [[ "$mypyc" == "1" && "$stack" != "realtime" ]]; then
  echo "setup: RECSYS_MYPYC=1 applies to RECSYS_STACK=realtime only" >&2
  exit 2
fi

device="${RECSYS_DEVICE:-auto}"
if [[ "$device" == "auto" ]]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    device=gpu
  else
    device=cpu
  fi
fi
if [[ "$device" != "cpu" && "$device" != "gpu" ]]; then
  echo "setup: RECSYS_DEVICE must be cpu, gpu or auto, not '$device'" >&2
  exit 2
fi
# What gets installed: the full stack for this device, or the real-time stack
# (the same on every machine).
flavor="$device"
if [[ "$stack" == "realtime" ]]; then
  flavor=realtime
fi

stamp_of() {
  cat "$ROOT/pyproject.toml" "$ROOT"/requirements/*.txt | sha256sum | cut -c1-16
}
want="$flavor-$(stamp_of)"
if [[ "$mypyc" == "1" ]]; then
  want="$want-mypyc-$(find "$ROOT/src" -name '*.py' | LC_ALL=C sort | xargs cat "$ROOT/setup.py" | sha256sum | cut -c1-16)"
fi
if [[ -f "$VENV/.recsys-stamp" && "$(cat "$VENV/.recsys-stamp")" == "$want" ]]; then
  exit 0
fi

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "setup: $PYTHON not found; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
  exit 2
fi

start=$SECONDS
echo "setup: installing the $flavor stack into $VENV (first run only)"
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
pip_install() {
  # pip warns once per package about local index folders it skips; keep the rest.
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@" 2> >(grep -v 'is ignored: it is neither a file' >&2)
}

if [[ "$stack" == "realtime" ]]; then
  if [[ "$mypyc" == "1" ]]; then
    if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1; then
      echo "setup: RECSYS_MYPYC=1 needs a C compiler (Debian: apt-get install gcc)" >&2
      exit 2
    fi
    if ! "$VENV/bin/python" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
      echo "setup: RECSYS_MYPYC=1 needs the headers of $PYTHON (Debian: apt-get install python3.11-dev)" >&2
      exit 2
    fi
  fi
  pip_install -r "$ROOT/requirements/realtime.txt"
  if [[ "$mypyc" == "1" ]]; then
    # A compiled copy of the package (not editable): setup.sh builds it again
    # when a source file changes (the stamp covers src/).
    pip_install -r "$ROOT/requirements/realtime-compile.txt"
    (cd "$ROOT" && RECSYS_MYPYC=1 pip_install --no-deps --no-build-isolation --force-reinstall "$ROOT")
    "$VENV/bin/python" -c 'import recsys.profiles.state as m, sys; sys.exit(0 if m.__file__.endswith(".so") else "setup: recsys.profiles.state is not compiled")'
  else
    pip_install --no-deps -e "$ROOT"
  fi
  "$VENV/bin/python" -c 'import recsys.realtime_cli, recsys.profiles.consumer, hiredis, orjson' \
    || { echo "setup: the installed stack does not import; see the error above" >&2; exit 1; }
  echo "$want" > "$VENV/.recsys-stamp"
  echo "setup: done in $((SECONDS - start)) s ($(du -sh "$VENV" | cut -f1) in $VENV)"
  exit 0
fi

extra=()
if [[ "$device" == "cpu" ]]; then
  # The CPU wheel of torch lives on the PyTorch CPU index; PyPI's torch is a CUDA
  # build. Use the index when it answers; a machine that already holds the CPU
  # wheel locally (pip find-links) needs no network for it.
  if "$PYTHON" -c 'import urllib.request as u; u.urlopen("https://download.pytorch.org/whl/cpu/torch/", timeout=5)' 2>/dev/null; then
    extra+=(--extra-index-url https://download.pytorch.org/whl/cpu)
  fi
fi

pip_install -r "$ROOT/requirements/$device.txt" "${extra[@]}"
pip_install --no-deps -r "$ROOT/requirements/nodeps.txt"
pip_install --no-deps -e "$ROOT"

if [[ "$device" == "cpu" ]]; then
  # Guard against a CUDA build slipping in (it is several GB and useless here).
  "$VENV/bin/python" -c 'import torch, sys; sys.exit(0 if torch.version.cuda is None else "setup: a CUDA build of torch was installed on the CPU path")'
fi
"$VENV/bin/python" -c 'import torchrec, fbgemm_gpu, faiss, onnxruntime' \
  || { echo "setup: the installed stack does not import; see the error above" >&2; exit 1; }
echo "$want" > "$VENV/.recsys-stamp"
echo "setup: done in $((SECONDS - start)) s ($(du -sh "$VENV" | cut -f1) in $VENV)"
