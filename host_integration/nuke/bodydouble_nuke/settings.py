"""Where the server is: Connect dialog choice (kept in a small JSON file) > $BODYDOUBLE_ADDRESS > default."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bodydouble.client import DEFAULT_ADDRESS


def prefs_path() -> Path:
    override = os.environ.get("BODYDOUBLE_NUKE_PREFS")
    return Path(override) if override else Path.home() / ".nuke" / "bodydouble.json"


def _load() -> dict[str, Any]:
    try:
        data = json.loads(prefs_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def address() -> str:
    return str(_load().get("address") or os.environ.get("BODYDOUBLE_ADDRESS") or DEFAULT_ADDRESS)


def set_address(value: str) -> None:
    data = _load()
    data["address"] = value.strip()
    path = prefs_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
