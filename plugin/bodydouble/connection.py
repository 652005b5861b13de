"""One DEALER socket owned by one I/O thread, shared safely by any number of caller threads.

ZeroMQ sockets are not thread-safe, and hosts call us from UI threads (cancel) and worker
threads (wait) at once. So a private thread owns the socket: callers enqueue outgoing
messages and wake it through an inproc ZeroMQ socket (never an OS pipe: on Windows only sockets
can be polled); replies are routed by request id to per-request queues.

Liveness is the ZeroMQ guide's Paranoid Pirate, both ways: while anything is in flight the I/O thread
sends a ``heartbeat`` (announcing its interval) whenever it has sent nothing for one interval, so the server
can tell a dead client from a quiet one; the server beats connections that follow a job. After ``liveness``
intervals in which nothing was heard the server is declared lost: every waiting request
and job gets a ``server_unavailable`` error at once, and the socket is closed and reconnected. When
replies start coming from a *different* server instance (it restarted), plain requests still in flight
get ``server_unavailable`` and every job is asked again by its id (``follow``), so it ends with the job
or ``unknown_job``, never silence.
"""
from __future__ import annotations

import collections
import itertools
import logging
import queue
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlparse

import zmq

from . import errors, protocol

log = logging.getLogger("bodydouble.connection")

START_TIMEOUT = 5.0           # the I/O thread must have its socket connected by then
_REPLY_LIMITS = protocol.Limits(max_frame_pixels=1 << 40, max_frame_side=1 << 20)


def normalize_address(address: str) -> str:
    """``tcp://host:port`` (also ``ipc://``, ``inproc://``). ``host:port`` without a scheme gets ``tcp://``
    added; anything else (``http://``, no port) is a :class:`~bodydouble.errors.BadAddress` at once."""
    if not isinstance(address, str) or not address.strip():
        raise errors.BadAddress(f"server address {address!r} is empty; use tcp://host:port (e.g. tcp://127.0.0.1:5555)")
    text = address.strip()
    if "://" not in text:
        text = f"tcp://{text}"
    scheme = text.split("://", 1)[0].lower()
    if scheme in ("ipc", "inproc"):
        return text
    if scheme != "tcp":
        raise errors.BadAddress(f"server address {address!r}: BodyDouble speaks ZeroMQ over tcp://host:port, "
                                f"not {scheme}://")
    try:
        url = urlparse(text)
        port = url.port
    except ValueError as exc:
        raise errors.BadAddress(f"server address {address!r}: {exc}; use tcp://host:port") from None
    if not url.hostname or not port:
        raise errors.BadAddress(f"server address {address!r} needs a host and a port: tcp://host:5555")
    if url.path not in ("", "/") or url.query:
        raise errors.BadAddress(f"server address {address!r}: only tcp://host:port, nothing after the port")
    return f"tcp://{url.netloc}"


@dataclass
class _Route:
    inbox: queue.SimpleQueue
    job_id: str | None = None      # set once a submit/follow was accepted: re-asked after a server restart
    kind: str = "request"          # "request" | "job"


