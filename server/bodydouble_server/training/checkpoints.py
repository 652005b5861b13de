"""Training checkpoints: LoRA weights + optimizer state + step, one folder each, written atomically.

The per-step randomness is derived from (seed, step) (see ``loop.step_generator``), so the step
number is the RNG state: a resumed run draws exactly what the uninterrupted run would have drawn.
A checkpoint also records the run's fingerprint so a work folder is never resumed by another run.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from bodydouble import atomic

LORA_FILE = "lora.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"
KEEP = 3


@dataclass
class Checkpoint:
    folder: Path
    step: int
    state: dict


def folder_for(work_dir: Path, step: int) -> Path:
    return Path(work_dir) / "checkpoints" / f"step_{step:07d}"


def save(work_dir: Path, step: int, lora_state: dict, optimizer_state: dict, state: dict) -> Path:
    import torch
    from safetensors.torch import save_file

    target = folder_for(work_dir, step)
    # A kill mid-write leaves only a hidden staging folder (swept at the next save), never half a checkpoint;
    # replacing one renames the old aside first, so there is no moment without it.
    with atomic.staged_dir(target, replace=True) as staging:
        save_file({k: v.detach().cpu().contiguous() for k, v in lora_state.items()}, str(staging / LORA_FILE))
        torch.save(optimizer_state, staging / OPTIMIZER_FILE)
        (staging / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=2))
    for old in all_checkpoints(work_dir)[:-KEEP]:
        shutil.rmtree(old.folder, ignore_errors=True)
    return target


def all_checkpoints(work_dir: Path) -> list[Checkpoint]:
    found = []
    parent = Path(work_dir) / "checkpoints"
    atomic.sweep(parent)          # staging folders of a run killed mid-save
    for aside in parent.glob(f".step_*{atomic.ASIDE_MARK}"):   # killed between the two renames of a replace
        atomic.recover_aside(parent / aside.name[1:].split(".")[0])
    for folder in sorted(parent.glob("step_*")):
        try:
            state = json.loads((folder / STATE_FILE).read_text())
        except (OSError, ValueError):
            continue
        if (folder / LORA_FILE).is_file() and (folder / OPTIMIZER_FILE).is_file():
            found.append(Checkpoint(folder, int(state["step"]), state))
    return sorted(found, key=lambda c: c.step)


def latest(work_dir: Path, at_most: int | None = None) -> Checkpoint | None:
    """The newest checkpoint, or the newest at or before step ``at_most`` (publishing an earlier checkpoint)."""
    found = [c for c in all_checkpoints(work_dir) if at_most is None or c.step <= at_most]
    return found[-1] if found else None


def load(checkpoint: Checkpoint) -> tuple[dict, dict]:
    import torch
    from safetensors.torch import load_file

    return load_file(str(checkpoint.folder / LORA_FILE)), torch.load(checkpoint.folder / OPTIMIZER_FILE, weights_only=True)
