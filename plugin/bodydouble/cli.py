"""``bodydouble`` command line. Client commands need only the thin client; ``serve``, ``demo``
and ``train`` without ``--server`` need the server install (``pip install "bodydouble[server]"``).

Subcommands come from command modules: this module's client commands (``register``), then each module in
``COMMAND_MODULES`` (its ``register(commands)``). That is the extension point for a new command: see
docs/cli.md.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Callable

from . import errors
from .cliflags import Flag, add_fields, values
from .client import DEFAULT_ADDRESS, Client
from .curve import CLIENT_CERT_ENV, SERVER_CERT_ENV, keys_for
from .jobspec import AdapterRef, ExtendRequest, FillRequest, TrainRequest, parse_frame_range, sequence_frames

# Modules that add subcommands, in order: each defines ``register(commands: Commands)``. One that a partial
# install cannot import (no server extra) adds nothing, and ``bodydouble --help`` says why.
COMMAND_MODULES: list[str] = [
    "bodydouble_server.cli",        # serve, demo, doctor, and train in this process
    "bodydouble_server.policy.cli",  # audit verify|show, provenance verify, adapters retire
    "bodydouble_server.scale.farm",  # farm submit fill|extend|train, farm run, farm task (the steps' commands)
]


def _progress_printer(stream=sys.stderr):
    def show(p) -> None:
        bar = "#" * int(p.fraction * 30)
        stream.write(f"\r[{bar:<30}] {p.fraction * 100:5.1f}%  {p.message:<40}")
        stream.flush()
    return show


def connect(args) -> Client:
    """A client for ``--server``, with CURVE keys from the flags (else from the environment)."""
    return Client(args.server, timeout=args.timeout, curve=keys_for(args.curve_server_cert or "",
                                                                   args.curve_client_cert or ""))


def cmd_adapters(args) -> int:
    with connect(args) as client:
        adapters = client.list_adapters()
        if args.json:
            print(json.dumps([a.raw for a in adapters], indent=2))
            return 0
        model = (client.server_info or {}).get("model") or {}
        print(f"server {args.server}: base model {model.get('name', '?')}")
        if not adapters:
            print("  no adapters (put adapter folders in the server's adapters folder, then `bodydouble rescan`)")
        for a in adapters:
            extra = f"  [{a.status}: {a.reason}]" if a.status != "ready" else ""
            print(f"  {a.name:<24} {a.character:<24} trigger {a.trigger:<16}{extra}")
    return 0


def cmd_rescan(args) -> int:
    with connect(args) as client:
        for a in client.rescan():
            print(f"  {a.name:<24} {a.status}")
    return 0


def parse_adapters(values: list[str] | None) -> list[AdapterRef]:
    refs = []
    for value in values or []:
        name, _, weight = value.partition(":")
        refs.append(AdapterRef(name=name, weight=float(weight) if weight else 1.0))
    return refs


def _submit_and_wait(args, request, cancelled: str = "cancelled", prepare=None):
    """Submit (``prepare(client, request)`` first: the request completed from what the server has), show
    progress, cancel on Ctrl-C (then None); the job's result otherwise."""
    with connect(args) as client:
        if prepare is not None:
            request = prepare(client, request)
        job = client.submit(request)
        try:
            result = job.wait(on_progress=None if args.quiet else _progress_printer())
        except KeyboardInterrupt:
            job.cancel()
            print(f"\n{cancelled}", file=sys.stderr)
            return None
    if not args.quiet:
        print(file=sys.stderr)
    return result


def _plate_frames(args, mask: str | None = None):
    try:
        first, last = parse_frame_range(args.frames)
    except ValueError as exc:
        raise errors.RequestError(f"--frames: {exc}", code=errors.INVALID_REQUEST) from None
    return sequence_frames(args.plate, first, last, mask)




def _run_generation(args, request, prepare=None, **extra) -> int:
    """Submit, then print where the take is (JSON with ``extra`` for scripts): the exit status."""
    result = _submit_and_wait(args, request, prepare=prepare)
    if result is None:
        return 130
    if args.json:
        print(json.dumps({"take_dir": result.take_dir, "pattern": result.pattern, "first": result.first,
                          "last": result.last, **{k: result.info.get(k) for k in extra}}))
    else:
        print(f"take {result.take}: {result.pattern} ({result.first}-{result.last})")
        for describe in extra.values():
            print(describe(result.info))
    return 0


