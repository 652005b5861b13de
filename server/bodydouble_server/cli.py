"""The server's commands: ``bodydouble serve``, ``demo``, ``doctor`` and ``train`` in this process.

``register`` adds them to ``bodydouble``'s command line (``bodydouble.cli.COMMAND_MODULES`` lists this
module). Importing this module must stay cheap and torch-free: it runs on every ``bodydouble`` call, thin
client installs included; the commands import what they need when they run.
"""
from __future__ import annotations

import functools
import logging
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

from bodydouble.cliflags import Flag, add_fields, values
from bodydouble.client import DEFAULT_ADDRESS

from .config import DTYPES, ServerConfig

# Help of the serve flags; the flags themselves come from ServerConfig's fields (a new setting gets its flag).
SERVE_FLAGS = {
    "model": Flag(help="local diffusers folder or single-file checkpoint (default: embedded test model)"),
    "family": Flag(help="model family for a single-file checkpoint (sd15, sdxl)"),
    "model_config": Flag(help="diffusers config folder for a single-file checkpoint"),
    "adapters": Flag(help="adapters folder"),
    "roots": Flag(name="root", help="folder the server may read/write; repeat"),
    "output_root": Flag(help="where takes go when a request names no output folder"),
    "device": Flag(help="auto | cpu | cuda | cuda:N"),
    "dtype": Flag(choices=DTYPES),
    "resolution": Flag(help="generation long side (default: the model family's)"),
    "video_model": Flag(help="extend's video model: a local diffusers folder (Wan VACE, LTX-Video), 'none' for no "
                             "extend (default: embedded test video model)"),
    "video_resolution": Flag(help="extend's generation long side (default: the family's)"),
    "video_window": Flag(help="frames per video pipeline call (lower: less GPU memory)"),
    "curve_certificate": Flag(help="server secret certificate: encrypt connections (remote use)"),
    "curve_authorized_clients": Flag(name="curve_clients", help="folder of client public certificates allowed to "
                                                                "connect"),
    # Guardrails (docs/guardrails.md)
    "consent_dir": Flag(help="folder of consent records, one TOML per character and production (default "
                             "<home>/consent)"),
    "adapters_without_consent": Flag(choices=("refuse", "allow"), help="an adapter whose character has no consent "
                                                                       "record"),
    "consent_exempt_test_models": Flag(skip=True),     # config file only: the TEST models need no record
    "audit_log": Flag(help="the append-only audit log (default <home>/state/audit.log)"),
    "audit_rotate_mb": Flag(help="rotate the audit log's live file at this size"),
    "signing_cert": Flag(help="C2PA signing certificate chain, PEM (default: a local chain made on first use)"),
    "signing_key": Flag(help="its private key, PEM (PKCS#8)"),
    "trust_anchors": Flag(help="PEM of the CA(s) provenance verification trusts"),
    "pool": Flag(help="hand fill jobs to a Ray Serve GPU pool: ray://HOST:PORT, HOST:PORT or auto "
                      "(docs/scale-out.md)"),
}
LOCAL_TRAIN_FLAGS = ("out", "work_dir", "model", "config")   # train in this process only; refused with --server


def register(commands) -> None:
    """Add the server's commands to ``bodydouble`` (a ``bodydouble.cli.Commands``)."""
    p = commands.add("serve", "run the inference server", needs_server(cmd_serve))
    p.add_argument("--config", help="TOML settings file")
    add_fields(p, ServerConfig, SERVE_FLAGS, defaults=False)     # None: not given, the config file's value stands
    p.add_argument("--log-level", default="INFO")

    p = commands.add("demo", "end-to-end demo on the embedded test model (no weights needed)", needs_server(cmd_demo))
    p.add_argument("--out", default="bodydouble-demo", help="folder for the sample plate, adapter and takes")
    p.add_argument("--frames", type=int, default=3)
    p.add_argument("--size", default="256x144", help="plate WIDTHxHEIGHT")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--extend", type=int, default=8, help="frames the demo's extend take adds after the plate")

    p = commands.add("doctor", "check this set-up (versions, GPU, model, adapters, server, folders, host plugins): "
                     "one line per check with its fix; exit 1 on any FAIL", cmd_doctor)
    p.add_argument("--config", help="server config (default: the one the installer writes)")
    p.add_argument("--server", help=f"server address (default: from the config, else {DEFAULT_ADDRESS})")
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--json", action="store_true")

    p = commands.parser("train")     # the client's train command: these flags are for training in this process
    p.add_argument("--out", help="adapters folder to publish into (default: the server's)")
    p.add_argument("--work-dir", help="checkpoints folder (default: OUT/.training/NAME); rerun to resume")
    p.add_argument("--model", help="the model to train for, a diffusers folder: the base (image) model, or with "
                   "--model-kind video the video model (default: the embedded test model of that kind)")
    p.add_argument("--device", default="auto")
    p.add_argument("--config", help="server config whose consent records and audit log apply (default: the one the "
                   "installer writes, if any)")
    p.set_defaults(train_here=needs_server(cmd_train), local_flags=LOCAL_TRAIN_FLAGS)


