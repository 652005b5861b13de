"""Small shared helpers: where the checkout is, running a command with a readable failure."""
from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(cmd: list[str], env: dict | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd``; on failure stop the installer with the command and the tail of its output."""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {shlex.join(cmd)}\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc
