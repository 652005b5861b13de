"""The host-agnostic half of Generate: parameters -> request -> wait -> take record -> messages.

Plain Python over the thin client (``bodydouble``); no ``nuke`` here, so a later host (Hiero /
Nuke Studio's timeline) reuses it with its own way of rendering inputs and loading results.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Protocol, Union

from bodydouble import errors
from bodydouble.background import BackgroundJob, Event
from bodydouble.client import AdapterInfo, Client, JobResult
from bodydouble.jobspec import AdapterRef, ExtendRequest, FillRequest, sequence_frames

OPERATIONS = ("fill", "extend")
OPERATION_TITLES = {"fill": "Fill unseen angle", "extend": "Extend shot"}

Request = Union[FillRequest, ExtendRequest]


@dataclass
class Params:
    """What the user set on the node (the knobs), already typed."""

    operation: str
    adapter: str              # the adapter's name on the server ('' = none picked)
    prompt: str = ""
    negative: str = ""
    seed: int = 0
    strength: float = 1.0
    steps: int = 20
    first: int = 1
    last: int = 1
    count: int = 24           # extend: how many new frames
    shot: str = ""
    render_dir: str = ""      # '' = <server output_root>/_nuke_renders/...
    colorspace: str = ""      # '' = the colour space the temporary Write node wrote
    fps: float = 24.0         # extend: the plate's frame rate (a timeline knows it; the node graph assumes 24)


@dataclass
class Rendered:
    """The inputs as files the server can read."""

    plate: str                # '####' pattern
    mask: Optional[str]       # None: the plate's alpha is the mask
    colorspace: str           # OCIO name sent to the server
    colorspace_knob: str      # what the Write node's colorspace knob said


@dataclass
class TakeRecord:
    """One take, as the node's history keeps it (JSON in the .nk script)."""

    take: int
    adapter: str
    seed: int
    operation: str
    pattern: str
    first: int
    last: int
    take_dir: str = ""
    job: str = ""
    prompt: str = ""
    colorspace: str = ""
    node: str = ""            # the node inside the BodyDouble group that shows this take

    @property
    def label(self) -> str:
        return take_label(self.adapter, self.seed, self.take)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TakeRecord":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def take_label(adapter: str, seed: int, take: int) -> str:
    """``adapter · seed · take``, the label on a take's nodes."""
    return f"{adapter} · seed {seed} · take {take:03d}"


# -- adapters ----------------------------------------------------------------------------------
def adapter_choices(adapters: list[AdapterInfo], operation: str = "fill") -> dict[str, str]:
    """Picker label -> adapter name, for the adapters this server can use now for ``operation``
    (extend runs on the server's video model: only adapters trained for it).

    '/' would make a submenu in a Nuke enumeration, so it is shown as '∕'."""
    return {a.label.replace("/", "\u2215"): a.name for a in adapters if a.status == "ready" and a.serves(operation)}


def list_adapters(address: str, timeout: float = 10.0, operation: str = "fill") -> dict[str, str]:
    with Client(address, timeout=timeout, name="bodydouble-nuke") as client:
        return adapter_choices(client.list_adapters(), operation)


def hello(address: str, timeout: float = 10.0) -> dict[str, Any]:
    """The server's capabilities (raises ServerNotRunning / ProtocolMismatch with clear text)."""
    with Client(address, timeout=timeout, name="bodydouble-nuke") as client:
        return client.connect()


# -- before the render -----------------------------------------------------------------------
def check_ready(caps: dict[str, Any], params: Params) -> None:
    """Refuse early (before rendering anything) what the server would refuse anyway."""
    if not params.adapter:
        raise errors.BodyDoubleError("Pick an adapter first (press 'Refresh adapters' if the list is empty).",
                                     code="no_adapter")
    if params.last < params.first:
        raise errors.BodyDoubleError(f"The frame range {params.first}-{params.last} is empty.", code="bad_range")
    if caps.get("state") == "ready" and params.operation not in caps.get("operations", []):
        raise errors.RequestError(f"this server cannot do {params.operation!r} yet "
                                  f"(it offers: {', '.join(caps.get('operations', [])) or 'nothing'})",
                                  code=errors.NOT_SUPPORTED)


