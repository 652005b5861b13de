"""``bodydouble`` command line. Client commands need only the thin client; ``serve``, ``demo``
and ``train`` need the server install (``pip install "bodydouble[server]"``)."""
from __future__ import annotations

import argparse
import json
import os
import sys

from . import errors
from .client import DEFAULT_ADDRESS, Client
from .curve import CLIENT_CERT_ENV, SERVER_CERT_ENV, keys_for
from .jobspec import AdapterRef, ExtendRequest, FillRequest, TrainRequest, sequence_frames


def _progress_printer(stream=sys.stderr):
    def show(p) -> None:
        bar = "#" * int(p.fraction * 30)
        stream.write(f"\r[{bar:<30}] {p.fraction * 100:5.1f}%  {p.message:<40}")
        stream.flush()
    return show


def _client(args) -> Client:
    """A client for ``--server``, with CURVE keys from the flags (else from the environment)."""
    return Client(args.server, timeout=args.timeout, curve=keys_for(args.curve_server_cert or "",
                                                                   args.curve_client_cert or ""))


def cmd_adapters(args) -> int:
    with _client(args) as client:
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
    with _client(args) as client:
        for a in client.rescan():
            print(f"  {a.name:<24} {a.status}")
    return 0


def parse_adapters(values: list[str] | None) -> list[AdapterRef]:
    refs = []
    for value in values or []:
        name, _, weight = value.partition(":")
        refs.append(AdapterRef(name=name, weight=float(weight) if weight else 1.0))
    return refs


def _submit_and_wait(args, request, cancelled: str = "cancelled"):
    """Submit, show progress, cancel on Ctrl-C (then None); the job's result otherwise."""
    with _client(args) as client:
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
    first, _, last = args.frames.partition("-")
    return sequence_frames(args.plate, int(first), int(last or first), mask)


def _generation(args) -> dict:
    """Request fields from the flags every generating command shares."""
    return dict(adapters=parse_adapters(args.adapter), prompt=args.prompt, negative_prompt=args.negative,
                seed=args.seed, steps=args.steps, guidance=args.guidance, colorspace=args.colorspace, shot=args.shot,
                output_dir=args.output_dir)


def _run_generation(args, request, **extra) -> int:
    """Submit, then print where the take is (JSON with ``extra`` for scripts): the exit status."""
    result = _submit_and_wait(args, request)
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
    return _run_generation(args, FillRequest(frames=_plate_frames(args, args.mask), strength=args.strength,
                                             **_generation(args)))


def cmd_extend(args) -> int:
    request = ExtendRequest(frames=_plate_frames(args), count=args.count, conditioning=args.conditioning,
                            overlap=args.overlap, colour_match=args.colour_match, fps=args.fps, **_generation(args))

    def seam(info: dict) -> str:
        return (f"seam (display-referred R, G, B): mean diff {info['seam']['before']['mean_diff']} -> "
                f"{info['seam']['after']['mean_diff']} after colour match")

    return _run_generation(args, request, seam=seam)


def _server_command(name: str):
    def run(args) -> int:
        try:
            from bodydouble_server import cli as server_cli
        except ImportError as exc:
            print(f"`bodydouble {name}` needs the server install: pip install \"bodydouble[server]\" ({exc})",
                  file=sys.stderr)
            return 2
        return getattr(server_cli, f"cmd_{name}")(args)
    return run


def train_request(args) -> TrainRequest:
    """The train flags as a request: the same fields whether training runs in this process or on a server."""
    return TrainRequest(
        frames=[os.path.abspath(f) for f in args.frames], character=args.character, name=args.name or "",
        trigger=args.trigger or "", rights_holder=args.rights_holder or "", licence=args.licence or "",
        colorspace=args.colorspace, resolution=args.resolution, rank=args.rank, steps=args.steps,
        learning_rate=args.learning_rate, batch=args.batch, seed=args.seed, checkpoint_every=args.checkpoint_every,
        holdout_per_view=args.holdout_per_view, preview_steps=args.preview_steps, preview_count=args.preview_count,
        mixed_precision=args.mixed_precision, gradient_checkpointing=args.gradient_checkpointing,
        model_kind=args.model_kind, train_text_encoder=args.train_text_encoder,
        clip_frames=args.clip_frames, clip_conditioning=args.clip_conditioning,
        min_frames=args.min_frames, min_per_view=args.min_per_view, required_views=args.require_view,
        force=args.force, report_only=args.report_only,
        contact_sheet=os.path.abspath(args.contact_sheet) if args.contact_sheet else None)


