"""Take folders: one new folder per job, never reused; every file lands atomically.

Layout: ``<shot_dir>/bodydouble/<adapter>/take_NNN/<shot>_<adapter>_takeNNN.<frame>.exr`` plus
``take.json``. A take is *complete* only when take.json says ``"status": "complete"``: a job
that fails or is cancelled leaves ``failed``/``cancelled``, and one that dies with the server is
marked ``interrupted`` when the server starts again (:class:`Journal`), so a partial take never
looks complete. Hosts load complete takes only.
"""
from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bodydouble import __version__, atomic, errors
from bodydouble.jobspec import safe_name

from .paths import AllowedRoots, unwritable

log = logging.getLogger("bodydouble.takes")

TAKE_FILE = "take.json"
STATUSES = ("running", "complete", "failed", "cancelled", "interrupted")
_TAKE_DIR = re.compile(r"^take_(\d{3,})$")


safe_label = safe_name      # one rule for names that become folders (bodydouble.jobspec.safe_name)


@dataclass
class Take:
    dir: Path
    number: int
    shot: str
    label: str
    info: dict
    roots: AllowedRoots | None = None
    frames: dict[int, str] = field(default_factory=dict)
    padding: int = 4
    seal: Callable[["Take"], dict] | None = None    # provenance (policy/), signed before the take says complete
    # Each frame's provenance as soon as it is written (the frame pipeline's writer thread), so sealing the take
    # at the end signs only the review proxy: frame -> sha256 of the bytes its sidecar was signed for.
    seal_frame: Callable[["Take", int, Path], str] | None = None
    sealed: dict[int, str] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        return f"{self.shot}_{self.label}_take{self.number:03d}"

    @property
    def pattern(self) -> str:
        return str(self.dir / f"{self.stem}.{'#' * self.padding}.exr")

    def frame_path(self, frame: int) -> Path:
        """Where ``frame`` goes, checked against the roots now (the folder could have been swapped for a link)."""
        self._check()
        sign = "-" if frame < 0 else ""
        return self.dir / f"{self.stem}.{sign}{abs(frame):0{self.padding}d}.exr"

    def add(self, frame: int, path: Path) -> None:
        self.frames[frame] = str(path)
        self._write("running")

    def seal_written(self, frame: int, path: Path) -> str | None:
        """``frame``'s provenance sidecar right after it was written (None without ``seal_frame``): the sha256
        signed for, which ``seal`` then reuses. A failure fails the job as it would at the end."""
        if self.seal_frame is None:
            return None
        try:
            return self.seal_frame(self, frame, path)
        except Exception as exc:      # never a frame without provenance
            raise errors.RequestError(f"take {self.dir}: provenance could not be written: {exc}",
                                      code=errors.JOB_FAILED) from exc

    def finish(self, status: str, **extra) -> None:
        if status == "complete" and self.seal is not None:
            try:
                extra["provenance"] = self.seal(self)
            except Exception as exc:      # never complete without provenance
                self.info.update(extra, error=f"provenance could not be written: {exc}")
                self._write("failed")
                raise errors.RequestError(f"take {self.dir}: provenance could not be written: {exc}",
                                          code=errors.JOB_FAILED) from exc
        self.info.update(extra)
        self._write(status)

    def _check(self) -> None:
        if self.roots is not None and self.roots.check(self.dir, "take folder") != self.dir:
            raise errors.RequestError(f"take folder {self.dir} was replaced by a link", code=errors.PATH_NOT_ALLOWED)

    def _write(self, status: str) -> None:
        self._check()
        path = self.dir / TAKE_FILE
        try:
            atomic.write_json(path, {
                **self.info, "status": status, "take": self.number, "pattern": self.pattern,
                "frames": {str(k): v for k, v in sorted(self.frames.items())}, "updated": time.time(),
                "tool_version": __version__,
            })
        except OSError as exc:
            raise errors.write_failed(path, exc) from None


