"""The ZeroMQ front: a ROUTER socket loop that answers small requests itself and queues jobs.

The loop never runs model code. Worker threads hand their replies back through an inproc
PULL socket (one PUSH per thread), because only this thread may touch the ROUTER socket.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid

import zmq

from bodydouble import __version__, codec, errors, protocol
from bodydouble.jobspec import OPERATIONS

from .config import ServerConfig
from .engine import Engine
from .jobs import Job, JobManager
from .operations import RUNNERS

log = logging.getLogger("bodydouble.server")


class Server:
    def __init__(self, config: ServerConfig):
        self.config = config
        self.limits = config.limits
        self.engine = Engine(config)
        self.jobs = JobManager(self.engine.load)
        self._ctx = zmq.Context()
        self._outbox_addr = f"inproc://bodydouble-outbox-{uuid.uuid4().hex}"
        self._local = threading.local()
        self._stop = threading.Event()
        self._authenticator = None
        self.bound_address: str | None = None
        self.started = time.time()
        self._router: zmq.Socket | None = None
        self._pull: zmq.Socket | None = None
        self._pushes: list[zmq.Socket] = []
        self._pushes_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------
    def bind(self) -> str:
        router = self._ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a vanished client raises instead of queueing forever
        if self.config.curve_certificate:
            self._enable_curve(router)
        port = self.config.port
        if port == 0:
            port = router.bind_to_random_port(f"tcp://{self.config.host}")
        else:
            router.bind(f"tcp://{self.config.host}:{port}")
        self._router = router
        self._pull = self._ctx.socket(zmq.PULL)
        self._pull.bind(self._outbox_addr)
        self.bound_address = f"tcp://{self.config.host}:{port}"
        return self.bound_address

    def _enable_curve(self, router: zmq.Socket) -> None:
        """Encrypt (and, with an authorised-clients folder, authenticate) every connection."""
        import zmq.auth
        from zmq.auth.thread import ThreadAuthenticator

        public, secret = zmq.auth.load_certificate(self.config.curve_certificate)
        if secret is None:
            raise errors.BodyDoubleError(f"{self.config.curve_certificate} holds no secret key")
        self._authenticator = ThreadAuthenticator(self._ctx)
        self._authenticator.start()
        clients = self.config.curve_authorized_clients
        self._authenticator.configure_curve(domain="*", location=clients if clients else zmq.auth.CURVE_ALLOW_ANY)
        router.curve_server = True
        router.curve_publickey, router.curve_secretkey = public, secret

    def serve_forever(self) -> None:
        if self._router is None:
            self.bind()
        self.jobs.start()
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._pull, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                for sock, _ in poller.poll(200):
                    if sock is self._router:
                        self._drain_router()
                    else:
                        self._drain_outbox()
        finally:
            self.jobs.stop()
            self._drain_outbox()
            self._router.close(linger=0)
            self._pull.close(linger=0)
            with self._pushes_lock:
                for sock in self._pushes:
                    sock.close(linger=0)
            if self._authenticator is not None:
                self._authenticator.stop()
            self._ctx.term()

    def stop(self) -> None:
        self._stop.set()

    # -- outgoing ------------------------------------------------------------------------
    def send(self, peer: bytes, msg: protocol.Message) -> None:
        """Thread-safe: queue a reply for the loop to put on the ROUTER socket."""
        push = getattr(self._local, "push", None)
        if push is None:
            push = self._local.push = self._ctx.socket(zmq.PUSH)
            push.connect(self._outbox_addr)
            with self._pushes_lock:
                self._pushes.append(push)
        push.send_multipart([peer, *protocol.encode(msg)], copy=False)

    def _drain_outbox(self) -> None:
        while True:
            try:
                frames = self._pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                self._router.send_multipart(frames, copy=False)
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EHOSTUNREACH:
                    raise
                log.info("client went away; dropped a reply (the job's files are still written)")

    # -- incoming ------------------------------------------------------------------------
    def _drain_router(self) -> None:
        while True:
            try:
                frames = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            peer, rest = frames[0].bytes, frames[1:]
            try:
                msg = protocol.decode(rest, self.limits)
            except errors.BodyDoubleError as exc:
                log.info("refused a malformed message from %s: %s", peer.hex(), exc)
                self.send(peer, protocol.error_message(protocol.peek_id(rest), exc))
                continue
            try:
                self._handle(peer, msg)
            except errors.BodyDoubleError as exc:
                self.send(peer, protocol.error_message(msg.id, exc))
            except Exception as exc:  # never let one request take the loop down
                log.exception("request %s failed", msg.type)
                self.send(peer, protocol.error_message(msg.id, errors.RequestError(
                    f"internal error handling {msg.type}: {exc}", code=errors.INTERNAL)))

    def _reply(self, peer: bytes, msg: protocol.Message, body: dict) -> None:
        self.send(peer, protocol.Message(type="result", id=msg.id, body=body))

    def _handle(self, peer: bytes, msg: protocol.Message) -> None:
        if msg.id is None:
            raise errors.ProtocolError("requests need an 'id'")
        allowed = _BODY_KEYS.get(msg.type)
        if allowed is not None and set(msg.body) - allowed:
            raise errors.RequestError(f"{msg.type}: unknown fields {sorted(set(msg.body) - allowed)}",
                                      code=errors.INVALID_REQUEST)
        handler = getattr(self, f"_on_{msg.type}")
        handler(peer, msg)

    def _on_hello(self, peer: bytes, msg: protocol.Message) -> None:
        self._reply(peer, msg, self.capabilities())

    def capabilities(self) -> dict:
        engine = self.engine
        ready = self.jobs.state == "ready"
        return {
            "server": "bodydouble", "version": __version__, "protocol": protocol.VERSION,
            "state": self.jobs.state, "load_error": self.jobs.load_error,
            "model": engine.describe() if ready else None,
            "operations": engine.operations if ready else [],
            "known_operations": sorted(OPERATIONS),
            "limits": self.limits.to_dict(),
            "output_root": self.config.output_root,
            "roots": [str(r) for r in engine.roots.roots],
            "adapters_dir": self.config.adapters,
        }

    def _on_heartbeat(self, peer: bytes, msg: protocol.Message) -> None:
        self._reply(peer, msg, {"time": time.time(), "state": self.jobs.state, "uptime": time.time() - self.started,
                                **self.jobs.counts()})

    def _on_list_adapters(self, peer: bytes, msg: protocol.Message) -> None:
        engine = self.engine
        self._reply(peer, msg, {"adapters": engine.adapter_listing(), "state": self.jobs.state,
                                "base_model": engine.identity.to_dict() if engine.identity else None,
                                "video_model": engine.video.identity.to_dict() if engine.video else None})

    def _on_rescan(self, peer: bytes, msg: protocol.Message) -> None:
        def run(job: Job) -> protocol.Message:
            self.engine.rescan()
            return protocol.Message(type="result", id=job.request_id, body={"adapters": self.engine.adapter_listing()})

        self.jobs.submit(peer, msg.id, "rescan", None, run, self.send)

    def _on_submit(self, peer: bytes, msg: protocol.Message) -> None:
        body = dict(msg.body)
        operation = body.pop("operation", None)
        request_cls = OPERATIONS.get(operation) if isinstance(operation, str) else None
        if request_cls is None:
            raise errors.RequestError(f"unknown operation {operation!r}; this server knows {sorted(OPERATIONS)}",
                                      code=errors.INVALID_REQUEST)
        request = codec.from_wire(request_cls, body, msg.buffers)
        runner = RUNNERS.get(operation)
        if runner is None:
            raise errors.RequestError(f"this server cannot do {operation!r} yet", code=errors.NOT_SUPPORTED)
        self.jobs.submit(peer, msg.id, operation, request, lambda job: runner(self.engine, job, request), self.send)

    def _on_cancel(self, peer: bytes, msg: protocol.Message) -> None:
        job = self.jobs.cancel(_job_ref(msg), peer)
        self._reply(peer, msg, {"job": job.id, "state": "cancelling" if job.state == "running" else job.state})

    def _on_status(self, peer: bytes, msg: protocol.Message) -> None:
        self._reply(peer, msg, self.jobs.find(_job_ref(msg), peer).describe())


# Body fields each small request may carry (submit bodies are checked by the codec).
_BODY_KEYS = {"hello": {"client", "client_version"}, "heartbeat": set(), "list_adapters": set(), "rescan": set(),
              "cancel": {"job"}, "status": {"job"}}


def _job_ref(msg: protocol.Message) -> str:
    job = msg.body.get("job")
    if not isinstance(job, str) or set(msg.body) != {"job"}:
        raise errors.RequestError('body must be {"job": "<job id>"}', code=errors.INVALID_REQUEST)
    return job