def cmd_fill(args) -> int:
    request = FillRequest(**values(FillRequest, args, frames=_plate_frames(args, args.mask),
                                   adapters=parse_adapters(args.adapter),
                                   key_adapters=parse_adapters(args.key_adapter)))
    return _run_generation(args, request, prepare=None if args.no_key else
                           lambda client, request: _keyed_as_the_hosts_key(client, request, args.quiet))


def _keyed_as_the_hosts_key(client, request: FillRequest, quiet: bool = False) -> FillRequest:
    """A fill on the video engine (named, or picked by the server for ready video adapters: the rule of
    ``FillRequest.decided_engine`` and the server's ``engine_for``) without a key gets the one the hosts give it:
    the video adapter's character's image adapter (``host.key_adapter_for``). Unkeyed, the video engine is
    2.4 dB and more below per-frame fill in the miniature world (README)."""
    from dataclasses import replace

    from .host import key_adapter_for

    decided = request.decided_engine
    if request.keyed or decided == "image":
        return request
    listed = client.list_adapters()
    ready_video = {a.name for a in listed if a.model_kind == "video" and a.status == "ready"}
    video = [ref.name for ref in request.adapters if ref.name in ready_video]
    if not video or (decided is None and len(video) < len(request.adapters)):
        return request              # not all ready video adapters: the server picks the image engine, no key
    key = key_adapter_for(listed, video[0])
    if not key:
        return request
    if not quiet:
        print(f"key adapter: {key} (the character's image adapter fills each chunk's first frame; --no-key: none)",
              file=sys.stderr)
    return replace(request, key_adapters=[AdapterRef(key)])


def cmd_extend(args) -> int:
    request = ExtendRequest(**values(ExtendRequest, args, frames=_plate_frames(args),
                                     adapters=parse_adapters(args.adapter)))

    def seam(info: dict) -> str:
        return (f"seam (display-referred R, G, B): mean diff {info['seam']['before']['mean_diff']} -> "
                f"{info['seam']['after']['mean_diff']} after colour match")

    return _run_generation(args, request, seam=seam)


def train_request(args) -> TrainRequest:
    """The train flags as a request: the same fields whether training runs in this process or on a server."""
    return TrainRequest(**values(TrainRequest, args, frames=[os.path.abspath(f) for f in args.frames],
                                 contact_sheet=os.path.abspath(args.contact_sheet) if args.contact_sheet else None))


def cmd_train(args) -> int:
    """Without --server: train in this process (the server's command module gives ``train_here``). With it: a
    train job on that server."""
    request = train_request(args)
    if not args.server:
        train_here = getattr(args, "train_here", None)
        if train_here is None:
            print(f"`bodydouble train` without --server needs the server install: pip install \"bodydouble[server]\" "
                  f"({_unavailable.get('bodydouble_server.cli', 'not loaded')})", file=sys.stderr)
            return 2
        return train_here(args, request)
    local = ["--" + flag.replace("_", "-") for flag in getattr(args, "local_flags", ()) if getattr(args, flag, None)]
    if local:
        print(f"bodydouble train --server: {', '.join(local)} are the server's own settings", file=sys.stderr)
        return 2
    result = _submit_and_wait(args, request, "cancelled: the last checkpoint is kept; run the same command again to resume")
    if result is None:
        return 130
    if request.report_only:
        print(json.dumps(result.report, indent=2) if args.json else result.summary)
        return 0 if result.ok_to_train else 3
    print(json.dumps({"adapter": result.adapter_dir}) if args.json else f"adapter written: {result.adapter_dir}")
    return 0


