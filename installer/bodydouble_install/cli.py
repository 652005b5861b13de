"""``python3 installer/install.py``: the server's environment and config, the Blender extension, the Nuke plugin,
optionally a user service; ``--uninstall`` removes exactly what it added (see the manifest it keeps)."""
from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from bodydouble_server.workstation.gpus import detect_gpus
from bodydouble_server.workstation.locations import NUKE_PYTHONS, default_prefix, install_manifest_path, server_config_path

from . import blender, nuke, server_env, service, torch_build
from .record import Record

HOME_DEFAULT = Path.home() / "bodydouble"   # the server's own default home (server config default_home)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="install.py", description=__doc__)
    p.add_argument("--uninstall", action="store_true", help="remove everything a previous run added")
    p.add_argument("--prefix", type=Path, help=f"where environments and plugins go (default {default_prefix()})")
    g = p.add_argument_group("server")
    g.add_argument("--server-python", type=Path, help="use this Python's existing server install; create no venv")
    g.add_argument("--editable", action="store_true", help="install the server editable from this checkout")
    g.add_argument("--torch-index-url", help="pip index for PyTorch (default: chosen from the GPU and driver)")
    g.add_argument("--model", help="base model: a local diffusers folder (default: the embedded TEST model)")
    g.add_argument("--video-model", help="extend's video model: a Wan VACE or LTX-Video diffusers folder, or 'none' "
                                         "(default: the embedded TEST video model)")
    g.add_argument("--adapters", type=Path, help=f"adapters folder (default {HOME_DEFAULT / 'adapters'})")
    g.add_argument("--output-root", type=Path, help=f"where takes go (default {HOME_DEFAULT / 'takes'})")
    g.add_argument("--root", type=Path, action="append", dest="roots",
                   help="a folder the server may read plates from / write takes to; repeat (default: the output root)")
    g.add_argument("--port", type=int, default=5555)
    g.add_argument("--force-config", action="store_true", help="replace a config the installer did not write")
    g.add_argument("--service", action="store_true", help="run the server as a systemd user service (Linux)")
    g = p.add_argument_group("hosts")
    g.add_argument("--no-server", action="store_true", help="no server config, launcher or service (hosts only)")
    g.add_argument("--no-blender", action="store_true")
    g.add_argument("--no-nuke", action="store_true")
    g.add_argument("--blender", help="Blender 4.2+ executable (default: $BLENDER, then PATH)")
    g.add_argument("--blender-platform", action="append", help="pyzmq platforms in the zip (default: all)")
    g.add_argument("--nuke-python", action="append", choices=sorted(set(NUKE_PYTHONS.values())),
                   help="Nuke Python ABIs to install pyzmq for (default: all: Nuke 14=3.9, 15=3.10, 16=3.11)")
    g.add_argument("--nuke-init", choices=("edit", "print"), default="edit",
                   help="edit ~/.nuke/init.py (default) or print the NUKE_PATH line instead")
    g.add_argument("--offline", action="store_true",
                   help="download no host wheels: pyzmq repacked from the server env (its Python and platform only)")
    return p


def uninstall(rec: Record) -> int:
    if not rec.path.exists():
        print(f"nothing to uninstall ({rec.path} does not exist)")
        return 0
    if "blender" in rec.actions:
        blender.uninstall(rec.actions["blender"])
    if "service" in rec.actions:
        service.uninstall()
    kept = rec.uninstall()
    service.reload_units()
    print("BodyDouble uninstalled" + (f"; kept {len(kept)} path(s) listed above" if kept else ""))
    return 0


def server_part(rec: Record, args, prefix: Path) -> Path:
    if args.server_python:
        python = args.server_python.absolute()
        print(f"server: using {python} (BodyDouble {server_env.check_server_python(python)})")
        return python
    choice = torch_build.choose(detect_gpus(), args.torch_index_url)
    rec.info["torch_build"] = choice.build
    return server_env.create_env(rec, prefix / "server-venv", choice, args.editable)


def config_part(rec: Record, args, python: Path) -> Path:
    adapters = (args.adapters or HOME_DEFAULT / "adapters").absolute()
    output_root = (args.output_root or HOME_DEFAULT / "takes").absolute()
    roots = [r.absolute() for r in args.roots or []] or [output_root]
    for folder in (adapters, output_root):
        rec.mkdir(folder)
    path = server_config_path()
    text = server_env.config_text(args.model, adapters, roots, output_root, args.port, video_model=args.video_model)
    server_env.write_config(rec, path, text, args.force_config)
    server_env.validate_config(python, path)
    return path


def launcher_part(rec: Record, python: Path) -> None:
    """``~/.local/bin/bodydouble``: the command line (doctor, serve, adapters) without activating the venv."""
    path = Path.home() / ".local" / "bin" / "bodydouble"
    if path.exists() and not rec.ours_unchanged(path):
        print(f"kept {path} (not written by the installer); run {python} -m bodydouble instead")
        return
    rec.write(path, f"#!/bin/sh\nexec {shlex.quote(str(python))} -m bodydouble \"$@\"\n")
    path.chmod(0o755)


def install(rec: Record, args) -> int:
    prefix = (args.prefix or Path(rec.info.get("prefix") or default_prefix())).absolute()
    rec.mkdir(prefix)
    rec.info["prefix"] = str(prefix)
    rec.save()
    todo: list[str] = []
    python = server_part(rec, args, prefix)
    rec.info["server_python"] = str(python)
    rec.save()
    config = None
    if not args.no_server:
        config = config_part(rec, args, python)
        launcher_part(rec, python)
        rec.save()
    if not args.no_blender:
        zip_path = blender.build_zip(rec, prefix, python, args.offline, args.blender_platform or [])
        if not blender.install(rec, zip_path, args.blender):
            todo.append(blender.manual_step(zip_path))
        rec.save()
    if not args.no_nuke:
        todo += nuke.install(rec, prefix, python, args.offline, args.nuke_python or sorted(set(NUKE_PYTHONS.values())),
                             f"tcp://127.0.0.1:{args.port}", args.nuke_init == "edit")
        rec.save()
    if config and args.service:
        service.install(rec, python, config)
        rec.save()
    elif config:
        todo.append(f"start the server: {shlex.join(service.serve_command(python, config))}   "
                    "(or re-run with --service)")
    print(f"\nrecord of what was installed: {rec.path} (`install.py --uninstall` removes it all)")
    if todo:
        print("still to do by hand:\n" + "".join(f"  - {t}\n" for t in todo), end="")
    print(f"check it all: {shlex.join([str(python), '-m', 'bodydouble', 'doctor'])}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rec = Record.load(install_manifest_path())
    return uninstall(rec) if args.uninstall else install(rec, args)
