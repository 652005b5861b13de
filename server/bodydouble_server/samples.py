"""Synthetic plates and masks: scene-linear ACEScg EXR sequences with overbrights and alpha.

For the demo, tests and benchmarks: a lit 'head' (an ellipse) drifting across a gradient
background, its alpha the character matte, and a mask over the side the plate never showed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import OpenImageIO as oiio


def plate_pixels(width: int, height: int, frame: int, channels: int = 4) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cx = width * (0.45 + 0.01 * (frame % 10))
    cy, rx, ry = height * 0.5, width * 0.16, height * 0.3
    inside = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0
    rgb = np.stack([0.05 + 0.2 * x / width, 0.08 + 0.1 * y / height, np.full_like(x, 0.12)], axis=-1)
    skin = np.array([0.62, 0.38, 0.27], np.float32)
    rgb[inside] = skin * (0.6 + 0.4 * (x[inside] - cx + rx) / (2 * rx))[:, None]
    rgb[: max(1, height // 10), : max(1, width // 10)] = 12.0   # a practical light: well above 1.0
    alpha = inside.astype(np.float32)
    return np.concatenate([rgb, alpha[:, :, None]], axis=-1)[:, :, :channels]


def mask_pixels(width: int, height: int, frame: int) -> np.ndarray:
    """The unseen half of the head (its right side), as a single channel."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cx = width * (0.45 + 0.01 * (frame % 10))
    cy, rx, ry = height * 0.5, width * 0.16, height * 0.3
    return ((((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0) & (x > cx)).astype(np.float32)


def write_exr(path: Path, pixels: np.ndarray, channels: tuple[str, ...], pixel_type=oiio.HALF) -> None:
    spec = oiio.ImageSpec(pixels.shape[1], pixels.shape[0], pixels.shape[2], pixel_type)
    spec.channelnames = channels
    spec.attribute("compression", "zip")
    out = oiio.ImageOutput.create(str(path))
    if out is None or not out.open(str(path), spec):
        raise OSError(f"cannot write {path}: {oiio.geterror()}")
    out.write_image(np.ascontiguousarray(pixels, dtype=np.float32))
    out.close()


def write_sequence(folder: Path, first: int, last: int, width: int = 256, height: int = 144,
                   name: str = "sh010_plate") -> tuple[str, str]:
    """Write plate + mask EXR sequences; returns their ``####`` patterns."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for frame in range(first, last + 1):
        write_exr(folder / f"{name}.{frame:04d}.exr", plate_pixels(width, height, frame), ("R", "G", "B", "A"))
        write_exr(folder / f"{name}_mask.{frame:04d}.exr", mask_pixels(width, height, frame)[:, :, None], ("A",))
    return str(folder / f"{name}.####.exr"), str(folder / f"{name}_mask.####.exr")
