"""Server-side liveness and what hello shows whom (#12), over real ZeroMQ sockets.

A stand-in model (sleeps per step, no CPU) makes a job last a known time, so a client can go silent while
its job runs.
"""
import time

import pytest
import zmq

from bodydouble import protocol
from bodydouble.client import Client
from bodydouble.jobspec import FillRequest, sequence_frames
from bodydouble_server import samples
from bodydouble_server.server import LIVENESS_FLOOR

from .fuzzing import request
from .test_reliability_server import recv, submit_frames
from .support import server_thread

STEP_S = 0.25            # the stand-in's seconds per step (its default)
OTHER_HOST = "192.0.2.2"  # this machine's non-loopback address (hostname -I); tests needing it skip without it


def other_address() -> str | None:
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((OTHER_HOST, 0))
        return OTHER_HOST
    except OSError:
        return None


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    """A stand-in server listening on every interface (so a test can come from loopback or from the network)."""
    from bodydouble_server.config import ServerConfig

    root = tmp_path_factory.mktemp("liveness")
    plate, mask = samples.write_sequence(root / "plates", 1001, 1001, 96, 64)
    config = ServerConfig(port=0, host="0.0.0.0", model="test:standin", video_model="none", roots=[str(root)],
                          adapters=str(root / "adapters"), output_root=str(root / "takes"), resolution=64)
    with server_thread(config) as srv:
        port = srv.bound_address.rsplit(":", 1)[1]
        yield {"server": srv, "address": f"tcp://127.0.0.1:{port}", "port": port, "plate": plate, "mask": mask,
               "root": root}


def raw(address: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 20000)
    sock.connect(address)
    return sock


def test_a_client_that_stops_beating_is_dropped_while_its_job_runs_on(standin):
    srv = standin["server"]
    fill = FillRequest(frames=sequence_frames(standin["plate"], 1001, 1001, standin["mask"]), steps=40, seed=3)
    # ~10 s of stand-in steps: the silent client is dropped (3 s floor) long before the job ends.
    sock = raw(standin["address"])
    with Client(standin["address"], timeout=30, heartbeat_interval=0.3) as watcher:
        before = watcher.heartbeat()["connections"]["dropped"]
        sock.send_multipart(request("hello", "h1", {"heartbeat_interval": 0.2}))
        assert recv(sock).type == "result"
        sock.send_multipart(submit_frames("s1", fill))
        accepted = recv(sock)
        assert accepted.type == "accepted", accepted.body
        job_id = accepted.body["job"]
        # A well-behaved client follows the same job for all of it: it beats while it hears the server's beats.
        follower = watcher.follow(job_id)
        for i in range(5):                        # 1 s of heartbeats, then silence, as if its host froze or died
            sock.send_multipart(request("heartbeat", f"b{i}", {"interval": 0.2}))
            time.sleep(0.2)
        silent_since = time.monotonic()
        deadline = silent_since + LIVENESS_FLOOR + 5
        while watcher.heartbeat()["connections"]["dropped"] == before:
            assert time.monotonic() < deadline, "the silent connection was never dropped"
            time.sleep(0.1)
        dropped_after, dropped_wall = time.monotonic() - silent_since, time.time()
        assert LIVENESS_FLOOR - 0.3 <= dropped_after <= LIVENESS_FLOOR + 4, dropped_after    # checked once a second
        assert watcher.status(job_id)["state"] == "running"       # the job was not touched
        result = follower.wait(timeout=60)                         # the beating follower was never dropped
        assert result.job == job_id and result.take
        assert watcher.heartbeat()["connections"]["dropped"] == before + 1
    # Re-attach from a brand-new connection by job id: the final reply.
    with Client(standin["address"], timeout=30) as late:
        again = late.follow(job_id).wait(timeout=30)
        assert again.take_dir == result.take_dir
    # Nothing was queued to the dropped connection once it was gone: no final reply ever reached it.
    seen = []
    while sock.poll(300):
        seen.append(recv(sock))
    assert not [m for m in seen if m.id == "s1" and m.type in ("result", "error")], [m.type for m in seen]
    assert [m for m in seen if m.type == "heartbeat"]                      # it was beaten while it followed...
    assert not [m for m in seen if m.type == "heartbeat" and m.body["time"] > dropped_wall]   # ...and not after
    # Taken for dead but only frozen: when it speaks again its follow is given back (here: the final reply).
    sock.send_multipart(request("heartbeat", "b-late", {"interval": 0.2}))
    replies = {m.id: m for m in (recv(sock), recv(sock))}
    assert replies["s1"].type == "result" and replies["s1"].body["take_dir"] == result.take_dir
    assert replies["b-late"].type == "result"
    sock.close()


