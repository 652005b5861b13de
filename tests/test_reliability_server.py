"""A server that never stops answering (#12): fuzz, floods, busy, ordering, ids, re-attach, submit-time checks.

All through the real ROUTER socket of the session's server (tests/conftest.py), with raw DEALER sockets where
the test needs to send what no well-behaved client sends.
"""
import json
import os
import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from bodydouble import codec, errors, protocol
from bodydouble.client import Client
from bodydouble.jobspec import AdapterRef, FillRequest, FrameInput, ImageRef, sequence_frames

from .fuzzing import mutations, request


def dealer(server, timeout_ms=20000):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.connect(server.bound_address)
    return sock


def recv(sock):
    return protocol.decode(sock.recv_multipart(), protocol.Limits(max_frame_pixels=1 << 40),
                           expect=protocol.REPLY_TYPES)


def submit_frames(rid, req):
    buffers, meanings = [], []
    body = codec.to_wire(req, buffers, meanings)
    body["operation"] = req.operation
    return protocol.encode(protocol.Message(type="submit", id=rid, body=body, buffers=buffers, meanings=meanings))


def takes_under(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("bodydouble/*/take_*"))


def a_fill(studio, **kw):
    return FillRequest(**{"frames": sequence_frames(studio["plate"], 1001, 1001, studio["mask"]), "steps": 1,
                          "seed": 1, **kw})


def long_fill(studio, **kw):
    """Holds the worker for many seconds (cancelled by the test)."""
    return a_fill(studio, frames=sequence_frames(studio["plate"], 1001, 1003, studio["mask"]), steps=500, **kw)


@pytest.fixture
def small_queue(server):
    jobs = server.jobs
    saved = jobs.max_queued, jobs.max_queued_per_peer
    jobs.max_queued, jobs.max_queued_per_peer = 2, 2
    yield jobs
    jobs.max_queued, jobs.max_queued_per_peer = saved


# -- fuzz ---------------------------------------------------------------------------------------
def test_bounded_socket_fuzz_every_message_answered(server, client):
    sock = dealer(server)
    try:
        sent = 0
        for frames in mutations(random.Random(12), 3000):
            sock.send_multipart(frames)
            sent += 1
        codes: dict[str, int] = {}
        for _ in range(sent):
            msg = recv(sock)
            assert msg.final, msg
            key = msg.body.get("code", "result") if msg.type == "error" else "result"
            codes[key] = codes.get(key, 0) + 1
        assert sock.poll(300) == 0          # exactly one reply each
        assert set(codes) <= {"result", "malformed", "bad_tag", "protocol_mismatch", "unknown_type",
                              "invalid_request", "buffer_mismatch", "too_large", "unknown_job"}, codes
        assert codes["malformed"] and codes["result"]
    finally:
        sock.close()
    assert client.connect()["state"] == "ready"


def test_nesting_depth_10000_is_malformed(server, client):
    sock = dealer(server)
    try:
        header = b'{"protocol": 1, "type": "hello", "id": "deep", "body": {"client": ' + b"[" * 10_000 + \
            b"]" * 10_000 + b"}}"
        sock.send_multipart([protocol.TAG, header])
        msg = recv(sock)
        assert msg.type == "error" and msg.body["code"] == "malformed"
    finally:
        sock.close()
    assert client.connect()["state"] == "ready"


# -- floods and busy ------------------------------------------------------------------------------
def flood(server, studio, connections: int, total: int):
    """``total`` requests over ``connections`` sockets, sent back to back (every 50th a fill submit, the rest
    heartbeats); returns per request id its first reply, the hello latencies of a fresh client meanwhile, and
    how many of its hellos were answered before the flood's last reply."""
    socks = [dealer(server, timeout_ms=60000) for _ in range(connections)]
    fill = submit_frames("placeholder", a_fill(studio))
    first: dict[str, protocol.Message] = {}
    latencies: list[float] = []
    answered_at: list[float] = []
    sending = threading.Event()
    sending.set()

    def probe():
        with Client(server.bound_address, timeout=10) as fresh:
            while sending.is_set():
                t0 = time.monotonic()
                fresh.connect()
                answered_at.append(time.monotonic())
                latencies.append(answered_at[-1] - t0)
                time.sleep(0.05)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        expected = {}
        for i in range(total):
            sock = socks[i % connections]
            rid = f"r{i}"
            if i % 50 == 0:
                header = json.loads(bytes(fill[1]))
                header["id"] = rid
                sock.send_multipart([fill[0], json.dumps(header).encode(), *fill[2:]])
            else:
                sock.send_multipart(request("heartbeat", rid))
            expected[rid] = sock
        for sock in socks:
            mine = sum(1 for s in expected.values() if s is sock)
            while sum(1 for rid in first if expected[rid] is sock) < mine:
                msg = recv(sock)
                if msg.id in expected and msg.id not in first:
                    first[msg.id] = msg
        flood_ended = time.monotonic()
    finally:
        sending.clear()
        prober.join(30)
        for sock in socks:
            sock.close()
    return first, latencies, sum(1 for t in answered_at if t < flood_ended)


