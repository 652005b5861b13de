"""The wire decoder is total: any bytes are a valid message or a coded error, never another exception (#12)."""
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bodydouble import atomic, errors, protocol
from bodydouble.connection import normalize_address

CODES = {errors.MALFORMED, errors.BAD_TAG, errors.PROTOCOL_MISMATCH, errors.UNKNOWN_TYPE, errors.BUFFER_MISMATCH,
         errors.TOO_LARGE}
SMALL = protocol.Limits(max_header_bytes=4096, max_buffers=4, max_frame_side=64, max_frame_pixels=64 * 64)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
header_keys = st.sampled_from(["protocol", "type", "id", "body", "buffers", "x"])
descriptor = st.fixed_dictionaries({"shape": st.lists(st.integers(-2, 80), max_size=4),
                                    "dtype": st.sampled_from(["uint8", "uint16", "float16", "float32", "float64", 3])},
                                   optional={"meaning": json_values})


def decode_or_code(frames):
    try:
        msg = protocol.decode(frames, SMALL)
    except errors.BodyDoubleError as exc:
        assert exc.code in CODES, exc.code
        assert exc.message
        return exc.code
    assert isinstance(msg, protocol.Message) and msg.type in protocol.REQUEST_TYPES
    assert isinstance(msg.body, dict) and len(msg.buffers) == len(frames) - 2
    return "ok"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=64), max_size=5))
def test_any_frames_are_a_message_or_a_coded_error(frames):
    decode_or_code(frames)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=st.dictionaries(header_keys, json_values | st.lists(descriptor, max_size=3), max_size=6),
       valid_type=st.sampled_from(sorted(protocol.REQUEST_TYPES)), buffers=st.lists(st.binary(max_size=64), max_size=3),
       make_valid=st.booleans())
def test_structured_headers_are_a_message_or_a_coded_error(header, valid_type, buffers, make_valid):
    """Headers near the valid shape reach the deeper checks (descriptors, shapes, sizes)."""
    if make_valid:
        header = {"protocol": 1, "type": valid_type, "id": "x1", **header}
    decode_or_code([protocol.TAG, json.dumps(header).encode(), *buffers])


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(0, 199))
def test_mutated_valid_messages_are_a_message_or_a_coded_error(noise, at):
    array = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    tag, header, payload = protocol.encode(protocol.Message(type="status", id="r1", body={"job": "j"}, buffers=[array]))
    header = bytes(header)
    at = at % len(header)
    mutated = header[:at] + noise + header[at + len(noise):]
    decode_or_code([tag, mutated, bytes(payload)])


@pytest.mark.parametrize("depth", [990, 10_000])
def test_deep_nesting_is_malformed_not_a_crash(depth):
    header = b'{"protocol": 1, "type": "hello", "id": "x", "body": {"client": ' + b"[" * depth + b"]" * depth + b"}}"
    with pytest.raises(errors.ProtocolError) as info:
        protocol.decode([protocol.TAG, header], protocol.Limits())
    assert info.value.code == errors.MALFORMED
    assert protocol.peek_id([protocol.TAG, header]) is None   # peeking the id of such a header is safe too


def test_protocol_true_is_not_version_1():
    header = json.dumps({"protocol": True, "type": "hello", "id": "x"}).encode()
    with pytest.raises(errors.BodyDoubleError) as info:
        protocol.decode([protocol.TAG, header])
    assert info.value.code == errors.PROTOCOL_MISMATCH


def test_a_float64_array_is_a_buffer_mismatch_on_both_sides():
    with pytest.raises(errors.RequestError) as info:
        protocol.encode(protocol.Message(type="submit", id="x", buffers=[np.zeros(3, np.float64)]))
    assert info.value.code == errors.BUFFER_MISMATCH
    header = json.dumps({"protocol": 1, "type": "submit", "id": "x", "buffers": [{"shape": [3], "dtype": "float64"}]})
    with pytest.raises(errors.BodyDoubleError) as info:
        protocol.decode([protocol.TAG, header.encode(), b"\0" * 24])
    assert info.value.code == errors.BUFFER_MISMATCH


@pytest.mark.parametrize("address, expected", [
    ("localhost:5555", "tcp://localhost:5555"), ("tcp://127.0.0.1:7000", "tcp://127.0.0.1:7000"),
    ("  tcp://gpu01:5555 ", "tcp://gpu01:5555"), ("ipc:///tmp/bd.sock", "ipc:///tmp/bd.sock"),
    ("http://127.0.0.1:5555", None), ("tcp://127.0.0.1", None), ("", None), ("tcp://:5555", None),
    ("tcp://127.0.0.1:99999", None), ("tcp://host:5555/path", None),
])
def test_addresses_are_checked_up_front(address, expected):
    if expected is None:
        with pytest.raises(errors.BadAddress):
            normalize_address(address)
    else:
        assert normalize_address(address) == expected


def test_atomic_write_leaves_no_temporary_on_failure(tmp_path):
    target = tmp_path / "take.json"
    atomic.write_json(target, {"a": 1})
    with pytest.raises(ValueError):
        atomic.write_json(target, {"a": float("nan")})      # fails before any file exists
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer died")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["take.json"]


def test_staged_dir_replace_has_no_gap_and_recovers(tmp_path):
    target = tmp_path / "step_0000005"
    with atomic.staged_dir(target) as staging:
        (staging / "w").write_text("old")
    with atomic.staged_dir(target, replace=True) as staging:
        (staging / "w").write_text("new")
    assert (target / "w").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["step_0000005"]
    # A crash between "old aside" and "new in": the old one comes back.
    aside = tmp_path / f".step_0000005.dead{atomic.ASIDE_MARK}"
    target.rename(aside)
    atomic.recover_aside(target)
    assert (target / "w").read_text() == "new" and not aside.exists()
    with pytest.raises(FileExistsError):
        with atomic.staged_dir(target) as staging:
            (staging / "w").write_text("never")
    assert [p.name for p in tmp_path.iterdir()] == ["step_0000005"]


@pytest.mark.parametrize("body, message", [
    ({"frames": [{"frame": 1, "plate": {"path": 5}}]}, "frames[0].plate.path: expected str, got int"),
    ({"frames": [{"frame": 1, "plate": {"path": "/a"}, "mask": 3}]}, "frames[0].mask: expected an object, got int"),
    ({"frames": [{"frame": 1, "plate": {"path": "/a"}}], "shot": 7}, "shot: expected str, got int"),
])
def test_codec_errors_name_the_field_once(body, message):
    from bodydouble import codec
    from bodydouble.jobspec import FillRequest

    with pytest.raises(errors.RequestError) as info:
        codec.from_wire(FillRequest, body, [])
    assert str(info.value) == message and info.value.code == errors.INVALID_REQUEST
