"""Pictures in the UI: the live preview of a running job and the take history's thumbnails.

The live preview (a progress event's ``preview``: a small (H, W, 3) uint8 RGB picture the server projects from
the latents) goes into the image datablock "BodyDouble Preview", which the artist can open in any Image Editor,
and into an icon of a ``bpy.utils.previews`` collection the jobs panel draws. Take thumbnails are icons of the
same collection loaded from each take's first frame (Blender's own thumbnailer: any format it reads, off the
main thread in the UI, at once headless).
"""
from __future__ import annotations

import numpy as np

import bpy
import bpy.utils.previews

IMAGE_NAME = "BodyDouble Preview"
LIVE = "live"

_collection = None
live_title = ""          # which job the live preview shows


def register() -> None:
    global _collection
    if _collection is None:
        _collection = bpy.utils.previews.new()


def unregister() -> None:
    global _collection
    if _collection is not None:
        bpy.utils.previews.remove(_collection)
        _collection = None


def show_live(title: str, rgb: np.ndarray):
    """Show a progress preview (``(H, W, 3)`` uint8, top row first): the image datablock and the panel's icon.
    Main thread only. Returns the image."""
    global live_title
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or 0 in rgb.shape:
        raise ValueError(f"a preview is (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    height, width = rgb.shape[:2]
    rgba = np.ones((height, width, 4), np.float32)
    rgba[..., :3] = rgb[::-1] / np.float32(255)          # Blender's pixel rows run bottom-up
    flat = rgba.ravel()

    image = bpy.data.images.get(IMAGE_NAME)
    if image is None:
        image = bpy.data.images.new(IMAGE_NAME, width, height, alpha=False)
        image.colorspace_settings.name = "sRGB"          # the preview is display-referred already
    elif tuple(image.size) != (width, height):
        image.scale(width, height)
    image.pixels.foreach_set(flat)
    image.update()

    icon = _icon(LIVE)
    icon.image_size = (width, height)
    icon.image_pixels_float.foreach_set(flat)
    live_title = title
    return image


def live_icon() -> int:
    """The live preview's icon id for ``template_icon`` (0: none yet)."""
    if _collection is None or LIVE not in _collection or not live_title:
        return 0
    return _collection[LIVE].icon_id


def thumbnail(path: str):
    """The thumbnail of an image file (a take's first frame), made once per file; None without the collection."""
    if _collection is None or not path:
        return None
    if path not in _collection:
        _collection.load(path, path, "IMAGE")
    return _collection[path]


def clear_live() -> None:
    global live_title
    live_title = ""


def _icon(name: str):
    register()
    return _collection[name] if name in _collection else _collection.new(name)
