"""Scene-linear plates <-> the display-referred [0, 1] pixels image models were trained on.

**Names.** A request names the plate's colour space the way its host does ("Linear Rec.709" in Blender,
"linear" in Nuke's default colour management, "ACEScg", a role such as "scene_linear"). :func:`resolve` finds
it in the OCIO config in use (its names, aliases and roles, then :data:`HOST_ALIASES`) or refuses it with
``unknown_colorspace`` listing every name the config has.

**The model encoding** (docs/colour.md). Forward: the OCIO display view (what artists see, and what the model
learned from); its top, from a knee to the display value of the *ceiling*, is stretched smoothly to fill
[knee, 1.0]. Inverse: the stretch undone, then the view's inverse, then capped at the ceiling. So:

- pure display white comes back as the ceiling, never more (the view's own inverse sends 0.98 -> 19.7,
  0.99 -> 34.5, 1.0 -> 128: a white collar would be a blow-out);
- the inverse is well conditioned: the display codes from the knee to white, where a model's whites land, span
  the plate values knee..ceiling, not ..128 (bench/colour_encoding.py prints what a one-code display error
  does, old and new);
- below the knee the model sees exactly the view; plate values up to the ceiling round-trip (to OCIO's float
  precision, ~3e-4);
- the ceiling is ``max(request's highlight_ceiling, the crop's brightest plate value)``: generated pixels are
  never brighter than the ceiling or than what the crop already holds, and a passthrough gives the plate back.

Everything is per channel and monotonic, so gradients stay ordered. ``Raw`` (and data spaces) skip colour
management for plates that are already display-referred.
"""
from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np
import OpenImageIO as oiio

from bodydouble import errors
from bodydouble.jobspec import HIGHLIGHT_CEILING

# The knee (the plate's units, scene-linear for scene-linear plates): the model sees the plain view below it.
# Chosen with bench/colour_encoding.py (see docs/colour.md for its table).
KNEE = 4.0
DEFAULT_CEILING = HIGHLIGHT_CEILING      # the requests' highlight_ceiling default (16.0)
RAW_NAMES = {"raw", "data", "none", "non-color", "utility - raw"}     # Blender's Non-Color, nuke-default's raw

# Names hosts use that OCIO configs spell otherwise: each maps to candidates tried in order against the
# config in use (OCIO 2 interop aliases first: every ACES cg/studio config has them; then the names of
# ACES 1.x and nuke-default configs). Only true equivalents are listed: the same primaries and encoding.
HOST_ALIASES: dict[str, tuple[str, ...]] = {
    # Blender (its bundled config's names)
    "linear rec.709": ("lin_rec709_srgb", "Linear Rec.709 (sRGB)", "Utility - Linear - sRGB", "linear"),
    "linear rec.2020": ("lin_rec2020", "Linear Rec.2020", "Utility - Linear - Rec.2020"),
    "linear dci-p3 d65": ("lin_p3d65", "Linear P3-D65", "Utility - Linear - P3-D65"),
    "linear cie-xyz d65": ("lin_ciexyzd65_scene", "CIE XYZ-D65 - Scene-referred"),
    "srgb": ("srgb_tx", "sRGB Encoded Rec.709 (sRGB)", "Utility - sRGB - Texture", "sRGB"),
    "display p3": ("srgb_p3d65", "sRGB Encoded P3-D65"),
    "rec.1886": ("g24_rec709", "Gamma 2.4 Encoded Rec.709", "Gamma2.4"),
    # Nuke's default colour management (nuke-default config)
    "linear": ("lin_rec709_srgb", "Linear Rec.709 (sRGB)", "Utility - Linear - sRGB", "linear"),
    "gamma1.8": ("g18_rec709", "Gamma 1.8 Encoded Rec.709", "Gamma1.8"),
    "gamma2.2": ("g22_rec709", "Gamma 2.2 Encoded Rec.709", "Gamma2.2"),
    "gamma2.4": ("g24_rec709", "Gamma 2.4 Encoded Rec.709", "Gamma2.4"),
    # Either way round: an ACES name sent to a nuke-default server
    "linear rec.709 (srgb)": ("linear",),
    "srgb encoded rec.709 (srgb)": ("sRGB",),
}

