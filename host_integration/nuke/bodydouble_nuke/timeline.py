"""Nuke Studio / Hiero timeline: right-click a shot ▸ BodyDouble ▸ Extend shot…

    main thread:   read the track item's media -> hello + adapters -> form -> submit
    worker thread: Nuke's progress bar <- progress events; its Cancel -> server-side cancel
    main thread:   (hiero.core.executeInMainThread) clip in the 'BodyDouble' bin, new track
                   right after the shot, tagged adapter · seed · take; or a message

The job logic is ``bodydouble.host``'s, shared with the Node Graph; every ``hiero`` call is in
:mod:`hiero_api`. The plate is the shot's own media, sent by path: nothing is rendered.
*Fill unseen angle…* opens the Node Graph flow on a Read of the shot's source.
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Optional

from bodydouble import errors, frames, host
from bodydouble.background import BackgroundJob, Outcome

from . import commands, flow, settings
from . import hiero_api as hapi
from . import nuke_api as api

BIN = "BodyDouble"
EXTEND = "Extend shot…"
FILL = "Fill unseen angle…"
FORM_FRAMES, FORM_ADAPTER, FORM_PROMPT, FORM_SEED, FORM_STEPS = "new frames", "adapter", "prompt", "seed", "steps"


@dataclass
class Shot:
    """A track item's source, in file frames."""

    name: str
    pattern: str              # '####' pattern of the media
    source_in: int            # file frame at the item's source in
    source_out: int           # file frame at the item's source out: the plate's last frame
    timeline_out: int
    handle_in: int
    handle_out: int
    fps: float
    colour_transform: str     # Hiero's name for the media's colour space
    track: str
    colorspace: str = ""      # what is sent: colour_transform read through the project's colour management


@dataclass
class Running:
    item: hapi.TrackItem
    shot: Shot
    params: host.Params
    job: BackgroundJob


_running: dict[str, Running] = {}      # shot key -> job in flight (main thread only)
_handler: list[Any] = []               # the registered context-menu handler (install once)
_loaded: list[Any] = []                # the registered project-load handler


def install() -> None:
    """Register for the timeline's right-click menu and for projects opening (once per session)."""
    if not _handler:
        _handler.append(hapi.on_timeline_menu(build_menu))
        _loaded.append(hapi.on_project_load(reattach_all))


def uninstall() -> None:
    while _handler:
        hapi.forget_timeline_menu(_handler.pop())
    while _loaded:
        hapi.forget_project_load(_loaded.pop())


def build_menu(menu: hapi.Menu, items: list[hapi.TrackItem]) -> None:
    one = items[0] if len(items) == 1 else None
    sub = hapi.add_submenu(menu, "BodyDouble")
    hapi.add_action(sub, EXTEND, lambda: one is not None and extend_command(one), enabled=one is not None)
    hapi.add_action(sub, FILL, lambda: one is not None and fill_command(one), enabled=one is not None)


# -- reading the shot ------------------------------------------------------------------------


def media_pattern(filename: str) -> str:
    """Hiero's media file name -> a '####' pattern: drops the ' (1001-1048)' range Hiero appends
    and turns '%04d' or a plain frame number into hashes."""
    path, _, suffix = filename.strip().rpartition(" (")
    try:
        frames.parse_range(suffix.removesuffix(")")) if path and suffix.endswith(")") else None
    except ValueError:
        path = ""                                 # not a range: part of the name
    return frames.hash_pattern(path or filename.strip())


def shot_of(media: hapi.ItemMedia) -> Shot:
    return Shot(
        name=host.safe_name(media.name), pattern=media_pattern(media.filename),
        source_in=media.clip_first + int(round(media.source_in)),
        source_out=media.clip_first + int(round(media.source_out)),
        timeline_out=media.timeline_out, handle_in=media.handle_in, handle_out=media.handle_out,
        fps=media.fps, colour_transform=media.colour_transform, track=media.track,
        colorspace=resolve_colour_transform(media.colour_transform, media.project_colour),
    )


