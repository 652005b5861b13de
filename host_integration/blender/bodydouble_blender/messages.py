"""Turn BodyDouble errors into reports an artist can act on (Blender's report area)."""
from __future__ import annotations

from bodydouble import curve, errors

HOW_TO_START = ("Start it with `bodydouble serve --root <project folder> --port <port>` on the GPU machine, "
                "or set the address in Preferences > Add-ons > BodyDouble.")


def describe(error: BaseException, address: str = "") -> tuple[str, str]:
    """(report level, message) for an error raised by the thin client or the server."""
    where = f" at {address}" if address else ""
    if isinstance(error, errors.ServerNotRunning):
        return "ERROR", f"BodyDouble server is not running{where}. {HOW_TO_START} ({error.message})"
    if isinstance(error, errors.ServerLost):
        return "ERROR", f"BodyDouble server{where} stopped answering; the job is lost. {HOW_TO_START}"
    if isinstance(error, errors.ProtocolMismatch):
        return "ERROR", (f"BodyDouble protocol mismatch with the server{where}: {error.message}. "
                         "Install the extension and server of the same release.")
    if isinstance(error, errors.UnknownAdapter):
        return "ERROR", (f"Unknown adapter: {error.message}. Refresh the adapter list "
                         "(the server may use another adapters folder).")
    if isinstance(error, errors.AdapterIncompatible):
        return "ERROR", f"Adapter cannot be used with this server's model: {error.message}"
    if isinstance(error, errors.JobCancelled):
        return "WARNING", "BodyDouble job cancelled; nothing was loaded."
    if isinstance(error, errors.JobFailed):
        return "ERROR", f"BodyDouble job failed: {error.message}"
    if isinstance(error, errors.RequestError) and error.code == errors.NOT_SUPPORTED:
        return "ERROR", f"Not supported by this BodyDouble server: {error.message}"
    if isinstance(error, errors.RequestTimeout):
        return "ERROR", f"BodyDouble server{where} did not answer in time: {error.message}"
    if isinstance(error, errors.BodyDoubleError) and error.code == curve.CONFIG_ERROR:
        return "ERROR", (f"BodyDouble connection settings: {error.message}. Fix the certificate paths in "
                         "Preferences > Add-ons > BodyDouble.")
    if isinstance(error, errors.BodyDoubleError):
        return "ERROR", f"BodyDouble: {error.message} [{error.code}]"
    return "ERROR", f"BodyDouble: {type(error).__name__}: {error}"