def allocate(shot_dir: Path, shot: str, label: str, info: dict, roots: AllowedRoots | None = None) -> Take:
    """Reserve the next take number with an atomic mkdir (two servers never get the same one).

    With ``roots``, every folder on the way is created and checked against them as it is made."""
    parent = shot_dir / "bodydouble" / label
    if roots is not None:
        parent = roots.make_dirs(parent, "take folder")
    else:
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
        except OSError as exc:
            raise unwritable(folder, exc, "take folder") from None
        take = Take(dir=folder, number=number, shot=shot, label=label, info=dict(info), roots=roots)
        take._write("running")
        return take


def read_take(folder: Path) -> dict:
    return json.loads((Path(folder) / TAKE_FILE).read_text())


class JobJournal:
    """One small JSON file per job in ``folder`` (its data plus the server's pid and host), so a server that
    starts again finds what a killed one left. Subclasses say what an entry means."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def _entry(self, job_id: str) -> Path:
        return self.folder / f"{safe_label(job_id)}.json"

    def write(self, job_id: str, data: dict) -> None:
        """Atomically; raises OSError."""
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic.write_json(self._entry(job_id), {**data, "job": job_id, "pid": os.getpid(),
                                                "host": socket.gethostname()})

    def remove(self, job_id: str) -> None:
        try:
            os.unlink(self._entry(job_id))
        except OSError:
            pass

    def left_over(self) -> list[tuple[Path, dict]]:
        """(file, data) of the entries whose server process is gone; unreadable entries are removed."""
        if not self.folder.is_dir():
            return []
        atomic.sweep(self.folder)
        found = []
        for entry in sorted(self.folder.glob("*.json")):
            try:
                data = json.loads(entry.read_text())
                if not isinstance(data, dict):
                    raise ValueError("not an object")
            except (OSError, ValueError):
                log.warning("removing unreadable journal entry %s", entry)
                entry.unlink(missing_ok=True)
                continue
            if data.get("host") == socket.gethostname() and process_alive(data.get("pid")):
                continue   # another server on this machine is still at it
            found.append((entry, data))
        return found


class Journal(JobJournal):
    """The takes this server is writing: ``{take_dir}``, written when a take opens, removed when it ends.

    :meth:`recover` (at start-up) marks each listed take still ``running`` as ``interrupted`` and removes the
    temporaries in it, for entries whose server process is gone.
    """

    def opened(self, job_id: str, take: Take) -> None:
        try:
            self.write(job_id, {"take_dir": str(take.dir)})
        except OSError as exc:   # the take itself is fine; only crash recovery of this one is lost
            log.warning("cannot journal take %s: %s", take.dir, exc)

    def closed(self, job_id: str) -> None:
        self.remove(job_id)

    def recover(self) -> list[Path]:
        """Mark the takes of dead servers ``interrupted``; returns their folders."""
        recovered = []
        for entry, data in self.left_over():
            if isinstance(data.get("take_dir"), str):
                take_dir = Path(data["take_dir"])
                mark_interrupted(take_dir)
                recovered.append(take_dir)
            entry.unlink(missing_ok=True)
        return recovered


def mark_interrupted(take_dir: Path, why: str = "the server stopped (killed or crashed) while writing this take") -> None:
    """A take left ``running`` by a dead server (or a dead pool replica: ``why``): temporaries removed, status
    ``interrupted``."""
    removed = atomic.sweep(take_dir)
    try:
        data = read_take(take_dir)
    except (OSError, ValueError):
        data = None
    if isinstance(data, dict) and data.get("status") == "running":
        data.update(status="interrupted", updated=time.time(),
                    error=f"{why}; the frames listed are whole files, the rest were never written")
        try:
            atomic.write_json(take_dir / TAKE_FILE, data)
        except OSError as exc:
            log.warning("cannot mark %s interrupted: %s", take_dir, exc)
    log.info("take %s: interrupted by a server stop (%d temporary file(s) removed)", take_dir, len(removed))


def process_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
