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

    for _name in ("sequences", "preferences", "adapters", "compositor", "nodes", "strips", "jobs",
                  "operators", "menus"):
        if _name in locals():
            importlib.reload(locals()[_name])

import bpy  # noqa: E402

from . import menus, operators, preferences  # noqa: E402
from . import jobs  # noqa: E402

_CLASSES = (*preferences.classes, *operators.classes, *menus.classes)


def register():
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    menus.register()


def unregister():
    jobs.shutdown()
    menus.unregister()
    for cls in reversed(_CLASSES):
        try:
            bpy.utils.unregister_class(cls)
        except RuntimeError:
            pass
