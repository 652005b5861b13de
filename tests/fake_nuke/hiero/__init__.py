"""A faithful fake of the parts of Hiero's Python API (Nuke Studio's timeline) that BodyDouble calls.

Tests only. Signatures follow Foundry's Hiero Python API reference; tests/test_hiero_fake.py
checks them against the list in ``bodydouble_nuke/hiero_api.py``. It shares the fake ``nuke``'s
main thread and main-thread queue: in Nuke Studio both modules live in one Qt application.

The context menu Hiero hands to ``kShowContextMenu`` handlers is a Qt ``QMenu``; ``_QMenu`` and
``_QAction`` fake the few PySide calls the glue makes on it. Helpers starting with ``_`` drive
the fake from tests.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from . import core, ui


class _Signal:
    def __init__(self) -> None:
        self._slots: list[Callable[..., Any]] = []

    def connect(self, slot: Callable[..., Any]) -> None:
        self._slots.append(slot)

    def emit(self, *args: Any) -> None:
        for slot in list(self._slots):
            slot(*args)


class _QAction:
    def __init__(self, text: str) -> None:
        self._text, self._enabled = text, True
        self.triggered = _Signal()

    def text(self) -> str:
        return self._text

    def setEnabled(self, enabled: bool) -> None:
        self._enabled = bool(enabled)

    def isEnabled(self) -> bool:
        return self._enabled

    def trigger(self) -> None:
        """A click: Qt emits triggered(bool checked) for enabled actions only."""
        if self._enabled:
            self.triggered.emit(False)


class _QMenu:
    def __init__(self, title: str = "") -> None:
        self._title = title
        self._entries: list[Any] = []

    def title(self) -> str:
        return self._title

    def addMenu(self, title: str) -> "_QMenu":
        menu = _QMenu(title)
        self._entries.append(menu)
        return menu

    def addAction(self, text: str) -> _QAction:
        action = _QAction(text)
        self._entries.append(action)
        return action

    def _find(self, path: str) -> Optional[_QAction]:
        head, _, rest = path.partition("/")
        for entry in self._entries:
            if isinstance(entry, _QMenu) and entry._title == head and rest:
                found = entry._find(rest)
                if found is not None:
                    return found
            elif isinstance(entry, _QAction) and entry._text == head and not rest:
                return entry
        return None


def _right_click(sequence: Any, *selected: Any) -> _QMenu:
    """Right-click in ``sequence``'s timeline with ``selected`` items: the menu the handlers built."""
    core._main("a context menu")
    editor = ui.getTimelineEditor(sequence)
    editor.setSelection(selected)
    menu = _QMenu()
    core.events._send("kShowContextMenu/kTimeline", editor, menu)
    return menu


def _reset() -> None:
    core._reset()
    ui._reset()
