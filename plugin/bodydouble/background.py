"""Follow a job off the host's UI thread: one worker thread per job, iterating ``job.events()``.

Host UIs must never freeze, and host APIs (bpy, nuke) may only be called from their main thread. A
:class:`BackgroundJob` connects, submits and follows the job on one worker thread; the thin client's
connection does the socket I/O on its own thread. The host sees the job three ways:

- ``fraction`` / ``message`` / ``job_id``: plain attributes the worker keeps current (a host's UI timer may
  read them at any time);
- an optional progress *sink* (``update(percent, text)``, ``cancelled()``, ``close()``), made and used on the
  worker thread: a host progress bar that has its own Cancel button (Nuke's ``ProgressTask``);
- ``on_finish(outcome)``, called once on the worker thread when the job has ended, however it ended: the
  host's hand-off to its main thread (``nuke.executeInMainThread``, a queue its ``bpy.app.timers`` drains);
- ``on_accepted(job_id)``, called on the worker thread once the server took the job (a host keeps the id to
  re-attach later);
- ``on_preview(progress)``, called on the worker thread for each event that carries a live preview
  (``progress.preview``: (H, W, 3) uint8); ``preview`` keeps the latest for a UI timer;
- ``state`` / ``queue_position``: ``connecting``, ``queued`` (at ``queue_position``; 0 runs next), ``running``,
  then ``finished`` / ``failed`` / ``cancelled``.

``follow=job_id`` re-attaches to a job submitted earlier (by this host before a restart, or by another) instead of
submitting ``request``: its events continue from now, and a job that already ended hands over its outcome at once.

    job = BackgroundJob(address, request, on_finish=lambda outcome: main_thread_queue.put(outcome)).start()
    job.cancel()          # from any thread: the worker sends the server-side cancel

Cancel is a flag: the worker wakes every ``TICK`` seconds while it waits for the next event and, when the
flag (or the sink's Cancel button) is set, sends the cancel itself, so no thread is made per cancel. In
terminal mode (``nuke -t``, scripts) :meth:`run` follows the job on the calling thread.

When the server stops answering (``ServerUnavailable``) the worker re-attaches to the job by its id for up to
``REATTACH`` seconds (the connection reconnects by itself): a network blip costs nothing; a server that came
back without the job ends it with ``unknown_job``.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

from . import errors
from .client import Client, Job, JobResult, Progress
from .curve import keys_for

TICK = 0.1          # seconds between looks at the cancel flag while no event arrives
REATTACH = 30.0     # seconds to keep re-attaching to a job whose server stopped answering


class ProgressSink(Protocol):
    def update(self, percent: int, text: str) -> None: ...

    def cancelled(self) -> bool: ...

    def close(self) -> None: ...


@dataclass
class Outcome:
    """How a job ended: its result, or the error to tell the artist about (JobCancelled for a cancel)."""

    result: Optional[JobResult] = None
    error: Optional[errors.BodyDoubleError] = None
    job_id: Optional[str] = None


class BackgroundJob:
    def __init__(self, address: str, request: Any, timeout: float = 10.0, client_name: str = "bodydouble-host",
                 curve_certs: tuple[str, str] = ("", ""), sink: Optional[Callable[[], ProgressSink]] = None,
                 on_finish: Optional[Callable[[Outcome], None]] = None,
                 on_preview: Optional[Callable[[Progress], None]] = None, follow: Optional[str] = None,
                 on_accepted: Optional[Callable[[str], None]] = None):
        self.address = address
        self.request = request
        self.follow = follow             # a job id to re-attach to instead of submitting ``request``
        self.state = "connecting"
        self.queue_position: Optional[int] = None
        self.preview: Optional[Progress] = None     # the latest event that carried a picture
        self._on_preview = on_preview
        self._on_accepted = on_accepted
        self.timeout = timeout
        self.client_name = client_name
        self.curve_certs = curve_certs   # (server public, client secret) certificate files; empty: the environment's
        self.fraction = 0.0
        self.message = "waiting for the server"
        self.job_id: Optional[str] = None
        self.outcome: Optional[Outcome] = None
        self._sink_factory = sink
        self._on_finish = on_finish
        self._cancel = threading.Event()
        # Named after the host's client ("bodydouble-nuke-wait"): what a thread dump shows.
        self._thread = threading.Thread(target=self.run, name=f"{client_name}-wait", daemon=True)

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def start(self, on_finish: Optional[Callable[[Outcome], None]] = None) -> "BackgroundJob":
        """Follow the job on its worker thread; ``on_finish`` (if given here) replaces the constructor's."""
        self._on_finish = on_finish or self._on_finish
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask for a stop, from any thread; the job ends with an outcome whose error is JobCancelled (or with
        its result, when it finished first)."""
        self._cancel.set()

    def join(self, timeout: Optional[float] = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def run(self) -> Outcome:
        """Follow the job to its end on this thread; returns (and hands ``on_finish``) the outcome."""
        sink = None
        outcome = Outcome()
        try:
            sink = self._sink_factory() if self._sink_factory is not None else None
            outcome.result = self._follow(sink)
        except errors.BodyDoubleError as exc:
            outcome.error = exc
        except Exception as exc:  # a host must always hear how its job ended
            outcome.error = errors.BodyDoubleError(f"{type(exc).__name__}: {exc}")
        finally:
            if sink is not None:
                sink.close()
        outcome.job_id = self.job_id
        self.state = ("finished" if outcome.result is not None else
                      "cancelled" if isinstance(outcome.error, errors.JobCancelled) else "failed")
        self.outcome = outcome
        if self._on_finish is not None:
            self._on_finish(outcome)
        return outcome

    # -- worker thread -------------------------------------------------------------------------
    def _follow(self, sink: Optional[ProgressSink]) -> JobResult:
        # Keys are read here, not by the host: an unreadable certificate is reported like any failed connection.
        with Client(self.address, timeout=self.timeout, name=self.client_name,
                    curve=keys_for(*self.curve_certs)) as client:
            if self._cancel_wanted(sink) and not self.follow:
                raise errors.JobCancelled("cancelled before it was sent")
            job = client.follow(self.follow) if self.follow else client.submit(self.request)
            give_up = None
            while True:
                try:
                    return self._watch(job, sink)
                except errors.ServerUnavailable:
                    if job.job_id is None or self._cancel_wanted(sink):
                        raise
                    give_up = give_up or time.monotonic() + REATTACH
                    while True:
                        if time.monotonic() > give_up:
                            raise
                        self._show(sink, self.fraction, "the server is not answering: re-attaching…")
                        time.sleep(1.0)
                        job = job.reattach()
                        try:     # the server answers a follow at once; one sent while it was down is asked again
                            job.accepted(timeout=self.timeout)
                            break
                        except (errors.RequestTimeout, errors.ServerUnavailable):
                            continue

    def _watch(self, job: Job, sink: Optional[ProgressSink]) -> JobResult:
        """Events until the job ends, sending the cancel when it is asked for; its result or its error."""
        cancel_sent = False
        while not job.done:
            try:
                for progress in job.events(timeout=TICK):
                    self._accepted(job, sink)
                    if "queue_position" in progress.raw:     # the queue moved; the job still waits
                        self.queue_position = progress.raw["queue_position"]
                        self.state = "queued"
                    else:
                        self.state = "running"
                    if progress.preview is not None:
                        self.preview = progress
                        if self._on_preview is not None:
                            self._on_preview(progress)
                    if not cancel_sent:
                        self._show(sink, progress.fraction, progress.message)
                    cancel_sent = cancel_sent or self._send_cancel(job, sink)
            except errors.RequestTimeout:
                pass          # no event within TICK: look at the cancel flag, then wait again
            self._accepted(job, sink)
            cancel_sent = cancel_sent or self._send_cancel(job, sink)
        return job.wait()

    def _cancel_wanted(self, sink: Optional[ProgressSink]) -> bool:
        if sink is not None and sink.cancelled():
            self._cancel.set()
        return self._cancel.is_set()

    def _send_cancel(self, job: Job, sink: Optional[ProgressSink]) -> bool:
        if not self._cancel_wanted(sink):
            return False
        self._show(sink, self.fraction, "Cancelling…")
        try:
            job.cancel()
        except errors.BodyDoubleError:
            pass          # the job's final message says what happened
        return True

    def _accepted(self, job: Job, sink: Optional[ProgressSink]) -> None:
        if self.job_id is None and job.job_id and (job.answered or job.done):
            self.job_id = job.job_id
            self.queue_position = job.queue_position
            if self.state == "connecting":
                self.state = "queued" if job.queue_position else "running"
            where = f", {job.queue_position} ahead in the queue" if job.queue_position else ""
            self._show(sink, 0.0, f"job {job.job_id} accepted{where}")
            if self._on_accepted is not None:
                self._on_accepted(job.job_id)

    def _show(self, sink: Optional[ProgressSink], fraction: float, message: str) -> None:
        self.fraction, self.message = max(0.0, min(1.0, fraction)), message
        if sink is not None:
            sink.update(int(100 * self.fraction), message)