# -- colour: Hiero's names -> a name the server's config knows -----------------------------------
# OCIO's roles: Hiero lists each as 'role (colour space)' among a clip's colour transforms.
OCIO_ROLES = frozenset({"default", "reference", "data", "scene_linear", "compositing_linear", "rendering",
                        "compositing_log", "color_timing", "color_picking", "matte_paint", "texture_paint",
                        "aces_interchange", "cie_xyz_d65_interchange"})


def hiero_name(value: str) -> str:
    """A Hiero colour-transform name as the colour space or role it stands for: 'scene_linear (ACES - ACEScg)'
    (a role, as Hiero lists it) and 'default (ACEScg)' (the file type's default) -> the name in brackets;
    'role_scene_linear' (a project setting, as the .hrox keeps it) -> 'scene_linear'. A colour space whose own
    name has brackets ('Linear Rec.709 (sRGB)') stays whole: only a role or 'default' is unwrapped."""
    value = value.strip()
    while True:
        match = re.fullmatch(r"(\w+) \((.+)\)", value)
        if match and match.group(1) in OCIO_ROLES:
            value = match.group(2).strip()
        elif value.startswith("role_") and value[len("role_"):] in OCIO_ROLES:
            value = value[len("role_"):]
        else:
            return value


def project_root(colour: hapi.ProjectColour) -> dict[str, str]:
    """The project's colour management as the Nuke root knobs that hold the same settings (what Foundry's own
    Nuke-script export writes from it), so a Hiero name resolves as a Node Graph knob does (flow)."""
    if colour.config_name == "nuke-default":
        config = {"colorManagement": "Nuke"}
    elif colour.config_name:
        config = {"colorManagement": "OCIO", "OCIO_config": colour.config_name}
    else:                              # a custom config: Hiero names no config, its path is the project's
        config = {"colorManagement": "OCIO", "OCIO_config": "custom", "customOCIOConfigPath": colour.config_path}
    return {**config, "workingSpaceLUT": hiero_name(colour.working), "floatLut": hiero_name(colour.float_lut),
            "logLut": hiero_name(colour.log_lut), "int8Lut": hiero_name(colour.int8_lut),
            "int16Lut": hiero_name(colour.int16_lut)}


def resolve_colour_transform(transform: str, colour: hapi.ProjectColour) -> str:
    """What a clip's colour transform means in this project, as a name to send: 'default (linear)' -> 'linear',
    'scene_linear (ACEScg)' -> 'ACEScg', a role or 'default (scene_linear)' -> the project's setting for it.
    A role the project leaves to the config is sent as the role (the server's config resolves it)."""
    return flow.resolve_colorspace(hiero_name(transform), project_root(colour))


def retime_of(media: hapi.ItemMedia) -> Optional[float]:
    """The item's speed when it is retimed (its source and timeline durations differ, or its source
    times fall between frames), else None."""
    source = media.source_out - media.source_in + 1
    timeline = media.timeline_out - media.timeline_in + 1
    if source == timeline and media.source_in == int(media.source_in) and media.source_out == int(media.source_out):
        return None
    return source / timeline if timeline else 0.0


# -- Extend shot… ----------------------------------------------------------------------------
def extend_command(item: hapi.TrackItem) -> Optional[Running]:
    """Ask for the take's settings and start it; the take lands on the timeline later."""
    address = settings.address()
    media = hapi.read_item(item)
    speed = retime_of(media)
    if speed is not None:   # extend continues the media frame by frame: after a retime that is another shot
        api.message(f"BodyDouble: '{media.name}' is retimed ({speed:.3g}x speed). Extend continues the media frame "
                    "by frame: extend the un-retimed source clip, then retime the extension to match.")
        return None
    shot = shot_of(media)
    if shot.name in _running:
        api.message(f"BodyDouble: {shot.name} is already being extended; cancel it from its progress bar first.")
        return None
    probe = host.Params(operation="extend", adapter="-")     # check_ready wants an adapter; the form picks it
    try:
        host.check_ready(commands.hello(address), probe)
        adapters = sorted(set(commands.list_adapters(address, operation="extend").values()))
    except errors.BodyDoubleError as exc:
        report(exc, address, probe)
        return None
    if not adapters:
        api.message(f"BodyDouble: the server at {address} has no adapter trained for its video model "
                    "(extend runs on the video model; image adapters are for Fill).")
        return None
    params = ask_params(shot, adapters)
    if params is None:
        return None
    try:
        request = params.request()
    except (errors.BodyDoubleError, ValueError) as exc:
        report(errors.BodyDoubleError(str(exc), code="bad_request"), address, params)
        return None
    return _follow(item, shot, params, address, request=request)


