"""Where the model works: the mask's box plus context, at the model's size; and the way back."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import OpenImageIO as oiio

from bodydouble import errors

from . import resample


@dataclass(frozen=True)
class Box:
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


def mask_box(mask: np.ndarray) -> Box:
    ys = np.flatnonzero(mask.max(axis=1) > 0)
    xs = np.flatnonzero(mask.max(axis=0) > 0)
    if ys.size == 0:
        raise errors.RequestError("the mask is empty: nothing to fill (check the mask channel and frame)",
                                  code=errors.EMPTY_MASK)
    return Box(int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1)


def context_box(box: Box, height: int, width: int, context: float, minimum: int = 32) -> Box:
    """Grow ``box`` by ``context`` x its size on each side (at least ``minimum`` px overall), clipped to the frame."""
    pad_y = max(int(math.ceil(box.height * context)), (minimum - box.height + 1) // 2, 0)
    pad_x = max(int(math.ceil(box.width * context)), (minimum - box.width + 1) // 2, 0)
    return Box(max(0, box.y0 - pad_y), min(height, box.y1 + pad_y), max(0, box.x0 - pad_x), min(width, box.x1 + pad_x))


def shot_boxes(boxes: list[Box], height: int, width: int, context: float) -> list[Box]:
    """A shot's crops, one per frame, all of one size: each frame's own fill crop (``context_box`` of its mask's
    box) grown to the shot's largest and centred on the frame's own, inside the frame. The model sees each frame
    as per-frame fill frames it, at one size (one noise per pixel of the crop)."""
    own = [context_box(b, height, width, context) for b in boxes]
    tall, wide = max(b.height for b in own), max(b.width for b in own)

    def placed(low: int, high: int, extent: int, limit: int) -> int:
        return min(max(0, (low + high - extent) // 2), limit - extent)
    return [Box(y0, y0 + tall, x0, x0 + wide) for b in own
            for y0, x0 in [(placed(b.y0, b.y1, tall, height), placed(b.x0, b.x1, wide, width))]]


def model_size(box: Box, pixel_aspect: float, resolution: int, multiple: int) -> tuple[int, int]:
    """(height, width) to generate at: the long physical side at ``resolution``, both multiples of ``multiple``."""
    phys_w, phys_h = box.width * pixel_aspect, box.height
    scale = resolution / max(phys_w, phys_h)

    def snap(v: float) -> int:
        return max(multiple, int(round(v / multiple)) * multiple)

    return snap(phys_h * scale), snap(phys_w * scale)


def resize(pixels: np.ndarray, height: int, width: int, device=None) -> np.ndarray:
    """To (height, width), float32, with OpenImageIO's resize filters (imaging/resample.py), on ``device``."""
    if pixels.shape[:2] == (height, width):
        return pixels.astype(np.float32, copy=True)
    return resample.resize(pixels, height, width, device)


# Rows per copy into or out of OpenImageIO: a copy holds the GIL, so a large frame goes in short bands.
_BAND = 128


def resize_oiio(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """OpenImageIO's own ``ImageBufAlgo.resize`` (default filters): the reference ``resize`` is tested against.
    Half input is resized into a half buffer, as the server did before #16."""
    source = pixels if pixels.ndim == 3 else pixels[:, :, None]
    src_h, src_w, nch = source.shape
    dtype, fmt = (np.float16, oiio.HALF) if pixels.dtype == np.float16 else (np.float32, oiio.FLOAT)
    buf = oiio.ImageBuf(oiio.ImageSpec(src_w, src_h, nch, fmt))
    for y in range(0, src_h, _BAND):
        rows = np.ascontiguousarray(source[y:y + _BAND], dtype=dtype)
        buf.set_pixels(oiio.ROI(0, src_w, y, y + len(rows), 0, 1, 0, nch), rows)
    out = oiio.ImageBufAlgo.resize(buf, roi=oiio.ROI(0, width, 0, height, 0, 1, 0, nch))
    if out.has_error:
        raise errors.RequestError(f"resize failed: {out.geterror()}", code=errors.JOB_FAILED)
    result = np.empty((height, width, nch), np.float32)
    for y in range(0, height, _BAND):
        end = min(y + _BAND, height)
        result[y:end] = np.asarray(out.get_pixels(oiio.FLOAT, oiio.ROI(0, width, y, end, 0, 1, 0, nch))).reshape(
            end - y, width, nch)
    return result.reshape(height, width, *pixels.shape[2:])


def _box_sum(image: np.ndarray, radius: int) -> np.ndarray:
    """Sum over a (2r+1)^2 window, zero outside the image: two cumulative sums, O(pixels)."""
    size = 2 * radius + 1
    padded = np.pad(image.astype(np.float64), ((radius + 1, radius), (radius + 1, radius)))
    summed = padded.cumsum(0).cumsum(1)
    return summed[size:, size:] - summed[:-size, size:] - summed[size:, :-size] + summed[:-size, :-size]


def feathered(mask: np.ndarray, radius: int) -> np.ndarray:
    """A soft weight that is exactly 0 wherever ``mask`` is 0: erode by r, then box-blur by r."""
    weight = np.clip(mask.astype(np.float32), 0.0, 1.0)
    if radius <= 0:
        return weight
    area = (2 * radius + 1) ** 2
    inside = (weight > 0).astype(np.float64)
    eroded = (_box_sum(inside, radius) >= area - 0.5).astype(np.float64)
    soft = _box_sum(eroded, radius) / area
    return weight * np.clip(soft, 0.0, 1.0).astype(np.float32)


def composite(plate: np.ndarray, generated_rgb: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Generated RGB over the plate's RGB by ``weight``; other channels and every weight-0 pixel untouched.
    Images (h, w, C) with weights (h, w), or lists of pixels (n, C) with weights (n,).

    Where the weight is 1 the plate is not read at all, so a NaN or Inf there is filled over, not mixed in."""
    out = plate.copy()
    w = weight[..., None]
    with np.errstate(invalid="ignore", over="ignore"):
        mixed = np.where(w >= 1.0, generated_rgb, plate[..., :3] * (1.0 - w) + generated_rgb * w)
    out[..., :3] = np.where(w > 0, mixed, plate[..., :3])
    return out
