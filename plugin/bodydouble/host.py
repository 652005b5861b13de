"""What every host (Nuke, Hiero, Blender, the next one) needs that is not drawing UI.

- **Parameters -> request**: :class:`Params` is what an artist sets (on a node, in a dialog), kept with a take
  so it can be run again; :meth:`Params.request` is the ``FillRequest`` / ``ExtendRequest`` it means.
- **Following a job**: :class:`~bodydouble.background.BackgroundJob` (one worker thread per job; the host gives
  it a progress sink and a main-thread hand-off).
- **Error -> advice**: :func:`advice` turns any error into what to tell the artist and what to do, in the
  host's own words (:class:`HostWords`: where its Connect dialog or its Refresh button is).
- **Takes**: :func:`take_label`, :class:`TakeRecord` (what a host keeps of a take), :func:`safe_name`.
- **Adapters**: :func:`hello`, :func:`list_adapters`, :func:`adapter_choices` (the picker's entries).
- **Colour**: :class:`HostColour` (the host's config, working space, display/view), :func:`colour_note` (what to
  say when the host's OCIO config is not the server's).
- **Frame sequences**: :mod:`bodydouble.frames` (patterns, frame numbers in file names, ranges; fileseq).

A host's glue keeps only its menus, dialogs, node/strip creation and its hand-off to its main thread.
Plain Python over the thin client: importable in any host's Python (no torch, no host module).
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional, Union

from . import curve, errors, frames
from .background import BackgroundJob, Outcome, ProgressSink   # the host API in one import (__all__)
from .client import AdapterInfo, Client, JobResult
from .jobspec import AdapterRef, ExtendRequest, FillRequest, FrameInput, safe_name, sequence_frames

__all__ = ["OPERATIONS", "OPERATION_TITLES", "Request", "Params", "HostColour", "colour_note", "check_ready",
           "shot_from_path", "hello", "fetch_adapters", "adapter_choices", "list_adapters", "take_label", "TakeRecord",
           "HostWords", "Advice", "advice", "safe_name", "BackgroundJob", "Outcome", "ProgressSink", "frames",
           "JobResult", "take_left_on_disk", "fill_engines", "default_engine", "key_adapter_for", "ENGINE_TITLES",
           "serves", "job_rank"]

OPERATIONS = ("fill", "extend")
OPERATION_TITLES = {"fill": "Fill unseen angle", "extend": "Extend shot"}

Request = Union[FillRequest, ExtendRequest]


# -- parameters -> request ---------------------------------------------------------------------
@dataclass
class Params:
    """What the artist set for one take. ``plate``/``mask``: ``####`` patterns the server can read (a host that
    renders its inputs sets them per run); ``''`` mask: the plate's alpha. ``colorspace`` ``''``: the request's
    default (ACEScg)."""

    operation: str
    adapter: str                    # the adapter's name on the server ('' = none picked)
    prompt: str = ""
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 20
    strength: float = 1.0           # fill
    first: int = 1
    last: int = 1
    count: int = 24                 # extend: how many new frames
    fps: float = 24.0               # extend: the plate's frame rate
    shot: str = ""                  # '' = the server names the shot from the plate (or output_dir)
    colorspace: str = ""
    output_dir: str = ""            # '' = <server output root>/<shot>
    plate: str = ""
    mask: str = ""
    engine: str = ""                # fill: 'image' | 'video'; '' = the server picks (host.default_engine offers one)
    coherence: float = 0.0          # fill, image engine: 0 each frame on its own .. 1 the first frame's fill carried
    feather: int = FillRequest.feather  # fill: the soft edge inside the mask, plate pixels (lower on a small mask)
    key_frame: str = ""             # fill, video engine: the first frame already filled (a path the server reads)
    key_adapter: str = ""           # fill, video engine, no key_frame: the image adapter that fills the first frame

    def request(self, frames: Optional[list[FrameInput]] = None) -> Request:
        """The request these parameters make, validated (ValueError says what is wrong). ``frames``: the plate
        frames when they are not ``plate`` over ``first``-``last`` (a sequencer strip's files)."""
        common = dict(adapters=[AdapterRef(self.adapter)], prompt=self.prompt, negative_prompt=self.negative_prompt,
                      seed=int(self.seed), steps=int(self.steps), shot=safe_name(self.shot) if self.shot else None,
                      output_dir=self.output_dir or None, **({"colorspace": self.colorspace} if self.colorspace else {}))
        if self.operation == "fill":
            request: Request = FillRequest(
                frames=frames or sequence_frames(self.plate, self.first, self.last, self.mask or None),
                strength=float(self.strength), engine=self.engine or None, feather=int(self.feather),
                coherence=float(self.coherence) if self.engine != "video" else 0.0,
                key_frame=(self.key_frame or None) if self.engine == "video" else None,
                # An approved key frame wins over one the server would fill.
                key_adapters=[AdapterRef(self.key_adapter)]
                if self.engine == "video" and self.key_adapter and not self.key_frame else [], **common)
        elif self.operation == "extend":
            request = ExtendRequest(frames=frames or sequence_frames(self.plate, self.first, self.last),
                                    count=int(self.count), fps=float(self.fps), **common)
        else:
            raise ValueError(f"unknown operation {self.operation!r}; expected one of {OPERATIONS}")
        request.validate()
        return request

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Params":
        """From what a host stored (its own extra keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# -- colour -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class HostColour:
    """What the artist works in, as the host knows it: its OCIO config (a path, an ``ocio://`` URI, or a host
    name such as ``nuke-default`` / ``blender``; '' unknown), working space, display and view."""

    config: str = ""
    working: str = ""
    display: str = ""
    view: str = ""


def same_config(host: str, server: str) -> bool:
    """Whether two OCIO config references (paths or ocio:// URIs) name the same config."""
    def norm(text: str) -> str:
        text = text.strip()
        if "://" in text:
            return text
        return os.path.normcase(os.path.normpath(os.path.expanduser(text))) if text else ""
    return bool(host) and norm(host) == norm(server)


def colour_note(caps: dict[str, Any], colour: HostColour) -> str:
    """'' when the host's OCIO config is the server's (from hello's ``colour``); else what the artist should know:
    the server reads colour-space names against its own config (host names it knows as aliases, others are
    refused with the valid names), and the model sees the server's view, not the host's."""
    server = caps.get("colour") or {}
    if not server or same_config(colour.config, server.get("config", "")):
        return ""
    looks = f" (you view {colour.display} / {colour.view})" if colour.display or colour.view else ""
    return (f"Colour: this {colour.config or 'host'} config is not the server's ({server.get('config')}). Plate colour "
            f"spaces are read by name on the server (its working space: {server.get('scene_linear') or '?'}); the "
            f"model sees the server's view {server.get('display')} / {server.get('view')}{looks}. Generated "
            f"highlights stop at {server.get('default_highlight_ceiling', 16):g} (or the plate's own brightest).")


def check_ready(caps: dict[str, Any], params: Params) -> None:
    """Refuse early (before rendering or asking anything) what the server would refuse anyway."""
    if not params.adapter:
        raise errors.BodyDoubleError("Pick an adapter first (refresh the adapter list if it is empty).",
                                     code="no_adapter")
    if params.last < params.first:
        raise errors.BodyDoubleError(f"The frame range {params.first}-{params.last} is empty.", code="bad_range")
    if caps.get("state") == "ready" and params.operation not in caps.get("operations", []):
        raise errors.RequestError(f"this server cannot do {params.operation!r} yet "
                                  f"(it offers: {', '.join(caps.get('operations', [])) or 'nothing'})",
                                  code=errors.NOT_SUPPORTED)


def shot_from_path(path: str) -> str:
    """``/shows/x/sh010_plate.####.exr`` -> ``sh010_plate``; '' when there is nothing to go on."""
    stem = frames.stem(path) if path else ""
    return safe_name(stem) if stem else ""


# -- the server's adapters ---------------------------------------------------------------------
def hello(address: str, timeout: float = 10.0, client_name: str = "bodydouble-host") -> dict[str, Any]:
    """The server's capabilities (raises ServerNotRunning / ProtocolMismatch with clear text)."""
    with Client(address, timeout=timeout, name=client_name) as client:
        return client.server_info or {}


def fetch_adapters(address: str, timeout: float = 10.0, client_name: str = "bodydouble-host",
                   curve_certs: tuple[str, str] = ("", ""), server_info: Optional[dict] = None) -> list[AdapterInfo]:
    """The server's adapters; ``server_info``, when given, is filled with its hello (colour, model, ...)."""
    with Client(address, timeout=timeout, name=client_name, curve=curve.keys_for(*curve_certs)) as client:
        if server_info is not None:
            server_info.update(client.server_info or {})
        return client.list_adapters()


def serves(adapter: AdapterInfo, operation: str, engine: str = "") -> bool:
    """Whether ``adapter`` is for the model that runs ``operation`` (fill on the video engine runs on the video
    model: its adapters are video adapters)."""
    return adapter.model_kind == engine if operation == "fill" and engine else adapter.serves(operation)


def job_rank(adapter: AdapterInfo, operation: str) -> int:
    """Where a picker lists ``adapter`` for ``operation``: 0 a video adapter trained for that job alone (the
    two objectives pull apart: docs/training.md), 1 any other (stills, a mix, image adapters), 2 one trained for
    the other job. A picker's first entry is its default."""
    if not adapter.trained_for:
        return 1
    return 0 if adapter.trained_for == ("fill" if operation == "fill" else "extend") else 2


def adapter_choices(adapters: list[AdapterInfo], operation: str = "fill", engine: str = "") -> dict[str, str]:
    """Picker label -> adapter name, for the adapters this server can use now for ``operation`` (extend, and fill
    on the ``video`` engine, run on the server's video model: only adapters trained for it), those trained for
    the job first (:func:`job_rank`). '/' would make a submenu in a Nuke enumeration, so it is shown as '∕'."""
    usable = [a for a in adapters if a.status == "ready" and serves(a, operation, engine)]
    return {a.label.replace("/", "\u2215"): a.name for a in sorted(usable, key=lambda a: job_rank(a, operation))}


def withheld_adapters(adapters: list[AdapterInfo], operation: str = "fill", engine: str = "") -> dict[str, str]:
    """Adapter name -> why it is not offered for ``operation`` (no consent record, expired, retired, failed to
    load): a picker that cannot grey an entry out (a Nuke enumeration) says so beside it instead."""
    return {a.name: a.reason or a.status for a in adapters if a.status != "ready" and serves(a, operation, engine)}


# -- fill engines ------------------------------------------------------------------------------
ENGINE_TITLES = {"image": "Frame by frame (image model)", "video": "Whole shot (video model)"}


def fill_engines(caps: dict[str, Any]) -> list[str]:
    """The fill engines this server offers (from its hello): ``image`` always, ``video`` when its video model
    can fill a shot."""
    video = (caps.get("model") or {}).get("video_model") or {}
    return ["image", "video"] if video.get("fill_engine") else ["image"]


def key_adapter_for(adapters: list[AdapterInfo], adapter: str) -> str:
    """The image adapter that fills a video-engine fill's first frame (its key) by default: a ready one of the
    same character as ``adapter`` (the video adapter picked), else '' (no key: every frame from noise). In the
    miniature world a shot keyed so meets per-frame fill's likeness (fill adapters from footage or held stills);
    unkeyed the video engine is 2.4 dB and more below it (README, "Fill a shot, not a frame")."""
    character = next((a.character for a in adapters if a.name == adapter), None)
    return next((a.name for a in adapters if character is not None and a.character == character
                 and a.status == "ready" and serves(a, "fill", "image")), "")


def default_engine(caps: dict[str, Any], first: int, last: int, adapters: list[AdapterInfo]) -> str:
    """What a picker shows first: the whole shot through the video model for a range longer than one frame
    where the server has one that fills and a video adapter to fill with, else frame by frame (a picker that
    opened on the video engine with no adapter to offer would be a dead end)."""
    usable = adapter_choices(adapters, "fill", "video")
    return "video" if last > first and "video" in fill_engines(caps) and usable else "image"


def list_adapters(address: str, timeout: float = 10.0, operation: str = "fill",
                  client_name: str = "bodydouble-host") -> dict[str, str]:
    return adapter_choices(fetch_adapters(address, timeout, client_name), operation)


# -- takes -------------------------------------------------------------------------------------
def take_label(adapter: str, seed: int, take: int, compact: bool = False) -> str:
    """``adapter · seed 5 · take 001``, the label on a take; ``compact`` (a narrow node): ``adapter · 5 · take 001``."""
    return f"{adapter} · {'' if compact else 'seed '}{seed} · take {take:03d}"


@dataclass
class TakeRecord:
    """One take as a host keeps it (a Nuke node's history, a timeline clip's tags)."""

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
    node: str = ""            # the host's node/clip that shows this take

    @property
    def label(self) -> str:
        return take_label(self.adapter, self.seed, self.take)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TakeRecord":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def of(cls, result: JobResult, params: Params, colorspace: str = "") -> "TakeRecord":
        return cls(take=result.take, adapter=params.adapter, seed=params.seed, operation=result.operation,
                   pattern=result.pattern, first=result.first, last=result.last, take_dir=result.take_dir,
                   job=result.job, prompt=params.prompt, colorspace=colorspace)

    def key_frame(self, frame: int) -> str:
        """This fill take's file for ``frame``: a video-engine fill's key frame (ValueError where it has none)."""
        if self.operation != "fill":
            raise ValueError(f"{self.label} is an {self.operation} take: a key frame is a filled frame")
        if not self.first <= frame <= self.last:
            raise ValueError(f"{self.label} has frames {self.first}-{self.last}, not the range's first frame {frame}")
        return frames.expand_pattern(self.pattern, frame)


def take_left_on_disk(shot_dir: str, job_id: str) -> Optional[JobResult]:
    """The complete take job ``job_id`` wrote under ``shot_dir`` (``<shot_dir>/bodydouble/<adapter>/take_NNN``),
    read from its take.json, for a host re-attaching to a job its server no longer knows (the server restarted
    after the take was finished); None when there is none (or this machine cannot see the server's files)."""
    pattern = os.path.join(glob.escape(shot_dir), "bodydouble", "*", "take_*", "take.json")
    for path in sorted(glob.glob(pattern), reverse=True):      # newest take numbers first
        try:
            with open(path, "rb") as handle:
                data = json.loads(handle.read(4 << 20))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or data.get("job") != job_id or data.get("status") != "complete":
            continue
        numbers = sorted(int(k) for k in data.get("frames") or {})
        if not numbers:
            return None
        return JobResult(job=job_id, operation=str(data.get("operation", "")), take_dir=os.path.dirname(path),
                         take=int(data.get("take", 0)), pattern=str(data.get("pattern", "")), first=numbers[0],
                         last=numbers[-1], frames={int(k): v for k, v in data["frames"].items()}, info=data)
    return None


# -- error -> advice ---------------------------------------------------------------------------
@dataclass(frozen=True)
class HostWords:
    """How a host's own UI is named in advice."""

    host: str = "this host"                       # "Nuke", "Blender"
    connect: str = "set the server address in the plugin's settings"
    refresh: str = "Refresh the adapter list and pick one again."
    retry: str = "run it again"
    paths_problem: str = "the server may not read or write there."
    paths_fix: str = "Use folders under one of the server's allowed roots (bodydouble serve --root)."
    colour_fix: str = "Give the plate's colour space as a name the server knows (e.g. ACEScg)."
    certificates: str = "Fix the CURVE certificate paths ($BODYDOUBLE_CURVE_SERVER / $BODYDOUBLE_CURVE_CLIENT)."


@dataclass(frozen=True)
class Advice:
    level: str          # "ERROR" | "WARNING": how loudly a host shows it
    text: str


def advice(exc: BaseException, address: str = "", words: HostWords = HostWords(),
           params: Optional[Params] = None) -> Advice:
    """What to tell the artist about ``exc``, and what to do about it."""
    adapter = params.adapter if params else ""
    operation = params.operation if params else "fill"
    where = f" at {address}" if address else ""
    detail = str(exc)
    start = (f"Start it on the GPU machine (bodydouble serve --root <project folder> --port <port>), or "
             f"{words.connect}.")
    if isinstance(exc, errors.ServerNotRunning):
        return Advice("ERROR", f"BodyDouble: the server is not running{where}.\n\n{detail}\n\n{start}")
    if isinstance(exc, errors.ServerLost):
        return Advice("ERROR", f"BodyDouble: the server{where} stopped answering during the job ({detail}).\n"
                               f"Check the server's console, restart it, and {words.retry}; earlier takes are "
                               "untouched.")
    if isinstance(exc, errors.ProtocolMismatch):
        return Advice("ERROR", f"BodyDouble protocol mismatch: this {words.host} plugin and the server{where} speak "
                               f"different protocol versions.\n\n{detail}\n\nInstall the same BodyDouble version "
                               f"for {words.host} and for the server.")
    if isinstance(exc, errors.UnknownAdapter):
        return Advice("ERROR", f"Unknown adapter: the server has no adapter {adapter!r} (renamed or removed?).\n\n"
                               f"{detail}\n\n{words.refresh}")
    if isinstance(exc, errors.AdapterIncompatible):
        return Advice("ERROR", f"BodyDouble: adapter {adapter!r} cannot be used with this server's model (trained "
                               f"on another base model or for another model kind).\n\n{detail}")
    if isinstance(exc, errors.JobCancelled):
        return Advice("WARNING", "BodyDouble: cancelled. No take was added; earlier takes are untouched.")
    if isinstance(exc, errors.JobFailed):
        return Advice("ERROR", f"BodyDouble: the job failed on the server.\n\n{detail}\n\nEarlier takes are "
                               "untouched.")
    if getattr(exc, "code", "") == errors.UNKNOWN_JOB:
        return Advice("ERROR", f"BodyDouble: the server{where} no longer knows this job (it restarted since?). A "
                               f"take it was writing is marked interrupted; earlier takes are untouched. To run it "
                               f"again, {words.retry}.\n\n{detail}")
    if isinstance(exc, errors.RequestTimeout):
        return Advice("ERROR", f"BodyDouble: the server{where} did not answer in time: {detail}")
    code = getattr(exc, "code", "")
    if code == errors.NOT_SUPPORTED:
        what = OPERATION_TITLES.get(operation, operation)
        return Advice("ERROR", f"BodyDouble: '{what}' is not available on this server yet ({detail}).\n"
                               "Ask for a server that offers it (extend needs a video model).")
    if code == errors.PATH_NOT_ALLOWED:
        return Advice("ERROR", f"BodyDouble: {words.paths_problem}\n\n{detail}\n\n{words.paths_fix}")
    if code == errors.UNKNOWN_COLORSPACE:
        return Advice("ERROR", f"BodyDouble: the server's OCIO config does not know the plate's colour space.\n\n"
                               f"{detail}\n\n{words.colour_fix}")
    if code == curve.CONFIG_ERROR:
        return Advice("ERROR", f"BodyDouble connection settings: {detail}. {words.certificates}")
    if isinstance(exc, errors.BodyDoubleError):
        tag = f" [{exc.code}]" if exc.code not in ("error",) else ""
        return Advice("ERROR", f"BodyDouble{tag}: {detail}")
    return Advice("ERROR", f"BodyDouble: unexpected {type(exc).__name__}: {detail}")
