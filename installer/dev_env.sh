#!/usr/bin/env bash
# Development / CI set-up on a fresh machine (idempotent):
#   .venv          the server + thin client + test tools (torch pinned to the local CPU build)
#   .venv-blender   what Blender's own Python would hold: bpy 4.5 LTS (needs numpy<2), pyzmq, the thin client
#   .venv-blender5  the same with bpy 5.0: the Blender tests run under both (tests/blender_scripts/launcher.py)
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
  for spec in ".venv-blender:4.5" ".venv-blender5:5.0"; do
    venv=${spec%%:*}
    if [ ! -x "$venv/bin/python" ]; then
      "$PY" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q "bpy==${spec##*:}.*" "numpy<2" pyzmq "fileseq==3.4.0" pytest
    "$venv/bin/python" -m pip install -q --no-deps -e .
  done
fi
echo "dev environment ready: .venv (server, tests)$( [ "${BODYDOUBLE_SKIP_BLENDER:-0}" != "1" ] && echo ', .venv-blender (bpy 4.5), .venv-blender5 (bpy 5.0)')"
