"""``bodydouble doctor``: what is wrong with this BodyDouble set-up, one line per check, each with its fix.

Works with the thin client alone. Model and adapter checks ask the running server (it knows what it loaded);
when it is down they are done here if the server is installed here, and say so when it is not.
Exit status 1 when any check FAILs.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from bodydouble import __version__, errors, host
from bodydouble.client import DEFAULT_ADDRESS, Client

from .doctor_local import (INSTALLER, Check, check_blender, check_folder, check_gpu, check_nuke, check_python,
                           check_server_packages, server_installed)
from .locations import install_manifest_path, server_config_path, systemd_unit_path


def read_config(path: Path) -> tuple[Check, dict]:
    """The server settings as the server reads them (its own loader when installed here)."""
    missing = not path.is_file()
    try:
        if server_installed():
            from bodydouble_server.config import ServerConfig

            cfg = ServerConfig.load(None if missing else path)   # missing: the defaults the server would use
            data = {k: getattr(cfg, k) for k in ("host", "port", "model", "family", "video_model", "adapters", "roots",
                                                 "output_root", "audit_log")}
        else:
            import tomllib

            data = {} if missing else tomllib.loads(path.read_text())
    except Exception as exc:  # a broken config is a finding, not a crash
        return Check("FAIL", "config", f"{path}: {exc}", f"fix {path} (keys: server/bodydouble_server/config.py)"), {}
    if missing:
        return Check("WARN", "config", f"no server config at {path}" + (": server defaults" if data else ""),
                     f"run {INSTALLER} (it writes one), or pass --config"), data
    return Check("OK", "config", str(path)), data


def start_hint(config: Path) -> str:
    if systemd_unit_path().is_file():
        return "systemctl --user start bodydouble   (logs: journalctl --user -u bodydouble)"
    return f"bodydouble serve --config {config}" if config.is_file() else "bodydouble serve (or run the installer)"


def check_server(address: str, timeout: float, config: Path) -> tuple[Check, dict | None, list | None]:
    """Reachable, same protocol, model loaded; returns the hello info and adapter listing when it is ready."""
    try:
        with Client(address, timeout=timeout, name="bodydouble-doctor") as client:
            info = client.server_info or {}
            adapters = client.list_adapters() if info.get("state") == "ready" else None
    except errors.ProtocolMismatch as exc:
        return Check("FAIL", "server", f"{address}: {exc}",
                     "install the same BodyDouble version on client and server (re-run the installer on both)"), None, None
    except (errors.ServerNotRunning, errors.RequestTimeout):
        return Check("FAIL", "server", f"no BodyDouble server answers at {address}", start_hint(config)), None, None
    except errors.BodyDoubleError as exc:
        return Check("FAIL", "server", f"{address}: {exc}", start_hint(config)), None, None
    state = info.get("state")
    detail = f"{address}: BodyDouble {info.get('version')}, protocol {info.get('protocol')}, {state}"
    if state == "failed":
        return Check("FAIL", "server", f"{detail}: {info.get('load_error')}",
                     "fix the model setting in the server config, then restart the server"), info, None
    if state != "ready":
        return Check("WARN", "server", detail + " (loading its model)", "wait a minute and run doctor again"), info, None
    if info.get("version") != __version__:
        return Check("WARN", "server", f"{detail}; this client is {__version__}",
                     "install the same BodyDouble version on both sides"), info, adapters
    return Check("OK", "server", detail), info, adapters


def check_model_served(model: dict, configured: str | None) -> Check:
    detail = f"{model.get('name')} ({model.get('family_title', model.get('family'))}) on {model.get('device')}"
    if model.get("test_model"):
        return Check("WARN", "base model", "the embedded TEST model (random weights): pictures are noise",
                     "set model = \"/path/to/diffusers-folder\" in the server config and restart the server")
    if configured and Path(configured).expanduser().resolve() != Path(model.get("path", "")).resolve():
        return Check("WARN", "base model", f"server runs {model.get('path')}, the config says {configured}",
                     "restart the server so it reads the config")
    return Check("OK", "base model", detail)


VIDEO_FIX = ('set video_model = "/path/to/wan-vace-or-ltx-folder" in the server config (or "none" for no extend), '
             "then restart the server")


def check_video_served(model: dict, configured: str | None) -> Check:
    """Extend's video model as the running server has it."""
    video = model.get("video_model")
    if video is None:
        if (configured or "").lower() == "none":
            return Check("OK", "video model", "none configured: this server does no extend")
        return Check("FAIL", "video model", model.get("video_error") or "not loaded: extend is unavailable", VIDEO_FIX)
    if video.get("test_model"):
        return Check("WARN", "video model", "the embedded TEST video model (random weights): extended frames are noise",
                     VIDEO_FIX)
    return Check("OK", "video model", f"{video.get('name')} ({video.get('family_title', video.get('family'))})")


