"""BodyDouble for Blender: right-click Generate in the compositor and the sequencer.

A Blender 4.2+ extension. Talks to a BodyDouble server through the thin client
(``bodydouble``: pyzmq + numpy); never imports torch. Operators live under ``bpy.ops.bodydouble``.
"""
# Legacy add-on path (Blender < 4.2 or a plain add-ons folder); extensions read blender_manifest.toml.
bl_info = {
    "name": "BodyDouble",
    "author": "BodyDouble",
    "version": (0, 1, 0),
    "blender": (4, 2, 0),
    "location": "Compositor / Sequencer > right-click > BodyDouble",
    "description": "Fill unseen angles and extend shots with a character adapter",
    "category": "Compositing",
}

if "bpy" in locals():  # reload (F3 > Reload Scripts)
    import importlib

    for _name in ("preferences", "adapters", "compositor", "nodes", "strips", "messages", "previews", "jobs",
                  "operators", "menus", "panels"):
        if _name in locals():
            importlib.reload(locals()[_name])

import bpy  # noqa: E402

from . import jobs, menus, operators, panels, preferences, previews  # noqa: E402

_CLASSES = (*preferences.classes, *operators.classes, *menus.classes, *panels.classes)
_HANDLERS = (("load_pre", jobs.on_load_pre), ("load_post", jobs.on_load_post))


def register():
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    menus.register()
    previews.register()
    for name, handler in _HANDLERS:
        getattr(bpy.app.handlers, name).append(handler)
    # Enabled in a session with a file open: follow its jobs once Blender is idle (bpy.data is off-limits here;
    # at start-up with a file, load_post does it).
    bpy.app.timers.register(_reattach_later, first_interval=1.0)


def _reattach_later():
    jobs.reattach()
    return None


def unregister():
    jobs.shutdown()
    if bpy.app.timers.is_registered(_reattach_later):
        bpy.app.timers.unregister(_reattach_later)
    for name, handler in _HANDLERS:
        handlers = getattr(bpy.app.handlers, name)
        if handler in handlers:
            handlers.remove(handler)
    previews.unregister()
    menus.unregister()
    for cls in reversed(_CLASSES):
        try:
            bpy.utils.unregister_class(cls)
        except RuntimeError:
            pass
