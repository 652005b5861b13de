"""The Nuke plugin: a copy of host_integration/nuke, the thin client and pyzmq for each Nuke's Python ABI next to
it, a fenced block in ~/.nuke/init.py and a Hiero start-up file (or the NUKE_PATH / HIERO_PLUGIN_PATH lines)."""
from __future__ import annotations

import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from bodydouble_server.workstation.locations import NUKE_BEGIN, NUKE_END, NUKE_PYTHONS, nuke_home

from .record import Record
from .steps import REPO, run

SOURCE = REPO / "host_integration" / "nuke"
BUILD_DIR = REPO / "host_integration" / "blender"   # build_extension.py: thin-client wheel, pyzmq pins, platforms
PIN = "pyzmq>=26,<28"


def _build_extension():
    sys.path.insert(0, str(BUILD_DIR))
    try:
        import build_extension
    finally:
        sys.path.remove(str(BUILD_DIR))
    return build_extension


def machine_platform() -> str:
    arch = {"x86_64": "x64", "amd64": "x64", "arm64": "arm64", "aarch64": "arm64"}.get(platform.machine().lower(), "")
    system = {"linux": "linux", "darwin": "macos", "win32": "windows"}.get(sys.platform, sys.platform)
    return f"{system}-{arch}"


def copy_plugin(base: Path, address: str) -> Path:
    """``base/plugin``: the Nuke glue, its init.py led by where this install keeps the client for each Python."""
    plugin = base / "plugin"
    shutil.rmtree(plugin, ignore_errors=True)
    shutil.copytree(SOURCE, plugin, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "mypy.ini"))
    init = plugin / "init.py"
    init.write_text("\n".join(_client_env(base, address)) + "\n" + init.read_text())
    return plugin


def _client_env(base: Path, address: str) -> list[str]:
    """Python lines pointing the plugin at this install's client for the running Python, and at the server."""
    return [
        "# Added by BodyDouble's installer: the thin client and pyzmq built for this Nuke's Python (14: 3.9,",
        "# 15: 3.10, 16: 3.11) and the server address. Either may be overridden in the environment.",
        "import os as _bd_os, sys as _bd_sys",
        f"_bd_os.environ.setdefault('BODYDOUBLE_PYTHONPATH', _bd_os.path.join({str(base)!r}, "
        "'site-%d.%d' % _bd_sys.version_info[:2]))",
        f"_bd_os.environ.setdefault('BODYDOUBLE_ADDRESS', {address!r})",
        "del _bd_os, _bd_sys",
    ]


# Hiero loads each Startup script as a module named after its file's stem (hiero/core/find_plugins.py), so the
# file must not be named like a package the plugin imports: 'bodydouble.py' became sys.modules['bodydouble'] and hid
# the thin client. OLD_STARTUP is what installers before that fix wrote; a re-run removes it.
HIERO_STARTUP = "bodydouble_hiero_startup.py"
OLD_STARTUP = "bodydouble.py"


def add_hiero_startup(rec: Record, base: Path, plugin: Path, address: str, say=print) -> Path:
    """``~/.nuke/Python/Startup/bodydouble_hiero_startup.py``: Hiero and Nuke Studio scan that folder at start
    (Nuke's init.py is not run by Hiero); it points them at the plugin, whose Python/Startup adds the timeline
    menu."""
    startup = nuke_home() / "Python" / "Startup"
    old = startup / OLD_STARTUP
    if rec.ours_unchanged(old):
        old.unlink()
        del rec.files[str(old)]
        say(f"removed {old} (an earlier BodyDouble's start-up file: it hid the client from Hiero)")
    elif str(old) in rec.files and old.exists():
        say(f"WARNING: {old} was written by an earlier BodyDouble and edited since: delete or rename it, or Hiero "
            "loads it as the module 'bodydouble' and the timeline menu cannot import the client")
    lines = ["# Hiero / Nuke Studio: BodyDouble's timeline menu (right-click a shot > BodyDouble).",
             "# Hiero imports this file as a module named after it: never name it like a package (bodydouble.py).",
             *_client_env(base, address),
             "import hiero.core",
             f"hiero.core.addPluginPath({str(plugin)!r})   # Hiero then runs its Python/Startup scripts", ""]
    return rec.write(startup / HIERO_STARTUP, "\n".join(lines))