# Help of the generated flags (the fields themselves, their types and defaults, are in jobspec).
GENERATION_FLAGS = {
    "negative_prompt": Flag(name="negative"),
    "colorspace": Flag(help="the plate's colour space: an OCIO name, alias or role of the server's config, or a "
                            "host's usual name (Linear Rec.709, linear, sRGB...)"),
    "highlight_ceiling": Flag(help="generated pixels are never brighter than this (or the crop's brightest plate "
                                   "value); pure model white comes back as it (docs/colour.md)"),
    "shot": Flag(help="shot name: takes go to <output root>/<shot>/ unless --output-dir"),
    "mask_channel": Flag(help="channel of the mask image (default: alpha, else the first)"),
    "context": Flag(help="context around the mask's box, as a fraction of its size"),
    "feather": Flag(help="soft edge inside the mask, in plate pixels (a ramp twice as wide; the plate shows "
                            "through it: lower it on a small mask)"),
    "count": Flag(required=True, help="how many new frames"),
    "conditioning": Flag(help="extend: the last K plate frames condition the model; fill's video engine: the "
                              "filled frames each later chunk sees as known"),
    "overlap": Flag(help="frames blended between chunks of a long extension (or a video-engine fill)"),
    "colour_match": Flag(help="keep the generated colours as they come (the seam is still measured)"),
    "return_pixels": Flag(skip=True),
    "engine": Flag(choices=("image", "video"), help="fill: 'video' fills the range as one shot on the server's video "
                                                    "model (video adapters), 'image' frame by frame (default: the "
                                                    "server picks)"),
    "coherence": Flag(help="fill, image engine: 0 each frame on its own .. 1 the first frame's fill carried along "
                           "the plate's motion"),
    "key_frame": Flag(help="fill, video engine: the range's first frame already filled (say an image-engine take's "
                           "EXR, the plate's size): the video model carries it through the shot"),
}
TRAIN_FLAGS = {
    "frames": Flag(positional=True, help="folder(s) or files of reference frames (EXR, TIFF, PNG, JPEG, DPX)"),
    "character": Flag(required=True),
    "name": Flag(help="adapter folder name (default: the character, slugged)"),
    "trigger": Flag(help="trigger token (default: <name>)"),
    "model_kind": Flag(choices=("image", "video"),
                       help="train for the server's image model (fill) or its video model (extend)"),
    "colorspace": Flag(help="frames' colour space (auto: float files ACEScg, others raw)"),
    "train_text_encoder": Flag(help="also train a LoRA on the text encoder(s): binds the trigger token harder, "
                                    "needs more memory"),
    "clip_frames": Flag(help="video: train on clips of this many consecutive frames of each sequence "
                             "(name.####.exr), 1 or 4k+1 for Wan (5, 9, 13...); 1: every frame a 1-frame clip"),
    "clip_conditioning": Flag(help="video, with --clip-frames: frames at the start of each clip given as known "
                                   "(extend's K)"),
    "clip_fill": Flag(help="video, with --clip-frames: the share of clips trained on the video engine's fill "
                           "(the character's matte generated on every frame), the rest on extend; 0: extend only; "
                           "1: a fill adapter, which holds stills (and frames in no clip) as clips of their own"),
    "mixed_precision": Flag(help="GPU: train in float32"),
    "gradient_checkpointing": Flag(help="GPU: faster steps, more memory"),
    "licence": Flag(help="licence / consent note"),
    "required_views": Flag(name="require_view", help="a view the set must cover; repeat (default: all but top)"),
    "force": Flag(help="train below the thresholds (never past unreadable files)"),
    "report_only": Flag(help="print the data report and stop (exit 3 if below thresholds)"),
    "contact_sheet": Flag(help="with --report-only: write a PNG of the frames grouped by view"),
}


