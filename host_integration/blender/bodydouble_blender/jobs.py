"""Running jobs: a worker thread each (bodydouble.background), drained on the main thread.

``bpy.app.timers`` calls :func:`pump` every 0.1 s while a job runs: it moves progress into the
UI (status bar, window-manager progress, status text) and runs each job's completion on the
main thread, the only thread allowed to touch bpy data. Scripts and tests may call
:func:`pump` themselves (headless Blender has no event loop to fire timers).
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Callable

import bpy

from bodydouble.background import BackgroundJob
from bodydouble.client import JobResult

from . import messages

INTERVAL = 0.1


@dataclass
class HostJob:
    key: str
    title: str
    address: str
    background: BackgroundJob
    on_done: Callable[[JobResult], str]
    fraction: float = 0.0
    message: str = "waiting for the server"
    cancel_requested: bool = False
    started: float = field(default_factory=time.monotonic)
    job_id: str | None = None


_jobs: dict[str, HostJob] = {}
_keys = itertools.count(1)
REPORTS: list[tuple[str, str]] = []   # (level, message), newest last: what the artist was told
_progress_open = False


def start(title: str, address: str, request, timeout: float, on_done: Callable[[JobResult], str],
          curve_certs: tuple[str, str] = ("", "")) -> HostJob:
    """Run ``request`` on a worker thread; ``on_done(result)`` runs later on the main thread."""
    key = f"bd{next(_keys)}"
    job = HostJob(key=key, title=title, address=address, on_done=on_done,
                  background=BackgroundJob(address, request, timeout=timeout, client_name="bodydouble-blender",
                                           curve_certs=curve_certs))
    _jobs[key] = job
    job.background.start()
    if not bpy.app.timers.is_registered(_timer):
        bpy.app.timers.register(_timer, first_interval=INTERVAL, persistent=True)
    _update_ui()
    return job


def running() -> list[HostJob]:
    return list(_jobs.values())


def cancel(key: str | None = None) -> int:
    """Cancel one job (by key) or all; returns how many were asked to stop."""
    targets = [j for k, j in _jobs.items() if key in (None, "", k)]
    for job in targets:
        job.cancel_requested = True
        job.message = "cancelling"
        job.background.cancel()
    _update_ui()
    return len(targets)


def pump() -> int:
    """Handle every pending event on the main thread; returns how many jobs still run."""
    for key, job in list(_jobs.items()):
        for event in job.background.poll():
            if event.kind == "accepted":
                job.job_id = event.job_id
                job.message = "queued"
            elif event.kind == "progress" and event.progress is not None:
                job.fraction = max(0.0, min(1.0, event.progress.fraction))
                job.message = event.progress.message or f"{int(job.fraction * 100)}%"
            elif event.kind == "done":
                del _jobs[key]
                _finish(job, event.result)
            elif event.kind == "error":
                del _jobs[key]
                report(*messages.describe(event.error, job.address))
    _update_ui()
    return len(_jobs)


def wait(timeout: float = 60.0, interval: float = 0.05) -> None:
    """Pump until no job runs (scripts, tests, headless use)."""
    deadline = time.monotonic() + timeout
    while pump():
        if time.monotonic() > deadline:
            raise TimeoutError(f"BodyDouble jobs still running after {timeout} s: {[j.title for j in running()]}")
        time.sleep(interval)


def report(level: str, message: str) -> None:
    """Show a message in Blender's report area (status bar / Info editor), from any main-thread code."""
    REPORTS.append((level, message))
    del REPORTS[:-50]
    try:
        bpy.ops.bodydouble.report(level=level, message=message)
    except Exception:  # no operator context (e.g. during unregister): the console still has it
        print(f"BodyDouble {level}: {message}")


def status_line() -> str:
    if not _jobs:
        return ""
    parts = [f"{j.title}: {j.message} ({int(j.fraction * 100)}%)" for j in _jobs.values()]
    return "BodyDouble  " + " | ".join(parts)


def overall_fraction() -> float:
    return sum(j.fraction for j in _jobs.values()) / len(_jobs) if _jobs else 0.0


def shutdown() -> None:
    """Unregister: stop the timer, cancel what runs (nothing will be loaded)."""
    cancel()
    _jobs.clear()
    if bpy.app.timers.is_registered(_timer):
        bpy.app.timers.unregister(_timer)
    _update_ui()


# -- internals --------------------------------------------------------------------------------
def _finish(job: HostJob, result: JobResult) -> None:
    if job.cancel_requested:
        report("WARNING", f"BodyDouble job cancelled; take {result.take:03d} finished anyway and was not "
                          f"loaded ({result.take_dir}).")
        return
    try:
        report("INFO", job.on_done(result))
    except Exception as exc:  # loading failed: say so, never leave the UI in a half state
        report("ERROR", f"BodyDouble: the take at {result.take_dir} could not be loaded: {type(exc).__name__}: {exc}")


def _timer():
    pump()
    return INTERVAL if _jobs else None


def _update_ui() -> None:
    global _progress_open
    wm = bpy.context.window_manager
    text = status_line()
    try:
        if _jobs and not _progress_open:
            wm.progress_begin(0, 100)
            _progress_open = True
        if _progress_open:
            if _jobs:
                wm.progress_update(int(overall_fraction() * 100))
            else:
                wm.progress_end()
                _progress_open = False
    except Exception:
        pass
    workspace = getattr(bpy.context, "workspace", None)
    if workspace is not None and bpy.context.window is not None:
        try:
            workspace.status_text_set(text or None)
        except Exception:
            pass
    if wm is not None:
        for window in wm.windows:
            screen = window.screen
            for area in (screen.areas if screen else ()):
                if area.type in ("NODE_EDITOR", "SEQUENCE_EDITOR", "STATUSBAR"):
                    area.tag_redraw()