# OIIO spreads an image operation over scanlines: a long single row would run on one core.
_ROW = 1024
_CHUNK = 1 << 20          # pixels per conversion call: 12 MB of float32 RGB
_CLIPPED = 0.9999         # a view value at least this is display white


@functools.lru_cache(maxsize=8)
def _config(ocio: str | None) -> tuple:
    """The OCIO config and its colour spaces: parsing it costs ~25 ms a request, and it changes only with $OCIO."""
    config = oiio.ColorConfig()
    return config, tuple(config.getColorSpaceNames())


def config_in_use() -> tuple:
    """(OIIO ColorConfig, its colour-space names) of this process's OCIO config ($OCIO, else OCIO's default)."""
    return _config(os.environ.get("OCIO"))


def resolve(name: str) -> str:
    """The config's own name for ``name`` (a name, alias, role or a host's usual name); unknown_colorspace
    listing every valid name otherwise. Raw/data names come back as "raw"."""
    if name.strip().lower() in RAW_NAMES:
        return "raw"
    config, known = config_in_use()
    by_lower = {n.lower(): n for n in known}
    for candidate in (name, *HOST_ALIASES.get(name.strip().lower(), ())):
        for form in (candidate, config.resolve(candidate)):
            found = form if form in known else by_lower.get(form.lower())
            if found:
                return "raw" if found.lower() in RAW_NAMES else found
    roles = sorted(config.getRoles())
    raise errors.RequestError(
        f"unknown colour space {name!r} in the server's OCIO config ({config.configname()}). Valid names: "
        f"{', '.join(known)}; roles: {', '.join(roles)}. Set $OCIO on the server to use the studio's config.",
        code=errors.UNKNOWN_COLORSPACE, details={"colorspace": name, "config": config.configname(),
                                                 "valid": list(known), "roles": roles})


def server_colour() -> dict:
    """What hello tells hosts about colour: the config, its working space, the view models see, the encoding
    (one shared dict per config: read only)."""
    return _server_colour(os.environ.get("OCIO"))


@functools.lru_cache(maxsize=4)
def _server_colour(ocio: str | None) -> dict:
    # Built once per config: every hello carries it, and asking OCIO for it each time was a third of a hello.
    config, known = config_in_use()
    display = config.getDefaultDisplayName()
    return {"config": config.configname(), "scene_linear": config.getColorSpaceNameByRole("scene_linear") or "",
            "display": display, "view": config.getDefaultViewName(display), "colorspaces": list(known),
            "encoding": "view, top stretched to the highlight ceiling", "knee": KNEE,
            "default_highlight_ceiling": DEFAULT_CEILING}