def _follow(item: hapi.TrackItem, shot: Shot, params: host.Params, address: str, request: Any = None,
            job_id: Optional[str] = None) -> Running:
    """Main thread: follow the shot's job on a worker thread, submitting ``request`` or re-attaching to ``job_id``."""
    title = f"BodyDouble Extend shot · {shot.name} · {params.adapter}"
    job = BackgroundJob(address, request, client_name="bodydouble-hiero", sink=lambda: api.Progress(title),
                        follow=job_id, on_accepted=lambda jid: hapi.run_in_main_thread(_accepted, running, jid))
    running = _running[shot.name] = Running(item, shot, params, job)
    job.start(on_finish=lambda outcome: hapi.run_in_main_thread(_finish, running, outcome))
    return running


def _accepted(running: Running, job_id: str) -> None:
    """Main thread: the job id on the shot, in a tag saved with the project (re-attach reads it)."""
    if running.job.outcome is None:
        hapi.keep_job(running.item, {"job": job_id, "address": running.job.address,
                                     "params": json.dumps(running.params.to_dict()),
                                     "shot": json.dumps(asdict(running.shot))})


def reattach_all() -> None:
    """Every shot of the open projects tagged with a job: follow it (its take lands after the shot when done)."""
    for item in hapi.items_with_jobs():
        kept = hapi.kept_job(item) or {}
        try:
            shot = Shot(**json.loads(kept["shot"]))
            params = host.Params.from_dict(json.loads(kept["params"]))
        except (KeyError, TypeError, ValueError):
            hapi.forget_job(item)              # not ours to read: never fail a project load on it
            continue
        if shot.name not in _running:
            _follow(item, shot, params, kept.get("address") or settings.address(), job_id=kept["job"])


def ask_params(shot: Shot, adapters: list[str]) -> Optional[host.Params]:
    handles = f", {shot.handle_out} frame(s) of handle after the cut" if shot.handle_out else ""
    title = (f"BodyDouble: extend {shot.name} after frame {shot.source_out} "
             f"(source {shot.source_in}-{shot.source_out}{handles})")
    while True:
        answer = api.ask_form(title, [
            (FORM_FRAMES, "24", ()), (FORM_ADAPTER, adapters[0], adapters), (FORM_PROMPT, "", ()),
            (FORM_SEED, str(random.randrange(0, 2**31 - 1)), ()), (FORM_STEPS, "20", ())])
        if answer is None:
            return None
        try:
            count, seed, steps = (int(answer[k].strip()) for k in (FORM_FRAMES, FORM_SEED, FORM_STEPS))
        except ValueError:
            api.message("BodyDouble: new frames, seed and steps are whole numbers.")
            continue
        return host.Params(
            operation="extend", adapter=answer[FORM_ADAPTER], prompt=answer[FORM_PROMPT], seed=seed, steps=steps,
            first=shot.source_in, last=shot.source_out, count=count, shot=shot.name, fps=shot.fps,
            colorspace=shot.colorspace, plate=shot.pattern)


def cancel(shot_name: str) -> bool:
    running = _running.get(shot_name)
    if running is None:
        return False
    running.job.cancel()
    return True


