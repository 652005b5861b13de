#!/usr/bin/env bash
# Development / CI set-up on a fresh machine (idempotent):
#   .venv          the server + thin client + test tools (torch pinned to the local CPU build)
#   .venv-blender  what Blender's own Python would hold: bpy 4.5 (needs numpy<2), pyzmq, the thin client
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e ".[server,test,scale]"
if [ -f requirements-dev.txt ]; then
  .venv/bin/python -m pip install -q -c constraints.txt -r requirements-dev.txt
fi

if [ "${BODYDOUBLE_SKIP_BLENDER:-0}" != "1" ]; then
  if [ ! -x .venv-blender/bin/python ]; then
    "$PY" -m venv .venv-blender
  fi
  .venv-blender/bin/python -m pip install -q --upgrade pip
  .venv-blender/bin/python -m pip install -q "bpy==4.5.*" "numpy<2" pyzmq "fileseq==3.4.0" pytest
  .venv-blender/bin/python -m pip install -q --no-deps -e .
fi
echo "dev environment ready: .venv (server, tests)$( [ "${BODYDOUBLE_SKIP_BLENDER:-0}" != "1" ] && echo ', .venv-blender (bpy 4.5)')"
