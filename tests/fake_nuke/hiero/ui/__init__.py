"""``hiero.ui``: the Timeline Editor (the sender of timeline context-menu events)."""
from __future__ import annotations

from typing import Any, Optional


class TimelineEditor:
    def __init__(self, sequence: Any) -> None:
        self._sequence = sequence
        self._selection: tuple = ()

    def selection(self) -> tuple:
        return tuple(self._selection)

    def setSelection(self, selection: Any) -> None:
        self._selection = tuple(selection)

    def sequence(self) -> Any:
        return self._sequence


_editors: dict[int, TimelineEditor] = {}
_active: list[Any] = []


def getTimelineEditor(sequence: Any) -> TimelineEditor:
    return _editors.setdefault(id(sequence), TimelineEditor(sequence))


def activeSequence() -> Optional[Any]:
    return _active[-1] if _active else None


def _reset() -> None:
    _editors.clear()
    _active.clear()
