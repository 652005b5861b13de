"""Reading plates and masks (files or wire buffers) and writing EXRs atomically with provenance.

A frame keeps every part of its file and every channel in its own pixel type (half, float, uint32 ids),
with each part's header: data and display windows, pixel aspect, the studio's attributes. Operations
convert only what the model needs (the colour part's R, G, B, or the mask channel) to float32, and write
back only the pixels they changed, so everything else comes back bit-identical. EXRs go through the ASWF
``OpenEXR`` bindings (per-channel types, multi-part); other formats (DPX, TIFF, PNG, JPEG) through
OpenImageIO, as one part of half (8-bit sources) or float channels.

Coordinates: a frame's arrays cover its colour part's *data window*; ``origin`` is that window's top-left
corner in display space. Masks are placed by their own data window, so autocropped masks and offset
windows line up with the plate pixel for pixel.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import OpenEXR
import OpenImageIO as oiio

from bodydouble import atomic, errors, protocol

_DEFAULT_NAMES = {1: ["Y"], 2: ["Y", "A"], 3: ["R", "G", "B"], 4: ["R", "G", "B", "A"]}
_ALPHA_NAMES = ("A", "alpha", "a")
_FIRST = {"R": 0, "G": 1, "B": 2, "A": 3}
# Header entries the writer derives itself (or that we set on purpose: lossless compression for every take).
_DERIVED = ("channels", "chunkCount", "name", "compression", "version")
_DEEP = {"deepscanline", "deeptile"}
_INT32 = (-2**31, 2**31 - 1)

# OpenEXR decodes and encodes a file's chunks (16 scanlines each with ZIP) on its global thread pool, which is
# off (0) unless someone sets it: a 4K take's ZIP write is ~5x slower on one thread. The bindings release the GIL.
if OpenEXR.global_thread_count() == 0:
    OpenEXR.set_global_thread_count(os.cpu_count() or 1)


def _box(lo, hi) -> tuple[np.ndarray, np.ndarray]:
    return np.array(lo, np.int32), np.array(hi, np.int32)


@dataclass
class Part:
    """One EXR part: its header and its channels, each a 2-D array in the file's own type."""

    header: dict
    channels: dict[str, np.ndarray]
    name: str | None = None
    sampling: dict[str, tuple[int, int]] = field(default_factory=dict)   # only channels not sampled 1x1

    @property
    def data_window(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), inclusive, in display space."""
        lo, hi = self.header["dataWindow"]
        return int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])

    @property
    def shape(self) -> tuple[int, int]:
        x0, y0, x1, y1 = self.data_window
        return y1 - y0 + 1, x1 - x0 + 1


@dataclass
class Frame:
    parts: list[Part]
    source: str                     # path, or "buffer"
    colour: int = 0                 # index of the part that holds the picture (R, G, B)

    # -- layout -----------------------------------------------------------------------------------
    @property
    def part(self) -> Part:
        return self.parts[self.colour]

    @property
    def shape(self) -> tuple[int, int]:
        return self.part.shape

    @property
    def origin(self) -> tuple[int, int]:
        """(x, y) of the data window's first pixel in display space."""
        x0, y0, _, _ = self.part.data_window
        return x0, y0

    @property
    def display_window(self) -> tuple[int, int, int, int]:
        lo, hi = self.part.header.get("displayWindow", self.part.header["dataWindow"])
        return int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])

    @property
    def pixel_aspect(self) -> float:
        value = float(self.part.header.get("pixelAspectRatio", 1.0))
        return value if math.isfinite(value) and value > 0 else 1.0

    @property
    def channels(self) -> list[str]:
        """The colour part's channels, R G B A first (as OpenImageIO orders them), then the rest."""
        names = list(self.part.channels)
        return sorted(names, key=lambda n: (_FIRST.get(n, 4), names.index(n)))

    @property
    def rgb_names(self) -> tuple[str, str, str] | None:
        names = set(self.part.channels)
        if {"R", "G", "B"} <= names:
            return "R", "G", "B"
        for layer in sorted({n.rpartition(".")[0] for n in names if "." in n}):
            trio = tuple(f"{layer}.{c}" for c in "RGB")
            if set(trio) <= names:
                return trio
        return None

    @property
    def alpha_name(self) -> str | None:
        names = self.part.channels
        for candidate in _ALPHA_NAMES:
            if candidate in names:
                return candidate
        rgb = self.rgb_names
        if rgb and "." in rgb[0]:
            layered = rgb[0].rpartition(".")[0] + ".A"
            return layered if layered in names else None
        return None

    @property
    def alpha_index(self) -> int | None:
        alpha = self.alpha_name
        return None if alpha is None else self.channels.index(alpha)

    @property
    def pixel_type(self) -> str:
        """``half`` when every channel of the picture is half, else ``float`` (how the wire carries it)."""
        return "half" if all(a.dtype == np.float16 for a in self.part.channels.values()) else "float"

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for p in self.parts for a in p.channels.values())

    @functools.cached_property
    def spec(self) -> oiio.ImageSpec | None:
        """The file's header as OpenImageIO sees it (training reads its colour-space hints)."""
        if self.source == "buffer":
            return None
        inp = oiio.ImageInput.open(self.source)
        if inp is None:
            return None
        try:
            return oiio.ImageSpec(inp.spec())
        finally:
            inp.close()

    # -- pixels -----------------------------------------------------------------------------------
    @property
    def pixels(self) -> np.ndarray:
        """Every channel of the picture as float32 (H, W, C), in ``channels`` order (a copy: costly on big plates)."""
        return np.stack([self.part.channels[n].astype(np.float32) for n in self.channels], axis=2)

    def channel(self, name: str) -> np.ndarray:
        """One channel of the picture as float32 (H, W)."""
        if self.part.sampling.get(name, (1, 1)) != (1, 1):
            raise errors.RequestError(f"channel {name!r} of {self.source} is subsampled; use a full-resolution one",
                                      code=errors.INVALID_REQUEST)
        return self.part.channels[name].astype(np.float32)

    def rgb(self, ys: slice = slice(None), xs: slice = slice(None), native: bool = False) -> np.ndarray:
        """The picture's R, G, B (of a region) as (h, w, 3): float32, or with ``native`` half when all three are
        half (a large crop then costs half the memory)."""
        names = self.require_rgb("this operation")
        dtypes = {self.part.channels[n].dtype for n in names}
        dtype = np.float16 if native and dtypes == {np.dtype(np.float16)} else np.float32
        return np.stack([self.part.channels[n][ys, xs].astype(dtype, copy=False) for n in names], axis=2)

    def require_rgb(self, operation: str) -> tuple[str, str, str]:
        names = self.rgb_names
        if names is None:
            raise errors.RequestError(f"{self.source} has no R, G, B channels (it has {self.channels}); "
                                      f"{operation} needs a colour picture", code=errors.INVALID_REQUEST)
        for n in names:
            if self.part.channels[n].dtype.kind != "f" or self.part.sampling.get(n, (1, 1)) != (1, 1):
                raise errors.RequestError(f"channel {n!r} of {self.source} is not a full-resolution half or float "
                                          "channel; a colour picture must be", code=errors.INVALID_REQUEST)
        return names

    def set_rgb(self, ys: slice, xs: slice, values: np.ndarray, where: np.ndarray | None = None) -> None:
        """Write float32 ``values`` into R, G, B of the region: (h, w, 3) for all of it, or with ``where`` (h, w)
        the (n, 3) values of its set pixels only: every other sample keeps its bits."""
        for i, name in enumerate(self.require_rgb("writing")):
            region = self.part.channels[name][ys, xs]
            if where is None:
                region[...] = values[:, :, i]
            else:
                region[where] = values[:, i].astype(region.dtype)

    def wire(self) -> np.ndarray:
        """The picture as it goes back to a client: (H, W, C) float16 for all-half pictures, else float32."""
        dtype = np.float16 if self.pixel_type == "half" else np.float32
        return np.stack([self.part.channels[n].astype(dtype) for n in self.channels], axis=2)

    def blank(self) -> "Frame":
        """A frame of the same layout (every part, window, channel type), all zero but an opaque alpha."""
        parts = [dataclasses.replace(p, header=dict(p.header), sampling=dict(p.sampling),
                                     channels={n: np.zeros_like(a) for n, a in p.channels.items()})
                 for p in self.parts]
        out = Frame(parts=parts, source=self.source, colour=self.colour)
        if out.alpha_name is not None:
            out.part.channels[out.alpha_name][...] = 1
        return out

    def layout(self) -> "Frame":
        """This frame's layout with one-pixel stand-ins for the arrays: what extend keeps of its last plate."""
        parts = [dataclasses.replace(p, header=dict(p.header), sampling=dict(p.sampling),
                                     channels={n: np.broadcast_to(np.zeros(1, a.dtype), a.shape)
                                               for n, a in p.channels.items()})
                 for p in self.parts]
        return Frame(parts=parts, source=self.source, colour=self.colour)


