"""One DEALER socket owned by one I/O thread, shared safely by any number of caller threads.

ZeroMQ sockets are not thread-safe, and hosts call us from UI threads (cancel) and worker
threads (wait) at once. So a private thread owns the socket: callers enqueue outgoing
messages and wake it through a pipe; replies are routed by request id to per-request queues.
"""
from __future__ import annotations

import collections
import itertools
import logging
import os
import queue
import socket
import threading
import uuid
from urllib.parse import urlparse

import zmq

from . import errors, protocol

log = logging.getLogger("bodydouble.connection")


class Connection:
    def __init__(self, address: str, curve: dict | None = None):
        self.address = address
        self._ctx = zmq.Context()
        self._outgoing: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        self._routes: dict[str, queue.SimpleQueue] = {}
        self._routes_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:8]
        self._closed = threading.Event()
        self._ready = threading.Event()
        self._curve = curve
        self._thread = threading.Thread(target=self._run, name="bodydouble-io", daemon=True)
        self._thread.start()
        self._ready.wait()

    # -- caller side ---------------------------------------------------------------------
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

    def open(self) -> tuple[str, queue.SimpleQueue]:
        """A fresh request id and the queue its replies will arrive on."""
        rid = f"{self._prefix}-{next(self._ids)}"
        inbox: queue.SimpleQueue = queue.SimpleQueue()
        with self._routes_lock:
            self._routes[rid] = inbox
        return rid, inbox

    def release(self, rid: str) -> None:
        with self._routes_lock:
            self._routes.pop(rid, None)

    def send(self, msg: protocol.Message) -> None:
        if self._closed.is_set():
            raise errors.BodyDoubleError("connection is closed")
        self._outgoing.put(protocol.encode(msg))
        os.write(self._wake_w, b"x")

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        os.write(self._wake_w, b"q")
        self._thread.join(timeout=5)
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._ctx.term()

    # -- I/O thread ----------------------------------------------------------------------
    def _run(self) -> None:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if self._curve:
            # A client without a certificate of its own gets a throwaway key pair: encrypted, not authorised.
            public, secret = self._curve.get("public_key"), self._curve.get("secret_key")
            if not secret:
                public, secret = zmq.curve_keypair()
            sock.curve_secretkey, sock.curve_publickey = secret, public
            sock.curve_serverkey = self._curve["server_key"]
        sock.connect(self.address)
        poller = zmq.Poller()
        poller.register(self._wake_r, zmq.POLLIN)
        # Never block in send: a DEALER with no peer yet (server starting, CURVE handshake refused) would
        # hold this thread, so nothing could be received and close() could not stop it. Unsent messages
        # wait here until the socket can take them; the caller's own timeout says what went wrong.
        pending: collections.deque = collections.deque()
        self._ready.set()
        try:
            while not self._closed.is_set():
                poller.register(sock, zmq.POLLIN | (zmq.POLLOUT if pending else 0))
                for item, _ in poller.poll():
                    if item is sock:
                        self._receive(sock)
                    else:
                        os.read(self._wake_r, 4096)
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
        finally:
            sock.close(linger=0)

    def _receive(self, sock: zmq.Socket) -> None:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                msg = protocol.decode(frames, limits=protocol.Limits(max_frame_pixels=1 << 40, max_frame_side=1 << 20),
                                      expect=protocol.REPLY_TYPES)
            except errors.BodyDoubleError as exc:
                rid = protocol.peek_id(frames)
                msg = protocol.error_message(rid, exc)
            with self._routes_lock:
                inbox = self._routes.get(msg.id) if msg.id else None
            if inbox is not None:
                inbox.put(msg)
            else:
                log.warning("reply for no pending request: %s %s", msg.type, msg.body)
