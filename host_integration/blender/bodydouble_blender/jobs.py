"""Jobs: each followed by its own worker thread (``bodydouble.background``), finished on the main thread.

``bpy.app.timers`` calls :func:`pump` every 0.1 s while a job runs: it keeps each job's state (sending, queued,
running, cancelling) and its live preview current, and runs each ended job's completion on the main thread, the
only thread allowed to touch bpy data. Scripts and tests may call :func:`pump` themselves (headless Blender has
no event loop to fire timers). What is not Blender (requests, following the job, advice) is ``bodydouble.host``.

A job the server accepted is written into its scene (``scene["bodydouble_jobs"][job id]``: what it is and how
to load its take), so it outlives the file and Blender: File > Open stops following every job (``load_pre``:
nothing is written into the file being opened; the server keeps running them), and opening a file follows
the jobs it holds again (``load_post``), loading the takes of those that finished meanwhile. A take is loaded
once per job id, whoever follows it.
"""
from __future__ import annotations

import collections
import itertools
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import bpy
from bpy.app.handlers import persistent

from bodydouble import errors, host
from bodydouble.background import BackgroundJob, Outcome
from bodydouble.client import JobResult

from . import messages, nodes, preferences, previews, strips

INTERVAL = 0.1
CLIENT = "bodydouble-blender"
RECORDS = "bodydouble_jobs"          # the scene's custom property: {job id: record}
WORDS = host.HostWords(
    host="Blender", connect="set the address in Preferences > Add-ons > BodyDouble",
    refresh="Refresh the adapter list (the server may use another adapters folder).", retry="run it again",
    paths_fix="Keep plates and the output folder under one of the server's allowed roots (bodydouble serve --root).",
    colour_fix="Set the image's colour space to a name the server knows (e.g. ACEScg).",
    certificates="Fix the certificate paths in Preferences > Add-ons > BodyDouble.")

# How each kind of job brings its take into the file, from the record's "load" (names, never ID pointers:
# they survive undo and reopening the file).
LOADERS = {
    "fill": lambda load, result: nodes.load_take(tuple(load["tree"]), load["source"], dict(load["params"]), result,
                                                 bool(load["wire"])),
    "extend": lambda load, result: strips.load_extension(load["scene"], load["strip"], dict(load["params"]), result),
}


def describe(error: BaseException, address: str = "", params: Optional[host.Params] = None) -> tuple[str, str]:
    """(report level, one-line message) for an error: Blender's report area shows one line."""
    advice = host.advice(error, address, WORDS, params)
    return advice.level, re.sub(r"\s*\n+\s*", " ", advice.text)


class _Detached(Exception):
    """Raised on a job's worker thread to stop following it (the server keeps running it)."""


