"""``bodydouble doctor``'s checks of this machine: Python and packages, GPU, output folders, host plugins.

Thin-client only: nothing here imports torch (package versions come from their metadata).
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata, util
from pathlib import Path

from bodydouble import __version__

from .gpus import detect_gpus
from .locations import NUKE_BEGIN, NUKE_PYTHONS, installed_blender_extensions, nuke_home

INSTALLER = "python3 installer/install.py"
LOW_GPU_MEMORY_MIB = 6 * 1024    # below this an SD 1.5 inpaint job in fp16 is likely to run out


@dataclass
class Check:
    status: str      # OK | WARN | FAIL
    what: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        fix = f"  -> fix: {self.fix}" if self.fix and self.status != "OK" else ""
        return f"{self.status:<5} {self.what:<18} {self.detail}{fix}"

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def server_installed() -> bool:
    return util.find_spec("bodydouble_server") is not None


def check_python() -> Check:
    found = [f"Python {sys.version.split()[0]}", f"bodydouble {__version__}"]
    try:
        import zmq

        found.append(f"pyzmq {zmq.__version__} (libzmq {zmq.zmq_version()})")
        zmq_ok = tuple(int(p) for p in zmq.__version__.split(".")[:1]) >= (25,)
    except ImportError:
        found.append("pyzmq MISSING")
        zmq_ok = False
    numpy = _version("numpy")
    found.append(f"numpy {numpy}" if numpy else "numpy MISSING")
    if sys.version_info < (3, 10) or not zmq_ok or not numpy:
        return Check("FAIL", "python", ", ".join(found), 'pip install "pyzmq>=25" numpy (into this Python)')
    return Check("OK", "python", ", ".join(found))


def check_server_packages() -> Check:
    if not server_installed():
        return Check("OK", "server packages", "server not installed here (thin client only): fine for a host "
                     "workstation that uses a server elsewhere")
    names = ("torch", "diffusers", "peft", "transformers", "OpenImageIO")
    versions = {n: _version(n) for n in names}
    missing = [n for n, v in versions.items() if not v]
    detail = ", ".join(f"{n} {v}" for n, v in versions.items() if v)
    if missing:
        return Check("FAIL", "server packages", f"{detail}; missing: {', '.join(missing)}",
                     f'pip install "bodydouble[server]" (or re-run {INSTALLER})')
    return Check("OK", "server packages", detail)


def check_gpu() -> Check:
    gpus = detect_gpus()
    torch = _version("torch") if server_installed() else None
    cpu_torch = bool(torch and "+cpu" in torch)
    if not gpus:
        where = f"torch {torch}" if torch else "no torch here"
        return Check("WARN", "gpu", f"no NVIDIA GPU with a working driver ({where}): the server runs on CPU, "
                     "slowly (minutes per frame with a real model)", "run the server on a GPU workstation (install the NVIDIA driver there)")
    gpu = gpus[0]
    cuda = f", CUDA {gpu.cuda[0]}.{gpu.cuda[1]}" if gpu.cuda else ""
    memory = (f", {gpu.memory_free_mib / 1024:.1f} of {gpu.memory_total_mib / 1024:.1f} GiB free"
              if gpu.memory_free_mib is not None and gpu.memory_total_mib else "")
    detail = f"{gpu.name}, driver {gpu.driver}{cuda}{memory}" + (f", torch {torch}" if torch else "")
    if cpu_torch:
        return Check("FAIL", "gpu", detail + ": torch is the CPU build, the GPU is unused",
                     f"re-run {INSTALLER} (it installs the CUDA build when it sees the GPU)")
    if gpu.memory_free_mib is not None and gpu.memory_free_mib < LOW_GPU_MEMORY_MIB:
        return Check("WARN", "gpu", detail + ": little free GPU memory", "close other GPU programs (nvidia-smi lists them)")
    return Check("OK", "gpu", detail)


def check_folder(path: str, what: str) -> Check:
    """Can the server write takes here? Tried for real: permission bits lie to root and on network mounts."""
    folder = Path(path).expanduser()
    if not folder.exists():
        parent = next((p for p in folder.parents if p.exists()), None)
        if parent is not None and os.access(parent, os.W_OK):
            return Check("WARN", what, f"{folder} does not exist yet", f"mkdir -p {folder}")
        return Check("FAIL", what, f"{folder} does not exist and cannot be created",
                     "pick a folder you can write in the server config (output_root / roots)")
    if not folder.is_dir():
        return Check("FAIL", what, f"{folder} is not a folder", "point output_root / roots at a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".bodydouble-doctor-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return Check("FAIL", what, f"{folder} is not writable ({exc.strerror or exc})",
                     f"chmod u+w {folder}, or set output_root / roots in the server config to a folder you can write")
    return Check("OK", what, f"{folder} writable")


def check_blender(zip_hint: str | None) -> Check:
    found = installed_blender_extensions()
    fix = (f"blender --command extension install-file -r user_default -e {zip_hint}" if zip_hint
           else f"run {INSTALLER} (it builds and installs the extension)")
    if not found:
        return Check("WARN", "blender extension", "not installed in any Blender 4.2+ user folder", fix)
    text = (found[0] / "blender_manifest.toml").read_text()
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    version = match.group(1) if match else "?"
    if version != __version__:
        return Check("WARN", "blender extension", f"{found[0]} is version {version}, this client {__version__}", fix)
    return Check("OK", "blender extension", f"{found[0]} (version {version})")


def nuke_plugin_dirs() -> list[Path]:
    """Plugin folders Nuke loads BodyDouble from: our block in ~/.nuke/init.py, and $NUKE_PATH."""
    dirs = []
    init = nuke_home() / "init.py"
    if init.is_file():
        text = init.read_text(errors="replace")
        start = text.find(NUKE_BEGIN)
        if start >= 0:
            dirs += [Path(p) for p in re.findall(r"pluginAddPath\(['\"]([^'\"]+)['\"]\)", text[start:])[:1]]
    dirs += [Path(p) for p in os.environ.get("NUKE_PATH", "").split(os.pathsep) if p]
    return [d for d in dirs if (d / "bodydouble_nuke").is_dir()]


def check_nuke() -> Check:
    dirs = nuke_plugin_dirs()
    if not dirs:
        return Check("WARN", "nuke plugin", f"not on Nuke's plugin path (no BodyDouble block in {nuke_home() / 'init.py'}"
                     ", nor in $NUKE_PATH)", f"run {INSTALLER}, or add host_integration/nuke to NUKE_PATH")
    plugin = dirs[0]
    # Only the Nuke Pythons the installer set up a folder for (site-X.Y next to the plugin) are expected.
    sites = {n: plugin.parent / f"site-{py}" for n, py in NUKE_PYTHONS.items() if (plugin.parent / f"site-{py}").is_dir()}
    ready = [n for n, site in sites.items() if (site / "zmq" / "__init__.py").is_file()]
    missing = [n for n in sites if n not in ready]
    detail = f"{plugin}; pyzmq for Nuke {', '.join(ready) or 'none'}"
    if missing or (not sites and not os.environ.get("BODYDOUBLE_PYTHONPATH")):
        where = f"--target {sites[missing[0]]} " if missing else ""
        return Check("WARN", "nuke plugin", detail + (f", not for Nuke {', '.join(missing)}" if missing else ""),
                     f"with that Nuke's own Python: python -m pip install --no-deps {where}pyzmq "
                     f"(or re-run {INSTALLER} where the package index is reachable)")
    return Check("OK", "nuke plugin", detail)