class ColourTransform:
    """The plate's colour space, and the config's display view the model sees it through."""

    def __init__(self, colorspace: str, display: str | None = None, view: str | None = None):
        config, _ = config_in_use()
        self.colorspace = colorspace                    # as asked (what provenance records)
        self.space = resolve(colorspace)                # the config's own name
        self.raw = self.space == "raw"
        self.display = display or config.getDefaultDisplayName()
        self.view = view or config.getDefaultViewName(self.display)

    def describe(self) -> str:
        if self.raw:
            return "raw (no colour management)"
        named = self.colorspace if self.colorspace == self.space else f"{self.colorspace} ({self.space})"
        return f"{named} -> {self.display} / {self.view}"

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
        out = oiio.ImageBufAlgo.ociodisplay(buf, self.display, self.view, fromspace=self.space,
                                            unpremult=False, inverse=inverse)
        if out.has_error or out.spec().width == 0:     # an unknown name gives an empty image and no error
            raise errors.RequestError(f"colour conversion failed: {out.geterror() or 'empty result'}",
                                      code=errors.UNKNOWN_COLORSPACE)
        return np.asarray(out.get_pixels(oiio.FLOAT), dtype=np.float32).reshape(-1, 3)[:count].reshape(rgb.shape)

    def display_of(self, value: float) -> float:
        """The view's display value of a neutral ``value`` of this colour space."""
        return float(self._apply(np.full((1, 3), value, np.float32), inverse=False)[0].max())

    def to_model(self, rgb: np.ndarray) -> np.ndarray:
        """The plain view, clipped to [0, 1]: what the artist sees (review proxies, contact sheets)."""
        return _chunked(rgb, lambda part: np.clip(self._view(part), 0.0, 1.0))

    def from_model(self, rgb: np.ndarray) -> np.ndarray:
        """Model pixels back with the default encoding (ceiling 16, no crop to raise it): bounded."""
        return self.encoding().from_model(rgb)

    def _view(self, part: np.ndarray) -> np.ndarray:
        """float32 (n, 3) -> the view's display values. A non-finite plate sample is shown as black, so it
        cannot spread through the model (or a colour-match statistic) into generated pixels."""
        part[~np.isfinite(part)] = 0.0
        if not self.raw:
            part = self._apply(part, inverse=False)
        return np.nan_to_num(part, nan=0.0, posinf=1.0, neginf=0.0)

    def encoding(self, brightest: float = 0.0, ceiling: float = DEFAULT_CEILING, knee: float = KNEE,
                 display_max: float = 0.0) -> "ModelEncoding":
        """The model encoding for pixels whose brightest plate value is ``brightest`` and whose brightest view
        channel is ``display_max`` (a saturated highlight can show brighter than a neutral of the same value:
        it must not be clipped). The knee sits at most two stops below the ceiling, so a low ceiling still has
        a stretch to make."""
        if self.raw:
            return ModelEncoding(self, 1.0, 1.0, 1.0)
        top_value = max(float(ceiling), float(brightest))
        top = min(max(self.display_of(top_value), float(display_max)), 1.0)
        return ModelEncoding(self, top_value, min(self.display_of(min(knee, top_value / 4.0)), top), top)

    def encode(self, rgb: np.ndarray, ceiling: float = DEFAULT_CEILING, knee: float = KNEE,
               exact: np.ndarray | None = None) -> tuple["ModelEncoding", np.ndarray]:
        """A crop's own encoding and its model pixels in one pass of the view: (encoding, float32 in [0, 1]).

        ``exact`` (a boolean array over ``rgb``'s pixels): only those go through OCIO; the others, which only the
        model sees (a crop's context), through the view baked into a LUT (:class:`BakedView`, its tolerance), and
        only the exact pixels' display values can raise the encoding's top (the context never comes back)."""
        seen = {"plate": 0.0, "display": 0.0}

        def view(part: np.ndarray, baked: "BakedView | None" = None) -> np.ndarray:
            seen["plate"] = max(seen["plate"], brightest(part))
            if baked is not None:
                return baked.view(part)
            shown = self._view(part)
            # Values the view itself clipped to white (a saturated light) cannot round-trip whatever the top is.
            seen["display"] = max(seen["display"], float(shown.max(initial=0.0, where=shown < _CLIPPED)))
            return shown
        if exact is None or self.raw or exact.all():
            display = _chunked(rgb, view)
        else:       # a bounded run of pixels at a time, as _chunked: an 8K crop makes no full-size temporaries
            baked = baked_view(self)
            display = np.empty(rgb.shape, np.float32)
            source, target, keep = rgb.reshape(-1, 3), display.reshape(-1, 3), exact.reshape(-1)
            for start in range(0, len(source), _CHUNK):
                part, out, sure = source[start:start + _CHUNK], target[start:start + _CHUNK], keep[start:start + _CHUNK]
                if sure.any():
                    out[sure] = view(part[sure].astype(np.float32))
                if not sure.all():
                    out[~sure] = view(part[~sure].astype(np.float32), baked)
        encoding = self.encoding(seen["plate"], ceiling, knee, display_max=seen["display"])
        flat = display.reshape(-1, 3)
        for start in range(0, len(flat), _CHUNK):
            flat[start:start + _CHUNK] = np.clip(encoding._stretch(flat[start:start + _CHUNK]), 0.0, 1.0)
        return encoding, display


# The baked view: a 3-D LUT over a per-channel shaper, for the pixels only the model sees. 97^3 entries over
# [-0.25, 256] (scene-linear); anything outside goes through OCIO. The shaper is mostly the view's own neutral
# tone curve (so the LUT's cells are even in what the view does), blended with asinh to stay strictly monotonic.
LUT_SIZE = 97
LUT_RANGE = (-0.25, 256.0)
# Measured against OCIO on plate-like ACEScg values (OpenImageIO 3.2's default config, ACES 2.0 SDR view), in
# display units: mean 1.5e-4, 99.9th percentile 2.6e-3, max 0.019 (a saturated colour at the gamut mapper's
# edge). tests/test_frame_pipeline.py holds it to these bounds (with margin).
LUT_TOLERANCE = {"mean": 3e-4, "p999": 5e-3, "max": 0.03}
_SHAPER_POINTS = 8192
_ASINH = 1.0 / 64.0


