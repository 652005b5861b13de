"""Bring a finished take into the compositor: an Image node beside its source, labelled and wired."""
from __future__ import annotations

import os

import bpy

from bodydouble import host
from bodydouble.client import JobResult

from . import compositor

PROP = "bodydouble"        # the node's custom property (a group) holding what made the take
NODE_STEP_Y = 320.0        # an Image node with its preview is about this tall


def params_of(node) -> dict | None:
    value = node.get(PROP) if node is not None else None
    return value.to_dict() if hasattr(value, "to_dict") else None


def free_spot(tree, x: float, y: float) -> tuple[float, float]:
    """Below (x, y), the first place no other node's corner is near."""
    y -= NODE_STEP_Y
    while any(abs(n.location.x - x) < 60 and abs(n.location.y - y) < NODE_STEP_Y * 0.8 for n in tree.nodes):
        y -= NODE_STEP_Y
    return x, y


def load_take(tree_ref, source_name: str, params: dict, result: JobResult, wire: bool) -> str:
    """Create the take's Image node (main thread only). Returns the report line."""
    tree = compositor.resolve_tree(tree_ref)
    if tree is None:
        raise LookupError(f"the node tree {tree_ref[1]!r} is gone")
    first_path = result.frames.get(result.first) or next(iter(result.frames.values()))
    for path in result.frames.values():
        if not os.path.isfile(path):
            raise FileNotFoundError(path)

    image = bpy.data.images.load(first_path, check_existing=False)
    image.name = os.path.basename(result.pattern).split(".")[0]
    sequence = params.get("is_sequence", True) or result.last > result.first
    image.source = "SEQUENCE" if sequence else "FILE"
    if params.get("image_colorspace"):
        try:
            image.colorspace_settings.name = params["image_colorspace"]
        except TypeError:
            pass  # that colour space is not in this Blender's config: keep Blender's default

    source = tree.nodes.get(source_name)
    node = tree.nodes.new(compositor.IMAGE_NODE)
    node.image = image
    if sequence:
        # Same timing as the source: file frame F shows at the scene frame where the source shows F.
        node.frame_offset = result.first - 1
        node.frame_duration = result.last - result.first + 1
        node.frame_start = params.get("scene_start", result.first) + (result.first - params.get("first", result.first))
    node.label = host.take_label(params["adapter"], params["seed"], result.take, compact=True)
    node.name = f"BodyDouble {image.name}"
    node[PROP] = dict(params, take=result.take, take_dir=result.take_dir, pattern=result.pattern,
                      take_first=result.first, take_last=result.last, job=result.job)
    if source is not None:
        node.location = free_spot(tree, source.location.x, source.location.y)
        node.width = source.width
        if wire:
            _move_links(tree, source, node)
    for other in tree.nodes:
        other.select = False
    node.select = True
    tree.nodes.active = node
    return (f"BodyDouble: take {result.take:03d} of {params['adapter']} (seed {params['seed']}) loaded as "
            f"'{node.name}', frames {result.first}-{result.last}")


def _move_links(tree, source, node) -> None:
    out = source.outputs.get("Image")
    new_out = node.outputs.get("Image")
    if out is None or new_out is None:
        return
    for link in list(out.links):
        to_socket = link.to_socket
        tree.links.remove(link)
        tree.links.new(new_out, to_socket)
    alpha, new_alpha = source.outputs.get("Alpha"), node.outputs.get("Alpha")
    if alpha is not None and new_alpha is not None:
        for link in list(alpha.links):
            to_socket = link.to_socket
            tree.links.remove(link)
            tree.links.new(new_alpha, to_socket)
