"""The job queue and the worker thread that owns the model.

The socket loop only enqueues; one worker runs jobs in order (one GPU, one model). Every job
ends with exactly one final reply, sent from ``_finish``. Cancel takes a queued job out at once
and stops a running one at its next denoising step.
"""
from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Callable

from bodydouble import errors, protocol

log = logging.getLogger("bodydouble.jobs")

Send = Callable[[bytes, protocol.Message], None]


class Cancelled(Exception):
    """Raised inside a running job (from the step callback) when it was cancelled."""


@dataclass
class Job:
    id: str
    peer: bytes
    request_id: str
    operation: str
    request: object
    run: Callable[["Job"], protocol.Message]
    send: Send
    state: str = "queued"          # queued | running | complete | failed | cancelled
    progress: dict = field(default_factory=dict)
    result: dict = field(default_factory=dict)
    take_dir: str | None = None
    created: float = field(default_factory=time.time)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    _final_sent: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise Cancelled()

    def report(self, fraction: float, message: str = "", **extra) -> None:
        self.progress = {"job": self.id, "fraction": round(min(max(fraction, 0.0), 1.0), 5), "message": message, **extra}
        self.send(self.peer, protocol.Message(type="progress", id=self.request_id, body=self.progress))

    def finish(self, msg: protocol.Message, state: str) -> bool:
        """Send the one final reply; later calls do nothing."""
        with self._lock:
            if self._final_sent:
                return False
            self._final_sent = True
            self.state = state
        if msg.type == "result":
            self.result = msg.body
        self.send(self.peer, msg)
        return True

    def describe(self) -> dict:
        return {"job": self.id, "operation": self.operation, "state": self.state, "progress": self.progress,
                "created": self.created, "take_dir": self.take_dir}


class JobManager:
    def __init__(self, load_engine: Callable[[], None], history: int = 1000):
        self._load_engine = load_engine
        self._queue: collections.deque[Job] = collections.deque()
        self._cv = threading.Condition()
        self._jobs: dict[str, Job] = {}
        self._by_request: dict[tuple[bytes, str], str] = {}
        self._history = history
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:6]
        self._stopping = False
        self.state = "loading"
        self.load_error: str | None = None
        self.running: Job | None = None
        self._thread = threading.Thread(target=self._work, name="bodydouble-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._stopping = True
            if self.running:
                self.running.cancel_event.set()
            self._cv.notify_all()
        self._thread.join(timeout)

    # -- called from the socket loop -------------------------------------------------------
    def submit(self, peer: bytes, request_id: str, operation: str, request: object,
               run: Callable[[Job], protocol.Message], send: Send) -> Job:
        job = Job(id=f"job-{self._prefix}-{next(self._ids)}", peer=peer, request_id=request_id,
                  operation=operation, request=request, run=run, send=send)
        with self._cv:
            self._jobs[job.id] = job
            self._by_request[(peer, request_id)] = job.id
            self._queue.append(job)
            position = len(self._queue) - 1 + (1 if self.running else 0)
            self._trim()
            self._cv.notify()
        send(peer, protocol.Message(type="accepted", id=request_id,
                                    body={"job": job.id, "queue_position": position, "state": self.state}))
        return job

    def find(self, job_ref: str, peer: bytes | None = None) -> Job:
        job = self._jobs.get(job_ref)
        if job is None and peer is not None:
            job = self._jobs.get(self._by_request.get((peer, job_ref), ""))
        if job is None:
            raise errors.RequestError(f"no job {job_ref!r} on this server", code=errors.UNKNOWN_JOB)
        return job

    def cancel(self, job_ref: str, peer: bytes | None = None) -> Job:
        job = self.find(job_ref, peer)
        if job.state not in ("queued", "running"):
            raise errors.RequestError(f"job {job.id} already ended ({job.state})", code=errors.UNKNOWN_JOB)
        job.cancel_event.set()
        with self._cv:
            if job in self._queue:
                self._queue.remove(job)
                queued = True
            else:
                queued = False
        if queued:
            job.finish(protocol.error_message(job.request_id, errors.JobCancelled(f"job {job.id} cancelled before it started")),
                       "cancelled")
        return job

    def counts(self) -> dict:
        with self._cv:
            return {"queued": len(self._queue), "running": 1 if self.running else 0}

    def _trim(self) -> None:
        ended = [j for j in self._jobs.values() if j.state not in ("queued", "running")]
        for job in ended[: max(0, len(self._jobs) - self._history)]:
            self._jobs.pop(job.id, None)
            self._by_request.pop((job.peer, job.request_id), None)

    # -- worker thread ---------------------------------------------------------------------
    def _work(self) -> None:
        try:
            self._load_engine()
            self.state = "ready"
        except Exception as exc:  # keep answering: every job then fails with the reason
            log.exception("model failed to load")
            self.load_error = str(exc)
            self.state = "failed"
        while True:
            with self._cv:
                while not self._queue and not self._stopping:
                    self._cv.wait()
                if self._stopping:
                    for job in self._queue:
                        job.finish(protocol.error_message(job.request_id, errors.RequestError(
                            "the server is shutting down", code=errors.JOB_FAILED)), "failed")
                    self._queue.clear()
                    return
                job = self._queue.popleft()
                self.running = job
                job.state = "running"
            try:
                self._run(job)
            finally:
                with self._cv:
                    self.running = None

    def _run(self, job: Job) -> None:
        rid = job.request_id
        if self.state == "failed":
            job.finish(protocol.error_message(rid, errors.RequestError(
                f"the server's model failed to load: {self.load_error}", code=errors.MODEL_UNAVAILABLE)), "failed")
            return
        try:
            job.finish(job.run(job), "complete")
        except Cancelled:
            job.finish(protocol.error_message(rid, errors.JobCancelled(f"job {job.id} cancelled")), "cancelled")
        except errors.JobCancelled as exc:   # a job that says what it kept (training: the last checkpoint)
            job.finish(protocol.error_message(rid, exc), "cancelled")
        except errors.BodyDoubleError as exc:
            job.finish(protocol.error_message(rid, exc), "failed")
        except Exception as exc:  # the server survives any job
            log.error("job %s crashed:\n%s", job.id, traceback.format_exc())
            job.finish(protocol.error_message(rid, errors.JobFailed(f"job {job.id} failed: {type(exc).__name__}: {exc}")),
                       "failed")
