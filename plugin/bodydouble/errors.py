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


# Codes, in one place so the protocol doc, server and client agree.
MALFORMED = "malformed"                # not a BodyDouble message at all (frames, JSON, header shape)
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
NOT_SUPPORTED = "not_supported"
CANCELLED = "cancelled"
MODEL_UNAVAILABLE = "model_unavailable"
JOB_FAILED = "job_failed"
INTERNAL = "internal"


class ProtocolError(RequestError):
    """The bytes on the wire do not form a valid v1 message."""

    code = MALFORMED


class ProtocolMismatch(BodyDoubleError):
    code = PROTOCOL_MISMATCH


class ServerNotRunning(BodyDoubleError):
    code = "server_not_running"


class ServerLost(BodyDoubleError):
    """The server stopped answering while a request was in flight."""

    code = "server_lost"


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


_BY_CODE: dict[str, type[BodyDoubleError]] = {
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
