"""Right-click menus (compositor node editor, sequencer) and the status-bar progress."""
from __future__ import annotations

import bpy

from . import compositor, jobs, messages, nodes, strips


class NODE_MT_bodydouble(bpy.types.Menu):
    bl_label = "BodyDouble"
    bl_idname = "NODE_MT_bodydouble"

    def draw(self, context):
        layout = self.layout
        tree = compositor.tree_from_context(context)
        active = tree.nodes.active if tree is not None else None
        row = layout.row()
        row.enabled = compositor.is_image_node(active) or bool(tree and compositor.selected_image_nodes(tree))
        row.operator_context = "INVOKE_DEFAULT"
        row.operator("bodydouble.fill", text="Fill Unseen Angle…", icon="MOD_MASK")
        if nodes.params_of(active) is not None:
            layout.operator("bodydouble.regenerate", text="Regenerate", icon="FILE_REFRESH").new_seed = False
            layout.operator("bodydouble.regenerate", text="New Seed", icon="SHADERFX").new_seed = True
            if nodes.params_of(active).get("operation") == "fill":
                carry = layout.row()
                carry.operator_context = "INVOKE_DEFAULT"
                carry.operator("bodydouble.carry_take", text="Carry Through Shot…", icon="SEQUENCE")
        if jobs.running():
            layout.operator("bodydouble.cancel", text="Cancel Running Jobs", icon="CANCEL")


class SEQUENCER_MT_bodydouble(bpy.types.Menu):
    bl_label = "BodyDouble"
    bl_idname = "SEQUENCER_MT_bodydouble"

    def draw(self, context):
        layout = self.layout
        row = layout.row()
        row.enabled = strips.image_strip(strips.sequencer_scene(context)) is not None
        row.operator_context = "INVOKE_DEFAULT"
        row.operator("bodydouble.extend", text="Extend Shot…", icon="NEXT_KEYFRAME")
        if jobs.running():
            layout.operator("bodydouble.cancel", text="Cancel Running Jobs", icon="CANCEL")


def draw_node_context_menu(self, context):
    """Appended to NODE_MT_context_menu: only in a compositor tree."""
    if compositor.tree_from_context(context) is None:
        return
    self.layout.separator()
    self.layout.menu(NODE_MT_bodydouble.bl_idname)


def draw_sequencer_context_menu(self, context):
    """Appended to SEQUENCER_MT_context_menu."""
    self.layout.separator()
    self.layout.menu(SEQUENCER_MT_bodydouble.bl_idname)


def draw_status(self, context):
    """Appended to the status bar: running jobs' progress with a cancel button, else the newest message for a
    while ("take loaded", "job failed"). Read when the bar draws, so it is never stale."""
    running = jobs.running()
    row = self.layout.row(align=True)
    if running:
        text = jobs.status_line().removeprefix("BodyDouble  ")
        if hasattr(row, "progress"):
            row.progress(factor=jobs.overall_fraction(), type="BAR", text=f"BodyDouble: {text}")
        else:
            row.label(text=f"BodyDouble: {text}")
        row.operator("bodydouble.cancel", text="", icon="CANCEL")
        return
    message = messages.latest()
    if message is not None:
        row.label(text=message.text, icon=message.icon)


_APPENDS = (
    ("NODE_MT_context_menu", draw_node_context_menu),
    ("SEQUENCER_MT_context_menu", draw_sequencer_context_menu),
    ("STATUSBAR_HT_header", draw_status),
)

classes = (NODE_MT_bodydouble, SEQUENCER_MT_bodydouble)


def register() -> None:
    for type_name, func in _APPENDS:
        getattr(bpy.types, type_name).append(func)


def unregister() -> None:
    for type_name, func in _APPENDS:
        cls = getattr(bpy.types, type_name, None)
        if cls is not None:
            cls.remove(func)