@pytest.mark.parametrize("connections", [1, 8])
def test_a_flood_gets_every_reply_and_hello_stays_fast(server, studio, client, small_queue, connections):
    small_queue.max_queued = 0          # full: every submit of the flood is told to come back later
    first, latencies, during = flood(server, studio, connections, 10_000)
    assert len(first) == 10_000
    kinds = {}
    for rid, msg in first.items():
        kind = msg.body.get("code") if msg.type == "error" else msg.type
        kinds[kind] = kinds.get(kind, 0) + 1
    assert kinds == {"result": 10_000 - 200, "busy": 200}, kinds     # every heartbeat answered, every submit told
    busy = next(m for m in first.values() if m.body.get("code") == "busy")
    assert busy.body["details"]["retry_after"] >= 1
    # Answered throughout, never starved: a starved client is answered once, after the flood (whose replies take
    # 10-20 s to drain here). Latency is not timed here: with the server, the flooder and the prober sharing one
    # process and a loaded 2-core box, single hellos were measured at 1.2 s on CI and 8 s inside a full run.
    assert during >= 3 and max(latencies) < 30.0, (during, latencies)


def test_busy_says_when_to_retry_and_a_cancelled_take_is_marked_first(server, studio, client, small_queue):
    holder = client.submit(long_fill(studio))
    holder.accepted(timeout=30)
    queued = [client.submit(a_fill(studio)) for _ in range(2)]
    for job in queued:
        job.accepted(timeout=30)
    refused = client.submit(a_fill(studio))
    with pytest.raises(errors.Busy) as info:
        refused.wait(timeout=30)
    assert refused.job_id is None and info.value.retry_after >= 1
    for job in queued:
        job.cancel()
        with pytest.raises(errors.JobCancelled):
            job.wait(timeout=30)
    while not (client.status(holder.job_id)["progress"] or {}).get("step"):
        time.sleep(0.05)
    holder.cancel()
    with pytest.raises(errors.JobCancelled):
        holder.wait(timeout=60)
    # `cancelled` is sent only after the worker stopped and the take (if one was opened) said so.
    assert server.jobs.running is None or server.jobs.running.id != holder.job_id
    take_dir = client.status(holder.job_id)["take_dir"]
    if take_dir:
        assert json.loads((Path(take_dir) / "take.json").read_text())["status"] == "cancelled"


# -- ordering, ids, re-attach ---------------------------------------------------------------------
def test_first_reply_is_accepted_or_the_final_error_and_events_are_numbered(server, studio):
    """Valid fills, fills refused at submit, and fills that fail on the worker (an all-zero mask), interleaved."""
    plate = np.ones((32, 48, 4), np.float16)
    kinds = [a_fill(studio), a_fill(studio, adapters=[AdapterRef("nobody")]),
             FillRequest(frames=[FrameInput(1, ImageRef(pixels=plate), ImageRef(pixels=np.zeros((32, 48), np.float32)))],
                         steps=1)]
    sock = dealer(server, timeout_ms=120000)
    try:
        sent = {}
        for i in range(24):
            rid = f"o{i}"
            sock.send_multipart(submit_frames(rid, kinds[i % 3]))
            sent[rid] = i % 3
        events: dict[str, list] = {rid: [] for rid in sent}
        finals = 0
        while finals < len(sent):
            msg = recv(sock)
            if msg.type == "heartbeat":       # the server's own beats to a connection following jobs
                continue
            events[msg.id].append(msg)
            finals += msg.final
    finally:
        sock.close()
    for rid, kind in sent.items():
        got = events[rid]
        assert got[0].type in ("accepted", "error"), (rid, [m.type for m in got])
        assert [m.final for m in got].count(True) == 1 and got[-1].final
        if got[0].type == "error":
            assert len(got) == 1 and kind == 1 and got[0].body["code"] == "unknown_adapter"
        else:
            assert kind != 1
            seqs = [m.body["seq"] for m in got]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] == 0
            if kind == 2:
                assert got[-1].body["code"] == "empty_mask"


