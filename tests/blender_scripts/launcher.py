"""pytest side of the Blender tests: find the bpy venv, run a script in it, read its JSON result.

The scripts next to this file run inside Blender's Python (bpy 4.5 and bpy 5.0, each in its own venv: bpy
needs numpy<2, like Blender's own Python); this module runs in the main test venv.
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


# The Blender versions the suite runs on: the LTS the add-on's minimum is tested against, and the newest.
# Each has its own venv (installer/dev_env.sh builds both) and an environment variable to point elsewhere.
BLENDERS = {
    "4.5": ("BODYDOUBLE_BLENDER_PYTHON", ".venv-blender", '"bpy==4.5.*" "numpy<2"'),
    "5.0": ("BODYDOUBLE_BLENDER5_PYTHON", ".venv-blender5", '"bpy==5.0.*" "numpy<2"'),
}


def blender_python(version: str = "4.5") -> str:
    """The bpy venv's interpreter for Blender ``version``; skip (or fail under CI) when it is missing."""
    env_name, venv, pins = BLENDERS[version]
    path = os.environ.get(env_name) or str(REPO / venv / "bin" / "python")
    problem = None
    if not os.path.exists(path):
        problem = f"no Blender {version} Python at {path}"
    else:
        probe = subprocess.run([path, "-c", "import bpy, zmq, numpy, bodydouble; print(bpy.app.version_string)"],
                               capture_output=True, text=True, timeout=120)
        if probe.returncode != 0:
            problem = f"{path} cannot import bpy/zmq/bodydouble: {probe.stderr.strip()[-500:]}"
        elif not probe.stdout.strip().startswith(version):
            problem = f"{path} has Blender {probe.stdout.strip()}, not {version}"
    if problem:
        how = (f"create it with: bash installer/dev_env.sh, or python3 -m venv {venv} && {venv}/bin/pip install "
               f"{pins} pyzmq pytest && {venv}/bin/pip install --no-deps -e .  (or set {env_name})")
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
