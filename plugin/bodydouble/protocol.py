"""Wire protocol v1: how one BodyDouble message is framed on a ZeroMQ socket.

A message is multipart: ``[TAG, header, buffer 0, buffer 1, ...]``. The header is UTF-8 JSON::

    {"protocol": 1, "type": "submit", "id": "c3f1-7", "body": {...},
     "buffers": [{"shape": [1080, 2048, 4], "dtype": "float16", "meaning": "plate 1001"}]}

Buffers are raw little-endian C-order arrays, sent and received without copies. Nothing is
ever unpickled. Limits are checked against the *declared* sizes before any array is built.
The full spec is ``docs/protocol.md``; this module is its one implementation.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from . import errors

TAG = b"BODYDOUBLE"
VERSION = 1

# Requests a client may send, and the replies a server sends.
REQUEST_TYPES = frozenset(
    {"hello", "list_adapters", "rescan", "submit", "cancel", "status", "follow", "heartbeat"}
)
# ``heartbeat`` also flows server -> client (id null) while a connection follows a job.
REPLY_TYPES = frozenset({"accepted", "progress", "result", "error", "heartbeat"})
FINAL_TYPES = frozenset({"result", "error"})

# dtype names on the wire -> little-endian numpy dtypes
DTYPES: dict[str, np.dtype] = {
    "uint8": np.dtype("<u1"),
    "uint16": np.dtype("<u2"),
    "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
}

_HEADER_KEYS = {"protocol", "type", "id", "body", "buffers"}
_BUFFER_KEYS = {"shape", "dtype", "meaning"}


@dataclass(frozen=True)
class Limits:
    """What a peer accepts. The server advertises its limits in the hello reply."""

    max_header_bytes: int = 1 << 20
    max_buffers: int = 2048
    max_frame_side: int = 16384
    max_frame_pixels: int = 8192 * 8192
    max_channels: int = 16

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Message:
    type: str
    id: str | None
    body: dict = field(default_factory=dict)
    buffers: list[np.ndarray] = field(default_factory=list)
    meanings: list[str] = field(default_factory=list)
    protocol: int = VERSION

    @property
    def final(self) -> bool:
        return self.type in FINAL_TYPES


def dtype_name(array: np.ndarray) -> str:
    for name, dt in DTYPES.items():
        if array.dtype.newbyteorder("<") == dt and array.dtype.kind == dt.kind:
            return name
    raise errors.RequestError(
        f"arrays of dtype {array.dtype} cannot be sent; use one of {sorted(DTYPES)}",
        code=errors.BUFFER_MISMATCH,
    )


def encode(msg: Message) -> list[Any]:
    """Frames for ``socket.send_multipart(frames, copy=False)``.

    Arrays are passed as buffers, not copied: the caller must not mutate them until sent.
    """
    descriptors = []
    payload: list[Any] = []
    for i, array in enumerate(msg.buffers):
        name = dtype_name(array)
        wire = np.ascontiguousarray(array, dtype=DTYPES[name])
        descriptor = {"shape": list(wire.shape), "dtype": name}
        if i < len(msg.meanings) and msg.meanings[i]:
            descriptor["meaning"] = msg.meanings[i]
        descriptors.append(descriptor)
        payload.append(memoryview(wire).cast("B") if wire.size else b"")
    header = {"protocol": msg.protocol, "type": msg.type, "id": msg.id, "body": msg.body}
    if descriptors:
        header["buffers"] = descriptors
    return [TAG, json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8"), *payload]


def _view(frame: Any) -> memoryview:
    # zmq.Frame (copy=False) exposes .buffer; bytes and memoryviews come straight through.
    buf = getattr(frame, "buffer", frame)
    return memoryview(buf)


def peek_id(frames: Sequence[Any]) -> str | None:
    """Best-effort request id of a message that failed to decode, so the error can name it."""
    try:
        header = json.loads(bytes(_view(frames[1])))
        rid = header.get("id")
        return rid if isinstance(rid, str) and 0 < len(rid) <= 128 else None   # only an id a reply may carry
    except Exception:
        return None


def decode(frames: Sequence[Any], limits: Limits = Limits(), expect: frozenset = REQUEST_TYPES) -> Message:
    """Parse and validate one message; raise ``ProtocolError`` (with a code) if it is not valid.

    Total: for any input this returns a message or raises a coded ``BodyDoubleError``, nothing else."""
    try:
        return _decode(frames, limits, expect)
    except errors.BodyDoubleError:
        raise
    except Exception as exc:   # a case the checks below missed is still the sender's malformed message
        raise errors.ProtocolError(f"message could not be decoded: {type(exc).__name__}: {exc}") from None


def _decode(frames: Sequence[Any], limits: Limits, expect: frozenset) -> Message:
    if len(frames) < 2:
        raise errors.ProtocolError(
            f"a BodyDouble message has at least 2 frames (tag, header); got {len(frames)}"
        )
    if bytes(_view(frames[0])) != TAG:
        raise errors.ProtocolError(
            f"first frame must be the protocol tag {TAG.decode()!r}: this peer does not speak BodyDouble",
            code=errors.BAD_TAG,
        )
    raw = _view(frames[1])
    if raw.nbytes > limits.max_header_bytes:
        raise errors.ProtocolError(
            f"header is {raw.nbytes} bytes; the limit is {limits.max_header_bytes}", code=errors.TOO_LARGE
        )
    try:
        header = json.loads(bytes(raw).decode("utf-8"))
    except RecursionError:
        raise errors.ProtocolError("header nests JSON too deeply") from None
    except Exception as exc:   # UnicodeDecodeError, ValueError, and anything else json may raise: never escapes
        raise errors.ProtocolError(f"header is not UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict):
        raise errors.ProtocolError("header must be a JSON object")
    unknown = set(header) - _HEADER_KEYS
    if unknown:
        raise errors.ProtocolError(f"unknown header fields: {sorted(unknown)}")
    for key in ("protocol", "type", "id"):
        if key not in header:
            raise errors.ProtocolError(f"header is missing {key!r}")
    version = header["protocol"]
    if type(version) is not int or version != VERSION:    # `true == 1` in Python: not a version
        raise errors.ProtocolError(
            f"peer speaks BodyDouble protocol {version!r}; this side speaks {VERSION}. "
            "Update the older of the plugin and the server.",
            code=errors.PROTOCOL_MISMATCH,
        )
    mtype, rid, body = header["type"], header["id"], header.get("body", {})
    if not isinstance(mtype, str) or mtype not in expect:
        raise errors.ProtocolError(
            f"unknown message type {mtype!r}; expected one of {sorted(expect)}", code=errors.UNKNOWN_TYPE
        )
    if rid is not None and (not isinstance(rid, str) or not 0 < len(rid) <= 128):
        raise errors.ProtocolError("'id' must be a string of 1 to 128 characters")
    if not isinstance(body, dict):
        raise errors.ProtocolError("'body' must be a JSON object")

    descriptors = header.get("buffers", [])
    if not isinstance(descriptors, list):
        raise errors.ProtocolError("'buffers' must be a list")
    if len(descriptors) > limits.max_buffers:
        raise errors.ProtocolError(
            f"{len(descriptors)} buffers declared; the limit is {limits.max_buffers}", code=errors.TOO_LARGE
        )
    if len(descriptors) != len(frames) - 2:
        raise errors.ProtocolError(
            f"header declares {len(descriptors)} buffers but {len(frames) - 2} were sent",
            code=errors.BUFFER_MISMATCH,
        )
    buffers, meanings = [], []
    for index, (desc, frame) in enumerate(zip(descriptors, frames[2:])):
        dtype, shape = _check_descriptor(index, desc, limits)
        view = _view(frame)
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if view.nbytes != expected:
            raise errors.ProtocolError(
                f"buffer {index}: declared {shape} {desc['dtype']} is {expected} bytes but {view.nbytes} arrived",
                code=errors.BUFFER_MISMATCH,
            )
        buffers.append(np.frombuffer(view, dtype=dtype).reshape(shape) if expected else np.zeros(shape, dtype))
        meanings.append(str(desc.get("meaning", "")))
    return Message(type=mtype, id=rid, body=body, buffers=buffers, meanings=meanings, protocol=version)


def _check_descriptor(index: int, desc: Any, limits: Limits) -> tuple[np.dtype, tuple[int, ...]]:
    if not isinstance(desc, dict) or set(desc) - _BUFFER_KEYS or "shape" not in desc or "dtype" not in desc:
        raise errors.ProtocolError(f"buffer {index}: descriptor must be {{shape, dtype[, meaning]}}")
    dtype = DTYPES.get(desc["dtype"]) if isinstance(desc["dtype"], str) else None
    if dtype is None:
        raise errors.ProtocolError(
            f"buffer {index}: dtype {desc['dtype']!r} is not one of {sorted(DTYPES)}", code=errors.BUFFER_MISMATCH
        )
    shape = desc["shape"]
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 3
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise errors.ProtocolError(f"buffer {index}: shape must be 1 to 3 non-negative integers, got {shape!r}")
    check_frame_size(shape, limits, what=f"buffer {index}")
    return dtype, tuple(shape)


def check_frame_size(shape: Sequence[int], limits: Limits, what: str = "frame") -> None:
    """Refuse an image shape (H, W[, C]) over the limits. Used for buffers and for files' headers alike."""
    height = shape[0]
    width = shape[1] if len(shape) > 1 else 1
    channels = shape[2] if len(shape) > 2 else 1
    if max(height, width) > limits.max_frame_side or height * width > limits.max_frame_pixels:
        raise errors.ProtocolError(
            f"{what} is {width}x{height}; the server accepts at most {limits.max_frame_pixels} pixels "
            f"and {limits.max_frame_side} per side",
            code=errors.TOO_LARGE,
        )
    if channels > limits.max_channels:
        raise errors.ProtocolError(
            f"{what} has {channels} channels; the limit is {limits.max_channels}", code=errors.TOO_LARGE
        )


def error_message(rid: str | None, exc: errors.BodyDoubleError) -> Message:
    body = {"code": exc.code, "message": exc.message}
    if exc.details:
        body["details"] = exc.details
    return Message(type="error", id=rid, body=body)