def test_a_reused_request_id_is_refused(server, studio):
    sock = dealer(server, timeout_ms=60000)
    try:
        sock.send_multipart(submit_frames("same", a_fill(studio)))
        sock.send_multipart(submit_frames("same", a_fill(studio)))
        replies = []
        while not any(m.type == "error" and m.body.get("code") == "duplicate_id" for m in replies) or \
                not any(m.type == "result" for m in replies):
            replies.append(recv(sock))
        assert replies[0].type == "accepted"
    finally:
        sock.close()


def test_status_and_follow_by_job_id_from_another_connection(server, studio, client):
    job = client.submit(a_fill(studio, steps=3, return_pixels=True))
    job_id = job.accepted(timeout=30)
    with Client(server.bound_address, timeout=30) as other:
        assert other.status(job_id)["job"] == job_id
        followed = other.follow(job_id)
        theirs = followed.wait(timeout=120)
    mine = job.wait(timeout=120)
    assert theirs.take_dir == mine.take_dir and theirs.frames == mine.frames
    assert np.array_equal(theirs.pixels[1001], mine.pixels[1001])     # a live follower gets the whole reply
    ended = server.jobs.find(job_id)
    assert ended.request is None and ended.run is None       # the ended job keeps its summary, not the pixels
    assert ended.final_type == "result" and ended.summary["take"] == mine.take
    with Client(server.bound_address, timeout=30) as late:    # following an ended job: its final reply at once
        again = late.follow(job_id).wait(timeout=10)
        assert again.take == mine.take and not again.pixels
        assert late.status(job_id)["final"]["body"]["take"] == mine.take
    with pytest.raises(errors.RequestError) as info:
        client.follow("job-from-another-life-1").wait(timeout=10)
    assert info.value.code == "unknown_job"


# -- submit-time checks use no take number ----------------------------------------------------------
def test_refusals_at_submit_use_no_take_number_and_links_cannot_carry_a_take_out(server, studio, client, tmp_path):
    shot = studio["root"] / "shots" / f"sh_submit_{os.getpid()}"
    shot.mkdir(parents=True, exist_ok=True)
    first = client.submit(a_fill(studio, output_dir=str(shot))).wait(timeout=120)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    linked = studio["root"] / "shots" / f"sh_link_{os.getpid()}"
    linked.mkdir(exist_ok=True)
    (linked / "bodydouble").symlink_to(outside)
    filed = studio["root"] / "shots" / f"sh_file_{os.getpid()}"
    filed.mkdir(exist_ok=True)
    (filed / "bodydouble").write_text("a file where the takes folder should be")
    refusals = [
        (a_fill(studio, output_dir=str(shot), adapters=[AdapterRef("nobody")]), "unknown_adapter"),
        (a_fill(studio, output_dir=str(shot), adapters=[AdapterRef("foreign")]), "adapter_incompatible"),
        (a_fill(studio, output_dir=str(shot), frames=[FrameInput(1, ImageRef(path=str(tmp_path / "x.exr")))]),
         "path_not_allowed"),
        (a_fill(studio, output_dir=str(linked)), "path_not_allowed"),
        (a_fill(studio, output_dir=str(filed)), "path_unwritable"),
    ]
    for req, code in refusals:
        job = client.submit(req)
        with pytest.raises(errors.RequestError) as info:
            job.wait(timeout=30)
        assert info.value.code == code, info.value
        assert job.job_id is None          # refused before `accepted`
    assert list(outside.iterdir()) == []
    assert "reason" in info.value.details and info.value.details["path"].endswith("bodydouble")
    second = client.submit(a_fill(studio, output_dir=str(shot))).wait(timeout=120)
    assert second.take == first.take + 1
    assert takes_under(shot) == [f"take_{first.take:03d}", f"take_{second.take:03d}"]