def needs_server(command):
    """A command that says which install it needs when the server's libraries (torch, ...) are missing."""
    @functools.wraps(command)
    def run(args, *rest) -> int:
        try:
            return command(args, *rest)
        except ModuleNotFoundError as exc:
            if (exc.name or "").startswith("bodydouble"):
                raise
            print(f"`bodydouble {args.command}` needs the server install: pip install \"bodydouble[server]\" "
                  f"({exc})", file=sys.stderr)
            return 2
    return run


def cmd_doctor(args) -> int:
    """Works without the server's libraries: the checks say what is missing."""
    from .workstation.doctor import cmd_doctor as doctor

    return doctor(args)


def cmd_serve(args) -> int:
    from .server import Server

    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = ServerConfig.load(args.config, **values(ServerConfig, args))
    server = Server(config)
    address = server.bind()
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    model = "embedded TEST MODEL (random weights)" if config.model is None else config.model
    print(f"bodydouble serving on {address}  model: {model}  adapters: {config.adapters}  "
          f"roots: {', '.join(config.roots)}", flush=True)
    server.serve_forever()
    return 0


def start_in_thread(config: ServerConfig):
    """(Server, thread): a server on a background thread (demo, tests, benchmarks): real sockets, real model."""
    from .server import Server

    server = Server(config)
    server.bind()
    thread = threading.Thread(target=server.serve_forever, name="bodydouble-server", daemon=True)
    thread.start()
    return server, thread


def cmd_demo(args) -> int:
    from bodydouble.client import Client
    from bodydouble.jobspec import AdapterRef, ExtendRequest, FillRequest, sequence_frames

    from . import samples
    from .adapter_files import synthetic_adapter
    from .engine import Engine

    logging.basicConfig(level=logging.WARNING)
    t0 = time.time()
    out = Path(args.out).resolve()
    width, height = (int(v) for v in args.size.lower().split("x"))
    first, last = 1001, 1000 + args.frames
    print(f"BodyDouble demo in {out}")
    plate, mask = samples.write_sequence(out / "plates", first, last, width, height)
    print(f"  plate  {plate} ({first}-{last}, ACEScg half RGBA with overbrights)\n  mask   {mask}")

    config = ServerConfig(port=0, roots=[str(out)], adapters=str(out / "adapters"), output_root=str(out / "takes"))
    engine = Engine(config)
    engine.load()
    names = {"image": "hero_demo", "video": "hero_demo_video"}      # one synthetic adapter per model kind
    for seed, slot in enumerate(engine.available(), start=7):
        folder = out / "adapters" / names[slot.kind.name]
        if not folder.exists():
            synthetic_adapter(slot.pipeline(), slot.identity, folder, character="Hero (demo)", seed=seed)
    print(f"  adapters {', '.join(f'{name} ({kind})' for kind, name in names.items())}: synthetic, on the embedded "
          "TEST models")
    del engine

    server, thread = start_in_thread(config)
    try:
        with Client(server.bound_address, timeout=30) as client:
            info = client.wait_ready()
            print(f"  server {server.bound_address}: protocol {info['protocol']}, state {info['state']}")
            names = [a.name for a in client.list_adapters()]
            print(f"  adapters: {', '.join(names)}")
            job = client.submit(FillRequest(
                frames=sequence_frames(plate, first, last, mask), adapters=[AdapterRef("hero_demo")],
                prompt="<hero_demo> back of the head, three-quarter view", seed=1234, steps=args.steps, shot="sh010",
            ))

            def show(label):
                def progress(p) -> None:
                    sys.stdout.write(f"\r  {label:<6} [{'#' * int(p.fraction * 30):<30}] {p.fraction * 100:5.1f}%  "
                                     f"{p.message:<28}")
                    sys.stdout.flush()
                return progress

            result = job.wait(timeout=300, on_progress=show("fill"))
            print(f"\n  take {result.take}: {result.pattern}  frames {result.first}-{result.last}")
            print(f"  take folder: {result.take_dir}")
            job = client.submit(ExtendRequest(
                frames=sequence_frames(plate, first, last), count=args.extend, conditioning=min(2, args.frames),
                adapters=[AdapterRef("hero_demo_video")], prompt="<hero_demo_video> keeps walking", seed=1234,
                steps=args.steps, shot="sh010",
            ))
            result = job.wait(timeout=300, on_progress=show("extend"))
            seam = result.info["seam"]
            print(f"\n  extend take {result.take}: {result.pattern}  frames {result.first}-{result.last}")
            print(f"  seam mean diff (display-referred RGB) {seam['before']['mean_diff']} -> "
                  f"{seam['after']['mean_diff']} after colour match")
    finally:
        server.stop()
        thread.join(10)
    print(f"done in {time.time() - t0:.1f} s. Open the EXRs in Nuke/Blender; headers carry bodydouble:* provenance.")
    return 0


