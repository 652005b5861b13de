"""pytest side of the Blender tests: find the bpy venv, run a script in it, read its JSON result.

The scripts next to this file run inside Blender's Python (bpy 4.5 in its own venv: bpy needs
numpy<2, like Blender's own Python); this module runs in the main test venv.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent
MARK = "BODYDOUBLE_RESULT "


def blender_python() -> str:
    """The bpy venv's interpreter; skip (or fail under CI) when it is missing."""
    path = os.environ.get("BODYDOUBLE_BLENDER_PYTHON") or str(REPO / ".venv-blender" / "bin" / "python")
    problem = None
    if not os.path.exists(path):
        problem = f"no Blender Python at {path}"
    else:
        probe = subprocess.run([path, "-c", "import bpy, zmq, numpy, bodydouble; print(bpy.app.version_string)"],
                               capture_output=True, text=True, timeout=120)
        if probe.returncode != 0:
            problem = f"{path} cannot import bpy/zmq/bodydouble: {probe.stderr.strip()[-500:]}"
    if problem:
        how = ('create it with: python3 -m venv .venv-blender && .venv-blender/bin/pip install "bpy==4.5.*" '
               '"numpy<2" pyzmq pytest && .venv-blender/bin/pip install --no-deps -e .  '
               "(or set BODYDOUBLE_BLENDER_PYTHON)")
        if os.environ.get("CI"):
            pytest.fail(f"Blender tests cannot run under CI: {problem}; {how}", pytrace=False)
        pytest.skip(f"{problem}; {how}")
    return path


def run_script(python: str, script: str, args: dict, timeout: float = 150) -> dict:
    """Run ``blender_scripts/<script>`` with bpy; returns its result dict (fails the test otherwise)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(BODYDOUBLE_TEST_ARGS=json.dumps(args), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.run([python, str(SCRIPTS / script)], env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=str(REPO))
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"")
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
        pytest.fail(f"{script} still running after {timeout} s (bpy exit hang?)\n{out[-4000:]}", pytrace=False)
    text = proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        pytest.fail(f"{script} failed (exit {proc.returncode})\n{text[-6000:]}", pytrace=False)
    result = json.loads(lines[-1][len(MARK):])
    result["_output"] = text
    return result
