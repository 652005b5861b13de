"""The job queue and the worker thread that owns the model.

The socket loop only admits and enqueues; one worker runs jobs in order (one GPU, one model).
Every job's events go to its *subscribers* (the submitting request, and any ``follow`` from any
connection) numbered by ``seq``: ``accepted`` (0), ``progress``..., then exactly one final
``result`` or ``error``. A job's first reply is sent before the worker can see it, so nothing can
overtake ``accepted``. Cancel takes a queued job out at once; a running one stops at its next step
and its ``cancelled`` is sent only after the worker let go of it and the take was marked.
An ended job keeps its summary (the final body, no pixel buffers), never its request.

Jobs of a *resumable* operation (training) are written to a :class:`ResumeJournal` when accepted and removed
when they end; a server that starts again finds those a killed predecessor left and queues them again under
their own job ids (server.py ``resume_jobs``).
"""
from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

from bodydouble import errors, protocol

from .takes import JobJournal

log = logging.getLogger("bodydouble.jobs")

Send = Callable[[bytes, protocol.Message], None]
LIVE = ("queued", "running")


class Cancelled(Exception):
    """Raised inside a running job (from the step callback) when it was cancelled."""


@dataclass
class Job:
    id: str
    peer: bytes
    request_id: str
    operation: str
    request: object | None
    run: Callable[["Job"], protocol.Message] | None
    send: Send
    state: str = "queued"          # queued | running | complete | failed | cancelled
    progress: dict = field(default_factory=dict)
    summary: dict | None = None    # the final reply's body (no buffers), once ended
    final_type: str | None = None  # "result" | "error"
    take_dir: str | None = None
    created: float = field(default_factory=time.time)
    ended: float | None = None
    seq: int = 0
    cancel_event: threading.Event = field(default_factory=threading.Event)
    subscribers: list = field(default_factory=list)    # (peer, request id) that receive this job's events
    on_take: Callable | None = None                    # the manager's journal hook
    on_finish: Callable | None = None                  # (job, final msg, state) before the final reply: the audit
    beside: int = 0       # > 0: runs beside the worker thread, at most this many of its operation at once
    resumed: dict | None = None    # a job a restarted server took up again: {"from_instance", "checkpoint_step"}
    stopped_by_server: bool = False    # cancelled because the server stops, not because anyone asked
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def live(self) -> bool:
        return self.state in LIVE

    # -- called from the worker ----------------------------------------------------------------
    def check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise Cancelled()

    def report(self, fraction: float, message: str = "", preview=None, **extra) -> None:
        """A progress event; ``preview``: an (H, W, 3) uint8 picture sent with it as one buffer (previews.py).
        ``progress`` (what status and follow show) keeps no picture."""
        with self._lock:
            if not self.live:
                return
            self.seq += 1
            self.progress = {"job": self.id, "fraction": round(min(max(fraction, 0.0), 1.0), 5), "message": message,
                             **extra, "seq": self.seq}
            if preview is None:
                self._publish("progress", self.progress)
                return
            height, width = preview.shape[:2]
            described = {"width": width, "height": height, "channels": 3, "dtype": "uint8",
                         "frame": extra.get("frame"), "buffer": 0}
            self._publish("progress", {**self.progress, "preview": described}, [preview], ["preview"])

    def opened_take(self, take) -> None:
        self.take_dir = str(take.dir)
        if self.on_take is not None:
            self.on_take(self, take)

    def finish(self, msg: protocol.Message, state: str) -> bool:
        """Send the one final reply to every subscriber; later calls do nothing. Drops the request's buffers."""
        with self._lock:
            if not self.live:
                return False
            if self.on_finish is not None:
                try:
                    self.on_finish(self, msg, state)
                except Exception:
                    log.exception("job %s: its end could not be recorded", self.id)
            self.seq += 1
            body = {"job": self.id, **msg.body, "seq": self.seq}
            try:
                self._publish(msg.type, body, msg.buffers, msg.meanings)
            except Exception as exc:   # a reply that cannot be built (say a NaN) must still end the job
                log.exception("job %s: its final reply could not be encoded", self.id)
                msg = protocol.error_message(None, errors.RequestError(
                    f"job {self.id} ended but its reply could not be sent: {type(exc).__name__}: {exc}",
                    code=errors.INTERNAL))
                body = {"job": self.id, **msg.body, "seq": self.seq}
                state = "failed"
                self._publish("error", body)
            self.state, self.final_type, self.summary, self.ended = state, msg.type, _summary(body), time.time()
            self.subscribers.clear()
            self.request = self.run = None        # the request's pixels go with it
        return True

    # -- called from the socket loop -----------------------------------------------------------
    def subscribe(self, peer: bytes, request_id: str, queue_position: int | None = None) -> None:
        """``peer`` follows this job: now its ``accepted`` (or, if it ended, its final reply), then its events."""
        with self._lock:
            if self.live:
                self.subscribers.append((peer, request_id))
                body = {"job": self.id, "state": self.state, "queue_position": queue_position, "seq": self.seq}
                if self.progress:
                    body["progress"] = self.progress
                self.send(peer, protocol.Message(type="accepted", id=request_id, body=body))
            else:
                self.send(peer, protocol.Message(type=self.final_type, id=request_id, body=self.summary))

    def unsubscribe_peer(self, peer: bytes) -> list[str]:
        """Stop sending ``peer`` this job's events; returns the request ids it followed the job with."""
        with self._lock:
            dropped = [rid for p, rid in self.subscribers if p == peer]
            self.subscribers = [s for s in self.subscribers if s[0] != peer]
        return dropped

    def describe(self) -> dict:
        # Under the lock: finish() sends the final reply before it records the end, and a client that heard
        # 'cancelled' and asks at once must not read 'running' in between.
        with self._lock:
            out = {"job": self.id, "operation": self.operation, "state": self.state, "progress": self.progress,
                   "created": self.created, "ended": self.ended, "take_dir": self.take_dir, "seq": self.seq}
            if self.summary is not None:
                out["final"] = {"type": self.final_type, "body": self.summary}
            if self.resumed is not None:
                out["resumed"] = self.resumed
            return out

    def _publish(self, mtype: str, body: dict, buffers=(), meanings=()) -> None:
        for peer, rid in self.subscribers:
            self.send(peer, protocol.Message(type=mtype, id=rid, body=body, buffers=list(buffers),
                                             meanings=list(meanings)))


