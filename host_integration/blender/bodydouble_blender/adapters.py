"""The server's adapter list, cached for the dialogs' adapter picker (an EnumProperty).

Enum item callbacks run on every redraw, so they never touch the network: the list is
fetched when a dialog opens (or on Refresh) and kept here. Blender needs the item strings
to stay referenced from Python, hence the module-level list.
"""
from __future__ import annotations

from bodydouble import host
from bodydouble.client import AdapterInfo

_adapters: list[AdapterInfo] = []
_server: dict = {}              # the server's hello from the last fetch (its colour set-up, model, ...)
# Per picker: extend runs on the server's video model, fill on its image model or (the video engine) its video
# model, each with its own adapters.
_items: dict[tuple[str, str], list[tuple[str, str, str]]] = {("fill", ""): [], ("fill", "video"): [],
                                                              ("extend", ""): []}
_engines: list[tuple[str, str, str]] = []
_NONE = [("NONE", "(no adapters: refresh)", "Open the dialog again once the server is running")]
# The video engine's key adapter picker: none, or an image adapter that fills the first frame on the server.
_NO_KEY = ("NONE", "None", "No key: every frame of the shot from noise")
_key_items: list[tuple[str, str, str]] = [_NO_KEY]


def fetch(address: str, timeout: float, curve_certs: tuple[str, str] = ("", "")) -> list[AdapterInfo]:
    """Ask the server for its adapters (blocking, bounded by ``timeout``) and cache them."""
    info: dict = {}
    adapters = host.fetch_adapters(address, timeout, "bodydouble-blender", curve_certs, info)
    _server.clear()
    _server.update(info)
    set_cache(adapters)
    return adapters


def server_info() -> dict:
    return dict(_server)


def set_cache(adapters: list[AdapterInfo]) -> None:
    global _adapters
    _adapters = list(adapters)
    for (operation, engine), items in _items.items():
        items[:] = [_item(a) for a in sorted(usable(operation, engine), key=lambda a: (
            a.status != "ready", host.job_rank(a, operation), a.character.lower()))]
    _key_items[:] = [_NO_KEY] + [item for item in _items["fill", ""] if item[0] in
                                 {a.name for a in usable("fill") if a.status == "ready"}]


def _item(a: AdapterInfo) -> tuple[str, str, str]:
    """An adapter's picker entry: one not ready says why."""
    if a.status == "ready":
        return a.name, f"{a.character} · {a.base_model}", f"{a.label}  trigger: {a.trigger}"
    return a.name, f"{a.character} · {a.base_model} ({a.status})", a.reason or a.status


def cached() -> list[AdapterInfo]:
    return list(_adapters)


def usable(operation: str, engine: str = "") -> list[AdapterInfo]:
    """The cached adapters trained for the model that runs ``operation`` (on fill's ``engine``; ready or not)."""
    return [a for a in _adapters if host.serves(a, operation, engine)]


def fill_items(op=None, _context=None):
    """The fill dialog's adapters: video adapters while its engine is the video one."""
    engine = "video" if getattr(op, "engine", "") == "video" else ""
    return _items["fill", engine] or _NONE


def key_items(_op=None, _context=None):
    """The video engine's key adapters: none, or a ready image adapter (it fills the shot's first frame)."""
    return _key_items


def key_for(adapter: str) -> str:
    """The key adapter picked by default for video adapter ``adapter``: its character's image adapter."""
    return host.key_adapter_for(_adapters, adapter) or "NONE"


def video_fill_items(_op=None, _context=None):
    """The video engine's adapters (Carry Through Shot's picker)."""
    return _items["fill", "video"] or _NONE


def extend_items(_self=None, _context=None):
    return _items["extend", ""] or _NONE


def engine_items(_self=None, _context=None):
    """The fill engines the server offers (from its last hello): frame by frame always, the whole shot where its
    video model fills."""
    _engines[:] = [(e, host.ENGINE_TITLES[e], f"fill engine '{e}'") for e in host.fill_engines(_server)]
    return _engines


def first_ready(operation: str, engine: str = "") -> str | None:
    """The picker's first ready adapter (those trained for the job come first)."""
    ready = {a.name for a in usable(operation, engine) if a.status == "ready"}
    for name, *_ in _items.get((operation, engine), []):
        if name in ready:
            return name
    return None
