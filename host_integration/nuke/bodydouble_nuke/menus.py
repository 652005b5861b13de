"""Menu entries: the Nuke menu bar and the Node Graph's right-click menu (GUI only)."""
from __future__ import annotations

from typing import Callable

from . import commands
from . import nuke_api as api

ENTRIES = [
    ("BodyDouble/Fill unseen angle…", commands.fill_command,
     "Paint what the plate never showed inside the mask, in a character's likeness."),
    ("BodyDouble/Extend shot…", commands.extend_command, "Generate new frames after the plate's last frame."),
    ("BodyDouble/Connect to server…", commands.connect_command, "Set the BodyDouble server's address and test it."),
    ("BodyDouble/Jobs…", commands.jobs_command,
     "Jobs queued, running and ended (cancel one), and every BodyDouble node's takes."),
]
MENUS = ("Nuke", "Node Graph")


def _entry(command: Callable[[], object]) -> Callable[[], None]:
    """Nuke calls menu commands with no arguments and ignores what they return."""

    def run() -> None:
        command()
    return run


def install() -> None:
    for menu_name in MENUS:
        for path, command, tooltip in ENTRIES:
            api.add_command(menu_name, path, _entry(command), tooltip)
    api.on_script_load(commands.reattach_all)   # a reopened script follows the jobs its nodes were waiting for
    if api.is_studio():   # Nuke Studio: the timeline too (``hiero`` imports in plain Nuke as well)
        from . import timeline

        timeline.install()