# -- reading --------------------------------------------------------------------------------------------
def _regular_file(path: Path, what: str) -> None:
    """FIFOs, devices and sockets are refused before anything opens them (opening a FIFO blocks forever)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise errors.RequestError(f"{what} {path} cannot be read: {exc.strerror}", code=errors.UNREADABLE_FILE) from None
    if not stat.S_ISREG(mode):
        raise errors.RequestError(f"{what} {path} is not a regular file", code=errors.UNREADABLE_FILE)


def _is_exr(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"\x76\x2f\x31\x01"


def read_frame(path: Path, limits: protocol.Limits, what: str = "plate") -> Frame:
    _regular_file(path, what)
    return _read_exr(path, limits, what) if _is_exr(path) else _read_other(path, limits, what)


def check_header(path: Path, limits: protocol.Limits, what: str = "plate") -> None:
    """Everything about a file that its header tells (regular file, readable, not deep, within the limits),
    without decoding a pixel: cheap enough to answer at submit time."""
    _regular_file(path, what)
    if _is_exr(path):
        _exr_headers(path, limits, what)
        return
    _open_checked(path, limits, what).close()


def _open_checked(path: Path, limits: protocol.Limits, what: str):
    """An OpenImageIO input whose header passed the limits (closed again if it did not)."""
    inp = oiio.ImageInput.open(str(path))
    if inp is None:
        raise errors.RequestError(f"{what} {path} is not an image OpenImageIO can read: {oiio.geterror()}",
                                  code=errors.UNREADABLE_FILE)
    try:
        _check_spec(inp.spec(), path, limits, what)
    except BaseException:
        inp.close()
        raise
    return inp


def _check_spec(spec: oiio.ImageSpec, path: Path, limits: protocol.Limits, what: str) -> None:
    if spec.deep:
        raise errors.RequestError(f"{what} {path} is a deep image; flatten it first", code=errors.UNREADABLE_FILE)
    protocol.check_frame_size((spec.height, spec.width, spec.nchannels), limits, what=f"{what} {path}")


def _exr_headers(path: Path, limits: protocol.Limits, what: str) -> list[dict]:
    try:
        headers = [p.header for p in OpenEXR.File(str(path), header_only=True).parts]
    except Exception as exc:   # the bindings raise RuntimeError/ValueError on any damaged header
        raise errors.RequestError(f"{what} {path} is not an EXR OpenEXR can read: {exc}",
                                  code=errors.UNREADABLE_FILE) from None
    total = 0
    for index, header in enumerate(headers):
        kind = getattr(header.get("type"), "name", str(header.get("type", "")))
        if kind in _DEEP:
            raise errors.RequestError(f"{what} {path} part {index} is a deep image; flatten it first",
                                      code=errors.UNREADABLE_FILE)
        try:
            (x0, y0), (x1, y1) = header["dataWindow"]
        except (KeyError, TypeError, ValueError):
            raise errors.RequestError(f"{what} {path} part {index} has no valid data window",
                                      code=errors.UNREADABLE_FILE) from None
        width, height = int(x1) - int(x0) + 1, int(y1) - int(y0) + 1
        if width < 1 or height < 1:
            raise errors.RequestError(f"{what} {path} part {index} has an empty data window ({width}x{height})",
                                      code=errors.UNREADABLE_FILE)
        channels = len(header.get("channels", []))
        total += channels
        protocol.check_frame_size((height, width, max(channels, 1)), limits, what=f"{what} {path}")
    if total > limits.max_channels:
        raise errors.RequestError(f"{what} {path} has {total} channels over {len(headers)} parts; the limit is "
                                  f"{limits.max_channels}", code=errors.TOO_LARGE)
    return headers


def _read_exr(path: Path, limits: protocol.Limits, what: str) -> Frame:
    headers = _exr_headers(path, limits, what)      # before a single pixel is allocated
    try:
        exr = OpenEXR.File(str(path), separate_channels=True)
        parts = []
        for part in exr.parts:
            header = {k: v for k, v in part.header.items() if k not in _DERIVED}
            channels = {name: ch.pixels for name, ch in part.channels.items()}
            sampling = {name: (ch.xSampling, ch.ySampling) for name, ch in part.channels.items()
                        if (ch.xSampling, ch.ySampling) != (1, 1)}
            parts.append(Part(header=header, channels=channels, name=part.name() if len(exr.parts) > 1 else None,
                              sampling=sampling))
    except errors.RequestError:
        raise
    except Exception as exc:
        raise errors.RequestError(f"{what} {path} could not be decoded (truncated or damaged?): {exc}",
                                  code=errors.UNREADABLE_FILE) from None
    # The bindings only warn about a part they could not decode (a truncated file) and leave it out.
    if len(parts) != len(headers):
        raise errors.RequestError(f"{what} {path} could not be decoded (truncated or damaged): "
                                  f"{len(parts)} of {len(headers)} parts read", code=errors.UNREADABLE_FILE)
    for index, (part, header) in enumerate(zip(parts, headers)):
        declared = [c.name for c in header.get("channels", [])]
        for name in declared:
            array = part.channels.get(name)
            if array is None or array.ndim != 2:
                raise errors.RequestError(f"{what} {path} part {index} channel {name!r} could not be decoded",
                                          code=errors.UNREADABLE_FILE)
    colour = next((i for i, p in enumerate(parts) if Frame([p], "").rgb_names), 0)
    return Frame(parts=parts, source=str(path), colour=colour)


def _read_other(path: Path, limits: protocol.Limits, what: str) -> Frame:
    inp = _open_checked(path, limits, what)
    try:
        spec = inp.spec()
        pixels = inp.read_image(0, 0, 0, spec.nchannels, oiio.FLOAT)
        if pixels is None:
            raise errors.RequestError(f"{what} {path} could not be decoded: {inp.geterror()}", code=errors.UNREADABLE_FILE)
    finally:
        inp.close()
    # 8-bit sources round-trip through half exactly enough; wider ones need float.
    dtype = np.float16 if spec.format.basetype in (oiio.HALF, oiio.UINT8, oiio.INT8) else np.float32
    pixels = np.asarray(pixels, dtype=np.float32).reshape(spec.height, spec.width, spec.nchannels)
    header = {"dataWindow": _box((spec.x, spec.y), (spec.x + spec.width - 1, spec.y + spec.height - 1)),
              "displayWindow": _box((spec.full_x, spec.full_y),
                                    (spec.full_x + max(spec.full_width, 1) - 1, spec.full_y + max(spec.full_height, 1) - 1)),
              "pixelAspectRatio": float(spec.get_float_attribute("PixelAspectRatio", 1.0)) or 1.0}
    channels = {name: np.ascontiguousarray(pixels[:, :, i]).astype(dtype) for i, name in enumerate(spec.channelnames)}
    return Frame(parts=[Part(header=header, channels=channels)], source=str(path))


def frame_from_buffer(array: np.ndarray, what: str = "plate") -> Frame:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] < 1:
        raise errors.RequestError(f"{what} buffer must be (H, W) or (H, W, C), got {array.shape}", code=errors.INVALID_REQUEST)
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise errors.RequestError(f"{what} buffer is empty ({array.shape})", code=errors.INVALID_REQUEST)
    # Integer buffers are normalised; 8-bit ones are written back as half, the rest keep float.
    if array.dtype.kind == "u":
        dtype = np.float16 if array.dtype == np.uint8 else np.float32
        pixels = (array.astype(np.float32) / float(np.iinfo(array.dtype).max)).astype(dtype)
    else:
        pixels = array if array.dtype in (np.float16, np.float32) else array.astype(np.float32)
    height, width, count = pixels.shape
    names = _DEFAULT_NAMES.get(count) or ["R", "G", "B", "A"] + [f"C{i}" for i in range(4, count)]
    header = {"dataWindow": _box((0, 0), (width - 1, height - 1)), "displayWindow": _box((0, 0), (width - 1, height - 1)),
              "pixelAspectRatio": 1.0}
    channels = {name: np.array(pixels[:, :, i]) for i, name in enumerate(names)}   # own copies: never the wire's bytes
    return Frame(parts=[Part(header=header, channels=channels)], source="buffer")


# -- masks ----------------------------------------------------------------------------------------------
def mask_channel(mask: Frame, channel: str | None) -> np.ndarray:
    """The (H, W) mask over ``mask``'s own data window: the named channel (any part), else alpha, else the
    first channel."""
    if channel is not None:
        for index, part in enumerate(mask.parts):
            if channel in part.channels:
                return Frame(mask.parts, mask.source, colour=index).channel(channel)
        known = sorted({n for p in mask.parts for n in p.channels})
        raise errors.RequestError(f"mask has no channel {channel!r} (it has {known})", code=errors.INVALID_REQUEST)
    alpha = mask.alpha_name
    return mask.channel(alpha if alpha is not None else mask.channels[0])


def place_mask(mask: Frame, values: np.ndarray, plate: Frame, what: str = "mask") -> np.ndarray:
    """``values`` (over ``mask``'s data window) moved onto the plate's data window, matched in display space.

    Outside the mask's data window the mask is 0 (EXR: no data is black), so an autocropped mask works.
    A buffer (no windows) stands for the plate's data window and must match its size.
    """
    if mask.source == "buffer":
        if values.shape != plate.shape:
            raise errors.RequestError(
                f"{what} is {values.shape[1]}x{values.shape[0]} but the plate is {plate.shape[1]}x{plate.shape[0]}",
                code=errors.INVALID_REQUEST)
        return values
    if plate.source != "buffer" and mask.display_window != plate.display_window:
        raise errors.RequestError(
            f"{what}'s display window {mask.display_window} differs from the plate's {plate.display_window}: "
            "they are not the same picture format", code=errors.INVALID_REQUEST)
    if plate.source == "buffer" and values.shape != plate.shape:
        raise errors.RequestError(
            f"{what} is {values.shape[1]}x{values.shape[0]} but the plate buffer is {plate.shape[1]}x{plate.shape[0]}",
            code=errors.INVALID_REQUEST)
    if plate.source == "buffer" or (mask.origin == plate.origin and values.shape == plate.shape):
        return values
    (mx, my), (px, py) = mask.origin, plate.origin
    height, width = plate.shape
    out = np.zeros((height, width), np.float32)
    # The overlap of the two data windows, in plate coordinates.
    y0, x0 = max(my - py, 0), max(mx - px, 0)
    y1, x1 = min(my - py + values.shape[0], height), min(mx - px + values.shape[1], width)
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = values[y0 + py - my:y1 + py - my, x0 + px - mx:x1 + px - mx]
    return out


def clean_mask(values: np.ndarray) -> tuple[np.ndarray, int]:
    """NaN in a matte means no coverage, +Inf full coverage: the mask and how many samples were repaired."""
    bad = ~np.isfinite(values)
    count = int(bad.sum())
    if count:
        values = np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=0.0)
    return values, count


# -- writing --------------------------------------------------------------------------------------------
def _attribute(value):
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if _INT32[0] <= value <= _INT32[1] else str(value)
    if isinstance(value, float):
        return value
    return str(value)


def write_exr_atomic(path: Path, frame: Frame, attributes: dict) -> None:
    """Write ``frame`` (every part, every channel in its own type, the headers) to ``path`` via a temp file +
    rename: readers never see half a file. Takes are always ZIP (lossless), whatever the source used."""
    parts = []
    for index, part in enumerate(frame.parts):
        header = dict(part.header)
        header["compression"] = OpenEXR.ZIP_COMPRESSION
        tiles = header.get("tiles")
        if tiles is not None and getattr(tiles, "mode", None) not in (None, OpenEXR.ONE_LEVEL):
            header.pop("tiles")      # only level 0 was read: a mip-mapped source becomes a plain image
            header["type"] = OpenEXR.scanlineimage
        if index == frame.colour:
            header["software"] = "BodyDouble"
            header.update({f"bodydouble:{k}": _attribute(v) for k, v in attributes.items()})
        channels = {name: OpenEXR.Channel(np.ascontiguousarray(array), *part.sampling.get(name, (1, 1)))
                    for name, array in part.channels.items()}
        if len(frame.parts) > 1:
            parts.append(OpenEXR.Part(header, channels, name=part.name or f"part{index}"))
        else:
            parts.append((header, channels))
    try:
        exr = OpenEXR.File(parts) if len(parts) > 1 else OpenEXR.File(*parts[0])
        with atomic.atomic_path(path, suffix=".exr") as tmp:
            exr.write(str(tmp))
    except OSError as exc:
        raise errors.write_failed(path, exc) from None
    except (RuntimeError, ValueError) as exc:      # the bindings report a failed write (full disk, permissions) this way
        raise errors.write_failed(path, str(exc)) from None
