"""What the compositor selection means: the plate (and mask) Image nodes, their files and frame range."""
from __future__ import annotations

import os
from dataclasses import dataclass

import bpy

from bodydouble.frames import split_frame

IMAGE_NODE = "CompositorNodeImage"


def scene_tree(scene):
    """The scene's compositor node tree: ``compositing_node_group`` (Blender 5.0+, a node group the scene
    uses), else ``node_tree`` (4.x, only while "Use Nodes" is on)."""
    if scene is None:
        return None
    if hasattr(scene, "compositing_node_group"):
        return scene.compositing_node_group
    return scene.node_tree if scene.use_nodes else None


def tree_from_context(context):
    """The compositor tree being edited: the node editor's (group) tree, else the scene's."""
    space = getattr(context, "space_data", None)
    if space is not None and getattr(space, "type", "") == "NODE_EDITOR":
        if space.tree_type != "CompositorNodeTree":
            return None
        return space.edit_tree
    return scene_tree(context.scene)


def tree_ref(tree, scene) -> tuple[str, str]:
    """A handle that survives undo (ID pointers do not): ("scene", name) or ("group", name)."""
    own = scene_tree(scene)
    if own is not None and tree == own and not hasattr(scene, "compositing_node_group"):
        return ("scene", scene.name)     # 4.x: the scene's embedded tree has no name of its own
    return ("group", tree.name)


def resolve_tree(ref) -> object:
    kind, name = ref
    if kind == "scene":
        return scene_tree(bpy.data.scenes.get(name))
    return bpy.data.node_groups.get(name)


def is_image_node(node) -> bool:
    return node is not None and node.bl_idname == IMAGE_NODE and node.image is not None


def selected_image_nodes(tree) -> list:
    active = tree.nodes.active
    nodes = [n for n in tree.nodes if n.select and is_image_node(n)]
    nodes.sort(key=lambda n: n != active)  # the active node first
    return nodes


@dataclass
class Footage:
    """An Image node's files: a ``####`` pattern and the file frame numbers it shows."""

    pattern: str
    first: int
    last: int
    is_sequence: bool
    scene_start: int          # the scene frame that shows file frame ``first``
    colorspace: str
    alpha_mode: str


def footage(node, scene=None) -> Footage:
    image = node.image
    if image.packed_file is not None or image.source not in ("FILE", "SEQUENCE"):
        raise ValueError(f"image node '{node.name}' shows '{image.name}', which is not a file on disk; "
                         "save it as an EXR first")
    path = os.path.abspath(bpy.path.abspath(image.filepath, library=image.library))
    pattern, number = split_frame(path)
    if image.source == "SEQUENCE":
        if number is None:
            raise ValueError(f"image sequence '{image.name}' has no frame number in its file name")
        # Blender shows file frame (scene frame - frame_start + 1 + frame_offset).
        first = node.frame_offset + 1
        last = node.frame_offset + max(1, node.frame_duration)
        return Footage(pattern, first, last, True, node.frame_start, image.colorspace_settings.name, image.alpha_mode)
    frame = number if number is not None else (scene or bpy.context.scene).frame_current
    return Footage(path if number is None else pattern, frame, frame, False,
                   (scene or bpy.context.scene).frame_current, image.colorspace_settings.name, image.alpha_mode)