class Connection:
    def __init__(self, address: str, curve: dict | None = None, heartbeat_interval: float = 2.0, liveness: int = 3):
        self.address = normalize_address(address)
        self.heartbeat_interval = heartbeat_interval
        self.liveness = liveness
        self.instance: str | None = None       # the server instance last heard from
        self._ctx = zmq.Context()
        self._outgoing: queue.SimpleQueue = queue.SimpleQueue()
        self._routes: dict[str, _Route] = {}
        self._routes_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:8]
        self._closed = threading.Event()
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._curve = curve
        self._wake_addr = f"inproc://bodydouble-client-{self._prefix}-{id(self)}"
        self._wake_rx = self._ctx.socket(zmq.PULL)
        self._wake_rx.bind(self._wake_addr)
        self._wake_tx = self._ctx.socket(zmq.PUSH)
        self._wake_tx.setsockopt(zmq.SNDHWM, 8)
        self._wake_tx.setsockopt(zmq.LINGER, 0)
        self._wake_tx.connect(self._wake_addr)
        self._wake_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="bodydouble-io", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            self.close()
            raise errors.ServerUnavailable(f"could not open a connection to {self.address} within {START_TIMEOUT:g} s")
        if self._start_error is not None:
            self.close()
            raise errors.BadAddress(f"cannot connect to {self.address}: {self._start_error}") from None

    # -- caller side ---------------------------------------------------------------------
    @property
    def encrypted(self) -> bool:
        return bool(self._curve)

    def probe(self, timeout: float = 1.0) -> None:
        """Fail fast with a helpful message when nothing listens on a tcp:// address."""
        url = urlparse(self.address)
        if url.scheme != "tcp" or not url.port:
            return
        host = url.hostname or "127.0.0.1"
        try:
            with socket.create_connection((host, url.port), timeout=timeout):
                pass
        except OSError as exc:
            raise errors.ServerNotRunning(
                f"No BodyDouble server at {self.address} ({exc.strerror or exc}). "
                f"Start one with:  bodydouble serve --port {url.port}"
            ) from None

    def open(self, kind: str = "request") -> tuple[str, queue.SimpleQueue]:
        """A fresh request id and the queue its replies will arrive on."""
        rid = f"{self._prefix}-{next(self._ids)}"
        route = _Route(queue.SimpleQueue(), kind=kind)
        with self._routes_lock:
            self._routes[rid] = route
        return rid, route.inbox

    def attach_job(self, rid: str, job_id: str) -> None:
        """Remember which server job ``rid`` follows (so a restart can be asked about it)."""
        with self._routes_lock:
            route = self._routes.get(rid)
            if route is not None:
                route.job_id = job_id

    def release(self, rid: str) -> None:
        with self._routes_lock:
            self._routes.pop(rid, None)

    def send(self, msg: protocol.Message) -> None:
        if self._closed.is_set():
            raise errors.BodyDoubleError("connection is closed")
        self._outgoing.put(protocol.encode(msg))
        self._wake()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._wake()
        self._thread.join(timeout=5)
        with self._wake_lock:
            self._wake_tx.close(linger=0)
        if not self._thread.is_alive():
            self._ctx.term()

    def _wake(self) -> None:
        with self._wake_lock:
            try:
                self._wake_tx.send(b"", zmq.NOBLOCK)
            except zmq.ZMQError:   # Again: a wake-up is already pending; ENOTSOCK: closing
                pass

    # -- I/O thread ----------------------------------------------------------------------
    def _open_socket(self) -> zmq.Socket:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if self._curve:
            # A client without a certificate of its own gets a throwaway key pair: encrypted, not authorised.
            public, secret = self._curve.get("public_key"), self._curve.get("secret_key")
            if not secret:
                public, secret = zmq.curve_keypair()
            sock.curve_secretkey, sock.curve_publickey = secret, public
            sock.curve_serverkey = self._curve["server_key"]
        try:
            sock.connect(self.address)
        except zmq.ZMQError:
            sock.close(linger=0)
            raise
        return sock

    def _run(self) -> None:
        try:
            sock = self._open_socket()
        except Exception as exc:   # reported by the constructor, never a hang
            self._start_error = exc
            self._ready.set()
            self._wake_rx.close(linger=0)
            return
        poller = zmq.Poller()
        poller.register(self._wake_rx, zmq.POLLIN)
        # Never block in send: a DEALER with no peer yet (server starting, CURVE handshake refused) would
        # hold this thread. Unsent messages wait here until the socket can take them.
        pending: collections.deque = collections.deque()
        interval = self.heartbeat_interval
        heard = time.monotonic()        # last message from the server (or start of waiting)
        sent = 0.0                      # last message to the server: any message is a heartbeat
        waiting_since: float | None = None
        beats = itertools.count(1)
        self._ready.set()
        try:
            while not self._closed.is_set():
                poller.register(sock, zmq.POLLIN | (zmq.POLLOUT if pending else 0))
                for item, _ in poller.poll(max(1, int(interval * 250))):
                    if item is sock:
                        if self._receive(sock):
                            heard = time.monotonic()
                    else:
                        self._drain_wake()
                        while True:
                            try:
                                pending.append(self._outgoing.get_nowait())
                            except queue.Empty:
                                break
                while pending:
                    try:
                        sock.send_multipart(pending[0], flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    pending.popleft()
                    sent = time.monotonic()
                # -- Paranoid Pirate -------------------------------------------------------------
                now = time.monotonic()
                with self._routes_lock:
                    busy = bool(self._routes)
                if not busy:
                    waiting_since = None
                    continue
                if waiting_since is None:
                    waiting_since = now
                quiet = now - max(heard, waiting_since)
                if quiet >= interval * self.liveness:
                    log.warning("server at %s silent for %.1f s: lost; reconnecting", self.address, quiet)
                    self._fail_all(f"the server at {self.address} stopped answering ({self.liveness} heartbeats "
                                   f"of {interval:g} s missed)")
                    poller.unregister(sock)
                    sock.close(linger=0)
                    sock = self._open_socket()
                    pending.clear()
                    heard = now
                    waiting_since = None
                elif now - sent >= interval and not pending:
                    # Every interval, whatever we hear: a client following a job hears the server's beats all the
                    # time, and the server still needs to hear from it (it drops a connection silent for 3).
                    pending.append(protocol.encode(protocol.Message(
                        type="heartbeat", id=f"hb-{self._prefix}-{next(beats)}", body={"interval": interval})))
        finally:
            sock.close(linger=0)
            self._wake_rx.close(linger=0)

    def _drain_wake(self) -> None:
        while True:
            try:
                self._wake_rx.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def _receive(self, sock: zmq.Socket) -> bool:
        heard = False
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return heard
            heard = True
            try:
                msg = protocol.decode(frames, limits=_REPLY_LIMITS, expect=protocol.REPLY_TYPES)
            except errors.BodyDoubleError as exc:
                msg = protocol.error_message(protocol.peek_id(frames), exc)
            self._note_instance(sock, msg)
            with self._routes_lock:
                route = self._routes.get(msg.id) if msg.id else None
            if route is not None:
                route.inbox.put(msg)
            elif msg.type != "heartbeat" and not (msg.id or "").startswith("hb-"):
                log.debug("reply for no pending request: %s %s", msg.type, msg.id)

    def _note_instance(self, sock: zmq.Socket, msg: protocol.Message) -> None:
        instance = msg.body.get("instance") if msg.type in ("heartbeat", "result") else None
        if not isinstance(instance, str):
            return
        if self.instance is not None and instance != self.instance:
            log.warning("the server at %s restarted (instance %s -> %s): asking about this connection's jobs",
                        self.address, self.instance, instance)
            self._server_restarted(sock)
        self.instance = instance

    def _server_restarted(self, sock: zmq.Socket) -> None:
        with self._routes_lock:
            routes = list(self._routes.items())
        for rid, route in routes:
            if route.kind == "job" and route.job_id:
                # The same request id follows the job again: the new server answers with the job or unknown_job.
                frames = protocol.encode(protocol.Message(type="follow", id=rid, body={"job": route.job_id}))
                try:
                    sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                    continue
                except zmq.ZMQError:
                    pass
            route.inbox.put(_lost(rid, f"the server at {self.address} restarted while this request was in flight"))

    def _fail_all(self, why: str) -> None:
        with self._routes_lock:
            routes = list(self._routes.items())
        for rid, route in routes:
            route.inbox.put(_lost(rid, why, route.job_id))


def _lost(rid: str, why: str, job_id: str | None = None) -> protocol.Message:
    details = {"job": job_id} if job_id else {}
    message = why + (f"; job {job_id} may still be running: re-attach with follow('{job_id}')" if job_id else "")
    return protocol.error_message(rid, errors.ServerUnavailable(message, details=details))
