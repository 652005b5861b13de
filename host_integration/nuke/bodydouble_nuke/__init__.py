"""BodyDouble inside Nuke: a node that generates takes on a BodyDouble server.

``nuke_api`` holds every call into Nuke; ``node`` lays out the BodyDouble group and its takes; ``flow``
renders its inputs for the server; ``commands`` is what menus and buttons run; ``timeline`` (with
``hiero_api``) is Nuke Studio's. What is not
Nuke's (parameters -> request, following a job, advice, take records) is ``bodydouble.host``.
Scripted use (also ``nuke -t``)::

    import bodydouble_nuke as bd
    group = bd.create_node(nuke.toNode("Read1"), operation="fill")
    bd.pick_adapter(group, "hero")
    take = bd.generate(group)          # terminal mode: blocks, returns the take, raises on error

Importing this package imports nothing from Nuke or the thin client until a function runs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from bodydouble.host import TakeRecord
    from .nuke_api import Group, Node

__all__ = ["create_node", "generate", "pick_adapter", "install_menus"]


def create_node(plate: "Node", mask: "Optional[Node]" = None, operation: str = "fill") -> "Group":
    """A BodyDouble node on ``plate`` (and ``mask``), its adapters listed from the server."""
    from . import commands, node, settings

    group = node.create(plate, mask, operation, shot=commands._shot_for(plate))
    commands.refresh_adapters(group, settings.address(), operation)
    return group


def pick_adapter(group: "Node", name: str) -> None:
    from . import node

    node.pick_adapter(group, name)


def generate(group: "Group", address: Optional[str] = None) -> "Optional[TakeRecord]":
    from . import commands

    return commands.generate(group, address)


def install_menus() -> None:
    from . import menus

    menus.install()
