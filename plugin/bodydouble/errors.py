"""Errors shared by client and server.

Every error that crosses the wire has a stable ``code`` (hosts switch on it) and a human
message (hosts show it). The server raises :class:`RequestError`; the client turns an error
reply back into the matching subclass below.
"""
from __future__ import annotations


class BodyDoubleError(Exception):
    """Base class of everything BodyDouble raises on purpose."""

    code = "error"

    def __init__(self, message: str, code: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or {}

    def __str__(self) -> str:
        return self.message


class RequestError(BodyDoubleError):
    """A request the server refuses or a job that fails; ``code`` names why."""


# Codes, in one place so the protocol doc (its one table of error codes), server and client agree.
MALFORMED = "malformed"                # not a BodyDouble message at all (frames, JSON, header shape, nesting)
BAD_TAG = "bad_tag"                    # first frame is not the protocol tag
PROTOCOL_MISMATCH = "protocol_mismatch"
UNKNOWN_TYPE = "unknown_type"
INVALID_REQUEST = "invalid_request"    # body fields missing, unknown, wrong type or out of range
BUFFER_MISMATCH = "buffer_mismatch"    # declared shape/dtype does not match the bytes sent
TOO_LARGE = "too_large"                # a limit (header, buffers, frame size) was exceeded
UNKNOWN_ADAPTER = "unknown_adapter"
ADAPTER_INCOMPATIBLE = "adapter_incompatible"
PATH_NOT_ALLOWED = "path_not_allowed"
UNREADABLE_FILE = "unreadable_file"
UNKNOWN_COLORSPACE = "unknown_colorspace"
EMPTY_MASK = "empty_mask"
UNKNOWN_JOB = "unknown_job"
DUPLICATE_ID = "duplicate_id"          # a request id this connection already used for a job
BUSY = "busy"                          # the job queue is full: retry after details.retry_after seconds
PATH_UNWRITABLE = "path_unwritable"    # inside the roots, but the server cannot write there (details: path, reason)
WRITE_FAILED = "write_failed"          # writing a take's file failed, e.g. a full disk (details: path, reason)
NOT_SUPPORTED = "not_supported"
NOT_PERMITTED = "not_permitted"        # outside a consent record, a retired adapter, no record (details: rule, record)
CANCELLED = "cancelled"
MODEL_UNAVAILABLE = "model_unavailable"
JOB_FAILED = "job_failed"
TRAINING_DIVERGED = "training_diverged"   # the loss or the LoRA weights stopped being finite; nothing published
INTERNAL = "internal"


class ProtocolError(RequestError):
    """The bytes on the wire do not form a valid v1 message."""

    code = MALFORMED


class ProtocolMismatch(BodyDoubleError):
    code = PROTOCOL_MISMATCH


SERVER_UNAVAILABLE = "server_unavailable"   # client side: no server answered (connect, or it stopped answering)
BAD_ADDRESS = "bad_address"                 # client side: the address is not tcp://host:port (or ipc://, inproc://)


class ServerUnavailable(BodyDoubleError):
    """No BodyDouble server answers at the address: at connect, or it stopped answering mid-request."""

    code = SERVER_UNAVAILABLE


class ServerNotRunning(ServerUnavailable):
    """Nothing answered at connect time."""


class ServerLost(ServerUnavailable):
    """The server stopped answering (three missed heartbeats) while a request or job was in flight."""


class BadAddress(BodyDoubleError, ValueError):
    code = BAD_ADDRESS


class Busy(RequestError):
    """The server's queue is full; ``retry_after`` (seconds) says when to try again."""

    code = BUSY

    @property
    def retry_after(self) -> float:
        return float(self.details.get("retry_after", 1.0))


class RequestTimeout(BodyDoubleError):
    code = "timeout"


class UnknownAdapter(RequestError):
    code = UNKNOWN_ADAPTER


class AdapterIncompatible(RequestError):
    code = ADAPTER_INCOMPATIBLE


class JobCancelled(RequestError):
    code = CANCELLED


class JobFailed(RequestError):
    code = JOB_FAILED


def write_failed(path, reason) -> RequestError:
    """A take file that could not be written, with the OS's own reason (``reason``: text or an OSError)."""
    if isinstance(reason, OSError):
        reason = reason.strerror or str(reason)
    reason = str(reason).strip() or "unknown reason"
    return RequestError(f"cannot write {path}: {reason}", code=WRITE_FAILED, details={"path": str(path), "reason": reason})


_BY_CODE: dict[str, type[BodyDoubleError]] = {
    BUSY: Busy,
    SERVER_UNAVAILABLE: ServerUnavailable,
    PROTOCOL_MISMATCH: ProtocolMismatch,
    UNKNOWN_ADAPTER: UnknownAdapter,
    ADAPTER_INCOMPATIBLE: AdapterIncompatible,
    CANCELLED: JobCancelled,
    JOB_FAILED: JobFailed,
}


def error_from_reply(code: str, message: str, details: dict | None = None) -> BodyDoubleError:
    """The exception a client raises for an error reply."""
    cls = _BY_CODE.get(code, RequestError)
    return cls(message, code=code, details=details)
