"""Running jobs: each followed by its own worker thread (``bodydouble.background``), finished on the main thread.

``bpy.app.timers`` calls :func:`pump` every 0.1 s while a job runs: it shows the jobs' progress (status bar,
window-manager progress, status text) and runs each ended job's completion on the main thread, the only
thread allowed to touch bpy data. Scripts and tests may call :func:`pump` themselves (headless Blender has no
event loop to fire timers). What is not Blender (requests, following the job, advice) is ``bodydouble.host``.
"""
from __future__ import annotations

import itertools
import queue
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import bpy

from bodydouble import errors, host
from bodydouble.background import BackgroundJob, Outcome
from bodydouble.client import JobResult

INTERVAL = 0.1
CLIENT = "bodydouble-blender"
WORDS = host.HostWords(
    host="Blender", connect="set the address in Preferences > Add-ons > BodyDouble",
    refresh="Refresh the adapter list (the server may use another adapters folder).", retry="run it again",
    paths_fix="Keep plates and the output folder under one of the server's allowed roots (bodydouble serve --root).",
    colour_fix="Set the image's colour space to a name the server knows (e.g. ACEScg).",
    certificates="Fix the certificate paths in Preferences > Add-ons > BodyDouble.")


def describe(error: BaseException, address: str = "", params: Optional[host.Params] = None) -> tuple[str, str]:
    """(report level, one-line message) for an error: Blender's report area shows one line."""
    advice = host.advice(error, address, WORDS, params)
    return advice.level, re.sub(r"\s*\n+\s*", " ", advice.text)


@dataclass
class HostJob:
    key: str
    title: str
    background: BackgroundJob
    on_done: Callable[[JobResult], str]
    params: Optional[host.Params] = None
    started: float = field(default_factory=time.monotonic)

    @property
    def address(self) -> str:
        return self.background.address

    @property
    def fraction(self) -> float:
        return self.background.fraction

    @property
    def message(self) -> str:
        return "cancelling" if self.cancel_requested else self.background.message

    @property
    def cancel_requested(self) -> bool:
        return self.background.cancel_requested

    @property
    def job_id(self) -> Optional[str]:
        return self.background.job_id


_jobs: dict[str, HostJob] = {}
_ended: "queue.SimpleQueue[tuple[str, Outcome]]" = queue.SimpleQueue()   # worker threads -> main thread
_keys = itertools.count(1)
REPORTS: list[tuple[str, str]] = []   # (level, message), newest last: what the artist was told
_progress_open = False


def start(title: str, address: str, request, timeout: float, on_done: Callable[[JobResult], str],
          curve_certs: tuple[str, str] = ("", ""), params: Optional[host.Params] = None) -> HostJob:
    """Run ``request`` on a worker thread; ``on_done(result)`` runs later on the main thread."""
    key = f"bd{next(_keys)}"
    background = BackgroundJob(address, request, timeout=timeout, client_name=CLIENT, curve_certs=curve_certs)
    job = _jobs[key] = HostJob(key=key, title=title, background=background, on_done=on_done, params=params)
    background.start(on_finish=lambda outcome: _ended.put((key, outcome)))
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
        job.background.cancel()
    _update_ui()
    return len(targets)


def pump() -> int:
    """Finish every ended job on the main thread; returns how many jobs still run."""
    while True:
        try:
            key, outcome = _ended.get_nowait()
        except queue.Empty:
            break
        job = _jobs.pop(key, None)
        if job is None:
            continue                  # shut down meanwhile: nothing is loaded
        if outcome.error is not None or outcome.result is None:
            report(*describe(outcome.error or errors.BodyDoubleError("the job ended without a result"),
                             job.address, job.params))
        else:
            _finish(job, outcome.result)
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