class BakedView:
    """A colour space's display view baked into a 3-D LUT (trilinear, torch's ``grid_sample``): ~10x faster
    than OCIO's ACES 2.0 view on the CPU, within :data:`LUT_TOLERANCE`. Used for a crop's context only (what the
    model sees around the mask); pixels that reach the take always go through OCIO."""

    def __init__(self, colour: ColourTransform, size: int = LUT_SIZE):
        import torch

        self.colour = colour
        lo, hi = LUT_RANGE
        grid = np.sinh(np.linspace(np.arcsinh(lo / _ASINH), np.arcsinh(hi / _ASINH), _SHAPER_POINTS)) * _ASINH
        tone = colour._apply(np.repeat(grid[:, None], 3, axis=1).astype(np.float32), inverse=False)[:, 1]
        tone = np.maximum.accumulate(tone.astype(np.float64))
        even = np.linspace(0.0, 1.0, _SHAPER_POINTS)          # the grid is even in asinh
        shaped = 0.7 * (tone - tone[0]) / max(tone[-1] - tone[0], 1e-12) + 0.3 * even     # strictly increasing
        self._s = (shaped / shaped[-1]).astype(np.float32)
        self._a0 = np.float32(np.arcsinh(lo / _ASINH))
        self._per = np.float32((_SHAPER_POINTS - 1) / (np.arcsinh(hi / _ASINH) - np.arcsinh(lo / _ASINH)))
        axis = np.interp(np.linspace(0.0, 1.0, size), self._s, grid)
        b, g, r = np.meshgrid(axis, axis, axis, indexing="ij")
        nodes = np.stack([r, g, b], axis=-1).reshape(-1, 3).astype(np.float32)
        table = colour._apply(nodes, inverse=False).reshape(size, size, size, 3)
        self._lut = torch.from_numpy(np.ascontiguousarray(table.transpose(3, 0, 1, 2)))[None]   # (1, 3, B, G, R)

    def _shape(self, part: np.ndarray) -> np.ndarray:
        """The shaper, in grid_sample's [-1, 1]: its table is even in asinh, so a lookup is arithmetic."""
        u = (np.arcsinh(part / np.float32(_ASINH)) - self._a0) * self._per
        np.clip(u, 0.0, _SHAPER_POINTS - 1, out=u)
        index = np.minimum(u.astype(np.int32), _SHAPER_POINTS - 2)
        frac = u - index.astype(np.float32)
        return (self._s[index] * (1.0 - frac) + self._s[index + 1] * frac) * np.float32(2.0) - np.float32(1.0)

    def view(self, part: np.ndarray) -> np.ndarray:
        """float32 (n, 3) plate values -> display values, as ``ColourTransform._view`` (non-finite -> black)."""
        import torch

        part[~np.isfinite(part)] = 0.0
        lo, hi = LUT_RANGE
        outside = ((part < lo) | (part > hi)).any(axis=1)
        shaped = self._shape(part)
        with torch.no_grad():
            out = torch.nn.functional.grid_sample(self._lut, torch.from_numpy(shaped).reshape(1, 1, 1, -1, 3),
                                                  mode="bilinear", padding_mode="border", align_corners=True)
        shown = np.ascontiguousarray(out.reshape(3, -1).T.numpy())
        if outside.any():
            shown[outside] = self.colour._view(part[outside])
        return np.nan_to_num(shown, nan=0.0, posinf=1.0, neginf=0.0)


@functools.lru_cache(maxsize=8)
def _baked(ocio: str | None, space: str, display: str, view: str) -> BakedView:
    return BakedView(ColourTransform(space, display, view))


def baked_view(colour: ColourTransform) -> BakedView:
    """The baked view of ``colour`` (built once per process and config: ~1 s of OCIO)."""
    return _baked(os.environ.get("OCIO"), colour.space, colour.display, colour.view)


