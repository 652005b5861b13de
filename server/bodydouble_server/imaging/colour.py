"""Scene-linear plates <-> the display-referred [0, 1] pixels image models were trained on.

The forward path is an OCIO display view (what artists see, and what the model learned from);
its inverse brings generated pixels back to scene-linear. Generated highlights are therefore
bounded by the inverse view (about 16.0 for ACES SDR). ``Raw`` skips colour management for
plates that are already display-referred.
"""
from __future__ import annotations

import numpy as np
import OpenImageIO as oiio

from bodydouble import errors

RAW_NAMES = {"raw", "data", "none"}


class ColourTransform:
    def __init__(self, colorspace: str, display: str | None = None, view: str | None = None):
        config = oiio.ColorConfig()
        self.colorspace = colorspace
        self.raw = colorspace.lower() in RAW_NAMES
        self.display = display or config.getDefaultDisplayName()
        self.view = view or config.getDefaultViewName(self.display)
        if not self.raw:
            known = set(config.getColorSpaceNames())
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
        buf = oiio.ImageBuf(np.ascontiguousarray(rgb, dtype=np.float32).reshape(1, -1, 3))
        out = oiio.ImageBufAlgo.ociodisplay(buf, self.display, self.view, fromspace=self.colorspace,
                                            unpremult=False, inverse=inverse)
        if out.has_error:
            raise errors.RequestError(f"colour conversion failed: {out.geterror()}", code=errors.UNKNOWN_COLORSPACE)
        return np.asarray(out.get_pixels(oiio.FLOAT), dtype=np.float32).reshape(rgb.shape)

    def to_model(self, rgb: np.ndarray) -> np.ndarray:
        out = rgb if self.raw else self._apply(rgb, inverse=False)
        return np.clip(out, 0.0, 1.0)

    def from_model(self, rgb: np.ndarray) -> np.ndarray:
        return rgb.astype(np.float32) if self.raw else self._apply(rgb, inverse=True)