def check_colour(info: dict) -> Check:
    """The server's OCIO config against this workstation's $OCIO (what Nuke and Blender read here when it is set)."""
    server = info.get("colour") or {}
    if not server:
        return Check("WARN", "colour", "the server does not say which OCIO config it uses (an older server)",
                     "update the server")
    detail = (f"server reads colour with {server.get('config')} (working space {server.get('scene_linear')}; the model "
              f"sees {server.get('display')} / {server.get('view')})")
    local = os.environ.get("OCIO", "")
    if not local:
        return Check("OK", "colour", f"{detail}; no $OCIO here: Nuke and Blender use their own configs, and the "
                                     "server maps their default names (docs/colour.md)")
    if host.same_config(local, server.get("config", "")):
        return Check("OK", "colour", f"{detail}; $OCIO here is the same config")
    return Check("WARN", "colour", f"{detail}; $OCIO here is {local}: plate colour-space names are read against "
                                   "the server's config, and the model sees the server's view",
                 "give the server the same $OCIO (its service environment) so names and views agree")


def local_video_model(data: dict):
    """(check, identity, family) for the configured video model, judged with the server's code."""
    path = data.get("video_model")
    if (path or "").lower() == "none":
        return Check("OK", "video model", "none configured: this server does no extend"), None, None
    from bodydouble_server.models import detect_family, embedded, embedded_video

    model = Path(path).expanduser() if path else \
        embedded.cached_path(embedded_video.NAME, embedded_video.REVISION)   # never built here
    if not path and not model.is_dir():
        return Check("WARN", "video model", "none set: the embedded TEST video model (built at the server's first "
                     "start)", VIDEO_FIX), None, None
    if not model.is_dir() or not os.access(model / "model_index.json", os.R_OK):
        return Check("FAIL", "video model", f"{model} is not a readable diffusers folder", VIDEO_FIX), None, None
    try:
        family = detect_family(model, kind="video")
    except errors.BodyDoubleError as exc:
        return Check("FAIL", "video model", str(exc), VIDEO_FIX), None, None
    if not path:
        check = Check("WARN", "video model", "none set: the embedded TEST video model (random weights)", VIDEO_FIX)
        return check, _identity(embedded_video.LABEL, model, family, True), family
    return Check("OK", "video model", f"{model} ({family.title})"), _identity(model.name, model, family, False), family


def local_model(data: dict):
    """(check, identity, family) for the configured model, judged here with the server's own code."""
    path = data.get("model")
    if not path:
        from bodydouble_server.models import embedded, get_family

        cached = embedded.cached_path(embedded.NAME, embedded.REVISION)
        check = Check("WARN", "base model", "none set: the embedded TEST model (random weights)",
                      "set model = \"/path/to/diffusers-folder\" in the server config")
        return check, _identity(embedded.LABEL, cached, get_family("sd15"), True) if cached.is_dir() else None, None
    model = Path(path).expanduser()
    if not model.exists():
        return Check("FAIL", "base model", f"{model} does not exist", "set model in the server config to a local "
                     "diffusers folder (or a checkpoint file with family and model_config)"), None, None
    if not os.access(model, os.R_OK) or (model.is_dir() and not os.access(model / "model_index.json", os.R_OK)):
        return Check("FAIL", "base model", f"{model} is not readable (or has no readable model_index.json)",
                     f"chmod -R a+rX {model}, or copy a complete diffusers folder"), None, None
    from bodydouble_server.models import detect_family, get_family

    try:
        family = get_family(data["family"]) if data.get("family") else detect_family(model)
    except errors.BodyDoubleError as exc:
        return Check("FAIL", "base model", str(exc), "point model at an SD 1.5 / SDXL inpaint diffusers folder"), None, None
    return Check("OK", "base model", f"{model} ({family.title})"), _identity(model.name, model, family, False), family


def _identity(name: str, path: Path, family, test_model: bool):
    from bodydouble_server.models.identity import ModelIdentity, model_sha256

    return ModelIdentity(name=name, family=family.name, sha256=model_sha256(path), path=str(path), test_model=test_model)


