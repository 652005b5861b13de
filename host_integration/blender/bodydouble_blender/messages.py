"""What the artist is told: every message is kept (the jobs panel lists the latest, the status bar shows the
newest) and put on screen: the Info editor and the status bar's report banner, and a popup for errors.

Blender keeps the reports of an operator called from Python (a timer, a handler) to that call: printed to
stdout, an ERROR raised as RuntimeError. Reports made in a *modal* operator's ``modal`` go to the window
manager instead (Info editor, status bar), so :func:`post` invokes ``bodydouble.report`` modally in a window
(timers have no window in their context: hence the override). Headless Blender runs no modal operators and
draws nothing: there the log is what is left (scripts read :data:`LOG`).
"""
from __future__ import annotations

import textwrap
import time
from dataclasses import dataclass, field

import bpy

LEVELS = ("INFO", "WARNING", "ERROR")
ICONS = {"INFO": "INFO", "WARNING": "ERROR", "ERROR": "CANCEL"}
KEEP = 50                 # messages kept for the panel
FRESH_SECONDS = 30.0      # the status bar shows the newest message this long
REDRAW_AREAS = ("NODE_EDITOR", "SEQUENCE_EDITOR", "IMAGE_EDITOR", "INFO")


@dataclass
class Message:
    level: str
    text: str
    time: float = field(default_factory=time.time)

    @property
    def icon(self) -> str:
        return ICONS.get(self.level, "INFO")


LOG: list[Message] = []


def post(level: str, text: str) -> Message:
    """Tell the artist, from any main-thread code (operators, timers, handlers)."""
    message = Message(level if level in LEVELS else "INFO", text)
    LOG.append(message)
    del LOG[:-KEEP]
    print(f"BodyDouble {message.level}: {text}")
    _show_on_screen(message)
    redraw()
    return message


def latest(max_age: float | None = FRESH_SECONDS) -> Message | None:
    """The newest message (no older than ``max_age`` seconds)."""
    if not LOG or (max_age is not None and time.time() - LOG[-1].time > max_age):
        return None
    return LOG[-1]


def redraw() -> None:
    """Redraw the editors that show BodyDouble state (their panels, the take nodes, the preview image)."""
    wm = bpy.context.window_manager
    for window in (wm.windows if wm is not None else ()):
        for area in (window.screen.areas if window.screen else ()):
            if area.type in REDRAW_AREAS:
                area.tag_redraw()


def _show_on_screen(message: Message) -> None:
    if bpy.app.background:
        return
    wm = bpy.context.window_manager
    window = bpy.context.window or (wm.windows[0] if wm is not None and wm.windows else None)
    if window is None:
        return
    try:
        with bpy.context.temp_override(window=window, screen=window.screen):
            bpy.ops.bodydouble.report("INVOKE_DEFAULT", level=message.level, message=message.text)
            if message.level == "ERROR":
                lines = textwrap.wrap(message.text, 90)

                def draw(menu, _context):
                    for line in lines:
                        menu.layout.label(text=line)

                wm.popup_menu(draw, title="BodyDouble", icon="ERROR")
    except Exception as exc:  # a closing window, a locked interface: the panel still lists it
        print(f"BodyDouble: could not show the message on screen ({type(exc).__name__}: {exc})")