def test_a_take_folder_swapped_for_a_link_is_refused_when_writing(studio, tmp_path):
    """Checked at the moment of use: a take folder replaced by a link after it was made is not written through."""
    from bodydouble_server import takes
    from bodydouble_server.paths import AllowedRoots

    root = studio["root"] / "shots" / f"sh_swap_{os.getpid()}"
    roots = AllowedRoots([studio["root"]])
    take = takes.allocate(root, "sh", "hero", {}, roots=roots)
    outside = tmp_path / "out"
    outside.mkdir()
    real = take.dir.with_name("moved")
    take.dir.rename(real)
    take.dir.symlink_to(outside)
    with pytest.raises(errors.RequestError) as info:
        take.frame_path(1)
    assert info.value.code == "path_not_allowed"
    with pytest.raises(errors.RequestError):
        take.finish("complete")
    assert list(outside.iterdir()) == []


def test_model_kinds_and_the_extend_window_are_checked_before_accepted(server, studio, tmp_path):
    from bodydouble.jobspec import ExtendRequest, TrainRequest
    from bodydouble_server.config import ServerConfig

    from .support import server_thread

    def first_reply(address, req):
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 30000)
        sock.connect(address)
        try:
            sock.send_multipart(submit_frames("k1", req))
            return recv(sock)
        finally:
            sock.close()

    frames = sequence_frames(studio["plate"], 1001, 1003)
    window = server.engine.video_model().window
    many = [FrameInput(i, ImageRef(pixels=np.ones((8, 8, 3), np.float16))) for i in range(window)]
    # K + overlap + 1 > window, even for a one-chunk extend (count 1)
    too_wide = first_reply(server.bound_address, ExtendRequest(frames=many, count=1, conditioning=window - 2,
                                                               overlap=2))
    assert too_wide.type == "error" and too_wide.body["code"] == "invalid_request", too_wide.body
    assert "window" in too_wide.body["message"]

    config = ServerConfig(port=0, model="test:passthrough", video_model="none", resolution=64,
                          roots=[str(studio["root"]), str(tmp_path)], adapters=str(tmp_path / "adapters"),
                          output_root=str(tmp_path / "takes"))
    with server_thread(config) as plain:
        train = TrainRequest(frames=[str(studio["root"])], character="Hero", model_kind="video",
                             rights_holder="Studio", licence="test")
        for req in (train, ExtendRequest(frames=frames, count=2)):
            reply = first_reply(plain.bound_address, req)
            assert reply.type == "error" and reply.body["code"] == "not_supported", reply.body
    assert not (tmp_path / "takes").exists()


def test_every_documented_exr_attribute_is_present_even_when_empty(client, studio):
    """No holes: a fill without adapters or prompts still writes every bodydouble:* attribute ('' when empty)."""
    import OpenEXR

    result = client.submit(a_fill(studio, prompt="", negative_prompt="")).wait(timeout=120)
    header = OpenEXR.File(result.frames[1001]).header()
    documented = ("operation adapter adapter_sha256 adapter_weights adapter_character base_model base_model_sha256 "
                  "base_model_family test_model prompt negative_prompt seed steps strength guidance colorspace take "
                  "job frame source mask_source tool_version time").split()
    missing = [key for key in documented if f"bodydouble:{key}" not in header]
    assert missing == []
    assert header["bodydouble:negative_prompt"] == "" and header["bodydouble:adapter_sha256"] == ""


def test_a_queued_job_hears_its_place_when_the_queue_moves(server, studio, client):
    """A host's jobs panel counts down: a queued job's followers get its new place each time the queue moves."""
    holder = client.submit(long_fill(studio))
    holder.accepted(timeout=30)
    while client.status(holder.job_id)["state"] != "running":
        time.sleep(0.02)
    first, second = client.submit(a_fill(studio)), client.submit(a_fill(studio))
    first.accepted(timeout=30), second.accepted(timeout=30)
    assert (first.queue_position, second.queue_position) == (1, 2)
    first.cancel()
    with pytest.raises(errors.JobCancelled):
        first.wait(timeout=30)
    moved = next(p for p in second.events(timeout=30) if "queue_position" in p.raw)
    assert moved.raw["queue_position"] == 1 and second.queue_position == 1 and moved.fraction == 0.0
    for job in (second, holder):
        job.cancel()
        with pytest.raises(errors.JobCancelled):
            job.wait(timeout=60)