def cmd_train(args) -> int:
    """Without --server: train in this process (server install). With it: a train job on that server."""
    if not args.server:
        return _server_command("train")(args)
    local = [flag for flag, value in (("--out", args.out), ("--work-dir", args.work_dir), ("--model", args.model)) if value]
    if local:
        print(f"bodydouble train --server: {', '.join(local)} are the server's own settings", file=sys.stderr)
        return 2
    request = train_request(args)
    result = _submit_and_wait(args, request, "cancelled: the last checkpoint is kept; run the same command again to resume")
    if result is None:
        return 130
    if request.report_only:
        print(json.dumps(result.report, indent=2) if args.json else result.summary)
        return 0 if result.ok_to_train else 3
    print(json.dumps({"adapter": result.adapter_dir}) if args.json else f"adapter written: {result.adapter_dir}")
    return 0


def _doctor(args) -> int:
    from .doctor import cmd_doctor   # only when asked: the checks need nothing the other commands load

    return cmd_doctor(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bodydouble", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def curve_flags(p) -> None:
        p.add_argument("--curve-server-cert", help=f"the server's public CURVE certificate: encrypt (remote server; "
                       f"default ${SERVER_CERT_ENV})")
        p.add_argument("--curve-client-cert", help=f"your secret CURVE certificate, for a server that admits listed "
                       f"clients only (default ${CLIENT_CERT_ENV})")

    def client_parser(name: str, help: str):
        p = sub.add_parser(name, help=help)
        p.add_argument("--server", default=DEFAULT_ADDRESS, help=f"server address (default {DEFAULT_ADDRESS})")
        p.add_argument("--timeout", type=float, default=10.0)
        curve_flags(p)
        return p

    p = client_parser("adapters", "list the server's character adapters")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_adapters)
    client_parser("rescan", "make the server rescan its adapters folder").set_defaults(func=cmd_rescan)
    p = sub.add_parser("doctor", help="check this set-up (versions, GPU, model, adapters, server, folders, host "
                       "plugins): one line per check with its fix; exit 1 on any FAIL")
    p.add_argument("--config", help="server config (default: the one the installer writes)")
    p.add_argument("--server", help=f"server address (default: from the config, else {DEFAULT_ADDRESS})")
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_doctor)

    def generating_parser(name: str, help: str, frames_help: str, guidance: float):
        """The flags every generating operation shares: plate, frames, adapters, sampling, output."""
        p = client_parser(name, help)
        p.add_argument("--plate", required=True, help="plate file pattern, e.g. /shows/x/sh010/plate.####.exr")
        p.add_argument("--frames", required=True, help=frames_help)
        p.add_argument("--adapter", action="append", help="adapter name[:weight]; repeat to blend")
        p.add_argument("--prompt", default="")
        p.add_argument("--negative", default="")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--steps", type=int, default=20)
        p.add_argument("--guidance", type=float, default=guidance)
        p.add_argument("--colorspace", default="ACEScg")
        p.add_argument("--shot")
        p.add_argument("--output-dir")
        p.add_argument("--json", action="store_true")
        p.add_argument("--quiet", action="store_true")
        return p

    p = generating_parser("fill", "inpaint an unseen angle over a plate sequence", "FIRST-LAST, e.g. 1001-1010", 7.5)
    p.add_argument("--mask", help="mask file pattern (default: the plate's alpha)")
    p.add_argument("--strength", type=float, default=1.0)
    p.set_defaults(func=cmd_fill)

    p = generating_parser("extend", "generate frames after a plate's last frame (shot extension)",
                          "the plate's FIRST-LAST; the take starts at LAST+1", 5.0)
    p.add_argument("--count", type=int, required=True, help="how many new frames")
    p.add_argument("--conditioning", type=int, default=1, help="K: the last K plate frames condition the model")
    p.add_argument("--overlap", type=int, default=2, help="frames blended between chunks of a long extension")
    p.add_argument("--no-colour-match", dest="colour_match", action="store_false",
                   help="keep the generated colours as they come (the seam is still measured)")
    p.add_argument("--fps", type=float, default=24.0)
    p.set_defaults(func=cmd_extend)

    p = sub.add_parser("serve", help="run the inference server")
    p.add_argument("--config", help="TOML settings file")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--model", help="local diffusers folder or single-file checkpoint (default: embedded test model)")
    p.add_argument("--family", help="model family for a single-file checkpoint (sd15, sdxl)")
    p.add_argument("--model-config", help="diffusers config folder for a single-file checkpoint")
    p.add_argument("--adapters", help="adapters folder")
    p.add_argument("--root", action="append", dest="roots", help="folder the server may read/write; repeat")
    p.add_argument("--output-root", help="where takes go when a request names no output folder")
    p.add_argument("--device")
    p.add_argument("--dtype")
    p.add_argument("--resolution", type=int)
    p.add_argument("--video-model", help="extend's video model: a local diffusers folder (Wan VACE, LTX-Video), "
                   "'none' for no extend (default: embedded test video model)")
    p.add_argument("--video-resolution", type=int, help="extend's generation long side (default: the family's)")
    p.add_argument("--video-window", type=int, help="frames per video pipeline call (lower: less GPU memory)")
    p.add_argument("--curve-certificate", help="server secret certificate: encrypt connections (remote use)")
    p.add_argument("--curve-clients", help="folder of client public certificates allowed to connect")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=_server_command("serve"))

    p = sub.add_parser("demo", help="end-to-end demo on the embedded test model (no weights needed)")
    p.add_argument("--out", default="bodydouble-demo", help="folder for the sample plate, adapter and takes")
    p.add_argument("--frames", type=int, default=3)
    p.add_argument("--size", default="256x144", help="plate WIDTHxHEIGHT")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--extend", type=int, default=8, help="frames the demo's extend take adds after the plate")
    p.set_defaults(func=_server_command("demo"))

    p = sub.add_parser("train", help="data report and LoRA training of a character adapter (server install)")
    p.add_argument("frames", nargs="+", help="folder(s) or files of reference frames (EXR, TIFF, PNG, JPEG, DPX)")
    p.add_argument("--character", required=True)
    p.add_argument("--name", help="adapter folder name (default: the character, slugged)")
    p.add_argument("--trigger", help="trigger token (default: <name>)")
    p.add_argument("--report-only", action="store_true", help="print the data report and stop (exit 3 if below thresholds)")
    p.add_argument("--contact-sheet", help="with --report-only: write a PNG of the frames grouped by view")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", help="adapters folder to publish into (default: the server's)")
    p.add_argument("--work-dir", help="checkpoints folder (default: OUT/.training/NAME); rerun to resume")
    p.add_argument("--model", help="the model to train for, a diffusers folder: the base (image) model, or with "
                   "--model-kind video the video model (default: the embedded test model of that kind)")
    p.add_argument("--model-kind", choices=["image", "video"], default="image",
                   help="train for the server's image model (fill) or its video model (extend)")
    p.add_argument("--device", default="auto")
    p.add_argument("--colorspace", default="auto", help="frames' colour space (auto: float files ACEScg, others raw)")
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--holdout-per-view", type=int, default=1)
    p.add_argument("--preview-steps", type=int, default=20)
    p.add_argument("--preview-count", type=int, default=4)
    p.add_argument("--train-text-encoder", action="store_true",
                   help="also train a LoRA on the text encoder(s): binds the trigger token harder, needs more memory")
    p.add_argument("--clip-frames", type=int, default=1,
                   help="video: train on clips of this many consecutive frames of each sequence (name.####.exr), "
                   "1 or 4k+1 for Wan (5, 9, 13...); 1: every frame a 1-frame clip")
    p.add_argument("--clip-conditioning", type=int, default=1,
                   help="video, with --clip-frames: frames at the start of each clip given as known (extend's K)")
    p.add_argument("--no-mixed-precision", dest="mixed_precision", action="store_false", help="GPU: train in float32")
    p.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false",
                   help="GPU: faster steps, more memory")
    p.add_argument("--rights-holder")
    p.add_argument("--licence", help="licence / consent note")
    p.add_argument("--min-frames", type=int, default=8)
    p.add_argument("--min-per-view", type=int, default=1)
    p.add_argument("--require-view", action="append", help="a view the set must cover; repeat (default: all but top)")
    p.add_argument("--force", action="store_true", help="train below the thresholds (never past unreadable files)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--server", help="run as a train job on this server (frames and --contact-sheet under its roots)")
    p.add_argument("--timeout", type=float, default=10.0)
    curve_flags(p)
    p.set_defaults(func=cmd_train)
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