class DetachableJob(BackgroundJob):
    """A :class:`BackgroundJob` that can also stop following without cancelling the job (:meth:`detach`): the
    file it was started from is closing, and the job's record in that file re-attaches to it later."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._detach = threading.Event()

    def detach(self) -> None:
        self._detach.set()

    def _accepted(self, job, sink) -> None:       # the worker calls this after every event and every tick
        if self._detach.is_set():
            raise _Detached()
        super()._accepted(job, sink)


@dataclass
class HostJob:
    key: str
    title: str
    kind: str                         # a key of LOADERS
    load: dict                        # what LOADERS[kind] needs (JSON-like)
    scene: str                        # the scene that holds its record
    background: DetachableJob
    params: Optional[host.Params] = None
    started: float = field(default_factory=time.monotonic)
    recorded: bool = False
    shown_progress: Any = None        # the progress event whose preview is on screen

    @property
    def address(self) -> str:
        return self.background.address

    @property
    def fraction(self) -> float:
        return self.background.fraction

    @property
    def cancel_requested(self) -> bool:
        return self.background.cancel_requested

    @property
    def job_id(self) -> Optional[str]:
        return self.background.job_id or self.background.follow

    @property
    def state(self) -> str:
        """sending, queued, running or cancelling (ended jobs are in :data:`history`)."""
        if self.cancel_requested:
            return "cancelling"
        return {"connecting": "sending"}.get(self.background.state, self.background.state)

    @property
    def message(self) -> str:
        state = self.state
        if state == "queued":
            ahead = self.background.queue_position
            return f"queued, {ahead} ahead" if ahead else "queued, next"
        return "cancelling" if state == "cancelling" else self.background.message


@dataclass
class Ended:
    """A job that ended this session, for the jobs panel."""

    title: str
    state: str                # finished | failed | cancelled | lost (the server stopped answering)
    text: str
    job_id: Optional[str]
    ended: float = field(default_factory=time.time)


_jobs: dict[str, HostJob] = {}
_ended: "queue.SimpleQueue[tuple[str, Outcome]]" = queue.SimpleQueue()   # worker threads -> main thread
_keys = itertools.count(1)
history: "collections.deque[Ended]" = collections.deque(maxlen=20)
_progress_open = False
_after_load: list[tuple[str, str]] = []      # messages for the artist once the file being opened is open


def start(title: str, kind: str, load: dict, request, scene_name: str,
          params: Optional[host.Params] = None) -> HostJob:
    """Submit ``request`` and follow it on a worker thread; its take is loaded on the main thread with
    ``LOADERS[kind](load, result)``."""
    prefs = preferences.get()
    background = DetachableJob(prefs.server_address, request, timeout=prefs.connect_timeout, client_name=CLIENT,
                             curve_certs=preferences.curve_certs(prefs))
    return _run(HostJob(key=f"bd{next(_keys)}", title=title, kind=kind, load=load, scene=scene_name,
                        background=background, params=params))


def follow(job_id: str, record: dict, scene_name: str) -> HostJob:
    """Follow a job the server already has (from a record in the file): its events from now, or its end."""
    prefs = preferences.get()
    background = DetachableJob(record.get("address") or prefs.server_address, None, follow=job_id,
                             timeout=prefs.connect_timeout, client_name=CLIENT,
                             curve_certs=preferences.curve_certs(prefs))
    params = None
    try:
        params = host.Params.from_dict(dict(record["load"]["params"]))
    except Exception:
        pass
    return _run(HostJob(key=f"bd{next(_keys)}", title=record.get("title", job_id), kind=record["kind"],
                        load=_plain(record["load"]), scene=scene_name, background=background, params=params,
                        recorded=True))


def _run(job: HostJob) -> HostJob:
    _jobs[job.key] = job
    job.background.start(on_finish=lambda outcome: _ended.put((job.key, outcome)))
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
    """Bring every job's state up to date and finish the ended ones on the main thread; returns how many still
    run. While Blender renders (the interface is locked) nothing is loaded: the next pump does it."""
    wm = bpy.context.window_manager
    if wm is not None and getattr(wm, "is_interface_locked", False):
        return len(_jobs)
    for job in list(_jobs.values()):
        _sync(job)
    while True:
        try:
            key, outcome = _ended.get_nowait()
        except queue.Empty:
            break
        job = _jobs.pop(key, None)
        if job is not None:       # None: detached (file closed) or shut down meanwhile: nothing is loaded
            _end(job, outcome)
    _update_ui()
    return len(_jobs)


def wait(timeout: float = 60.0, interval: float = 0.05) -> None:
    """Pump until no job runs (scripts, tests, headless use)."""
    deadline = time.monotonic() + timeout
    while pump():
        if time.monotonic() > deadline:
            raise TimeoutError(f"BodyDouble jobs still running after {timeout} s: {[j.title for j in running()]}")
        time.sleep(interval)


def status_line() -> str:
    if not _jobs:
        return ""
    parts = [f"{j.title}: {j.message} ({int(j.fraction * 100)}%)" for j in _jobs.values()]
    return "BodyDouble  " + " | ".join(parts)


def overall_fraction() -> float:
    return sum(j.fraction for j in _jobs.values()) / len(_jobs) if _jobs else 0.0


# -- records in the file ------------------------------------------------------------------------
def records(scene) -> dict:
    """The jobs a scene holds: {job id: record}, as plain dicts."""
    value = scene.get(RECORDS) if scene is not None else None
    return _plain(value) if value is not None else {}


def unfollowed() -> list[tuple[str, str, dict]]:
    """(scene name, job id, record) of every job in the file nobody follows now (after a lost connection)."""
    followed = {j.job_id for j in _jobs.values() if j.job_id}
    return [(scene.name, job_id, record) for scene in bpy.data.scenes
            for job_id, record in records(scene).items() if job_id not in followed]


def reattach() -> int:
    """Follow every job the file holds that nobody follows; returns how many."""
    found = unfollowed()
    for scene_name, job_id, record in found:
        try:
            follow(job_id, record, scene_name)
        except Exception as exc:    # a record from an older add-on, or damaged: say so, forget it
            messages.post("ERROR", f"BodyDouble: job {job_id} in this file cannot be followed "
                                   f"({type(exc).__name__}: {exc}); its record was removed")
            _forget(scene_name, job_id)
    if found:
        messages.post("INFO", f"BodyDouble: following {len(found)} job(s) of this file again")
    return len(found)


def _remember(job: HostJob) -> None:
    job.recorded = True
    scene = bpy.data.scenes.get(job.scene)
    if scene is None:          # deleted meanwhile: the job is followed, only not kept in the file
        return
    held = records(scene)
    held[job.job_id] = {"title": job.title, "kind": job.kind, "load": job.load, "address": job.address,
                        "submitted": time.time()}
    scene[RECORDS] = held


def _forget(scene_name: str, job_id: Optional[str]) -> None:
    scene = bpy.data.scenes.get(scene_name)
    if scene is None or job_id is None:
        return
    held = records(scene)
    if held.pop(job_id, None) is not None:
        scene[RECORDS] = held


def _plain(value):
    """ID properties (and anything in them) as plain dicts and lists."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "to_list"):
        return value.to_list()
    return value


