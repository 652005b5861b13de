"""The thin client hosts use: connect, hello, list adapters, submit, progress, cancel, result.

Safe to use from a host's background thread while its UI thread cancels: every call goes
through :class:`~bodydouble.connection.Connection`, which owns the socket on its own thread.

    with Client("tcp://127.0.0.1:5555") as client:
        job = client.submit(FillRequest(frames=sequence_frames("plate.####.exr", 1001, 1010), ...))
        result = job.wait(on_progress=lambda p: print(p.fraction))
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from . import __version__, codec, errors, protocol
from .curve import keys_from_env
from .jobspec import MODEL_KINDS

DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"


@dataclass
class Progress:
    job: str
    fraction: float
    message: str = ""
    frame: int | None = None
    step: int | None = None
    steps: int | None = None
    raw: dict = field(default_factory=dict)
    # A live preview (docs/protocol.md, "Live previews"): (H, W, 3) uint8 RGB, display-referred, top row first,
    # read-only (it wraps the received bytes: copy it to change it); None on most events (the server sends one at
    # most every PreviewOptions.every_ms).
    preview: np.ndarray | None = None


def preview_of(body: dict, buffers: list[np.ndarray]) -> np.ndarray | None:
    """A progress event's preview picture, or None when it has none (or one that is not what it says)."""
    spec = body.get("preview")
    if not isinstance(spec, dict) or not buffers:
        return None
    index = spec.get("buffer", 0)
    if type(index) is not int or not 0 <= index < len(buffers):
        return None
    image = buffers[index]
    if image.dtype != np.uint8 or image.shape != (spec.get("height"), spec.get("width"), 3):
        return None
    return image


@dataclass
class JobResult:
    job: str
    operation: str
    take_dir: str
    take: int
    pattern: str
    first: int
    last: int
    frames: dict[int, str]
    info: dict
    pixels: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass
class TrainResult:
    """The final reply of a train job: the published adapter, or (``report_only``) the data report alone."""

    job: str
    adapter: str | None            # None for report_only
    adapter_dir: str | None
    ok_to_train: bool
    report: dict                   # report_only: the full report; else the summary kept in the manifest
    summary: str                   # the report as lines a person reads
    metrics: list[dict]            # per checkpoint: step, loss, held-out score
    info: dict

    @classmethod
    def from_body(cls, body: dict) -> "TrainResult":
        return cls(job=body["job"], adapter=body.get("adapter"), adapter_dir=body.get("adapter_dir"),
                   ok_to_train=bool(body.get("ok_to_train")), report=body.get("report") or {},
                   summary=body.get("summary", ""), metrics=body.get("metrics") or [], info=body)


@dataclass
class AdapterInfo:
    name: str
    character: str
    trigger: str
    base_model: str
    status: str                # "ready" | "incompatible" | "invalid" | "not_permitted" (consent, retired)
    reason: str = ""
    family: str = ""
    sha256: str = ""
    raw: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """What a host's adapter picker shows (a video adapter trained for one job says which)."""
        return f"{self.character} ({self.name}) · {self.base_model}" + \
            (f" · for {self.trained_for}" if self.trained_for else "")

    @property
    def trained_for(self) -> str:
        """``fill`` or ``extend`` for a video adapter trained for that job alone, else ""."""
        return self.raw.get("trained_for", "")

    @property
    def model_kind(self) -> str:
        """``image`` (the server's fill model) or ``video`` (its extend model)."""
        return self.raw.get("model_kind", "image")

    def serves(self, operation: str) -> bool:
        """Trained for the model that runs ``operation`` (fill: image, extend: video), whatever its status."""
        return self.model_kind == MODEL_KINDS.get(operation, "image")


