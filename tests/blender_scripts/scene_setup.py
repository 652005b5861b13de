"""Scene building blocks for the Blender test scripts: a compositor with plate (and matte) nodes."""
from __future__ import annotations

import os
import types

import bpy


def compositor_tree(scene):
    """An empty compositor tree with its output ("Composite") and a Viewer: Blender 4.x's Composite node in the
    scene's own tree; 5.0's scene compositing node group, whose Group Output (named "Composite") is the result."""
    if hasattr(scene, "compositing_node_group"):
        tree = scene.compositing_node_group
        if tree is None:
            tree = scene.compositing_node_group = bpy.data.node_groups.new("Compositor", "CompositorNodeTree")
            tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        tree.nodes.clear()
        composite = tree.nodes.new("NodeGroupOutput")
        composite.name = "Composite"
        tree.nodes.new("CompositorNodeViewer").name = "Viewer"
        return tree
    scene.use_nodes = True
    tree = scene.node_tree
    for node in list(tree.nodes):
        if node.bl_idname not in ("CompositorNodeComposite", "CompositorNodeViewer"):
            tree.nodes.remove(node)
    return tree


def output_node(tree):
    """The node whose input is the comp's result (Composite in 4.x, the Group Output in 5.0)."""
    return tree.nodes["Composite"]


def compositor_with_plate(plate_first_file: str, first: int, last: int, matte_first_file: str | None = None,
                          width: int = 96, height: int = 64):
    """Plate Image node (a sequence, shown at scene frames first..last) -> Composite and Viewer."""
    scene = bpy.context.scene
    tree = compositor_tree(scene)
    composite = output_node(tree)
    viewer = tree.nodes["Viewer"]
    plate = _sequence_node(tree, "Plate", plate_first_file, first, last)
    plate.location = (-400, 200)
    tree.links.new(plate.outputs["Image"], composite.inputs["Image"])
    tree.links.new(plate.outputs["Image"], viewer.inputs["Image"])
    composite.location, viewer.location = (300, 200), (300, -100)
    matte = None
    if matte_first_file:
        matte = _sequence_node(tree, "Matte", matte_first_file, first, last)
        matte.location = (-400, 700)
    render = scene.render
    render.resolution_x, render.resolution_y, render.resolution_percentage = width, height, 100
    render.image_settings.file_format = "OPEN_EXR"
    render.image_settings.color_depth = "32"
    render.image_settings.color_mode = "RGBA"
    scene.frame_start, scene.frame_end = first, last
    scene.frame_set(first)
    for node in tree.nodes:
        node.select = False
    plate.select = True
    tree.nodes.active = plate
    return tree, plate, matte


def _sequence_node(tree, name, first_file, first, last):
    image = bpy.data.images.load(first_file, check_existing=False)
    image.source = "SEQUENCE"
    node = tree.nodes.new("CompositorNodeImage")
    node.name = node.label = name
    node.image = image
    node.frame_start, node.frame_offset, node.frame_duration = first, first - 1, last - first + 1
    return node


def render_frames(folder: str, frames) -> dict:
    """Render the compositor at each frame to an EXR (what Blender itself reads through the nodes)."""
    scene = bpy.context.scene
    out = {}
    for frame in frames:
        scene.frame_set(frame)
        scene.render.filepath = os.path.join(folder, f"render.{frame:04d}.exr")
        bpy.ops.render.render(write_still=True)
        out[frame] = scene.render.filepath
    return out


class FakeLayout:
    """Records what a menu/panel draw function puts in its layout (headless Blender draws no UI)."""

    def __init__(self, log=None):
        self.log = [] if log is None else log
        self.enabled = True
        self.operator_context = "EXEC_DEFAULT"
        self.use_property_split = False

    def separator(self, **_):
        self.log.append("---")

    def menu(self, idname, **_):
        self.log.append(f"menu:{idname}")

    def row(self, **_):
        return self

    column = box = row

    def label(self, text="", icon="", **_):
        self.log.append(f"label:{text}" + (f" [{icon}]" if icon else ""))

    def progress(self, text="", factor=None, **_):
        self.log.append(f"progress:{text}")

    def template_icon(self, icon_value=0, **_):
        self.log.append(f"icon:{icon_value}")

    def prop(self, data, name, **_):
        self.log.append(f"prop:{name}")

    def operator(self, idname, text="", **_):
        self.log.append(f"op:{idname}:{text}")
        return _OperatorProps(self.log)


class _OperatorProps:
    """An operator button's properties: what the draw code sets on it is logged (``  job=bd2``)."""

    def __init__(self, log):
        object.__setattr__(self, "_log", log)

    def __setattr__(self, name, value):
        self._log.append(f"  {name}={value}")


def draw_menu(draw, context) -> list[str]:
    layout = FakeLayout()
    draw(types.SimpleNamespace(layout=layout), context)
    return layout.log


def node_editor_context(scene, tree_type, tree):
    space = types.SimpleNamespace(type="NODE_EDITOR", tree_type=tree_type, edit_tree=tree)
    return types.SimpleNamespace(space_data=space, scene=scene, area=None)


def sequencer_context(scene):
    return types.SimpleNamespace(space_data=types.SimpleNamespace(type="SEQUENCE_EDITOR"), scene=scene, area=None)