def _finish(running: Running, outcome: Outcome) -> None:
    """Main thread: the take goes onto the timeline, or the user hears why not."""
    _running.pop(running.shot.name, None)
    address = running.job.address
    key = f"{commands.TIMELINE}{running.shot.name}"
    if getattr(outcome.error, "code", "") == errors.UNKNOWN_JOB and running.job.follow:
        found = commands.take_left_on_disk(address, running.params, running.job.follow)
        if found is not None:            # the server restarted after finishing it: the take is on disk
            outcome = Outcome(result=found, job_id=running.job.follow)
    if not isinstance(outcome.error, errors.ServerUnavailable):
        hapi.forget_job(running.item)    # a server that stopped answering: the tag stays, to re-attach later
    if outcome.error is not None or outcome.result is None:
        state = "cancelled" if isinstance(outcome.error, errors.JobCancelled) else "failed"
        commands.remember(commands.Ended(key, outcome.job_id or "", state, str(outcome.error).splitlines()[0][:200]))
        report(outcome.error or errors.BodyDoubleError("the job ended without a result"), address, running.params,
               running.shot)
        return
    record = host.TakeRecord.of(outcome.result, running.params, running.shot.colour_transform)
    commands.remember(commands.Ended(key, outcome.job_id or "", "finished", record.label))
    hapi.place_after(running.item, placement(running.shot, record))


def placement(shot: Shot, record: host.TakeRecord) -> hapi.Placement:
    name = f"{shot.name}_{host.safe_name(record.adapter)}_take{record.take:03d}"
    return hapi.Placement(
        pattern=record.pattern, first=record.first, last=record.last, name=name,
        track=f"BodyDouble {record.adapter} take {record.take:03d}", bin=BIN, tag=record.label,
        note=f"{record.label}\n{record.prompt}\n{record.pattern}", colour_transform=shot.colour_transform,
        metadata={"adapter": record.adapter, "seed": str(record.seed), "take": str(record.take),
                  "operation": record.operation, "pattern": record.pattern, "first": str(record.first),
                  "last": str(record.last), "job": record.job, "prompt": record.prompt,
                  "source": f"{shot.pattern} {shot.source_in}-{shot.source_out}"},
    )


WORDS = replace(commands.WORDS, retry="run Extend shot again",
              paths_problem="the server may not read this shot's media or write its take.",
              paths_fix="The media must be under one of the server's allowed roots (bodydouble serve --root).",
              colour_fix="Set the clip's colour transform (its Media Color Transform) to one the server knows, or run "
                         "the server with the project's OCIO config ($OCIO).")


def report(exc: BaseException, address: str, params: Optional[host.Params] = None, shot: Optional[Shot] = None) -> None:
    """The Node Graph's messages, in the timeline's words (paths name the shot's media, not a render folder; a
    colour space the server does not know names the clip's colour transform it came from)."""
    words = WORDS
    if shot is not None:
        sent = f", sent as '{shot.colorspace}'" if shot.colorspace != shot.colour_transform else ""
        words = replace(WORDS, colour_fix=f"The clip's colour transform in Hiero is '{shot.colour_transform}'{sent}. "
                                          + WORDS.colour_fix)
    commands.report(exc, address, params, words)


# -- Fill unseen angle… ----------------------------------------------------------------------
def fill_command(item: hapi.TrackItem) -> Optional[api.Group]:
    """The Node Graph flow on the shot's source: a Read of its media, then BodyDouble on it."""
    shot = shot_of(hapi.read_item(item))
    read = api.create("Read", name=re.sub(r"\W", "_", f"shot_{shot.name}_source"), file=shot.pattern, first=shot.source_in,
                      last=shot.source_out, origfirst=shot.source_in, origlast=shot.source_out)
    if shot.colorspace and not shot.colour_transform.strip().startswith("default ("):   # else the Read's own default
        try:
            api.set(read, "colorspace", shot.colorspace)
        except ValueError:            # the script's config is not the project's
            api.message(f"BodyDouble: this script's colour management has no '{shot.colorspace}' (the clip's colour "
                        f"transform '{shot.colour_transform}'): set the Read's colorspace by hand.")
    api.select_only(read)
    return commands.fill_command()
