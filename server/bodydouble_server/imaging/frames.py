"""Reading plates and masks (files or wire buffers) and writing EXRs atomically with provenance.

Plates stay float32 (H, W, C) in memory with their channel names, pixel aspect and the source
spec, so a written frame keeps the plate's windows, channels and pixel type: untouched pixels
come back bit-identical.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import OpenImageIO as oiio

from bodydouble import errors, protocol

_DEFAULT_NAMES = {1: ["Y"], 2: ["Y", "A"], 3: ["R", "G", "B"], 4: ["R", "G", "B", "A"]}


@dataclass
class Frame:
    pixels: np.ndarray              # float32 (H, W, C), the data window
    channels: list[str]
    pixel_type: str                 # "half" or "float": what we write back
    pixel_aspect: float
    source: str                     # path, or "buffer"
    spec: oiio.ImageSpec | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.pixels.shape[0], self.pixels.shape[1]

    @property
    def alpha_index(self) -> int | None:
        for i, name in enumerate(self.channels):
            if name in ("A", "alpha", "a"):
                return i
        return None


def _pixel_type(fmt: oiio.TypeDesc) -> str:
    # Half and 8-bit sources round-trip through half exactly; wider ones need float.
    return "half" if fmt.basetype in (oiio.HALF, oiio.UINT8, oiio.INT8) else "float"


def read_frame(path: Path, limits: protocol.Limits, what: str = "plate") -> Frame:
    inp = oiio.ImageInput.open(str(path))
    if inp is None:
        raise errors.RequestError(f"{what} {path} is not an image OpenImageIO can read: {oiio.geterror()}",
                                  code=errors.UNREADABLE_FILE)
    try:
        spec = inp.spec()
        if spec.deep:
            raise errors.RequestError(f"{what} {path} is a deep image; flatten it first", code=errors.UNREADABLE_FILE)
        # Checked from the header, before a single pixel is allocated.
        protocol.check_frame_size((spec.height, spec.width, spec.nchannels), limits, what=f"{what} {path}")
        pixels = inp.read_image(0, 0, 0, spec.nchannels, oiio.FLOAT)
        if pixels is None:
            raise errors.RequestError(f"{what} {path} could not be decoded: {inp.geterror()}", code=errors.UNREADABLE_FILE)
    finally:
        inp.close()
    pixels = np.asarray(pixels, dtype=np.float32).reshape(spec.height, spec.width, spec.nchannels)
    return Frame(
        pixels=pixels, channels=list(spec.channelnames), pixel_type=_pixel_type(spec.format),
        pixel_aspect=float(spec.get_float_attribute("PixelAspectRatio", 1.0)) or 1.0, source=str(path), spec=spec,
    )


def frame_from_buffer(array: np.ndarray, what: str = "plate") -> Frame:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] < 1:
        raise errors.RequestError(f"{what} buffer must be (H, W) or (H, W, C), got {array.shape}", code=errors.INVALID_REQUEST)
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise errors.RequestError(f"{what} buffer is empty ({array.shape})", code=errors.INVALID_REQUEST)
    if array.dtype.kind == "u":
        pixels = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    else:
        pixels = array.astype(np.float32)
    if not np.isfinite(pixels).all():
        raise errors.RequestError(f"{what} buffer holds NaN or infinite values", code=errors.INVALID_REQUEST)
    channels = _DEFAULT_NAMES.get(pixels.shape[2]) or [f"C{i}" for i in range(pixels.shape[2])]
    if pixels.shape[2] > 4:
        channels = ["R", "G", "B", "A"] + [f"C{i}" for i in range(4, pixels.shape[2])]
    return Frame(pixels=pixels, channels=channels, pixel_type="half" if array.dtype in (np.float16, np.uint8) else "float",
                 pixel_aspect=1.0, source="buffer")


def mask_channel(mask: Frame, channel: str | None) -> np.ndarray:
    """The (H, W) mask: the named channel, else alpha, else the first channel."""
    if channel is not None:
        if channel not in mask.channels:
            raise errors.RequestError(f"mask has no channel {channel!r} (it has {mask.channels})", code=errors.INVALID_REQUEST)
        return mask.pixels[:, :, mask.channels.index(channel)]
    index = mask.alpha_index
    return mask.pixels[:, :, 0 if index is None else index]


def write_exr_atomic(path: Path, frame: Frame, pixels: np.ndarray, attributes: dict) -> None:
    """Write ``pixels`` with ``frame``'s layout to ``path`` via a temp file + rename: readers never see half a file."""
    if frame.spec is not None:
        spec = oiio.ImageSpec(frame.spec)
        spec.set_format(oiio.HALF if frame.pixel_type == "half" else oiio.FLOAT)
    else:
        spec = oiio.ImageSpec(pixels.shape[1], pixels.shape[0], pixels.shape[2],
                              oiio.HALF if frame.pixel_type == "half" else oiio.FLOAT)
        spec.channelnames = tuple(frame.channels)
        spec.attribute("PixelAspectRatio", float(frame.pixel_aspect))
    spec.attribute("compression", "zip")
    spec.attribute("Software", "BodyDouble")
    for key, value in attributes.items():
        if isinstance(value, bool):
            value = int(value)
        spec.attribute(f"bodydouble:{key}", value if isinstance(value, (int, float)) else str(value))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.exr")
    out = oiio.ImageOutput.create(str(tmp))
    if out is None or not out.open(str(tmp), spec):
        raise errors.RequestError(f"cannot write {path}: {oiio.geterror()}", code=errors.JOB_FAILED)
    try:
        if not out.write_image(np.ascontiguousarray(pixels, dtype=np.float32)):
            raise errors.RequestError(f"cannot write {path}: {out.geterror()}", code=errors.JOB_FAILED)
    finally:
        out.close()
    os.replace(tmp, path)
