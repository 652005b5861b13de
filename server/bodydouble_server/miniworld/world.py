"""The world's plates on disk and its training samples in memory, framed the way fill frames a plate.

- ``write_plate`` / ``write_matte``: scene-linear ACEScg RGBA half EXRs and single-channel mattes, written
  through a temporary file and a rename like every file the product writes.
- ``model_sample``: a render as the fill model sees it (the head's box plus fill's context, the crop's model
  encoding, the model's size), through fill's own ``prepare_frame``: what the base model and the judge learn
  from, and what the judge scores, is exactly what fill hands the model.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import OpenImageIO as oiio

from bodydouble.jobspec import FillRequest

from ..imaging import frames as frame_io
from ..imaging import regions
from ..imaging.colour import ColourTransform
from ..operations import fill
from . import characters as chars

PLATE_COLOURSPACE = "ACEScg"
FILL_REQUEST = FillRequest(frames=[])   # fill's defaults (context 0.5, highlight ceiling): the base model learns
                                        # the framing and encoding of a default fill


@dataclass(frozen=True)
class Framing:
    """The model's working size (its declared resolution and size multiple), shaped as fill reads a loaded
    model's (``model.resolution``, ``model.family.multiple``)."""
    resolution: int
    multiple: int

    @property
    def family(self) -> "Framing":
        return self


def write_exr(path: Path, pixels: np.ndarray, channels: tuple[str, ...], attributes: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = oiio.ImageSpec(pixels.shape[1], pixels.shape[0], len(channels), oiio.HALF)
    spec.channelnames = channels
    spec.attribute("oiio:ColorSpace", PLATE_COLOURSPACE if len(channels) >= 3 else "data")
    spec.attribute("compression", "zip")
    for key, value in (attributes or {}).items():
        spec.attribute(f"miniworld:{key}", value if isinstance(value, (int, float)) else str(value))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.exr")
    out = oiio.ImageOutput.create(str(tmp))
    if out is None:
        raise OSError(f"cannot write {path}: {oiio.geterror()}")
    try:
        if not (out.open(str(tmp), spec) and out.write_image(np.ascontiguousarray(pixels, dtype=np.float32))):
            raise OSError(f"cannot write {path}: {out.geterror()}")
    finally:
        out.close()
    os.replace(tmp, path)
    return path


def write_plate(path: Path, rgb: np.ndarray, attributes: dict | None = None) -> Path:
    rgba = np.concatenate([rgb, np.ones(rgb.shape[:2] + (1,), np.float32)], axis=2)
    return write_exr(path, rgba, ("R", "G", "B", "A"), attributes)


def write_matte(path: Path, matte: np.ndarray) -> Path:
    return write_exr(path, matte[:, :, None], ("Y",))


def read_exr(path: Path) -> np.ndarray:
    buf = oiio.ImageBuf(str(path))
    pixels = buf.get_pixels(oiio.FLOAT)
    if pixels is None or buf.has_error:
        raise OSError(f"cannot read {path}: {buf.geterror()}")
    return np.asarray(pixels, dtype=np.float32)


def model_sample(colour: ColourTransform, rgb: np.ndarray, matte: np.ndarray, framing: Framing):
    """(display RGB at the model's size, binary inpaint mask at that size, crop box) of a render: fill's own
    crop, colour and resize steps (``operations.fill.prepare_frame``) on it as a plate."""
    prepared = fill.prepare_frame(framing, FILL_REQUEST, colour, frame_io.frame_from_buffer(rgb), matte)
    return prepared.model_rgb, prepared.model_mask, prepared.box


def sample_views(rng: np.random.Generator, character: chars.Character, count: int, width: int, height: int,
                 framing: Framing, colour: ColourTransform, yaws=None, markings: bool = False):
    """``count`` random shots of ``character`` (random yaw unless given), framed as fill frames them.

    Returns (rgb (N, R, R, 3) float16 display-referred, masks (N, R, R) bool, yaws (N,) float32), and with
    ``markings`` where the back marking shows (N, R, R) bool: the shot rendered again without it, differenced."""
    size = framing.resolution
    rgbs = np.zeros((count, size, size, 3), np.float16)
    masks = np.zeros((count, size, size), bool)
    marks = np.zeros((count, size, size), bool)
    out_yaws = np.zeros(count, np.float32)
    unmarked = replace(character, marking_shape="none")
    for i in range(count):
        yaw = float(rng.uniform(0, 360)) if yaws is None else float(yaws[i])
        shot = chars.random_shot(rng, width, height)
        rgb, matte = chars.render(character, shot, yaw)
        model_rgb, model_mask, _ = model_sample(colour, rgb, matte, framing)
        model_rgb = square(model_rgb, size)
        rgbs[i], masks[i], out_yaws[i] = model_rgb, square(model_mask[:, :, None], size)[:, :, 0] > 0.5, yaw
        if markings:
            plain = square(model_sample(colour, chars.render(unmarked, shot, yaw)[0], matte, framing)[0], size)
            marks[i] = np.abs(model_rgb - plain).max(axis=-1) > 0.02
    return (rgbs, masks, out_yaws, marks) if markings else (rgbs, masks, out_yaws)


def square(pixels: np.ndarray, size: int) -> np.ndarray:
    """Fill's size snaps each side to the multiple; a head box of this world is square to within it."""
    if pixels.shape[:2] == (size, size):
        return pixels
    return regions.resize(pixels, size, size)


def decibels(mse: float) -> float:
    """PSNR of a mean squared error of [0, 1] pixels (a perfect match reads 100 dB)."""
    return 10 * math.log10(1.0 / max(float(mse), 1e-10))