@persistent
def on_load_pre(*_args) -> None:
    """File > Open (or New, Revert): stop following every job, so nothing of the closed file's jobs is written
    into the file being opened. Accepted jobs keep running on the server (their records are in the closed file,
    if it was saved); jobs the server has not accepted yet are cancelled."""
    left, unsent = [], []
    for job in _jobs.values():
        if job.cancel_requested:
            continue                 # its worker still sends the cancel; nothing of it is loaded (not in _jobs)
        if job.job_id:
            job.background.detach()
            left.append(job)
        else:
            job.background.cancel()
            unsent.append(job)
    _jobs.clear()
    previews.clear_live()
    # Told once the new file is open (loading a file drops the windows' modal handlers, the on-screen report).
    if left:
        _after_load.append(("WARNING", f"BodyDouble: the file closed with {len(left)} job(s) running; they go on on "
                                       f"the server ({', '.join(j.job_id for j in left)}): open the file again "
                                       "(saved after they started) to load their takes"))
    if unsent:
        _after_load.append(("WARNING", f"BodyDouble: the file closed before the server took {len(unsent)} job(s): "
                                       "cancelled"))


@persistent
def on_load_post(*_args) -> None:
    """A file was opened: say what happened to the closed file's jobs, then follow the jobs this file holds again
    (and load the takes of those that finished)."""
    while _after_load:
        messages.post(*_after_load.pop(0))
    reattach()


# -- internals --------------------------------------------------------------------------------
def _sync(job: HostJob) -> None:
    if job.job_id and not job.recorded:
        _remember(job)
    progress = job.background.preview             # the latest event that carried a picture
    if progress is not None and progress is not job.shown_progress:
        job.shown_progress = progress
        try:
            previews.show_live(job.title, progress.preview)
        except (ValueError, RuntimeError) as exc:
            print(f"BodyDouble: preview of {job.title} not shown: {exc}")


