"""NVIDIA GPUs as ``nvidia-smi`` reports them: no torch import (the installer and ``bodydouble doctor`` use it)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass


@dataclass
class GPU:
    name: str
    driver: str
    cuda: tuple[int, int] | None      # newest CUDA the driver supports
    memory_total_mib: int | None = None
    memory_free_mib: int | None = None


def _run(cmd: list[str]) -> str | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def parse_nvidia_smi(summary: str | None, query: str | None) -> list[GPU]:
    """GPUs from ``nvidia-smi`` (its header names the CUDA version) and its CSV query (name, driver, memory)."""
    cuda = None
    match = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", summary or "")
    if match:
        cuda = (int(match.group(1)), int(match.group(2)))
    gpus = []
    for line in (query or "").strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4:
            continue
        name, driver, total, free = parts[:4]
        gpus.append(GPU(name=name, driver=driver, cuda=cuda, memory_total_mib=_int(total), memory_free_mib=_int(free)))
    return gpus


def _int(value: str) -> int | None:
    try:
        return int(float(value))
    except ValueError:
        return None


def detect_gpus() -> list[GPU]:
    """NVIDIA GPUs with a working driver ([] without nvidia-smi, or when it cannot reach a driver).

    ``$BODYDOUBLE_NVIDIA_SMI`` names another nvidia-smi (tests use a fake one)."""
    exe = os.environ.get("BODYDOUBLE_NVIDIA_SMI") or shutil.which("nvidia-smi")
    if not exe:
        return []
    query = _run([exe, "--query-gpu=name,driver_version,memory.total,memory.free", "--format=csv,noheader,nounits"])
    return parse_nvidia_smi(_run([exe]), query)
