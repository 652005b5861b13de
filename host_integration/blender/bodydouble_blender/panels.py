"""The BodyDouble sidebar tab (N panel) in the compositor and the sequencer: jobs (queued, running, finished,
failed) with a cancel button each, the live preview, the latest messages and the takes with thumbnails."""
from __future__ import annotations

import bpy

from bodydouble.frames import expand_pattern

from . import compositor, jobs, messages, nodes, previews, strips

STATE_ICONS = {"sending": "EXPORT", "queued": "SORTTIME", "running": "PLAY", "cancelling": "CANCEL",
               "finished": "CHECKMARK", "failed": "ERROR", "cancelled": "X", "lost": "UNLINKED"}
SHOW_ENDED = 5
SHOW_MESSAGES = 4


def draw_jobs(layout, takes: list) -> None:
    """The panel's content; ``takes`` are the take nodes or strips of the editor it is drawn in."""
    col = layout.column()
    col.label(text="Jobs", icon="SEQ_STRIP_DUPLICATE")
    active = jobs.running()
    for job in active:
        row = col.row(align=True)
        row.label(text=job.title, icon=STATE_ICONS.get(job.state, "DOT"))
        row.operator("bodydouble.cancel", text="", icon="CANCEL").job = job.key
        sub = col.row()
        if job.state == "running" and hasattr(sub, "progress"):
            sub.progress(factor=job.fraction, type="BAR", text=job.message)
        else:
            sub.label(text=job.message)
    lost = jobs.unfollowed()
    if lost:
        row = col.row()
        row.label(text=f"{len(lost)} job(s) of this file not followed", icon="UNLINKED")
        row.operator("bodydouble.reattach", text="Re-attach", icon="FILE_REFRESH")
    for ended in list(jobs.history)[::-1][:SHOW_ENDED]:
        col.label(text=f"{ended.title}: {ended.state}", icon=STATE_ICONS.get(ended.state, "DOT"))
    if not active and not lost and not jobs.history:
        col.label(text="No jobs yet: right-click a plate > BodyDouble")

    icon = previews.live_icon()
    if previews.live_title:
        box = layout.box()
        box.label(text=f"Preview: {previews.live_title}", icon="IMAGE_DATA")
        box.template_icon(icon_value=icon, scale=8.0)
        box.label(text=f"Image Editor: '{previews.IMAGE_NAME}'")

    shown = messages.LOG[-SHOW_MESSAGES:]
    if shown:
        box = layout.box()
        for message in reversed(shown):
            box.label(text=message.text, icon=message.icon)

    if takes:
        box = layout.box()
        box.label(text="Takes", icon="RENDERLAYERS")
        for holder in takes:
            props = holder[nodes.PROP]
            row = box.row()
            thumb = previews.thumbnail(take_first_file(props))
            row.template_icon(icon_value=thumb.icon_id if thumb is not None else 0, scale=3.0)
            text = holder.label if getattr(holder, "label", "") else holder.name
            row.operator("bodydouble.show_take", text=text, emboss=False).name = holder.name


def take_first_file(props) -> str:
    pattern, first = props.get("pattern", ""), props.get("take_first")
    if not pattern or first is None:
        return ""
    return expand_pattern(pattern, int(first))


def compositor_takes(context) -> list:
    tree = compositor.tree_from_context(context)
    return [n for n in tree.nodes if nodes.PROP in n] if tree is not None else []


def sequencer_takes(context) -> list:
    scene = strips.sequencer_scene(context)
    sed = scene.sequence_editor if scene is not None else None
    return [s for s in strips.all_strips(sed) if strips.PROP in s] if sed is not None else []


class _SidebarTab:
    bl_label = "BodyDouble"
    bl_region_type = "UI"
    bl_category = "BodyDouble"


class NODE_PT_bodydouble(_SidebarTab, bpy.types.Panel):
    bl_idname = "NODE_PT_bodydouble"
    bl_space_type = "NODE_EDITOR"

    @classmethod
    def poll(cls, context):
        return compositor.tree_from_context(context) is not None

    def draw(self, context):
        draw_jobs(self.layout, compositor_takes(context))


class SEQUENCER_PT_bodydouble(_SidebarTab, bpy.types.Panel):
    bl_idname = "SEQUENCER_PT_bodydouble"
    bl_space_type = "SEQUENCE_EDITOR"

    def draw(self, context):
        draw_jobs(self.layout, sequencer_takes(context))


classes = (NODE_PT_bodydouble, SEQUENCER_PT_bodydouble)
