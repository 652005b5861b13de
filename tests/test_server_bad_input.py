"""Bad input against a running server: each gets a clear error, and the server still answers hello."""
import json
import os

import numpy as np
import pytest
import zmq

from bodydouble import errors, protocol
from bodydouble.jobspec import AdapterRef, FillRequest, FrameInput, ImageRef, sequence_frames


@pytest.fixture
def raw(server):
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10000)
    sock.connect(server.bound_address)
    yield sock
    sock.close()


def reply(sock):
    msg = protocol.decode(sock.recv_multipart(), expect=protocol.REPLY_TYPES)
    while not msg.final:
        msg = protocol.decode(sock.recv_multipart(), expect=protocol.REPLY_TYPES)
    return msg


def still_alive(client):
    assert client.connect()["state"] == "ready"


def hdr(**fields):
    h = {"protocol": 1, "type": "hello", "id": "t1", "body": {}}
    h.update(fields)
    return json.dumps(h).encode()


@pytest.mark.parametrize("frames, code", [
    ([b"garbage"], "malformed"),
    ([b"\x00\x01\x02", b"\xff" * 100, b"x"], "bad_tag"),
    ([protocol.TAG, b"{not json"], "malformed"),
    ([protocol.TAG, hdr(protocol=99)], "protocol_mismatch"),
    ([protocol.TAG, hdr(type="format_disk")], "unknown_type"),
    ([protocol.TAG, json.dumps({"protocol": 1, "id": "t1"}).encode()], "malformed"),
    ([protocol.TAG, hdr(body={"client": "x", "bogus": 1})], "invalid_request"),
    ([protocol.TAG, hdr(type="submit", body={"operation": "fill", "frames": [{"frame": 1, "plate": {"pixels": {"buffer": 0}}}]},
                        buffers=[{"shape": [64, 64, 4], "dtype": "float16"}]), b"\0" * 100], "buffer_mismatch"),
    ([protocol.TAG, hdr(type="submit", body={"operation": "fill", "frames": [{"frame": 1, "plate": {"pixels": {"buffer": 0}}}]},
                        buffers=[{"shape": [20000, 20000, 4], "dtype": "float16"}]), b"\0" * 16], "too_large"),
    ([protocol.TAG, hdr(type="submit", body={"operation": "teleport"})], "invalid_request"),
    ([protocol.TAG, hdr(type="submit", body={"operation": "fill", "frames": "all"})], "invalid_request"),
    ([protocol.TAG, hdr(type="cancel", body={"job": "job-does-not-exist"})], "unknown_job"),
    ([protocol.TAG, hdr(type="status", body={"job": 5})], "invalid_request"),
])
def test_malformed_messages_get_an_error_and_the_server_lives(raw, client, frames, code):
    raw.send_multipart(frames)
    msg = reply(raw)
    assert msg.type == "error", msg
    assert msg.body["code"] == code, msg.body
    assert msg.body["message"]
    still_alive(client)


def test_huge_frame_is_refused_before_the_bytes_are_even_sent(raw, client):
    """The declared shape alone (an 80k x 80k plate) is enough to refuse; no array is built."""
    header = hdr(type="submit", body={"operation": "fill", "frames": [{"frame": 1, "plate": {"pixels": {"buffer": 0}}}]},
                 buffers=[{"shape": [80000, 80000, 4], "dtype": "float32"}])
    raw.send_multipart([protocol.TAG, header, b""])
    assert reply(raw).body["code"] == "too_large"
    still_alive(client)


def fill(client, **kw):
    job = client.submit(FillRequest(**{"steps": 2, "seed": 1, **kw}))
    return job.wait(timeout=120)


def expect_error(client, code, **kw):
    with pytest.raises(errors.RequestError) as info:
        fill(client, **kw)
    assert info.value.code == code, str(info.value)
    still_alive(client)
    return str(info.value)


def test_unknown_adapter(client, studio):
    frames = sequence_frames(studio["plate"], 1001, 1001, studio["mask"])
    message = expect_error(client, "unknown_adapter", frames=frames, adapters=[AdapterRef("nobody")])
    assert "hero" in message  # says what is available


def test_adapter_for_another_base_model(client, studio):
    frames = sequence_frames(studio["plate"], 1001, 1001, studio["mask"])
    message = expect_error(client, "adapter_incompatible", frames=frames, adapters=[AdapterRef("foreign")])
    assert "some-other-sd15-inpaint" in message
    listed = {a.name: a for a in client.list_adapters()}
    assert listed["foreign"].status == "incompatible" and listed["hero"].status == "ready"


def test_paths_outside_the_roots(client, studio, tmp_path):
    root = studio["root"]
    sneaky = str(root / ".." / ".." / "etc" / "passwd")
    expect_error(client, "path_not_allowed", frames=[FrameInput(1, ImageRef(path=sneaky))])
    expect_error(client, "path_not_allowed", frames=[FrameInput(1, ImageRef(path="relative/plate.exr"))])
    outside = tmp_path / "outside.exr"
    outside.write_bytes(b"x")
    link = root / "shots" / f"link_{os.getpid()}.exr"
    if not link.exists():
        link.symlink_to(outside)
    expect_error(client, "path_not_allowed", frames=[FrameInput(1, ImageRef(path=str(link)))])
    frames = sequence_frames(studio["plate"], 1001, 1001, studio["mask"])
    expect_error(client, "path_not_allowed", frames=frames, output_dir=str(tmp_path))


def test_unreadable_and_non_image_files(client, studio):
    not_image = studio["root"] / "shots" / "notes.exr"
    not_image.write_text("this is not an EXR")
    expect_error(client, "unreadable_file", frames=[FrameInput(1, ImageRef(path=str(not_image)))])
    expect_error(client, "unreadable_file", frames=[FrameInput(1, ImageRef(path=str(studio["root"] / "missing.exr")))])


def test_unknown_colour_space(client, studio):
    frames = sequence_frames(studio["plate"], 1001, 1001, studio["mask"])
    message = expect_error(client, "unknown_colorspace", frames=frames, colorspace="ACEScg-but-wrong")
    assert "ACEScg-but-wrong" in message


def test_empty_mask_and_mismatched_mask(client, studio):
    plate = np.ones((32, 48, 4), np.float16)
    expect_error(client, "empty_mask", frames=[FrameInput(1, ImageRef(pixels=plate), ImageRef(pixels=np.zeros((32, 48), np.float32)))])
    expect_error(client, "invalid_request",
                 frames=[FrameInput(1, ImageRef(pixels=plate), ImageRef(pixels=np.ones((16, 16), np.float32)))])
    rgb_only = np.ones((32, 48, 3), np.float16)
    expect_error(client, "empty_mask", frames=[FrameInput(1, ImageRef(pixels=rgb_only))])


# NaN/Inf pixels are not refused: files and buffers follow one repair policy (tests/test_hostile_files.py).


def test_cancel_of_an_unknown_job(client):
    with pytest.raises(errors.RequestError) as info:
        client.cancel("job-nope-1")
    assert info.value.code == "unknown_job"
    still_alive(client)