def install_client(site: Path, python_version: str, server_python: Path, offline: bool,
                   say=print) -> str | None:
    """Thin client (+ fileseq) and pyzmq for one Python ABI into ``site``; the command to run by hand when pyzmq
    can't be had."""
    site.mkdir(parents=True, exist_ok=True)
    tools = _build_extension()
    with tempfile.TemporaryDirectory() as tmp:
        zipfile.ZipFile(tools.build_thin_client_wheel(Path(tmp))).extractall(site)
        for name in tools.PURE_DEPS:        # pure Python (fileseq): this Python's copy serves every Nuke
            zipfile.ZipFile(tools.repack_installed(name, Path(tmp))).extractall(site)
    if (site / "zmq" / "__init__.py").is_file():
        return None   # a re-run keeps the pyzmq it already has
    server_version = subprocess.run([str(server_python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                    capture_output=True, text=True).stdout.strip()
    pip = [str(server_python), "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", "--target", str(site)]
    if offline:
        if python_version != server_version:
            return _by_hand(site, python_version)
        with tempfile.TemporaryDirectory() as tmp:   # the server env's own pyzmq, repacked: no download
            code = ("import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; import build_extension as b;"
                    " print(b.repack_installed('pyzmq', Path(sys.argv[2])))")
            wheel = run([str(server_python), "-c", code, str(BUILD_DIR), tmp]).stdout.strip().splitlines()[-1]
            run(pip + ["--no-index", wheel])
        return None
    tags = tools.PLATFORMS.get(machine_platform(), [])
    cmd = pip + ["--only-binary=:all:", "--implementation", "cp", "--python-version", python_version,
                 *[a for t in tags for a in ("--platform", t)], PIN]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        say(f"pyzmq for Python {python_version} could not be fetched: {proc.stderr.strip()[-300:]}")
        return _by_hand(site, python_version)
    return None


def _by_hand(site: Path, python_version: str) -> str:
    return (f"python{python_version} -m pip install --no-deps --only-binary=:all: --target {shlex.quote(str(site))} "
            f"'{PIN}'   # with the Python next to your Nuke binary")


def add_to_init(rec: Record, plugin: Path) -> Path:
    init = nuke_home() / "init.py"
    rec.add_block(init, ["import nuke", f"nuke.pluginAddPath({str(plugin)!r})"], NUKE_BEGIN, NUKE_END)
    return init


def install(rec: Record, prefix: Path, server_python: Path, offline: bool, pythons: list[str], address: str,
            edit_init: bool, say=print) -> list[str]:
    """Everything Nuke needs; returns the commands still to run by hand (empty when done)."""
    base = rec.own_tree(prefix / "nuke")
    plugin = copy_plugin(base, address)
    todo = []
    for version in pythons:
        step = install_client(base / f"site-{version}", version, server_python, offline, say)
        if step:
            todo.append(step)
    nukes = ", ".join(f"Nuke {n}" for n, p in NUKE_PYTHONS.items() if p in pythons and
                      not any(f"python{p} " in t for t in todo))
    say(f"Nuke plugin in {plugin}; client for {nukes or 'no Nuke yet'}")
    if edit_init:
        say(f"added BodyDouble to {add_to_init(rec, plugin)} (Nuke: right-click > BodyDouble)")
        say(f"added {add_hiero_startup(rec, base, plugin, address, say)} (Hiero / Nuke Studio timeline)")
    else:
        todo.append(f"export NUKE_PATH={shlex.quote(str(plugin))}${{NUKE_PATH:+:$NUKE_PATH}}")
        todo.append(f"export HIERO_PLUGIN_PATH={shlex.quote(str(plugin))}${{HIERO_PLUGIN_PATH:+:$HIERO_PLUGIN_PATH}}")
    return todo
