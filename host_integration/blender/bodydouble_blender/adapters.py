"""The server's adapter list, cached for the dialogs' adapter picker (an EnumProperty).

Enum item callbacks run on every redraw, so they never touch the network: the list is
fetched when a dialog opens (or on Refresh) and kept here. Blender needs the item strings
to stay referenced from Python, hence the module-level list.
"""
from __future__ import annotations

from bodydouble.client import AdapterInfo, Client

_items: list[tuple[str, str, str]] = []
_adapters: list[AdapterInfo] = []
_NONE = [("NONE", "(no adapters: refresh)", "Open the dialog again once the server is running")]


def fetch(address: str, timeout: float) -> list[AdapterInfo]:
    """Ask the server for its adapters (blocking, bounded by ``timeout``) and cache them."""
    with Client(address, timeout=timeout, name="bodydouble-blender") as client:
        client.connect()
        adapters = client.list_adapters()
    set_cache(adapters)
    return adapters


def set_cache(adapters: list[AdapterInfo]) -> None:
    global _adapters
    _adapters = list(adapters)
    ready = sorted((a for a in adapters if a.status == "ready"), key=lambda a: a.character.lower())
    other = sorted((a for a in adapters if a.status != "ready"), key=lambda a: a.character.lower())
    _items.clear()
    for a in ready:
        _items.append((a.name, f"{a.character} · {a.base_model}", f"{a.label}  trigger: {a.trigger}"))
    for a in other:
        _items.append((a.name, f"{a.character} · {a.base_model} ({a.status})", a.reason or a.status))


def cached() -> list[AdapterInfo]:
    return list(_adapters)


def enum_items(_self=None, _context=None):
    return _items if _items else _NONE


def first_ready() -> str | None:
    for a in _adapters:
        if a.status == "ready":
            return a.name
    return None