class Job:
    """A submitted job: iterate its progress, wait for its result, cancel it from any thread."""

    def __init__(self, client: "Client", rid: str, inbox: queue.SimpleQueue, keepalive: list):
        self._client = client
        self.request_id = rid
        self._inbox = inbox
        self._keepalive = keepalive  # arrays sent zero-copy must outlive the send
        self.job_id: str | None = None
        self.queue_position: int | None = None
        self.progress: Progress | None = None
        self._final: protocol.Message | None = None
        self._answered = False       # an `accepted` arrived
        self._lock = threading.Lock()

    @property
    def done(self) -> bool:
        return self._final is not None

    @property
    def answered(self) -> bool:
        """The server answered the submit (or follow): ``job_id`` and ``queue_position`` are its."""
        return self._answered

    def events(self, timeout: float | None = None) -> Iterator[Progress]:
        """Yield progress until the job ends (then :meth:`wait` returns or raises at once)."""
        while self._final is None:
            msg = self._next(timeout)
            if msg.type == "progress":
                yield self.progress  # type: ignore[misc]

    def accepted(self, timeout: float | None = None) -> str:
        """Block until the server answered the submit (or follow): queued, or ended; returns the job's id."""
        while not self._answered and self._final is None:
            self._next(timeout)
        return self.job_id or self.request_id

    def wait(self, timeout: float | None = None,
             on_progress: Callable[[Progress], None] | None = None) -> "JobResult | TrainResult":
        for progress in self.events(timeout):
            if on_progress:
                on_progress(progress)
        return self._result()

    def reattach(self) -> "Job":
        """A new handle following this job by its id (after ``ServerUnavailable``, or from another client)."""
        if self.job_id is None:
            raise errors.BodyDoubleError("this job was never accepted by the server; submit it again")
        return self._client.follow(self.job_id)

    def cancel(self) -> None:
        """Ask the server to stop this job at the next step. ``wait`` then raises JobCancelled."""
        if self._final is not None:
            return
        job_id = self.job_id or self.request_id
        try:
            self._client.request("cancel", {"job": job_id})
        except errors.RequestError as exc:
            if exc.code != errors.UNKNOWN_JOB:  # it finished meanwhile: nothing to cancel
                raise

    # -- internals -------------------------------------------------------------------------
    def _next(self, timeout: float | None) -> protocol.Message:
        # No heartbeat here: the connection's I/O thread watches the server and puts a server_unavailable
        # error in this inbox when it stops answering, so an untimed wait always ends.
        try:
            msg = self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise errors.RequestTimeout(f"job {self.job_id or self.request_id} still running after {timeout} s") from None
        self._apply(msg)
        return msg

    def _apply(self, msg: protocol.Message) -> None:
        body = msg.body
        if msg.type == "accepted":
            self._answered = True
            self.job_id = body.get("job")
            self.queue_position = body.get("queue_position")
            if self.job_id:
                self._client._conn.attach_job(self.request_id, self.job_id)
        elif msg.type == "progress":
            if "queue_position" in body:          # still queued: its place moved
                self.queue_position = body["queue_position"]
            self.progress = Progress(
                job=body.get("job", ""), fraction=float(body.get("fraction", 0.0)), message=body.get("message", ""),
                frame=body.get("frame"), step=body.get("step"), steps=body.get("steps"), raw=body,
                preview=preview_of(body, msg.buffers),
            )
        elif msg.final:
            self._final = msg
            self._keepalive.clear()
            self._client._conn.release(self.request_id)

    def _result(self) -> "JobResult | TrainResult":
        msg = self._final
        assert msg is not None
        if msg.type == "error":
            raise errors.error_from_reply(msg.body.get("code", "error"), msg.body.get("message", ""), msg.body.get("details"))
        body = msg.body
        if body.get("operation") == "train":
            return TrainResult.from_body(body)
        pixels = {}
        for entry in body.get("frames", []):
            if "buffer" in entry:
                pixels[entry["frame"]] = msg.buffers[entry["buffer"]]
        return JobResult(
            job=body["job"], operation=body["operation"], take_dir=body["take_dir"], take=body["take"],
            pattern=body["pattern"], first=body["first"], last=body["last"],
            frames={e["frame"]: e["path"] for e in body.get("frames", [])}, info=body, pixels=pixels,
        )


