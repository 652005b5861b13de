"""Where an installed BodyDouble lives on a workstation: one place for the installer and ``bodydouble doctor``.

Standard library only: the installer imports this before anything else is installed.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

EXTENSION_ID = "bodydouble"          # the Blender extension's id (blender_manifest.toml)
BLENDER_REPO = "user_default"        # the Blender extension repository the installer uses
# The lines that fence the installer's block in ~/.nuke/init.py; --uninstall removes exactly what lies between.
NUKE_BEGIN = "# >>> bodydouble >>> added by BodyDouble's installer/install.py; its --uninstall removes this block"
NUKE_END = "# <<< bodydouble <<<"
# Nuke major version -> its Python (the ABI pyzmq must be built for).
NUKE_PYTHONS = {"14": "3.9", "15": "3.10", "16": "3.11"}


def config_dir() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "bodydouble"


def server_config_path() -> Path:
    return config_dir() / "server.toml"


def install_manifest_path() -> Path:
    """What the installer wrote, so ``--uninstall`` removes exactly that and doctor knows where things are."""
    return config_dir() / "install.json"


def default_prefix() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "bodydouble"


def nuke_home() -> Path:
    return Path.home() / ".nuke"


def systemd_unit_path() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "systemd" / "user" / "bodydouble.service"


def blender_extension_roots() -> list[Path]:
    """Folders that hold Blender's user extension repositories (``<root>/user_default/<id>``), most specific first."""
    if os.environ.get("BLENDER_USER_EXTENSIONS"):
        return [Path(os.environ["BLENDER_USER_EXTENSIONS"])]
    if os.environ.get("BLENDER_USER_RESOURCES"):
        return [Path(os.environ["BLENDER_USER_RESOURCES"]) / "extensions"]
    home = Path.home()
    if sys.platform == "darwin":
        base = home / "Library" / "Application Support" / "Blender"
    elif sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or home) / "Blender Foundation" / "Blender"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "blender"
    versions = sorted((p for p in base.glob("*") if p.is_dir()), key=lambda p: p.name, reverse=True)
    return [v / "extensions" for v in versions]


def installed_blender_extensions() -> list[Path]:
    return [root / BLENDER_REPO / EXTENSION_ID for root in blender_extension_roots()
            if (root / BLENDER_REPO / EXTENSION_ID / "blender_manifest.toml").is_file()]
