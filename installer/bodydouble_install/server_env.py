"""The server's environment (a venv with the right PyTorch build and the server) and its config file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from . import torch_build
from .record import Record
from .steps import REPO, run

CONSTRAINTS = REPO / "constraints.txt"


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def create_env(rec: Record, venv: Path, choice: torch_build.TorchChoice, editable: bool, say=print) -> Path:
    """Create (or update) ``venv`` with torch as chosen, then the server from this checkout."""
    python = venv_python(venv)
    if not python.exists():
        rec.own_tree(venv)
        say(f"creating the server environment {venv}")
        run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-c", str(CONSTRAINTS)]
    say(f"PyTorch: {choice.reason}")
    if choice.index_url:   # torch first from its own index; the server's torch *range* then keeps that build
        run(pip + ["torch", "--index-url", choice.index_url])
    target = str(REPO) + "[server]"
    run(pip + (["-e", target] if editable else [target]))
    return python


def check_server_python(python: Path) -> str:
    """The server version importable by ``python``; SystemExit with the fix when it has no server install."""
    proc = subprocess.run([str(python), "-c", "import bodydouble, bodydouble_server; print(bodydouble.__version__)"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{python} has no BodyDouble server install ({proc.stderr.strip().splitlines()[-1:]}); "
                         "drop --server-python to let the installer create one")
    return proc.stdout.strip()


def _toml(value) -> str:
    return json.dumps(value)   # JSON strings and string lists are valid TOML basic strings and arrays


def config_text(model: str | None, adapters: Path, roots: list[Path], output_root: Path, port: int,
                host: str = "127.0.0.1", video_model: str | None = None) -> str:
    lines = [
        "# BodyDouble server settings, written by installer/install.py (all keys: server/bodydouble_server/config.py).",
        "# `bodydouble serve --config <this file>` reads it; `bodydouble doctor` checks it.",
        f"host = {_toml(host)}",
        f"port = {port}",
        f"model = {_toml(model)}" if model else
        '# model = "/models/sd15-inpaint"   # a local diffusers folder; unset: the embedded TEST model (random weights)',
        f"video_model = {_toml(video_model)}     # extend's video model" if video_model else
        '# video_model = "/models/wan2.1-vace-1.3b"   # extend: Wan VACE / LTX-Video folder; unset: embedded TEST '
        'video model; "none": no extend',
        f"adapters = {_toml(str(adapters))}",
        f"roots = {_toml([str(r) for r in roots])}     # the only folders the server reads plates from and writes to",
        f"output_root = {_toml(str(output_root))}     # where takes go when a request names no folder",
        'device = "auto"',
        'dtype = "auto"',
    ]
    return "\n".join(lines) + "\n"


def write_config(rec: Record, path: Path, text: str, force: bool, say=print) -> bool:
    """Write the config unless someone else's (or an edited one of ours) is there; True when written."""
    if path.exists() and not force and not rec.ours_unchanged(path):
        whose = "edited since the installer wrote it" if str(path) in rec.files else "not written by the installer"
        say(f"kept {path} ({whose}); --force-config replaces it")
        return False
    rec.write(path, text)
    say(f"wrote {path}")
    return True


def validate_config(python: Path, path: Path) -> None:
    """Load the config with the server's own reader, so a bad value fails here, not at the first start."""
    code = "import sys; from bodydouble_server.config import ServerConfig; ServerConfig.load(sys.argv[1])"
    proc = subprocess.run([str(python), "-c", code, str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the server cannot read {path}: {proc.stderr.strip()[-800:]}")