def cmd_train(args, request) -> int:
    """``bodydouble train FRAMES --character NAME`` in this process: the data report, then (unless
    --report-only) LoRA training. ``request``: the flags as the ``TrainRequest`` a server would get."""
    import json

    from .training import contact, run
    from .training.loop import TrainingCancelled
    from .training.report import summary_text, to_json

    logging.basicConfig(level=logging.WARNING)
    settings, thresholds = run.from_request(request)
    if args.report_only:
        data, report = run.data_report(args.frames, settings.resolution, thresholds, colourspace=args.colorspace)
        if args.contact_sheet and data.frames:
            contact.contact_sheet(data, Path(args.contact_sheet))
        print(to_json(report) if args.json else summary_text(report))
        return 0 if report["ok_to_train"] else 3
    config = _local_config(args.config)
    out = Path(args.out or config.adapters)
    pipe, identity, device = _training_model(settings.model_kind, args.model, args.device,
                                             str(out / ".training" / "__none__"))
    # The rules a server applies: the character's consent must cover training (else not_permitted), audited.
    from .policy import Policy

    admission = Policy(config).admit_offline("train", request, f"local-train-{uuid.uuid4().hex[:12]}",
                                             test_model=identity.test_model)

    def show(p: dict) -> None:
        sys.stderr.write(f"\r{run.progress_line(p)}   ")
        sys.stderr.flush()

    stop = threading.Event()

    def interrupt(*_) -> None:   # first Ctrl-C: checkpoint this step and stop; a second one: stop now
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        folder, report = run.train_adapter(
            pipe, identity, args.frames, settings, out, thresholds=thresholds, force=args.force,
            work_dir=Path(args.work_dir) if args.work_dir else None, colourspace=args.colorspace, device=device,
            on_progress=None if args.quiet else show, should_stop=stop.is_set)
    except TrainingCancelled as exc:
        admission.ended("cancelled", error=str(exc))
        print(f"\n{exc}; run the same command again to resume", file=sys.stderr)
        return 130
    except BaseException as exc:
        admission.ended("failed", error=str(exc) or type(exc).__name__)
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
    admission.ended("complete", adapter_dir=str(folder))
    if not args.quiet:
        print(file=sys.stderr)
    print(json.dumps({"adapter": str(folder)}) if args.json else f"adapter written: {folder}")
    return 0


def _local_config(path: str | None) -> ServerConfig:
    """``--config``, else the installer's server config when there is one, else the defaults."""
    from .workstation.locations import server_config_path

    if path is None and server_config_path().is_file():
        path = str(server_config_path())
    return ServerConfig.load(path)


def _training_model(model_kind: str, model: str | None, device: str, adapters: str):
    """(pipeline, identity, device) to train on: the model of ``model_kind`` (``--model`` names its folder;
    default the embedded test model of that kind). ``adapters``: an empty folder, so no served adapter is
    loaded."""
    from .engine import quiet_libraries, resolve_device
    from .models.slots import KINDS, open_model

    quiet_libraries()
    device, dtype = resolve_device(device, "auto")
    config = ServerConfig(port=0, device=device, adapters=adapters, **{KINDS[model_kind].setting: model})
    slot = open_model(model_kind, config, device, dtype)
    return slot.pipeline(), slot.identity, device