def test_a_connection_that_never_announced_a_heartbeat_is_not_watched(standin):
    """Clients written from the older spec never announce an interval: they are not dropped for silence."""
    srv = standin["server"]
    sock = raw(standin["address"])
    sock.send_multipart(request("hello", "h1"))
    assert recv(sock).type == "result"
    sock.send_multipart(request("heartbeat", "b1"))          # a bare heartbeat announces nothing
    assert recv(sock).type == "result"
    peers = set(srv._watched)
    sock.send_multipart(request("heartbeat", "b2", {"interval": -1}))
    assert recv(sock).body["code"] == "invalid_request"
    assert set(srv._watched) == peers
    sock.close()


def hello_from(address: str, **client) -> dict:
    with Client(address, timeout=10, **client) as c:
        return c.connect()


def test_hello_shows_paths_to_loopback_and_names_only_to_the_network(standin):
    local = hello_from(standin["address"])
    assert local["paths"] == "shown" and local["roots"] == [str(standin["root"])] and local["roots_count"] == 1
    assert local["output_root"] and local["adapters_dir"]
    assert local["policy"]["consent_dir"]
    host = other_address()
    if host is None:
        pytest.skip("no non-loopback interface on this machine")
    remote = hello_from(f"tcp://{host}:{standin['port']}")
    assert remote["paths"] == "withheld" and remote["roots"] is None and remote["roots_count"] == 1
    assert remote["output_root"] is None and remote["adapters_dir"] is None
    assert remote["policy"]["consent_dir"] is None and remote["model"]["path"] is None
    assert remote["model"]["name"] == local["model"]["name"] and remote["model"]["sha256"] == local["model"]["sha256"]
    flat = repr(remote)
    assert str(standin["root"]) not in flat        # no folder of this machine anywhere in it
    assert {k for k in local if k not in remote} == set()


def test_hello_shows_paths_to_an_authorised_curve_client_on_the_network(tmp_path):
    import zmq.auth

    from bodydouble_server.cli import start_in_thread
    from bodydouble_server.config import ServerConfig

    host = other_address()
    if host is None:
        pytest.skip("no non-loopback interface on this machine")
    keys, allowed = tmp_path / "keys", tmp_path / "clients"
    keys.mkdir()
    allowed.mkdir()
    _, server_secret = zmq.auth.create_certificates(keys, "server")
    _, artist_secret = zmq.auth.create_certificates(keys, "artist")
    (allowed / "artist.key").write_bytes((keys / "artist.key").read_bytes())
    server_public, _ = zmq.auth.load_certificate(server_secret)
    pub, sec = zmq.auth.load_certificate(artist_secret)
    server, thread = start_in_thread(ServerConfig(port=0, host=host, model="test:standin", video_model="none",
                                                  roots=[str(tmp_path)], adapters=str(tmp_path / "adapters"),
                                                  curve_certificate=str(server_secret),
                                                  curve_authorized_clients=str(allowed)))
    try:
        caps = hello_from(server.bound_address, curve={"server_key": server_public, "public_key": pub,
                                                       "secret_key": sec})
        assert caps["paths"] == "shown" and caps["roots"] == [str(tmp_path)]
    finally:
        server.stop()
        thread.join(10)