def render_folder(caps: dict[str, Any], params: Params, node: str, now: Optional[float] = None) -> str:
    """Where the temporary Write node renders this job's inputs: a new folder each time."""
    base = params.render_dir
    if not base:
        root = caps.get("output_root") or next(iter(caps.get("roots") or []), None)
        if not root:
            raise errors.BodyDoubleError("The server reports no output root: set the node's 'render folder' to a "
                                         "folder the server can read.", code="no_render_dir")
        base = os.path.join(str(root), "_nuke_renders", safe_name(params.shot or "untitled"))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    folder = os.path.join(base, f"{safe_name(node)}_{stamp}_{os.getpid()}_{int((now or time.time()) * 1000) % 1000:03d}")
    return os.path.abspath(folder)


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "untitled"


def shot_from_path(path: str) -> str:
    """``/shows/x/sh010_plate.####.exr`` -> ``sh010_plate``; '' when there is nothing to go on."""
    if not path:
        return ""
    stem = os.path.basename(path).split(".")[0]
    stem = re.sub(r"[._-]?(#+|%0?\d*d|\$F\d*)$", "", stem)
    return safe_name(stem) if stem else ""


def normalise_colorspace(knob_value: str) -> str:
    """A Nuke colorspace knob value -> an OCIO name: 'default (scene_linear)' -> 'scene_linear'."""
    value = knob_value.strip()
    match = re.fullmatch(r"default \((.*)\)", value)
    if match:
        value = match.group(1).strip()
    return value or "scene_linear"


def build_request(params: Params, rendered: Rendered) -> Request:
    adapters = [AdapterRef(params.adapter)]
    shot = safe_name(params.shot) if params.shot else None
    colorspace = params.colorspace or rendered.colorspace
    if params.operation == "fill":
        return FillRequest(
            frames=sequence_frames(rendered.plate, params.first, params.last, rendered.mask),
            adapters=adapters, prompt=params.prompt, negative_prompt=params.negative, seed=params.seed,
            steps=params.steps, strength=params.strength, colorspace=colorspace, shot=shot,
        )
    if params.operation == "extend":
        return ExtendRequest(
            frames=sequence_frames(rendered.plate, params.first, params.last), count=params.count,
            adapters=adapters, prompt=params.prompt, negative_prompt=params.negative, seed=params.seed,
            steps=params.steps, fps=params.fps, colorspace=colorspace, shot=shot,
        )
    raise errors.BodyDoubleError(f"unknown operation {params.operation!r}; expected one of {OPERATIONS}")


# -- while it runs ---------------------------------------------------------------------------
class ProgressSink(Protocol):
    def update(self, percent: int, text: str) -> None: ...

    def cancelled(self) -> bool: ...

    def close(self) -> None: ...


@dataclass
class Outcome:
    result: Optional[JobResult] = None
    error: Optional[errors.BodyDoubleError] = None
    job_id: Optional[str] = None
    events: list[str] = field(default_factory=list)


def follow(job: BackgroundJob, sink: ProgressSink, interval: float = 0.05) -> Outcome:
    """Drain ``job``'s events until its final one, mirroring progress into ``sink`` and its
    Cancel button into a server-side cancel. Runs on a worker thread (or in terminal mode)."""
    outcome = Outcome()
    cancel_sent = False
    while True:
        if not cancel_sent and sink.cancelled():
            job.cancel()
            cancel_sent = True
            sink.update(int(100 * job.latest.fraction) if job.latest else 0, "Cancelling…")
        for event in job.poll():
            outcome.events.append(event.kind)
            outcome.job_id = event.job_id or outcome.job_id
            if event.kind == "progress" and event.progress is not None and not cancel_sent:
                sink.update(int(100 * event.progress.fraction), event.progress.message)
            elif event.kind == "accepted":
                sink.update(0, f"job {event.job_id} accepted")
            if event.final:
                return _finish(outcome, event)
        time.sleep(interval)


