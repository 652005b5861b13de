"""The Blender extension: build the zip (host_integration/blender/build_extension.py), install it with Blender's own
``--command extension install-file`` when a Blender 4.2+ is found, otherwise say the one step to do by hand."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from bodydouble_server.workstation.locations import BLENDER_REPO, EXTENSION_ID

from .record import Record
from .steps import REPO, run

BUILD = REPO / "host_integration" / "blender" / "build_extension.py"
MIN_VERSION = (4, 2)


def build_zip(rec: Record, prefix: Path, python: Path, offline: bool, platforms: list[str], say=print) -> Path:
    """Build into ``prefix/blender``. ``offline``: repack ``python``'s own pyzmq (its platform only, Python 3.11)."""
    out = rec.own_tree(prefix / "blender")
    cmd = [str(python), str(BUILD), "--out", str(out)]
    if offline:
        version = run([str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).stdout.strip()
        if version != "3.11":   # a repacked pyzmq only loads in the Python it was built for: Blender 4.2-4.5's
            raise SystemExit(f"--offline repacks {python}'s pyzmq, which is for Python {version}; Blender needs "
                             "3.11. Drop --offline (pyzmq is then fetched for Blender) or pass --no-blender")
        cmd.append("--from-installed")
    else:
        cmd += ["--cache", str(out / "wheels")] + [a for p in platforms for a in ("--platform", p)]
    zip_path = Path(run(cmd, timeout=600).stdout.strip().splitlines()[-1])
    for old in out.glob("*.zip"):   # a re-run for other platforms leaves one zip, the current one
        if old != zip_path:
            old.unlink()
    say(f"built the Blender extension {zip_path}")
    return zip_path


def blender_version(exe: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"Blender (\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else None


def find_blender(given: str | None) -> tuple[str | None, str]:
    """A Blender 4.2+ executable (given, $BLENDER, or on PATH) and what was found, for the message."""
    notes = []
    for exe in dict.fromkeys(e for e in (given, os.environ.get("BLENDER"), shutil.which("blender")) if e):
        version = blender_version(exe)
        if version and version >= MIN_VERSION:
            return exe, f"Blender {version[0]}.{version[1]} at {exe}"
        notes.append(f"{exe}: " + (f"Blender {version[0]}.{version[1]} is older than 4.2" if version
                                    else "not a Blender that answers --version"))
    return None, "; ".join(notes) or "no Blender on PATH ($BLENDER or --blender names one)"


def manual_step(zip_path: Path) -> str:
    return (f"blender --command extension install-file -r {BLENDER_REPO} -e {shlex.quote(str(zip_path))}   "
            "(or in Blender: Preferences > Get Extensions > Install from Disk)")


def install(rec: Record, zip_path: Path, given: str | None, say=print) -> bool:
    exe, found = find_blender(given)
    rec.info["blender_zip"] = str(zip_path)
    if exe is None:
        say(f"Blender 4.2+ not found ({found}). One step by hand:\n    {manual_step(zip_path)}")
        return False
    run([exe, "--command", "extension", "install-file", "-r", BLENDER_REPO, "-e", str(zip_path)], timeout=300)
    rec.actions["blender"] = {"exe": exe, "package": f"{BLENDER_REPO}.{EXTENSION_ID}"}
    say(f"installed the extension into {found} (enabled; right-click an Image node > BodyDouble)")
    return True


def uninstall(action: dict, say=print) -> None:
    exe, package = action["exe"], action["package"]
    try:
        proc = subprocess.run([exe, "--command", "extension", "remove", package], capture_output=True, text=True,
                              timeout=300)
        ok = proc.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    say(f"removed the Blender extension {package}" if ok else
        f"could not remove the Blender extension; by hand: {exe} --command extension remove {package}")