class Commands:
    """What a command module registers with: ``bodydouble``'s subcommands.

    ``add`` a command, ``client`` a command that talks to a server (``--server``, ``--timeout``, CURVE flags;
    ``connect(args)`` makes its ``Client``), ``parser(name)`` to add flags to one already registered, or
    ``group(name)`` to add subcommands under one (``bodydouble adapters retire``)."""

    def __init__(self, sub):
        self._sub = sub
        self._parsers: dict[str, argparse.ArgumentParser] = {}
        self._groups: dict[str, Commands] = {}

    def add(self, name: str, help: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        if name in self._parsers:
            raise ValueError(f"command {name!r} is registered twice")
        p = self._sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        self._parsers[name] = p
        return p

    def client(self, name: str, help: str, func: Callable[[argparse.Namespace], int],
               timeout: float = 10.0, server_default: str | None = DEFAULT_ADDRESS) -> argparse.ArgumentParser:
        p = self.add(name, help, func)
        p.add_argument("--server", default=server_default, help=f"server address (default {server_default})"
                       if server_default else "run as a job on this server (paths must be under its roots)")
        p.add_argument("--timeout", type=float, default=timeout)
        curve_flags(p)
        return p

    def parser(self, name: str) -> argparse.ArgumentParser:
        return self._parsers[name]

    def group(self, name: str) -> "Commands":
        """The subcommands of command ``name`` (``bodydouble adapters retire NAME``): register into them as
        here. The command alone still runs its own ``func`` (``bodydouble adapters`` lists)."""
        if name not in self._groups:
            parser = self._parsers[name]
            self._groups[name] = Commands(parser.add_subparsers(dest=f"{name}_command", metavar="ACTION"))
        return self._groups[name]

    def __contains__(self, name: str) -> bool:
        return name in self._parsers


def curve_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--curve-server-cert", help=f"the server's public CURVE certificate: encrypt (remote server; "
                   f"default ${SERVER_CERT_ENV})")
    p.add_argument("--curve-client-cert", help=f"your secret CURVE certificate, for a server that admits listed "
                   f"clients only (default ${CLIENT_CERT_ENV})")


_unavailable: dict[str, str] = {}     # command module -> why it could not be imported


def register(commands: Commands) -> None:
    """The thin client's own commands."""
    p = commands.client("adapters", "list the server's character adapters", cmd_adapters)
    p.add_argument("--json", action="store_true")
    commands.client("rescan", "make the server rescan its adapters folder", cmd_rescan)

    def generating(name: str, help: str, frames_help: str, cls, func):
        """The flags every generating operation shares: plate, frames, adapters; the rest from ``cls``'s fields."""
        p = commands.client(name, help, func)
        p.add_argument("--plate", required=True, help="plate file pattern, e.g. /shows/x/sh010/plate.####.exr")
        p.add_argument("--frames", required=True, help=frames_help)
        p.add_argument("--adapter", action="append", help="adapter name[:weight]; repeat to blend")
        add_fields(p, cls, GENERATION_FLAGS)
        p.add_argument("--json", action="store_true")
        p.add_argument("--quiet", action="store_true")
        return p

    p = generating("fill", "inpaint an unseen angle over a plate sequence", "FIRST-LAST, e.g. 1001-1010",
                   FillRequest, cmd_fill)
    p.add_argument("--mask", help="mask file pattern (default: the plate's alpha)")
    p.add_argument("--key-adapter", action="append",
                   help="fill, video engine: an image adapter name[:weight] with which the server fills the range's "
                        "first frame as the key frame (instead of --key-frame); repeat to blend. Default: the "
                        "video adapter's character's image adapter, as the hosts key it")
    p.add_argument("--no-key", action="store_true",
                   help="fill, video engine: no key adapter by default (every frame from noise)")
    generating("extend", "generate frames after a plate's last frame (shot extension)",
               "the plate's FIRST-LAST; the take starts at LAST+1", ExtendRequest, cmd_extend)

    p = commands.client("train", "data report and LoRA training of a character adapter (in this process: server "
                        "install; with --server: a train job on that server)", cmd_train, server_default=None)
    p.set_defaults(server=None)
    add_fields(p, TrainRequest, TRAIN_FLAGS)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bodydouble", description=__doc__.split("\n\n")[0])
    commands = Commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    register(commands)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise                  # a module that is there but broken: show it, do not hide its commands
            _unavailable[name] = f"{exc.name} is not installed"
            continue
        module.register(commands)
    if _unavailable:
        parser.epilog = "not available here: " + "; ".join(f"{m} ({why})" for m, why in _unavailable.items())
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except errors.BodyDoubleError as exc:
        print(f"bodydouble: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