def watch(job: BackgroundJob, sink: ProgressSink, deliver: Callable[[Outcome], None]) -> None:
    """A worker thread's whole life: follow ``job`` under ``sink``, close it, hand the outcome to
    ``deliver`` (which queues the host's main-thread finish). Never dies without delivering."""
    try:
        outcome = follow(job, sink)
    except Exception as exc:  # never leave the host waiting on a job forever
        outcome = Outcome(error=errors.BodyDoubleError(f"{type(exc).__name__}: {exc}"))
    finally:
        sink.close()
    deliver(outcome)


def _finish(outcome: Outcome, event: Event) -> Outcome:
    if event.kind == "done":
        outcome.result = event.result
    else:
        outcome.error = event.error or errors.BodyDoubleError("the job ended without a result")
    return outcome


def record_from_result(result: JobResult, params: Params, colorspace: str) -> TakeRecord:
    return TakeRecord(
        take=result.take, adapter=params.adapter, seed=params.seed, operation=result.operation,
        pattern=result.pattern, first=result.first, last=result.last, take_dir=result.take_dir, job=result.job,
        prompt=params.prompt, colorspace=colorspace,
    )


# -- messages --------------------------------------------------------------------------------
def describe_error(exc: BaseException, address: str, params: Optional[Params] = None) -> str:
    """What to tell the user, and what to do about it."""
    adapter = params.adapter if params else ""
    operation = params.operation if params else "fill"
    detail = str(exc)
    if isinstance(exc, errors.ServerNotRunning):
        return (f"BodyDouble: the server is not running at {address}.\n\n{detail}\n\n"
                "Start it on the GPU machine (bodydouble serve), or point Nuke at it with "
                "BodyDouble ▸ Connect to server….")
    if isinstance(exc, errors.ServerLost):
        return (f"BodyDouble: the server at {address} stopped answering during the job ({detail}).\n"
                "Check the server's console, restart it, and press Generate again; earlier takes are untouched.")
    if isinstance(exc, errors.ProtocolMismatch):
        return (f"BodyDouble: this Nuke plugin and the server at {address} speak different protocol versions.\n\n"
                f"{detail}\n\nInstall the same BodyDouble version for Nuke and for the server.")
    if isinstance(exc, errors.UnknownAdapter):
        return (f"BodyDouble: the server has no adapter {adapter!r} (renamed or removed?).\n\n{detail}\n\n"
                "Press 'Refresh adapters' on the node and pick one again.")
    if isinstance(exc, errors.AdapterIncompatible):
        return (f"BodyDouble: adapter {adapter!r} was trained on another base model than the server runs.\n\n"
                f"{detail}")
    if isinstance(exc, errors.JobCancelled):
        return "BodyDouble: cancelled. No take was added; earlier takes are untouched."
    if isinstance(exc, errors.JobFailed):
        return f"BodyDouble: the job failed on the server.\n\n{detail}\n\nEarlier takes are untouched."
    if isinstance(exc, errors.RequestError) and exc.code == errors.NOT_SUPPORTED:
        what = OPERATION_TITLES.get(operation, operation)
        return (f"BodyDouble: '{what}' is not available on this server yet ({detail}).\n"
                "Use 'Fill unseen angle' for now, or update the server when shot extension ships.")
    if isinstance(exc, errors.RequestError) and exc.code == errors.PATH_NOT_ALLOWED:
        return (f"BodyDouble: the server may not read or write there.\n\n{detail}\n\n"
                "Set the node's 'render folder' to a folder under one of the server's allowed roots.")
    if isinstance(exc, errors.RequestError) and exc.code == errors.UNKNOWN_COLORSPACE:
        return (f"BodyDouble: the server's OCIO config does not know the plate's colour space.\n\n{detail}\n\n"
                "Set the node's 'colour space' knob to a name the server knows (e.g. ACEScg).")
    if isinstance(exc, errors.BodyDoubleError):
        code = f" [{exc.code}]" if exc.code not in ("error",) else ""
        return f"BodyDouble{code}: {detail}"
    return f"BodyDouble: unexpected {type(exc).__name__}: {detail}"
