"""Running the server as a systemd user service on Linux, or saying how to run it elsewhere."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from bodydouble_server.workstation.locations import systemd_unit_path

from .record import Record

UNIT = "bodydouble.service"


def serve_command(python: Path, config: Path) -> list[str]:
    return [str(python), "-m", "bodydouble", "serve", "--config", str(config)]


def unit_text(python: Path, config: Path) -> str:
    exec_start = " ".join(f'"{part}"' for part in serve_command(python, config))
    return "\n".join([
        "# Written by BodyDouble's installer/install.py; its --uninstall removes it.",
        "[Unit]",
        "Description=BodyDouble inference server",
        "After=network.target",
        "",
        "[Service]",
        f"ExecStart={exec_start}",
        "Environment=HF_HUB_OFFLINE=1",   # never reach for a model hub: a missing file fails at once
        "Restart=on-failure",
        "RestartSec=5",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ])


def user_bus() -> bool:
    """systemctl --user works only with the user's session bus (a login session, not a bare container shell)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return bool(shutil.which("systemctl") and runtime and Path(runtime, "bus").exists())


def _systemctl(*args: str) -> bool:
    try:
        return subprocess.run(["systemctl", "--user", *args], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def install(rec: Record, python: Path, config: Path, say=print) -> None:
    if not sys.platform.startswith("linux"):
        say(f"start the server with: {shlex.join(serve_command(python, config))}")
        return
    unit = rec.write(systemd_unit_path(), unit_text(python, config))
    if user_bus() and _systemctl("daemon-reload") and _systemctl("enable", "--now", UNIT):
        rec.actions["service"] = {"unit": UNIT}
        say(f"server running as the user service {UNIT} (systemctl --user status {UNIT.split('.')[0]})")
        return
    say(f"wrote {unit}; no systemd user session here. Start it with:\n"
        f"    systemctl --user daemon-reload && systemctl --user enable --now {UNIT}\n"
        f"  or run it in a terminal: {shlex.join(serve_command(python, config))}")


def uninstall(say=print) -> None:
    if user_bus() and _systemctl("disable", "--now", UNIT):
        say(f"stopped and disabled {UNIT}")
    else:
        say(f"could not reach systemd; by hand: systemctl --user disable --now {UNIT}")


def reload_units() -> None:
    if user_bus():
        _systemctl("daemon-reload")