def _summary(body: dict) -> dict:
    """A final body as an ended job keeps it: frame entries lose their buffer index (the pixels are not kept)."""
    frames = body.get("frames")
    if isinstance(frames, list) and any(isinstance(f, dict) and "buffer" in f for f in frames):
        body = {**body, "frames": [{k: v for k, v in f.items() if k != "buffer"} if isinstance(f, dict) else f
                                   for f in frames]}
    return body


class JobManager:
    """``max_queued`` jobs may wait (``busy`` past it), at most ``max_queued_per_peer`` from one connection."""

    def __init__(self, load_engine: Callable[[], None], instance: str, history: int = 1000, max_queued: int = 64,
                 max_queued_per_peer: int = 16, journal=None):
        self._load_engine = load_engine
        self._queue: collections.deque[Job] = collections.deque()
        self._cv = threading.Condition()
        self._jobs: dict[str, Job] = {}
        self._by_request: dict[tuple[bytes, str], str] = {}
        self._history = history
        self.max_queued = max_queued
        self.max_queued_per_peer = max_queued_per_peer
        self._ids = itertools.count(1)
        self._prefix = instance[:8]
        self._journal = journal
        self._durations: collections.deque[float] = collections.deque(maxlen=20)
        self._stopping = False
        self.state = "loading"
        self.load_error: str | None = None
        self.running: Job | None = None
        # Jobs that run beside the worker (``beside``: training in its own process, one at a time since two
        # side by side starve each other; pool jobs, which only wait on their replicas, several at once).
        self._beside_slots: dict[str, threading.BoundedSemaphore] = {}     # by operation
        self._beside: dict[str, Job] = {}
        self._thread = threading.Thread(target=self._work, name="bodydouble-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._stopping = True
            for job in [self.running, *self._beside.values()]:
                if job is not None:
                    job.stopped_by_server = True
                    job.cancel_event.set()
            self._cv.notify_all()
        self._thread.join(timeout)

    # -- called from the socket loop -------------------------------------------------------
    def check_request_id(self, peer: bytes, request_id: str) -> None:
        if (peer, request_id) in self._by_request:
            raise errors.RequestError(f"request id {request_id!r} was already used for a job on this connection; "
                                      "use a new id per request", code=errors.DUPLICATE_ID)

    def check_capacity(self, peer: bytes) -> None:
        """``busy`` (with ``retry_after`` seconds) when the queue, or this connection's share of it, is full."""
        with self._cv:
            total = len(self._queue)
            mine = sum(1 for job in self._queue if job.peer == peer)
        if total < self.max_queued and mine < self.max_queued_per_peer:
            return
        typical = sum(self._durations) / len(self._durations) if self._durations else 1.0
        retry = round(min(600.0, max(1.0, typical * max(1, mine if total < self.max_queued else total) / 2)), 1)
        which = "this server's queue" if total >= self.max_queued else "this connection's share of the queue"
        raise errors.Busy(f"{which} is full ({total} job(s) waiting); try again in {retry:g} s",
                          details={"retry_after": retry, "queued": total})

    def submit(self, peer: bytes | None, request_id: str, operation: str, request: object,
               run: Callable[[Job], protocol.Message], send: Send, on_admit: Callable[[Job], None] | None = None,
               on_finish: Callable | None = None, beside: int = 0, job_id: str | None = None,
               resumed: dict | None = None) -> Job:
        """Queue a job that passed every check; its ``accepted`` is sent before the worker can see it.

        ``on_admit(job)`` runs first (the audit line; if it raises, nothing is queued), ``on_finish`` before the
        job's final reply. ``peer`` None: nobody follows it yet (a job resumed at start-up, under its old
        ``job_id``; hosts re-attach with ``follow``)."""
        job = Job(id=job_id or f"job-{self._prefix}-{next(self._ids)}", peer=peer or b"", request_id=request_id,
                  operation=operation, request=request, run=run, send=send, on_take=self._take_opened,
                  on_finish=on_finish, beside=beside, resumed=resumed)
        if on_admit is not None:
            on_admit(job)
        with self._cv:
            self._jobs[job.id] = job
            position = len(self._queue) + (1 if self.running else 0)
            if peer is not None:
                self._by_request[(peer, request_id)] = job.id
                job.subscribe(peer, request_id, position)
            self._queue.append(job)
            self._trim()
            self._cv.notify()
        return job

    def ended(self, job_id: str, operation: str, error: errors.BodyDoubleError, send: Send,
              resumed: dict | None = None) -> Job:
        """Record a job that ends without running (a resume refused at start-up): status and follow by its id
        answer its error instead of ``unknown_job``."""
        job = Job(id=job_id, peer=b"", request_id="", operation=operation, request=None, run=None, send=send,
                  resumed=resumed)
        job.finish(protocol.error_message(None, error), "failed")
        with self._cv:
            self._jobs[job.id] = job
            self._trim()
        return job

    def find(self, job_ref: str, peer: bytes | None = None) -> Job:
        """A job by its id (from any connection), or by the request id that submitted it (that connection only)."""
        job = self._jobs.get(job_ref)
        if job is None and peer is not None:
            job = self._jobs.get(self._by_request.get((peer, job_ref), ""))
        if job is None:
            raise errors.RequestError(f"no job {job_ref!r} on this server (a restarted server knows none of the "
                                      "jobs of its previous run)", code=errors.UNKNOWN_JOB)
        return job

    def cancel(self, job_ref: str, peer: bytes | None = None) -> Job:
        job = self.find(job_ref, peer)
        if not job.live:
            raise errors.RequestError(f"job {job.id} already ended ({job.state})", code=errors.UNKNOWN_JOB)
        with self._cv:
            job.cancel_event.set()
            queued = job in self._queue or job.state == "queued"     # a job beside may wait for its turn
            if job in self._queue:
                self._queue.remove(job)
                self._announce_queue()
        if queued:   # it never started: nothing to stop, no take exists
            job.finish(protocol.error_message(None, errors.JobCancelled(f"job {job.id} cancelled before it started")),
                       "cancelled")
        return job

    def forget_peer(self, peer: bytes) -> list[tuple[str, str]]:
        """A connection went away: its jobs run on (their takes are written), nobody is told. Returns what it
        followed, (job id, request id), so a connection wrongly taken for gone can be given it back."""
        with self._cv:
            live = [j for j in self._jobs.values() if j.live]
        return [(job.id, rid) for job in live for rid in job.unsubscribe_peer(peer)]

    def followed_peers(self) -> set[bytes]:
        with self._cv:
            return {peer for job in self._jobs.values() if job.live for peer, _ in job.subscribers}

    def counts(self) -> dict:
        with self._cv:
            return {"queued": len(self._queue), "running": (1 if self.running else 0) + len(self._beside)}

    def _trim(self) -> None:
        ended = [j for j in self._jobs.values() if not j.live]
        for job in ended[: max(0, len(self._jobs) - self._history)]:
            self._jobs.pop(job.id, None)
            self._by_request.pop((job.peer, job.request_id), None)

    def _take_opened(self, job: Job, take) -> None:
        if self._journal is not None:
            self._journal.opened(job.id, take)

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
                        job.finish(protocol.error_message(None, errors.RequestError(
                            "the server is shutting down", code=errors.JOB_FAILED)), "failed")
                    self._queue.clear()
                    return
                job = self._queue.popleft()
                if job.beside:
                    threading.Thread(target=self._run_beside, args=(job,), name=f"bodydouble-{job.id}",
                                     daemon=True).start()
                    continue
                self.running = job
                job.state = "running"
                self._announce_queue()
            started = time.monotonic()
            try:
                reply, state = self._outcome(job)
            finally:
                self._durations.append(time.monotonic() - started)
                if self._journal is not None:
                    self._journal.closed(job.id)
                with self._cv:
                    self.running = None
            job.finish(reply, state)      # after the bookkeeping: the final reply means the worker is free

    def _announce_queue(self) -> None:
        """(Under the lock.) Each queued job's followers hear its new place when the queue moves: a host's jobs
        panel counts down instead of showing the place the job had when it was sent."""
        ahead = 1 if self.running else 0
        for index, waiting in enumerate(self._queue):
            position = index + ahead
            waiting.report(0.0, f"queued: {position} ahead" if position else "queued: next", queue_position=position)

    def _run_beside(self, job: Job) -> None:
        with self._cv:
            slots = self._beside_slots.setdefault(job.operation, threading.BoundedSemaphore(job.beside))
        with slots:
            with self._cv:
                if not job.live or job.cancel_event.is_set():
                    return                 # cancelled while it waited for its turn (cancel() replied)
                job.state = "running"
                self._beside[job.id] = job
            try:
                reply, state = self._outcome(job)
            finally:
                if self._journal is not None:
                    self._journal.closed(job.id)
                with self._cv:
                    self._beside.pop(job.id, None)
            job.finish(reply, state)

    def _outcome(self, job: Job) -> tuple[protocol.Message, str]:
        """Run the job; its final reply and state (sent by the caller once the job's slot is free)."""
        if self.state == "failed":
            return protocol.error_message(None, errors.RequestError(
                f"the server's model failed to load: {self.load_error}", code=errors.MODEL_UNAVAILABLE)), "failed"
        try:
            return job.run(job), "complete"
        except Cancelled:
            return protocol.error_message(None, errors.JobCancelled(f"job {job.id} cancelled")), "cancelled"
        except errors.JobCancelled as exc:   # a job that says what it kept (training: the last checkpoint)
            return protocol.error_message(None, exc), "cancelled"
        except errors.BodyDoubleError as exc:
            return protocol.error_message(None, exc), "failed"
        except Exception as exc:  # the server survives any job
            log.error("job %s crashed:\n%s", job.id, traceback.format_exc())
            return protocol.error_message(None, errors.JobFailed(
                f"job {job.id} failed: {type(exc).__name__}: {exc}")), "failed"


class ResumeJournal(JobJournal):
    """Accepted jobs of a resumable operation, so a restart can take them up again: ``{operation, request (its
    wire body: JSON, never buffers), request_id, requester, instance, created}``, written when the job is
    accepted and removed when it ends (any final reply)."""

    def started(self, job: Job, operation: str, body: dict, request_id: str, requester: dict, instance: str) -> None:
        """Raises OSError when it cannot be written: a resumable job is never accepted without its entry."""
        self.write(job.id, {"operation": operation, "request": body, "request_id": request_id,
                            "requester": requester, "instance": instance, "created": job.created})

    def ended(self, job_id: str) -> None:
        self.remove(job_id)

    def pending(self) -> list[dict]:
        """The entries of dead servers, oldest first."""
        found = []
        for entry, data in self.left_over():
            if isinstance(data.get("job"), str) and isinstance(data.get("request"), dict):
                found.append(data)
            else:
                log.warning("removing resume entry %s: not a job", entry)
                entry.unlink(missing_ok=True)
        return sorted(found, key=lambda d: d.get("created") or 0)