def brightest(rgb: np.ndarray) -> float:
    """The largest finite sample of an (..., 3) array (0 for none), a bounded run of pixels at a time."""
    flat, best = rgb.reshape(-1, rgb.shape[-1]), 0.0
    for start in range(0, len(flat), _CHUNK):
        part = flat[start:start + _CHUNK]
        finite = part[np.isfinite(part)]
        if finite.size:
            best = max(best, float(finite.max()))
    return best


@dataclasses.dataclass(frozen=True)
class ModelEncoding:
    """Plate values <-> model pixels with a bounded, well-conditioned inverse (the module's doc).

    ``ceiling``: the largest value ``from_model`` returns (plate units); ``knee``/``top``: display values
    between which the view is stretched to [knee, 1] (top = the view of the ceiling)."""

    colour: ColourTransform
    ceiling: float
    knee: float
    top: float

    @property
    def _ratio(self) -> float:
        """The stretch's slope at the knee, relative to the straight line knee->1 (1: no stretch)."""
        return 1.0 if self.top >= 1.0 else (self.top - self.knee) / (1.0 - self.knee)

    def _stretch(self, display: np.ndarray) -> np.ndarray:
        """[knee, top] -> [knee, 1] by h(t) = r t + (1 - r) t^2: slope 1 at the knee (no kink), monotonic."""
        r, k = self._ratio, self.knee
        if r >= 1.0:
            return display
        out = display.astype(np.float32, copy=True)
        above = out > k
        t = np.clip((out[above] - k) / (self.top - k), 0.0, 1.0)
        out[above] = k + (1.0 - k) * (r * t + (1.0 - r) * t * t)
        return out

    def _unstretch(self, display: np.ndarray) -> np.ndarray:
        r, k = self._ratio, self.knee
        if r >= 1.0:
            return display
        out = display.astype(np.float32, copy=True)
        above = out > k
        u = np.clip((out[above].astype(np.float64) - k) / (1.0 - k), 0.0, 1.0)
        t = 2.0 * u / (r + np.sqrt(r * r + 4.0 * (1.0 - r) * u))     # the root of (1-r)t^2 + rt - u, stably
        out[above] = k + t * (self.top - k)
        return out

    def to_model(self, rgb: np.ndarray) -> np.ndarray:
        """Any (..., 3) array (half or float) -> float32 in [0, 1]; never NaN or Inf."""
        return _chunked(rgb, lambda part: self._model(self.colour._view(part)))

    def from_view(self, shown: np.ndarray) -> np.ndarray:
        """The plain view's values of a plate (``ColourTransform.to_model``) -> what ``to_model`` gives for it: the
        stretch alone (one view of a plate serves any encoding)."""
        return _chunked(shown, self._model)

    def _model(self, display: np.ndarray) -> np.ndarray:
        return np.clip(self._stretch(display), 0.0, 1.0)     # = the stretch of the view clipped to [0, 1] first

    def from_model(self, rgb: np.ndarray) -> np.ndarray:
        """Model pixels back to the plate's space, never above the ceiling; a model that made NaN or Inf fails
        the job (never a take with holes in it)."""
        if not np.isfinite(rgb).all():
            raise errors.RequestError("the model produced NaN or infinite pixels (a half-precision overflow or a "
                                      "diverged adapter?); nothing was written for this frame", code=errors.JOB_FAILED)
        if self.colour.raw:
            return rgb.astype(np.float32)

        def back(part: np.ndarray) -> np.ndarray:
            linear = self.colour._apply(self._unstretch(np.clip(part, 0.0, 1.0)), inverse=True)
            return np.minimum(linear, np.float32(self.ceiling))
        return _chunked(rgb, back)

    def to_dict(self) -> dict:
        return {"ceiling": self.ceiling, "knee": self.knee, "top": self.top, "view": self.colour.describe()}


def _chunked(rgb: np.ndarray, convert) -> np.ndarray:
    """``convert`` (float32 (n, 3) -> (n, 3), may work in place) over ``rgb`` a bounded run of pixels at a time,
    into one float32 result: the temporaries of a colour conversion stay small whatever the frame's size."""
    out = np.empty(rgb.shape, np.float32)
    source, target = rgb.reshape(-1, 3), out.reshape(-1, 3)
    for start in range(0, len(source), _CHUNK):
        part = source[start:start + _CHUNK].astype(np.float32)     # a copy: ``convert`` may write to it
        target[start:start + len(part)] = convert(part)
    return out
