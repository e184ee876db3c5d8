#!/usr/bin/env bash
# Executes notebooks/agentdrift_eval.ipynb headless: builds agentdrift (unless
# AGENTDRIFT_BIN names a binary), installs the notebook's Python packages into a
# venv, runs every cell, and refreshes notebooks/figures/ and notebooks/out/.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/agentdrift-target}"
if [ -z "${AGENTDRIFT_BIN:-}" ]; then
  cargo build --release --locked --bin agentdrift
  export AGENTDRIFT_BIN="$CARGO_TARGET_DIR/release/agentdrift"
fi
VENV="${AGENTDRIFT_NB_VENV:-$HOME/.cache/agentdrift-nb-venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r notebooks/requirements.txt
export AGENTDRIFT_ROOT="$PWD"
export MPLBACKEND=Agg
"$VENV/bin/python" notebooks/execute.py notebooks/agentdrift_eval.ipynb
