"""The ZeroMQ front: a ROUTER socket loop that answers small requests itself and queues jobs.

Only the loop thread touches the ROUTER socket, and the loop never waits on itself:

* Every reply, from any thread, is encoded by its sender and appended to one thread-safe deque (the
  outbox), in order; a worker then pokes the loop through an inproc PUSH with NOBLOCK (a full wake-up
  pipe means a wake-up is already pending, so it is dropped, never waited on). The loop drains the whole
  outbox each turn.
* Sends on the ROUTER never block: a client that reads slowly gets its replies from a per-connection
  backlog as its pipe drains; a client that went away (EHOSTUNREACH) is forgotten.
* The loop reads at most ``_BATCH`` messages a turn; ZeroMQ's ROUTER takes them round-robin across
  connections, so one flooding connection cannot starve another's ``hello``.
* The job queue is bounded: past it a submit gets ``busy`` with ``retry_after`` (jobs.py).
* No input ends the loop: any exception while decoding or handling one message becomes that message's
  coded ``error``.
* Dead clients are noticed by their silence, not only when ZeroMQ says so (a half-open TCP connection can
  look alive for hours): a connection that announced its heartbeat interval and then says nothing for
  ``LIVENESS`` of those intervals (at least ``LIVENESS_FLOOR`` s) is dropped: its follows and reply backlog
  go, nothing more is queued to it, its jobs run on (any connection re-attaches by job id). If it speaks
  again after all (a host frozen for a while), its follows are given back, so it never waits on silence.
"""
from __future__ import annotations

import collections
import dataclasses
import errno
import ipaddress
import logging
import threading
import time
import uuid
from pathlib import Path

import zmq

from bodydouble import __version__, atomic, codec, errors, protocol
from bodydouble.jobspec import OPERATIONS as REQUEST_TYPES

from .config import ServerConfig
from .engine import Engine
from .imaging import colour
from .jobs import Job, JobManager, ResumeJournal
from .operations import OPERATIONS
from .takes import Journal

log = logging.getLogger("bodydouble.server")

_BATCH = 256                 # messages read per loop turn before the outbox is flushed again
_BACKLOG_LIMIT = 100_000     # replies held for one slow reader before its oldest are dropped
HEARTBEAT_INTERVAL = 1.0     # seconds between the server's heartbeats to connections following a job
LIVENESS = 3                 # a watched connection silent for 3 of its announced heartbeat intervals is gone...
LIVENESS_FLOOR = 3.0         # ...but never sooner than this (a loaded workstation, a GC pause)
MAX_CLIENT_INTERVAL = 60.0   # announced intervals above this count as this (a window stays minutes, not days)
_PARKED_LIMIT = 1024         # dropped connections whose follows are kept in case they speak again (oldest go)


