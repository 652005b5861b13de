"""The client fails fast and never waits forever (#12): bad addresses, dead and restarted servers.

A scripted ROUTER stands in for the server where the test needs it to misbehave on cue (go silent,
restart with a new instance id); real servers are used elsewhere (test_reliability_server/_process).
"""
import os
import threading
import time

import pytest
import zmq

from bodydouble import errors, protocol
from bodydouble.client import Client
from bodydouble.jobspec import FillRequest, FrameInput, ImageRef

from .support import free_port


class ScriptedServer:
    """A ROUTER that speaks just enough BodyDouble: hello/heartbeat answered with ``instance`` while ``alive``;
    a submit is accepted as job-1 and never finishes; a follow gets ``unknown_job``."""

    def __init__(self):
        self.port = free_port()
        self.instance = "instance-a"
        self.alive = threading.Event()
        self.alive.set()
        self.seen: list[str] = []
        self.knows_job = False          # follow: answered with job-1's result instead of unknown_job
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(5)

    @property
    def address(self):
        return f"tcp://127.0.0.1:{self.port}"

    def _run(self):
        ctx = zmq.Context()
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(self.address)
        self._ready.set()
        while not self._stop.is_set():
            if not sock.poll(50):
                continue
            peer, *frames = sock.recv_multipart()
            if not self.alive.is_set():
                continue            # silent: as if killed
            msg = protocol.decode(frames)
            self.seen.append(msg.type)
            replies = {
                "hello": [("result", {"instance": self.instance, "state": "ready", "protocol": 1})],
                "heartbeat": [("result", {"instance": self.instance, "state": "ready"})],
                "submit": [("accepted", {"job": "job-1", "queue_position": 0, "seq": 0})],
                "follow": [("accepted", {"job": "job-1", "state": "running", "seq": 3}),
                           ("result", {"job": "job-1", "operation": "fill", "take_dir": "/t", "take": 1,
                                       "pattern": "/t/f.####.exr", "first": 1, "last": 1,
                                       "frames": [{"frame": 1, "path": "/t/f.0001.exr"}], "seq": 4})]
                if self.knows_job else
                [("error", {"code": "unknown_job", "message": "no job 'job-1' on this server"})],
            }.get(msg.type, [])
            for mtype, body in replies:
                sock.send_multipart([peer, *protocol.encode(protocol.Message(type=mtype, id=msg.id, body=body))])
        sock.close()
        ctx.term()

    def close(self):
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def scripted():
    server = ScriptedServer()
    yield server
    server.close()


def a_fill():
    import numpy as np

    return FillRequest(frames=[FrameInput(1, ImageRef(pixels=np.ones((8, 8, 4), np.float16)))])


@pytest.mark.parametrize("address", ["http://127.0.0.1:5555", "tcp://127.0.0.1", "tcp://", "nonsense://x:1"])
def test_a_bad_address_raises_at_once(address):
    start = time.monotonic()
    with pytest.raises(errors.BadAddress):
        Client(address)
    assert time.monotonic() - start < 6


def test_host_port_without_scheme_gets_tcp_added(scripted):
    with Client(f"127.0.0.1:{scripted.port}", timeout=5) as client:
        assert client.address == scripted.address
        assert client.server_info["instance"] == "instance-a"


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:{port}", "tcp://10.255.255.1:5555"])
def test_an_unreachable_port_raises_within_6_s(address):
    start = time.monotonic()
    client = Client(address.format(port=free_port()), timeout=30)
    try:
        with pytest.raises(errors.ServerUnavailable):
            client.connect()
    finally:
        client.close()
    assert time.monotonic() - start < 6


def test_the_wake_up_is_an_inproc_socket_not_a_pipe(scripted, monkeypatch):
    """Requests from several threads at once wake the I/O thread; no OS pipe is ever made."""
    def no_pipe():
        raise AssertionError("the client must not use os.pipe (Windows cannot poll it)")

    monkeypatch.setattr(os, "pipe", no_pipe)
    with Client(scripted.address, timeout=5) as client:
        results = []
        threads = [threading.Thread(target=lambda: results.append(client.heartbeat())) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(results) == 8 and all(r["instance"] == "instance-a" for r in results)
        assert client._conn._wake_addr.startswith("inproc://")


def test_a_dead_server_fails_every_waiting_job_within_three_beats(scripted):
    with Client(scripted.address, timeout=5, heartbeat_interval=0.3) as client:
        jobs = [client.submit(a_fill()) for _ in range(3)]
        assert all(job.accepted(timeout=5) == "job-1" for job in jobs)
        scripted.alive.clear()                      # killed: nothing answers any more
        start = time.monotonic()
        for job in jobs:
            with pytest.raises(errors.ServerUnavailable) as info:
                job.wait(timeout=10)
            assert "job-1" in str(info.value) and info.value.details["job"] == "job-1"
        assert time.monotonic() - start < 0.3 * 3 + 1.0
        # The connection reconnects by itself: once the server is back, the same client works again.
        scripted.alive.set()
        assert client.heartbeat()["instance"] == "instance-a"
        # Re-attach by job id: this server never heard of it.
        with pytest.raises(errors.RequestError) as info:
            jobs[0].reattach().wait(timeout=5)
        assert info.value.code == errors.UNKNOWN_JOB


def test_a_restarted_server_is_asked_about_the_job_never_silence(scripted):
    """Restarted faster than the liveness timeout: heartbeats are answered, but by a new instance."""
    with Client(scripted.address, timeout=5, heartbeat_interval=0.3) as client:
        job = client.submit(a_fill())
        job.accepted(timeout=5)
        scripted.instance = "instance-b"              # the next heartbeat reply comes from a new server
        with pytest.raises(errors.RequestError) as info:
            job.wait(timeout=10)
        assert info.value.code == errors.UNKNOWN_JOB
        assert "follow" in scripted.seen


def test_a_background_job_re_attaches_after_the_server_stops_answering(scripted):
    """A host's BackgroundJob rides out a server that goes silent: it re-attaches by job id and gets the result."""
    from bodydouble.background import BackgroundJob

    scripted.knows_job = True
    job = BackgroundJob(scripted.address, a_fill(), timeout=5).start()
    deadline = time.monotonic() + 10
    while job.job_id is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.job_id == "job-1"
    scripted.alive.clear()
    time.sleep(4)                    # > 3 heartbeats of 1 s: the client declares the server lost
    scripted.alive.set()
    job.join(30)
    assert job.outcome is not None and job.outcome.error is None, job.outcome
    assert job.outcome.result.take == 1 and job.outcome.job_id == "job-1"
    assert scripted.seen.count("follow") >= 1
