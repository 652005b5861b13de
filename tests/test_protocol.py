"""Wire format v1: framing, validation and limits (no sockets needed)."""
import json

import numpy as np
import pytest

from bodydouble import errors, protocol
from bodydouble.protocol import Limits, Message


def frames_of(msg):
    return [bytes(f) if not isinstance(f, bytes) else f for f in protocol.encode(msg)]


def test_round_trip_keeps_buffers_exact_and_little_endian():
    plate = np.random.default_rng(0).random((4, 5, 4)).astype(np.float16)
    mask = (np.arange(20, dtype=np.uint8).reshape(4, 5))
    big_endian = np.arange(6, dtype=">f4").reshape(2, 3)
    msg = Message(type="submit", id="r-1", body={"x": 1}, buffers=[plate, mask, big_endian], meanings=["plate", "mask", ""])
    out = protocol.decode(frames_of(msg))
    assert out.type == "submit" and out.id == "r-1" and out.body == {"x": 1}
    assert out.buffers[0].dtype == np.dtype("<f2") and np.array_equal(out.buffers[0], plate)
    assert np.array_equal(out.buffers[1], mask)
    assert out.buffers[2].dtype == np.dtype("<f4") and np.array_equal(out.buffers[2], big_endian)
    assert out.meanings[:2] == ["plate", "mask"]
    header = json.loads(frames_of(msg)[1])
    assert header["buffers"][0] == {"shape": [4, 5, 4], "dtype": "float16", "meaning": "plate"}


def test_decode_does_not_copy_buffers():
    data = bytearray(np.arange(12, dtype="<f4").tobytes())
    header = json.dumps({"protocol": 1, "type": "submit", "id": "a", "body": {},
                         "buffers": [{"shape": [3, 4], "dtype": "float32"}]}).encode()
    out = protocol.decode([protocol.TAG, header, memoryview(data)])
    data[0:4] = np.float32(42).tobytes()
    assert out.buffers[0][0, 0] == 42  # a view on the received frame, not a copy


def header(**over):
    h = {"protocol": 1, "type": "hello", "id": "x", "body": {}}
    h.update(over)
    return json.dumps(h).encode()


@pytest.mark.parametrize("frames, code", [
    ([b"only one"], "malformed"),
    ([b"HTTP/1.1", header()], "bad_tag"),
    ([protocol.TAG, b"\xff\xfe not json"], "malformed"),
    ([protocol.TAG, b"[1, 2]"], "malformed"),
    ([protocol.TAG, header(protocol=2)], "protocol_mismatch"),
    ([protocol.TAG, header(type="launch_missiles")], "unknown_type"),
    ([protocol.TAG, header(extra=1)], "malformed"),
    ([protocol.TAG, json.dumps({"protocol": 1, "type": "hello"}).encode()], "malformed"),
    ([protocol.TAG, header(buffers=[{"shape": [2, 2], "dtype": "float32"}]), b"\0" * 15], "buffer_mismatch"),
    ([protocol.TAG, header(buffers=[{"shape": [2, 2], "dtype": "float64"}]), b"\0" * 32], "buffer_mismatch"),
    ([protocol.TAG, header(buffers=[{"shape": [2, 2], "dtype": "float32"}])], "buffer_mismatch"),
    ([protocol.TAG, header(buffers=[{"shape": [-1, 2], "dtype": "float32"}]), b""], "malformed"),
    ([protocol.TAG, header(buffers=[{"shape": [100000, 100000, 4], "dtype": "float16"}]), b""], "too_large"),
    ([protocol.TAG, header(buffers=[{"shape": [4, 4, 99], "dtype": "uint8"}]), b""], "too_large"),
])
def test_bad_messages_are_refused_with_a_code(frames, code):
    with pytest.raises(errors.ProtocolError) as info:
        protocol.decode(frames)
    assert info.value.code == code
    assert info.value.message


def test_limits_are_checked_before_allocation():
    # 60k x 60k float32 RGBA would be 57 GB: refused from the header alone, without those bytes.
    h = header(buffers=[{"shape": [60000, 60000, 4], "dtype": "float32"}])
    with pytest.raises(errors.ProtocolError) as info:
        protocol.decode([protocol.TAG, h, b"tiny"], Limits())
    assert info.value.code == "too_large"
    with pytest.raises(errors.ProtocolError) as info:
        protocol.decode([protocol.TAG, b"{" + b" " * 2000 + b"}"], Limits(max_header_bytes=1000))
    assert info.value.code == "too_large"
    many = header(buffers=[{"shape": [1], "dtype": "uint8"}] * 5)
    with pytest.raises(errors.ProtocolError) as info:
        protocol.decode([protocol.TAG, many] + [b"\0"] * 5, Limits(max_buffers=4))
    assert info.value.code == "too_large"


def test_unsupported_dtype_cannot_be_sent():
    with pytest.raises(errors.RequestError):
        protocol.encode(Message(type="submit", id="a", buffers=[np.zeros(3, np.float64)]))


def test_no_pickle_anywhere_in_the_wire_code():
    import inspect

    import bodydouble.client
    import bodydouble.connection

    for module in (protocol, bodydouble.connection, bodydouble.client):
        source = inspect.getsource(module)
        assert "pickle" not in source.replace("unpickled", "").replace("No pickle", "")
        assert "recv_pyobj" not in source and "send_pyobj" not in source