def adapter_checks(listing: list[dict], folder: str) -> list[Check]:
    if not listing:
        return [Check("WARN", "adapters", f"no adapters in {folder}",
                      f"train one (bodydouble train) or copy adapter folders into {folder}, then bodydouble rescan")]
    checks = []
    for a in listing:
        what = f"adapter {a['name']}"
        if a["status"] == "ready":
            checks.append(Check("OK", what, f"{a.get('character', a['name'])} on {a.get('base_model', '?')}"))
        elif a["status"] == "incompatible":
            checks.append(Check("FAIL", what, a.get("reason", "incompatible"),
                                "use an adapter trained on this base model, or retrain it on this one (bodydouble train)"))
        else:
            checks.append(Check("FAIL", what, a.get("reason", "invalid"),
                                f"repair or remove {Path(folder) / a['name']}, then bodydouble rescan"))
    return checks


def local_adapters(folder: str, identity, family, video_identity=None) -> list[dict]:
    """Each adapter as the server would judge it: by its video model when the manifest says ``model_kind: video``."""
    from bodydouble_server.adapters import inspect_adapter

    root = Path(folder)
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    listing = []
    for sub in subs:
        entry = inspect_adapter(sub, identity, family.kind if family else "image").describe()
        if video_identity is not None and entry.get("model_kind") == "video":
            entry = inspect_adapter(sub, video_identity, "video").describe()
        listing.append(entry)
    return listing


def diagnose(config_path: Path, address: str | None, timeout: float) -> list[Check]:
    checks = [check_python(), check_server_packages(), check_gpu()]
    config_check, data = read_config(config_path)
    checks.append(config_check)
    if address is None:
        address = f"tcp://{data['host']}:{data['port']}" if data.get("port") else DEFAULT_ADDRESS
    server, info, listing = check_server(address, timeout, config_path)
    checks.append(server)
    adapters_dir = data.get("adapters") or (info or {}).get("adapters_dir") or "?"
    if info and info.get("model"):
        checks.append(check_model_served(info["model"], data.get("model")))
        checks.append(check_video_served(info["model"], data.get("video_model")))
        checks.append(check_colour(info))
        checks += adapter_checks([a.raw for a in listing or []], (info or {}).get("adapters_dir", adapters_dir))
    elif server_installed() and data:
        model_check, identity, family = local_model(data)
        video_check, video_identity, _ = local_video_model(data)
        checks += [model_check, video_check]
        if identity is not None:
            checks += adapter_checks(local_adapters(adapters_dir, identity, family, video_identity),
                                     adapters_dir)
        else:
            checks.append(Check("WARN", "adapters", "not checked (no usable base model to check them against)",
                                "fix the base model first"))
    else:
        checks.append(Check("WARN", "base model", "not checked: server not installed here and not reachable",
                            "run doctor where the server is installed, or start the server"))
    roots = [data.get("output_root"), *(data.get("roots") or [])] if data else \
        [(info or {}).get("output_root"), *((info or {}).get("roots") or [])]
    for i, root in enumerate(dict.fromkeys(r for r in roots if r)):
        checks.append(check_folder(str(root), "output root" if i == 0 else "root"))
    if data.get("audit_log"):
        checks.append(check_audit_log(data["audit_log"]))
    zip_hint = _install_info().get("blender_zip")
    checks += [check_blender(zip_hint), check_nuke()]
    return checks


def check_audit_log(path: str) -> Check:
    """Where the server's audit log is (``audit_log`` / ``--audit-log``); its chain is ``bodydouble audit verify``'s."""
    log = Path(path).expanduser()
    if log.is_file():
        return Check("OK", "audit log", f"{log} ({log.stat().st_size} bytes)", "bodydouble audit verify checks its chain")
    folder = check_folder(str(log.parent), "audit log")
    return Check(folder.status, "audit log", f"{log}: not written yet; {folder.detail}", folder.fix)


def _install_info() -> dict:
    try:
        return json.loads(install_manifest_path().read_text()).get("info", {})
    except (OSError, ValueError):
        return {}


def cmd_doctor(args) -> int:
    checks = diagnose(Path(args.config) if args.config else server_config_path(), args.server, args.timeout)
    if args.json:
        print(json.dumps([c.to_dict() for c in checks], indent=2))
    else:
        for check in checks:
            print(check.line())
        fails = sum(c.status == "FAIL" for c in checks)
        warns = sum(c.status == "WARN" for c in checks)
        print(f"\n{fails} problem(s), {warns} warning(s)" if fails or warns else "\nall good")
    sys.stdout.flush()
    return 1 if any(c.status == "FAIL" for c in checks) else 0
