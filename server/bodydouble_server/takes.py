"""Take folders: one new folder per job, never reused; frames land atomically.

Layout: ``<shot_dir>/bodydouble/<adapter>/take_NNN/<shot>_<adapter>_takeNNN.<frame>.exr`` plus
``take.json``. A take is *complete* only when take.json says ``"status": "complete"``: a job
that fails, is cancelled or dies with the server leaves ``running``/``failed``/``cancelled``,
so a partial take never looks complete. Hosts load complete takes only.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from bodydouble import __version__

TAKE_FILE = "take.json"
_TAKE_DIR = re.compile(r"^take_(\d{3,})$")


def safe_label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "untitled"


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


@dataclass
class Take:
    dir: Path
    number: int
    shot: str
    label: str
    info: dict
    frames: dict[int, str] = field(default_factory=dict)
    padding: int = 4

    @property
    def stem(self) -> str:
        return f"{self.shot}_{self.label}_take{self.number:03d}"

    @property
    def pattern(self) -> str:
        return str(self.dir / f"{self.stem}.{'#' * self.padding}.exr")

    def frame_path(self, frame: int) -> Path:
        sign = "-" if frame < 0 else ""
        return self.dir / f"{self.stem}.{sign}{abs(frame):0{self.padding}d}.exr"

    def add(self, frame: int, path: Path) -> None:
        self.frames[frame] = str(path)
        self._write("running")

    def finish(self, status: str, **extra) -> None:
        self.info.update(extra)
        self._write(status)

    def _write(self, status: str) -> None:
        write_json_atomic(self.dir / TAKE_FILE, {
            **self.info, "status": status, "take": self.number, "pattern": self.pattern,
            "frames": {str(k): v for k, v in sorted(self.frames.items())}, "updated": time.time(),
            "tool_version": __version__,
        })


def allocate(shot_dir: Path, shot: str, label: str, info: dict) -> Take:
    """Reserve the next take number with an atomic mkdir (two servers never get the same one)."""
    parent = shot_dir / "bodydouble" / label
    parent.mkdir(parents=True, exist_ok=True)
    existing = [int(m.group(1)) for p in parent.iterdir() if (m := _TAKE_DIR.match(p.name))]
    number = max(existing, default=0) + 1
    while True:
        folder = parent / f"take_{number:03d}"
        try:
            folder.mkdir()
        except FileExistsError:
            number += 1
            continue
        take = Take(dir=folder, number=number, shot=shot, label=label, info=dict(info))
        take._write("running")
        return take


def read_take(folder: Path) -> dict:
    return json.loads((Path(folder) / TAKE_FILE).read_text())