class Client:
    """``address``: ``tcp://host:port`` (``host:port`` gets ``tcp://`` added; anything else raises BadAddress at
    once). ``connect_timeout``: how long ``connect`` waits for the server's hello before ServerNotRunning.
    ``heartbeat_interval``: a server silent for 3 intervals while a request or job waits is declared lost
    (those get ServerUnavailable) and the connection reconnects by itself."""

    def __init__(self, address: str = DEFAULT_ADDRESS, timeout: float = 10.0, name: str = "bodydouble-python",
                 heartbeat_interval: float = 2.0, curve: dict | None = None, connect_timeout: float = 5.0,
                 user: str | None = None):
        from .connection import Connection

        # Who submits, for the server's consent rules and audit log: self-asserted (a CURVE key is verified).
        self.user = user or _local_user()

        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.name = name
        self.heartbeat_interval = heartbeat_interval
        # curve None: the certificates the environment names (see curve.py), else plain TCP.
        self._conn = Connection(address, curve=curve if curve is not None else keys_from_env(),
                                heartbeat_interval=heartbeat_interval)
        self.address = self._conn.address
        self.server_info: dict | None = None

    def __enter__(self) -> "Client":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    # -- requests ------------------------------------------------------------------------
    def connect(self) -> dict:
        """Check the server is there and speaks our protocol; returns its capabilities."""
        limit = min(self.timeout, self.connect_timeout)
        self._conn.probe(timeout=min(1.0, limit))
        try:
            self.server_info = self.request("hello", {"client": self.name, "client_version": __version__},
                                            timeout=limit)
        except (errors.RequestTimeout, errors.ServerLost):
            if self._conn.encrypted:   # a CURVE server that refuses a key says nothing, by design
                why = ("The server may have refused this client's CURVE key (its log says DENIED): check that the "
                       "server certificate is the right one and that this client's public key is authorised.")
            else:
                why = "Is `bodydouble serve` running there (and not another program on that port)?"
            raise errors.ServerNotRunning(
                f"Nothing at {self.address} answered a BodyDouble hello within {limit:g} s. {why}") from None
        except errors.RequestError as exc:
            if exc.code in (errors.PROTOCOL_MISMATCH, errors.BAD_TAG):
                raise errors.ProtocolMismatch(exc.message) from None
            raise
        return self.server_info

    hello = connect

    def wait_ready(self, timeout: float = 120.0) -> dict:
        """Block until the server has loaded its model; returns the hello capabilities."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.connect()
            if info["state"] == "ready":
                return info
            if info["state"] == "failed":
                raise errors.RequestError(f"the server's model failed to load: {info.get('load_error')}",
                                          code=errors.MODEL_UNAVAILABLE)
            if time.monotonic() > deadline:
                raise errors.RequestTimeout(f"server at {self.address} still loading its model after {timeout} s")
            time.sleep(0.1)

    def request(self, mtype: str, body: dict | None = None, buffers: list[np.ndarray] | None = None,
                timeout: float | None = None) -> dict:
        """Send one request and return the body of its final ``result`` (raise on ``error``)."""
        rid, inbox = self._conn.open()
        try:
            self._conn.send(protocol.Message(type=mtype, id=rid, body=body or {}, buffers=buffers or []))
            limit = self.timeout if timeout is None else timeout
            deadline = time.monotonic() + limit
            while True:
                remaining = deadline - time.monotonic()
                try:
                    msg = inbox.get(timeout=max(0.0, remaining))
                except queue.Empty:
                    raise errors.RequestTimeout(f"server at {self.address} did not answer {mtype!r} within {limit} s") from None
                if msg.final:
                    break
            if msg.type == "error":
                raise errors.error_from_reply(msg.body.get("code", "error"), msg.body.get("message", ""), msg.body.get("details"))
            return msg.body
        finally:
            self._conn.release(rid)

    def ensure_alive(self) -> None:
        """Heartbeat; raises ServerLost when the server stopped answering."""
        try:
            self.request("heartbeat", timeout=self.timeout)
        except errors.RequestTimeout:
            raise errors.ServerLost(f"the server at {self.address} stopped answering") from None

    def heartbeat(self) -> dict:
        return self.request("heartbeat")

    def list_adapters(self) -> list[AdapterInfo]:
        body = self.request("list_adapters")
        return [
            AdapterInfo(name=a["name"], character=a.get("character", a["name"]), trigger=a.get("trigger", ""),
                        base_model=a.get("base_model", ""), **_usability(a), family=a.get("family", ""),
                        sha256=a.get("sha256", ""), raw=a)
            for a in body["adapters"]
        ]

    def rescan(self) -> list[AdapterInfo]:
        self.request("rescan", timeout=max(self.timeout, 120))
        return self.list_adapters()

    def status(self, job_id: str) -> dict:
        """A job's state by its id, from any connection (``unknown_job`` after a server restart)."""
        return self.request("status", {"job": job_id})

    def follow(self, job_id: str) -> Job:
        """Re-attach to a job by its id (after a reconnect, or from another process): a :class:`Job` whose
        events continue from now (its ``accepted`` carries the latest progress) or end at once if it ended."""
        rid, inbox = self._conn.open("job")
        job = Job(self, rid, inbox, keepalive=[])
        job.job_id = job_id
        self._conn.attach_job(rid, job_id)
        self._conn.send(protocol.Message(type="follow", id=rid, body={"job": job_id}))
        return job

    def cancel(self, job_id: str) -> dict:
        return self.request("cancel", {"job": job_id})

    def submit(self, request) -> Job:
        """Submit an operation request (e.g. ``FillRequest``); returns at once with a :class:`Job`."""
        buffers: list[np.ndarray] = []
        meanings: list[str] = []
        body = codec.to_wire(request, buffers, meanings)
        body["operation"] = request.operation
        body["user"] = self.user
        rid, inbox = self._conn.open("job")
        job = Job(self, rid, inbox, keepalive=buffers)
        self._conn.send(protocol.Message(type="submit", id=rid, body=body, buffers=buffers, meanings=meanings))
        return job


def _usability(entry: dict) -> dict:
    """status/reason as a picker needs them: a ready adapter the server's policy does not let anyone use (no
    consent record, expired, retired) is ``not_permitted`` with the policy's reason, so every host greys it out."""
    status, reason = entry.get("status", ""), entry.get("reason", "")
    policy = entry.get("policy") or {}
    if status == "ready" and policy.get("usable") is False:
        status, reason = "not_permitted", policy.get("reason", "")
    return {"status": status, "reason": reason}


def _local_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:      # no login name (some containers, services): the server records "unknown"
        return "unknown"