class Server:
    def __init__(self, config: ServerConfig):
        self.config = config
        self.limits = config.limits
        self.instance = uuid.uuid4().hex    # changes at every start: a client that sees it change re-attaches
        if config.pool:     # work runs on a Ray Serve GPU pool; this process checks, queues and assembles
            from .scale.pool import gateway

            self.engine, self.operations = gateway(config)
        else:
            self.engine, self.operations = Engine(config), OPERATIONS
        self.journal = Journal(Path(config.output_root) / ".bodydouble" / "running")
        self.resume_journal = ResumeJournal(Path(config.output_root) / ".bodydouble" / "resume")
        self.jobs = JobManager(self.engine.load, self.instance, journal=self.journal)
        self._ctx = zmq.Context()
        self._stop = threading.Event()
        self._authenticator = None
        self.bound_address: str | None = None
        self.started = time.time()
        self._router: zmq.Socket | None = None
        self._outbox: collections.deque = collections.deque()     # (peer, frames), any thread appends
        self._backlog: dict[bytes, collections.deque] = {}         # loop thread only
        self._dropping: set[bytes] = set()                          # peers whose backlog overflowed
        self._wake_addr = f"inproc://bodydouble-wake-{self.instance}"
        self._wake_pull: zmq.Socket | None = None
        self._wake_push: zmq.Socket | None = None
        self._wake_lock = threading.Lock()
        self._loop_thread: int | None = None
        self._curve_user: str | None = None     # loop thread: the verified CURVE key of the message being handled
        self._last_frame = None                 # loop thread: a frame of that message (its connection's metadata)
        self._next_beat = 0.0
        self._last_turn = time.monotonic()
        # Connections that announced a heartbeat interval: peer -> [last heard (monotonic), liveness window];
        # loop thread only. Connections that never announce one are not watched (see docs/protocol.md).
        self._watched: dict[bytes, list[float]] = {}
        self.connections_dropped = 0            # connections declared gone by their silence (liveness stat)
        # Dropped connections' follows, (job id, request id)s: given back if the connection speaks again.
        self._parked: collections.OrderedDict[bytes, list[tuple[str, str]]] = collections.OrderedDict()

    # -- lifecycle -------------------------------------------------------------------------
    def bind(self) -> str:
        self.recover()
        router = self._ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a vanished client raises instead of queueing forever
        if self.config.curve_certificate:
            self._enable_curve(router)
        elif self.config.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("listening on %s without CURVE: anyone who can reach this port can use the server and "
                        "read its replies; set curve_certificate for use across a network", self.config.host)
        port = self.config.port
        if port == 0:
            port = router.bind_to_random_port(f"tcp://{self.config.host}")
        else:
            router.bind(f"tcp://{self.config.host}:{port}")
        self._router = router
        self._wake_pull = self._ctx.socket(zmq.PULL)
        self._wake_pull.setsockopt(zmq.RCVHWM, 8)
        self._wake_pull.bind(self._wake_addr)
        self._wake_push = self._ctx.socket(zmq.PUSH)
        self._wake_push.setsockopt(zmq.SNDHWM, 8)
        self._wake_push.setsockopt(zmq.LINGER, 0)
        self._wake_push.connect(self._wake_addr)
        self.bound_address = f"tcp://{self.config.host}:{port}"
        return self.bound_address

    def recover(self) -> None:
        """What a killed predecessor left: its running takes become ``interrupted``, temporaries go."""
        for take_dir in self.journal.recover():
            log.warning("take %s was interrupted by a server stop; marked so", take_dir)
        atomic.sweep(self.config.adapters)    # half-published adapter folders

    def _enable_curve(self, router: zmq.Socket) -> None:
        """Encrypt (and, with an authorised-clients folder, authenticate) every connection."""
        import zmq.auth
        from zmq.auth.thread import ThreadAuthenticator

        public, secret = zmq.auth.load_certificate(self.config.curve_certificate)
        if secret is None:
            raise errors.BodyDoubleError(f"{self.config.curve_certificate} holds no secret key")
        self._authenticator = ThreadAuthenticator(self._ctx, log=_DeniedIsAWarning(log))
        self._authenticator.start()
        clients = self.config.curve_authorized_clients
        self._authenticator.configure_curve(domain="*", location=clients if clients else zmq.auth.CURVE_ALLOW_ANY)
        router.curve_server = True
        router.curve_publickey, router.curve_secretkey = public, secret

    def serve_forever(self) -> None:
        if self._router is None:
            self.bind()
        self._loop_thread = threading.get_ident()
        self.resume_jobs()
        self.jobs.start()
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._wake_pull, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                timeout = 5 if self._backlog else 200
                for sock, _ in poller.poll(timeout):
                    if sock is self._router:
                        self._read_batch()
                    else:
                        self._drain_wake()
                self.engine.policy.audit.sync()   # the batch's audit lines on disk before its replies leave
                self._flush()
                self._beat()
        finally:
            self.jobs.stop()
            self._flush()
            with self._wake_lock:        # a worker may be waking us right now
                self._wake_push.close(linger=0)
                self._wake_push = None
            for sock in (self._router, self._wake_pull):
                sock.close(linger=0)
            if self._authenticator is not None:
                self._authenticator.stop()
            self._ctx.term()

    def stop(self) -> None:
        self._stop.set()
        self._wake()

    # -- outgoing ------------------------------------------------------------------------
    def send(self, peer: bytes, msg: protocol.Message) -> None:
        """Thread-safe and never blocking: encode ``msg`` and queue it for the loop, in order."""
        self._outbox.append((peer, protocol.encode(msg)))
        if threading.get_ident() != self._loop_thread:
            self._wake()

    def _wake(self) -> None:
        with self._wake_lock:
            if self._wake_push is None:   # not bound yet, or closed
                return
            try:
                self._wake_push.send(b"", zmq.NOBLOCK)
            except zmq.Again:
                pass        # the wake-up pipe is full: a wake-up is already pending

    def _drain_wake(self) -> None:
        while True:
            try:
                self._wake_pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def _flush(self) -> None:
        """Outbox -> ROUTER, keeping each connection's replies in order; loop thread only."""
        for peer in list(self._backlog):
            queue = self._backlog[peer]
            while queue and self._try_send(peer, queue[0]):
                queue.popleft()
            if not queue:
                self._backlog.pop(peer, None)
                self._dropping.discard(peer)
        while True:
            try:
                peer, frames = self._outbox.popleft()
            except IndexError:
                return
            queue = self._backlog.get(peer)
            if queue is None and self._try_send(peer, frames):
                continue
            if queue is None:
                queue = self._backlog[peer] = collections.deque()
            if len(queue) >= _BACKLOG_LIMIT:
                queue.popleft()
                if peer not in self._dropping:        # one line per episode, not per reply
                    self._dropping.add(peer)
                    log.warning("connection %s reads no replies; dropping its oldest", peer.hex())
            queue.append(frames)

    def _try_send(self, peer: bytes, frames: list) -> bool:
        """True when sent (or dropped because the client is gone); False when its pipe is full."""
        try:
            self._router.send_multipart([peer, *frames], flags=zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            if exc.errno != errno.EHOSTUNREACH and exc.errno != zmq.EHOSTUNREACH:
                raise
            # Debug only: a flood of replies to a vanished client must not become a flood of log lines.
            log.debug("client %s went away; dropped a reply (a job's files are still written)", peer.hex())
            self._drop_peer(peer)
            return True

    def _drop_peer(self, peer: bytes) -> tuple[list[tuple[str, str]], int]:
        """Forget a connection that is gone: its follows, its reply backlog, its liveness entry. Its jobs run on.
        Returns (its follows as (job id, request id), replies dropped)."""
        backlog = self._backlog.pop(peer, None)
        self._dropping.discard(peer)
        self._watched.pop(peer, None)
        return self.jobs.forget_peer(peer), len(backlog or ())

    def _restore(self, peer: bytes) -> None:
        """A connection declared gone spoke again: it follows its jobs again (an ``accepted`` with the job's
        progress, or the final reply of one that ended meanwhile), so it never waits on events it will not get."""
        follows = self._parked.pop(peer)
        log.warning("connection %s spoke again after it was declared gone; %d follow(s) given back", peer.hex(),
                    len(follows))
        for job_id, rid in follows:
            try:
                self.jobs.find(job_id).subscribe(peer, rid)
            except errors.BodyDoubleError:      # forgotten meanwhile (history trimmed): as for a restarted server
                self.send(peer, protocol.error_message(rid, errors.RequestError(
                    f"no job {job_id!r} on this server any more", code=errors.UNKNOWN_JOB)))

    def _watch(self, peer: bytes, interval) -> None:
        """``peer`` announced its heartbeat interval: from now on a silence of LIVENESS of them drops it."""
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 < interval < float("inf"):
            raise errors.RequestError("a heartbeat interval must be a positive number of seconds",
                                      code=errors.INVALID_REQUEST)
        window = max(LIVENESS_FLOOR, LIVENESS * min(float(interval), MAX_CLIENT_INTERVAL))
        self._watched[peer] = [time.monotonic(), window]

    def _check_liveness(self, now: float) -> None:
        """Drop the watched connections silent for their window (loop thread, once per server beat)."""
        for peer, (heard, window) in list(self._watched.items()):
            if now - heard <= window:
                continue
            follows, replies = self._drop_peer(peer)
            if follows or replies:       # an idle client that stopped beating held nothing: forgotten quietly
                self.connections_dropped += 1
                if follows:
                    self._parked[peer] = follows
                    while len(self._parked) > _PARKED_LIMIT:
                        self._parked.popitem(last=False)
                log.warning("connection %s silent for %.1f s (its liveness window is %.1f s): declared gone; "
                            "dropped %d follow(s) and %d unsent repl(ies); its jobs run on and can be re-attached "
                            "by job id", peer.hex(), now - heard, window, len(follows), replies)
            else:
                log.debug("idle connection %s stopped beating; forgotten", peer.hex())

    def _beat(self) -> None:
        """Server -> client heartbeats (Paranoid Pirate): connections following a job hear from us every interval."""
        now = time.monotonic()
        stalled = now - self._last_turn > HEARTBEAT_INTERVAL     # this loop itself was held up (unread beats wait)
        self._last_turn = now
        if now < self._next_beat:
            return
        self._next_beat = now + HEARTBEAT_INTERVAL
        if not stalled:
            self._check_liveness(now)
        peers = self.jobs.followed_peers()
        if peers:
            beat = protocol.encode(protocol.Message(type="heartbeat", id=None, body=self._liveness()))
            for peer in peers:
                self._outbox.append((peer, beat))
            self._flush()

    def _liveness(self) -> dict:
        return {"instance": self.instance, "time": time.time(), "state": self.jobs.state,
                "uptime": time.time() - self.started, "heartbeat_interval": HEARTBEAT_INTERVAL, **self.jobs.counts(),
                "connections": {"watched": len(self._watched), "dropped": self.connections_dropped}}

    # -- incoming ------------------------------------------------------------------------
    def _read_batch(self) -> None:
        for _ in range(_BATCH):
            try:
                frames = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            peer, rest = frames[0].bytes, frames[1:]
            watched = self._watched.get(peer)
            if watched is not None:
                watched[0] = time.monotonic()      # any message counts as a heartbeat
            elif peer in self._parked:
                self._restore(peer)
            self._curve_user = _curve_user_id(frames[-1]) if self._authenticator is not None else None
            self._last_frame = frames[-1]
            try:
                self._handle(peer, rest)
            except Exception:  # a bug answering the error itself: log it, keep the loop
                log.exception("could not answer a message from %s", peer.hex())

    def _handle(self, peer: bytes, frames: list) -> None:
        try:
            msg = protocol.decode(frames, self.limits)
        except errors.BodyDoubleError as exc:
            log.debug("refused a malformed message from %s: %s", peer.hex(), exc)   # answered; not worth a line each
            self.send(peer, protocol.error_message(protocol.peek_id(frames), exc))
            return
        try:
            if msg.id is None:
                raise errors.ProtocolError("requests need an 'id'")
            allowed = _BODY_KEYS.get(msg.type)
            if allowed is not None and set(msg.body) - allowed:
                raise errors.RequestError(f"{msg.type}: unknown fields {sorted(set(msg.body) - allowed)}",
                                          code=errors.INVALID_REQUEST)
            getattr(self, f"_on_{msg.type}")(peer, msg)
        except errors.BodyDoubleError as exc:
            self.send(peer, protocol.error_message(msg.id, exc))
        except Exception as exc:  # never let one request take the loop down
            log.exception("request %s failed", msg.type)
            self.send(peer, protocol.error_message(msg.id, errors.RequestError(
                f"internal error handling {msg.type}: {type(exc).__name__}: {exc}", code=errors.INTERNAL)))

    def _reply(self, peer: bytes, msg: protocol.Message, body: dict) -> None:
        self.send(peer, protocol.Message(type="result", id=msg.id, body=body))

    def _on_hello(self, peer: bytes, msg: protocol.Message) -> None:
        if "heartbeat_interval" in msg.body:
            self._watch(peer, msg.body["heartbeat_interval"])
        caps = self.capabilities()
        self._reply(peer, msg, caps if self._shows_paths() else withhold_paths(caps))

    def _shows_paths(self) -> bool:
        """Whether the message being handled may see the server's folders and model path: it came over loopback
        (someone on this machine, who can read the config anyway), or this server authorises CURVE keys and so
        every peer that got through is a listed studio client. Anyone else gets names and counts only."""
        if self._curve_user and self.config.curve_authorized_clients:
            return True
        try:
            address = self._last_frame.get("Peer-Address")
        except (zmq.ZMQError, AttributeError, UnicodeDecodeError):
            return False
        return _is_loopback(address)

    def capabilities(self) -> dict:
        engine = self.engine
        ready = self.jobs.state == "ready"
        return {
            "server": "bodydouble", "version": __version__, "protocol": protocol.VERSION,
            "instance": self.instance, "heartbeat_interval": HEARTBEAT_INTERVAL,
            "state": self.jobs.state, "load_error": self.jobs.load_error,
            "model": engine.describe() if ready else None,
            "operations": engine.operations if ready else [],
            "known_operations": sorted(REQUEST_TYPES),
            "limits": self.limits.to_dict(),
            "queue": {"max_queued": self.jobs.max_queued, "max_queued_per_connection": self.jobs.max_queued_per_peer},
            "paths": "shown", "output_root": self.config.output_root,
            "roots": [str(r) for r in engine.roots.roots], "roots_count": len(engine.roots.roots),
            "adapters_dir": self.config.adapters,
            "policy": engine.policy.describe(engine.adapter_listing() if ready else []),
            "colour": colour.server_colour(),       # hosts compare their OCIO config with it (host.colour_note)
        }

    def _on_heartbeat(self, peer: bytes, msg: protocol.Message) -> None:
        if "interval" in msg.body:
            self._watch(peer, msg.body["interval"])
        self._reply(peer, msg, self._liveness())

    def _on_list_adapters(self, peer: bytes, msg: protocol.Message) -> None:
        engine = self.engine
        self._reply(peer, msg, {"adapters": engine.adapter_listing(), "state": self.jobs.state,
                                "base_model": engine.identity.to_dict() if engine.identity else None,
                                "video_model": engine.video.identity.to_dict() if engine.video else None})

    def _on_rescan(self, peer: bytes, msg: protocol.Message) -> None:
        def run(job: Job) -> protocol.Message:
            self.engine.rescan()
            return protocol.Message(type="result", id=None, body={"adapters": self.engine.adapter_listing()})

        self.jobs.check_request_id(peer, msg.id)
        self.jobs.check_capacity(peer)
        self.jobs.submit(peer, msg.id, "rescan", None, run, self.send)

    def _on_submit(self, peer: bytes, msg: protocol.Message) -> None:
        operation, request, admission = self.admit(peer, msg)
        self._queue(peer, msg.id, operation, request, admission)

    def _queue(self, peer: bytes | None, request_id: str, operation: str, request, admission,
               job_id: str | None = None, resumed: dict | None = None) -> Job:
        """An admitted request becomes a job: its audit lines and, for a resumable operation, its resume entry."""
        op = self.operations[operation]
        on_admit, on_finish = admission.record, admission.finished        # the audit lines
        if op.resume is not None:
            journal = self.resume_journal

            def on_admit(job: Job) -> None:
                buffers: list = []
                body = codec.to_wire(request, buffers, [])
                if not buffers:          # requests with pixels are not kept: a resume re-reads files only
                    try:
                        journal.started(job, operation, body, request_id, dataclasses.asdict(admission.requester),
                                        self.instance)
                    except OSError as exc:
                        raise errors.write_failed(journal.folder, exc) from None
                try:
                    admission.record(job)
                except BaseException:
                    journal.ended(job.id)
                    raise

            def on_finish(job: Job, msg: protocol.Message, state: str) -> None:
                if state == "cancelled" and job.stopped_by_server:
                    # A server stop is not the requester's cancel: the next start takes the job up again.
                    log.warning("job %s (%s) stopped with the server; the next start resumes it", job.id, operation)
                else:
                    journal.ended(job.id)
                admission.finished(job, msg, state)

        return self.jobs.submit(peer, request_id, operation, request, lambda job: op.run(self.engine, job, request),
                                self.send, on_admit=on_admit, on_finish=on_finish, beside=op.beside, job_id=job_id,
                                resumed=resumed)

    def resume_jobs(self) -> None:
        """At start-up, before the worker: take up the jobs of resumable operations (training) that a killed
        predecessor had accepted and never ended. Each keeps its job id (a host that re-attaches with ``follow``
        finds it) and is checked again as at submit: paths, model kind, consent and policy for the requester
        recorded then. A refused one ends at once with its error under the same id (audited like a refused
        submit)."""
        from .policy.consent import Requester

        for entry in self.resume_journal.pending():
            job_id, operation = entry["job"], entry.get("operation")
            resumed = {"from_instance": entry.get("instance")}
            try:
                op = self.operations.get(operation) if isinstance(operation, str) else None
                if op is None or op.resume is None:
                    raise errors.RequestError(f"this server does not resume {operation!r} jobs",
                                              code=errors.NOT_SUPPORTED)
                request = codec.from_wire(REQUEST_TYPES[operation], entry.get("request"), [])
                self._check_available(operation)
                op.validate(request, self.engine)
                requester = Requester(**entry.get("requester") or {"name": "unknown"})
                admission = self.engine.policy.admit_as(operation, request, str(entry.get("request_id")),
                                                        requester, self.engine)
                resumed.update(op.resume(request, self.engine))
                self._queue(None, str(entry.get("request_id")), operation, request, admission, job_id=job_id,
                            resumed=resumed)
                log.warning("job %s (%s) was cut short by a server stop; taken up again (%s)", job_id, operation,
                            ", ".join(f"{k} {v}" for k, v in resumed.items()))
            except Exception as exc:      # noqa: BLE001  (one bad entry must not stop the server starting)
                if not isinstance(exc, errors.BodyDoubleError):
                    log.exception("job %s could not be resumed", job_id)
                    exc = errors.RequestError(f"job {job_id} could not be resumed: {type(exc).__name__}: {exc}",
                                              code=errors.JOB_FAILED)
                log.warning("job %s (%s) was cut short by a server stop and is not resumed: %s", job_id, operation,
                            exc.message)
                self.resume_journal.ended(job_id)
                self.jobs.ended(job_id, operation if isinstance(operation, str) else "?", exc, self.send, resumed)

    def admit(self, peer: bytes, msg: protocol.Message) -> tuple[str, object]:
        """Every check a submit passes before ``accepted``, cheapest first; any failure is its only reply.

        A refused request creates no take folder and uses no take number. Add new submit-time checks
        (policy, consent) here, after the operation's own ``validate`` and before the capacity check.
        """
        self.jobs.check_request_id(peer, msg.id)                          # duplicate_id
        body = dict(msg.body)
        operation = body.pop("operation", None)
        user = body.pop("user", None)       # self-asserted; a CURVE client's verified key overrides it
        if user is not None and (not isinstance(user, str) or not 0 < len(user) <= 128):
            raise errors.RequestError("'user' must be a name of 1 to 128 characters", code=errors.INVALID_REQUEST)
        request_cls = REQUEST_TYPES.get(operation) if isinstance(operation, str) else None
        if request_cls is None:
            raise errors.RequestError(f"unknown operation {operation!r}; this server knows {sorted(REQUEST_TYPES)}",
                                      code=errors.INVALID_REQUEST)
        request = codec.from_wire(request_cls, body, msg.buffers)        # fields, types, ranges
        if operation not in self.operations:
            raise errors.RequestError(f"this server cannot do {operation!r} yet", code=errors.NOT_SUPPORTED)
        self._check_available(operation)                                  # the model can do it
        self.operations[operation].validate(request, self.engine)        # paths, adapters, windows, kinds
        admission = self.engine.policy.admit(operation, request, msg.id, user, self._curve_user,
                                             self.engine)                 # consent: not_permitted (audited)
        self.jobs.check_capacity(peer)                                    # busy
        return operation, request, admission

    def _check_available(self, operation: str) -> None:
        state = self.jobs.state
        if state == "failed":
            raise errors.RequestError(f"the server's model failed to load: {self.jobs.load_error}",
                                      code=errors.MODEL_UNAVAILABLE)
        if state == "ready" and operation in ("fill", "train") and operation not in self.engine.operations:
            raise errors.RequestError(f"{operation} is not available with this server's model "
                                      f"(it can do {', '.join(self.engine.operations) or 'nothing'})",
                                      code=errors.NOT_SUPPORTED)

    def _on_cancel(self, peer: bytes, msg: protocol.Message) -> None:
        job = self.jobs.cancel(_job_ref(msg), peer)
        self._reply(peer, msg, {"job": job.id, "state": "cancelling" if job.state == "running" else job.state})

    def _on_status(self, peer: bytes, msg: protocol.Message) -> None:
        self._reply(peer, msg, {**self.jobs.find(_job_ref(msg), peer).describe(), "instance": self.instance})

    def _on_follow(self, peer: bytes, msg: protocol.Message) -> None:
        """Re-attach to a job by its id from any connection: its ``accepted`` (or final reply), then its events."""
        self.jobs.find(_job_ref(msg), peer).subscribe(peer, msg.id)


# Body fields each small request may carry (submit bodies are checked by the codec).
_BODY_KEYS = {"hello": {"client", "client_version", "heartbeat_interval"}, "heartbeat": {"interval"},
              "list_adapters": set(), "rescan": set(),
              "cancel": {"job"}, "status": {"job"}, "follow": {"job"}}


def _curve_user_id(frame) -> str | None:
    """The client key ZeroMQ's CURVE handshake verified (z85), from the message's metadata."""
    try:
        return frame.get("User-Id") or None
    except (zmq.ZMQError, AttributeError, UnicodeDecodeError):
        return None


def _is_loopback(address: str | None) -> bool:
    try:
        ip = ipaddress.ip_address((address or "").strip("[]").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def withhold_paths(caps: dict) -> dict:
    """``hello`` for a peer that may not see this machine's folders (docs/protocol.md, "Security"): the allowed
    roots become their count, the folders and model paths ``null``; names, hashes and everything else stay."""
    out = {**caps, "paths": "withheld", "roots": None, "roots_count": len(caps.get("roots") or []),
           "output_root": None, "adapters_dir": None}
    if isinstance(caps.get("model"), dict):
        model = out["model"] = {**caps["model"], "path": None}
        if isinstance(model.get("video_model"), dict):
            model["video_model"] = {**model["video_model"], "path": None}
    if isinstance(caps.get("policy"), dict):
        out["policy"] = {**caps["policy"], "consent_dir": None}
    return out


class _DeniedIsAWarning(logging.LoggerAdapter):
    """pyzmq's authenticator logs a refused CURVE client at debug level; an operator needs to see it."""

    def __init__(self, logger: logging.Logger):
        super().__init__(logger, {})

    def debug(self, msg, *args, **kwargs):
        text = str(msg) % args if args else str(msg)
        self.log(logging.WARNING if text.startswith("DENIED") else logging.DEBUG, "CURVE: %s", text, **kwargs)


def _job_ref(msg: protocol.Message) -> str:
    job = msg.body.get("job")
    if not isinstance(job, str) or set(msg.body) != {"job"}:
        raise errors.RequestError('body must be {"job": "<job id>"}', code=errors.INVALID_REQUEST)
    return job
