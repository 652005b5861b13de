"""``hiero.core.events``: callbacks registered per event type ('kShowContextMenu/kTimeline')."""
from __future__ import annotations

from typing import Any, Callable

_interests: dict[str, list[Callable[[Any], None]]] = {}


def registerInterest(eventType: Any, callback: Callable[[Any], None]) -> None:
    _interests.setdefault(_key(eventType), []).append(callback)


def unregisterInterest(eventType: Any, callback: Callable[[Any], None]) -> None:
    callbacks = _interests.get(_key(eventType), [])
    if callback not in callbacks:
        raise ValueError("callback was not registered for this event type")
    callbacks.remove(callback)


def _key(eventType: Any) -> str:
    """'kShowContextMenu/kTimeline' or an (EventType, subtype) tuple, as Hiero accepts both."""
    if isinstance(eventType, tuple):
        return "/".join(str(p) for p in eventType)
    if not isinstance(eventType, str):
        raise TypeError(f"event type must be a string, got {eventType!r}")
    return eventType


class _Event:
    def __init__(self, type: str, subtype: str, sender: Any, menu: Any) -> None:
        self.type, self.subtype, self.sender, self.menu = type, subtype, sender, menu


def _send(eventType: str, sender: Any, menu: Any = None) -> None:
    kind, _, subtype = eventType.partition("/")
    event = _Event(kind, subtype, sender, menu)
    for callback in list(_interests.get(eventType, [])):
        callback(event)


def _reset() -> None:
    _interests.clear()