def _end(job: HostJob, outcome: Outcome) -> None:
    job_id = outcome.job_id or job.job_id
    error, result = outcome.error, outcome.result
    if previews.live_title == job.title:
        previews.clear_live()
    if error is not None and isinstance(error, errors.ServerUnavailable) and job_id and not job.cancel_requested:
        # Lost the server: the job may well go on there. Keep its record; Re-attach follows it again.
        level, text = describe(error, job.address, job.params)
        _ended_as(job, job_id, "lost", messages.post(
            "WARNING", f"{text} Job {job_id} is kept in the file: Re-attach in the BodyDouble panel once the "
                       "server answers."))
        return
    _forget(job.scene, job_id)
    if result is not None and job.cancel_requested:
        _ended_as(job, job_id, "cancelled", messages.post(
            "WARNING", f"BodyDouble job cancelled; take {result.take:03d} finished anyway and was not loaded "
                       f"({result.take_dir})."))
    elif error is not None or result is None:
        level, text = describe(error or errors.BodyDoubleError("the job ended without a result"), job.address,
                               job.params)
        state = "cancelled" if isinstance(error, errors.JobCancelled) else "failed"
        _ended_as(job, job_id, state, messages.post(level, text))
    else:
        _load(job, job_id, result)


def _load(job: HostJob, job_id: Optional[str], result: JobResult) -> None:
    holder = find_take(result.job)
    if holder is not None:
        _ended_as(job, job_id, "finished", messages.post(
            "INFO", f"BodyDouble: take {result.take:03d} of {job.title} is already loaded as '{holder.name}'"))
        return
    try:
        text = LOADERS[job.kind](job.load, result)
    except Exception as exc:  # loading failed: say so, never leave the UI in a half state
        _ended_as(job, job_id, "failed", messages.post(
            "ERROR", f"BodyDouble: the take at {result.take_dir} could not be loaded: {type(exc).__name__}: {exc}"))
        return
    _undo_step(f"BodyDouble: load take {result.take:03d}")
    _ended_as(job, job_id, "finished", messages.post("INFO", text))


def _undo_step(name: str) -> None:
    """An undo step for what a timer changed: without it the artist's next Ctrl+Z restores a state from before the
    change and drops it. ``ed.undo_push`` needs a window in the context, which timers lack."""
    wm = bpy.context.window_manager
    window = bpy.context.window or (wm.windows[0] if wm is not None and wm.windows else None)
    try:
        if window is None:
            raise RuntimeError("no window")
        with bpy.context.temp_override(window=window):
            bpy.ops.ed.undo_push(message=name)
    except RuntimeError as exc:
        print(f"BodyDouble: no undo step for '{name}' ({exc})")


def _ended_as(job: HostJob, job_id: Optional[str], state: str, message: messages.Message) -> None:
    history.append(Ended(title=job.title, state=state, text=message.text, job_id=job_id))


def find_take(job_id: Optional[str]):
    """The node or strip already holding the take of ``job_id`` (any tree, any scene), or None."""
    if not job_id:
        return None
    for holder in all_takes():
        if holder.get(nodes.PROP, {}).get("job") == job_id:
            return holder
    return None


def all_takes() -> list:
    """Every take node and take strip in the file."""
    trees = list(bpy.data.node_groups)
    trees += [s.node_tree for s in bpy.data.scenes if getattr(s, "node_tree", None) is not None]
    found = [n for t in trees if t.bl_idname == "CompositorNodeTree" for n in t.nodes if nodes.PROP in n]
    for scene in bpy.data.scenes:
        if scene.sequence_editor is not None:
            found += [s for s in strips.all_strips(scene.sequence_editor) if strips.PROP in s]
    return found


def shutdown() -> None:
    """Unregister: stop the timer and stop following (accepted jobs go on on the server and stay in the file)."""
    for job in _jobs.values():
        if job.job_id:
            job.background.detach()
        else:
            job.background.cancel()
    _jobs.clear()
    if bpy.app.timers.is_registered(_timer):
        bpy.app.timers.unregister(_timer)
    _update_ui()


def _timer():
    pump()
    return INTERVAL if _jobs else None


def _update_ui() -> None:
    """The window manager's progress (the cursor's), and a redraw of what shows jobs. Nothing is pushed into the
    status bar: its BodyDouble part (menus.draw_status) reads the jobs when it draws, so it cannot go stale."""
    global _progress_open
    wm = bpy.context.window_manager
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
    messages.redraw()
