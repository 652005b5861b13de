"""Scene-linear plates <-> the display-referred [0, 1] pixels image models were trained on.

The forward path is an OCIO display view (what artists see, and what the model learned from);
its inverse brings generated pixels back to scene-linear. Generated highlights are therefore
bounded by the inverse view (about 16.0 for ACES SDR). ``Raw`` skips colour management for
plates that are already display-referred.
"""
from __future__ import annotations

import functools
import os

import numpy as np
import OpenImageIO as oiio

from bodydouble import errors

RAW_NAMES = {"raw", "data", "none"}
# OIIO spreads an image operation over scanlines: a long single row would run on one core.
_ROW = 1024
_CHUNK = 1 << 20          # pixels per conversion call: 12 MB of float32 RGB


@functools.lru_cache(maxsize=8)
def _config(ocio: str | None) -> tuple:
    """The OCIO config and its colour spaces: parsing it costs ~25 ms a request, and it changes only with $OCIO."""
    config = oiio.ColorConfig()
    return config, frozenset(config.getColorSpaceNames())


class ColourTransform:
    def __init__(self, colorspace: str, display: str | None = None, view: str | None = None):
        config, known = _config(os.environ.get("OCIO"))
        self.colorspace = colorspace
        self.raw = colorspace.lower() in RAW_NAMES
        self.display = display or config.getDefaultDisplayName()
        self.view = view or config.getDefaultViewName(self.display)
        if not self.raw:
            resolved = config.resolve(colorspace) if hasattr(config, "resolve") else colorspace
            if colorspace not in known and resolved not in known:
                names = ", ".join(sorted(known)[:12])
                raise errors.RequestError(
                    f"unknown colour space {colorspace!r} in the OCIO config ({config.configname() if hasattr(config, 'configname') else 'default'}); "
                    f"known include: {names}, ...; set $OCIO for a studio config",
                    code=errors.UNKNOWN_COLORSPACE,
                )

    def describe(self) -> str:
        return "raw (no colour management)" if self.raw else f"{self.colorspace} -> {self.display} / {self.view}"

    def _apply(self, rgb: np.ndarray, inverse: bool) -> np.ndarray:
        """Any (..., 3) array; pixels are independent, so a flat list of them works as well as an image."""
        if rgb.size == 0:
            return rgb.astype(np.float32)
        flat = rgb.reshape(-1, 3)
        count = len(flat)
        width = min(count, _ROW)
        rows = -(-count // width)
        padded = np.zeros((rows * width, 3), np.float32)
        padded[:count] = flat
        buf = oiio.ImageBuf(padded.reshape(rows, width, 3))
        out = oiio.ImageBufAlgo.ociodisplay(buf, self.display, self.view, fromspace=self.colorspace,
                                            unpremult=False, inverse=inverse)
        if out.has_error:
            raise errors.RequestError(f"colour conversion failed: {out.geterror()}", code=errors.UNKNOWN_COLORSPACE)
        return np.asarray(out.get_pixels(oiio.FLOAT), dtype=np.float32).reshape(-1, 3)[:count].reshape(rgb.shape)

    def to_model(self, rgb: np.ndarray) -> np.ndarray:
        """Any (..., 3) array (half or float) -> float32 in [0, 1]. Never NaN or Inf: a non-finite plate sample is
        shown to the model as black, so it cannot spread through the model (or a colour-match statistic) into
        generated pixels."""
        def convert(part: np.ndarray) -> np.ndarray:
            part[~np.isfinite(part)] = 0.0
            if not self.raw:
                part = self._apply(part, inverse=False)
            return np.clip(np.nan_to_num(part, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)

        return _chunked(rgb, convert)

    def from_model(self, rgb: np.ndarray) -> np.ndarray:
        """Generated pixels back to the plate's space; a model that made NaN or Inf fails the job (never a take
        with holes in it)."""
        if not np.isfinite(rgb).all():
            raise errors.RequestError("the model produced NaN or infinite pixels (a half-precision overflow or a "
                                      "diverged adapter?); nothing was written for this frame", code=errors.JOB_FAILED)
        return rgb.astype(np.float32) if self.raw else _chunked(rgb, lambda part: self._apply(part, inverse=True))


def _chunked(rgb: np.ndarray, convert) -> np.ndarray:
    """``convert`` (float32 (n, 3) -> (n, 3), may work in place) over ``rgb`` a bounded run of pixels at a time,
    into one float32 result: the temporaries of a colour conversion stay small whatever the frame's size."""
    out = np.empty(rgb.shape, np.float32)
    source, target = rgb.reshape(-1, 3), out.reshape(-1, 3)
    for start in range(0, len(source), _CHUNK):
        part = source[start:start + _CHUNK].astype(np.float32)     # a copy: ``convert`` may write to it
        target[start:start + len(part)] = convert(part)
    return out
