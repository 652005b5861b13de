"""Reference frames for training: pixels, optional masks, captions and view tags.

Layout the loader understands (all optional except the frames)::

    FRAMES/                      frames in any format OpenImageIO reads (EXR, TIFF, PNG, JPEG, DPX)
    FRAMES/back/hero_017.exr     a folder named after a standard view tags the frames inside it
    FRAMES/masks/hero_017.png    a mask with the frame's stem (or FRAMES/hero_017_mask.png beside it)
    FRAMES/hero_017.txt          a caption for that frame
    FRAMES/frames.json           sidecar: {"hero_017.exr": {"view": "back", "caption": "..."}}

Problems that make a frame unusable (unreadable, channel counts that differ, a mask of another
size) are collected, not raised one at a time: the data report lists them all at once.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Callable
from pathlib import Path

import numpy as np
import OpenImageIO as oiio

from bodydouble import errors, protocol
from bodydouble.jobspec import TEXT_LIMITS
from bodydouble.jobspec import FillRequest

from ..imaging import frames as frame_io
from ..imaging import regions
from ..imaging.colour import ColourTransform
from ..models.identity import file_sha256
from ..paths import AllowedRoots

FILL_CONTEXT = next(f.default for f in fields(FillRequest) if f.name == "context")   # fill's framing
STANDARD_VIEWS = ("front", "three-quarter-left", "three-quarter-right", "profile-left", "profile-right", "back", "top")
IMAGE_SUFFIXES = {".exr", ".tif", ".tiff", ".png", ".jpg", ".jpeg", ".dpx"}
SIDECAR = "frames.json"
MASK_FOLDER = "masks"


@dataclass
class TrainingFrame:
    path: Path
    sha256: str                 # of the file: provenance
    content_hash: str           # of the decoded pixels: exact duplicates across formats
    width: int
    height: int
    channels: int
    colourspace: str
    rgb: np.ndarray             # float32 (H, W, 3) display-referred [0, 1], what the model sees
    mask: np.ndarray | None     # float32 (H, W) in [0, 1]: the character, or None
    caption: str = ""
    view: str = ""


@dataclass
class Dataset:
    frames: list[TrainingFrame] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)    # blocking: training refuses, even when forced
    sources: list[str] = field(default_factory=list)


def _is_mask(path: Path) -> bool:
    return path.parent.name == MASK_FOLDER or path.stem.endswith("_mask")


def discover(inputs: list[str | Path]) -> list[Path]:
    """Frame files: the files given, and the images in each folder given (and its view subfolders)."""
    found: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found += sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                            and not _is_mask(p) and not any(part.startswith(".") for part in p.relative_to(item).parts))
        else:
            found.append(item)
    return found


def _inside(path: Path, roots: AllowedRoots | None) -> bool:
    try:
        return roots is None or bool(roots.check(path))
    except errors.RequestError:
        return False


def _sidecar(path: Path, roots: AllowedRoots | None = None) -> dict:
    for folder in (path.parent, path.parent.parent):
        sidecar = folder / SIDECAR
        if sidecar.is_file() and _inside(sidecar, roots):   # a frame at a root's top never reads above the root
            try:
                entries = json.loads(sidecar.read_text())
                if not isinstance(entries, dict):
                    raise ValueError("expected an object of file name -> {view, caption}")
            except ValueError as exc:
                raise errors.RequestError(f"{sidecar} is not a valid sidecar: {exc}", code=errors.INVALID_REQUEST) from None
            entry = entries.get(path.name) or entries.get(str(path.relative_to(folder))) or {}
            return entry if isinstance(entry, dict) else {}
    return {}


def _find_mask(path: Path) -> Path | None:
    for folder in (path.parent, path.parent.parent):
        for candidate in sorted((folder / MASK_FOLDER).glob(f"{path.stem}.*")) + sorted(folder.glob(f"{path.stem}_mask.*")):
            if candidate.suffix.lower() in IMAGE_SUFFIXES:
                return candidate
    return None


def _view_of(path: Path, sidecar: dict) -> str:
    if sidecar.get("view"):
        return str(sidecar["view"])
    for part in reversed(path.parent.parts):
        if part in STANDARD_VIEWS:
            return part
    return ""


def _caption_of(path: Path, sidecar: dict) -> str:
    if sidecar.get("caption"):
        return str(sidecar["caption"])
    text = path.with_suffix(".txt")
    if not text.is_file():
        return ""
    # A caption is a line or two of text: read a bounded amount, and bytes that are not UTF-8 (a caption saved
    # in a legacy code page) become U+FFFD instead of ending the job; capped like a request's prompt.
    with open(text, "rb") as handle:
        data = handle.read(4 * TEXT_LIMITS["prompt"])
    return data.decode("utf-8", errors="replace").replace("\x00", "").strip()[:TEXT_LIMITS["prompt"]]


def default_colourspace(spec: oiio.ImageSpec, path: Path) -> str:
    """Float files (EXR, float TIFF) are scene-linear ACEScg by studio convention; integer files are display-referred."""
    declared = spec.get_string_attribute("oiio:ColorSpace")
    if spec.format.basetype in (oiio.HALF, oiio.FLOAT, oiio.DOUBLE):
        return "ACEScg" if not declared or "linear" in declared.lower() or "acescg" in declared.lower() else declared
    return "raw"


def load(inputs: list[str | Path], resolution: int, roots: AllowedRoots | None = None,
         colourspace: str = "auto", limits: protocol.Limits | None = None,
         on_frame: Callable[[int, int, Path], None] | None = None) -> Dataset:
    """Read every frame (under ``roots`` when given: a server job) at ``resolution`` x ``resolution``.

    ``on_frame(index, total, path)`` is called before each frame is read: progress for a large set, and
    the place to stop it (by raising)."""
    limits = limits or protocol.Limits()
    dataset = Dataset(sources=[str(i) for i in inputs])
    if roots is not None:   # refused outright, not reported: a folder outside the roots is never even listed
        inputs = [roots.check(item, f"frames[{i}]") for i, item in enumerate(inputs)]
    paths = discover(inputs)
    if not paths:
        dataset.problems.append(f"no frames found in {', '.join(map(str, inputs)) or '(nothing given)'}")
        return dataset
    # A named colour space is checked once, up front: an unknown name is one clear error, not one per frame.
    transforms = {} if colourspace == "auto" else {colourspace: ColourTransform(colourspace)}
    for index, path in enumerate(paths):
        if on_frame is not None:
            on_frame(index, len(paths), path)
        try:
            if roots is not None:
                path = roots.readable_file(path, "training frame")
            frame = frame_io.read_frame(path, limits, what="training frame")
            space = colourspace if colourspace != "auto" else default_colourspace(frame.spec, path)
            transform = transforms.get(space) or transforms.setdefault(space, ColourTransform(space))
            side = _sidecar(path, roots)
            mask = None
            mask_path = _find_mask(path)
            if mask_path is not None:
                if roots is not None:
                    mask_path = roots.readable_file(mask_path, "training mask")
                mask_frame = frame_io.read_frame(mask_path, limits, what="training mask")
                if mask_frame.shape != frame.shape:
                    raise errors.RequestError(
                        f"mask {mask_path.name} is {mask_frame.shape[1]}x{mask_frame.shape[0]} but frame {path.name} is "
                        f"{frame.shape[1]}x{frame.shape[0]}", code=errors.INVALID_REQUEST)
                mask = frame_io.mask_channel(mask_frame, None)
        except (errors.RequestError, OSError) as exc:
            dataset.problems.append(str(exc))
            continue
        pixels = frame.pixels
        rgb = np.repeat(pixels[:, :, :1], 3, axis=2) if pixels.shape[2] < 3 else pixels[:, :, :3]
        dataset.frames.append(TrainingFrame(
            path=path, sha256=file_sha256(path), content_hash=hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest(),
            width=frame.shape[1], height=frame.shape[0], channels=pixels.shape[2], colourspace=space,
            # Fill's encoding (the view with its highlight stretch), not the plain view: an adapter learns the
            # pixels fill will hand the model.
            rgb=framed(transform.encode(rgb)[1], mask, resolution),
            mask=None if mask is None else np.clip(framed(mask[:, :, None], mask, resolution)[:, :, 0], 0.0, 1.0),
            caption=_caption_of(path, side), view=_view_of(path, side),
        ))
    counts = sorted({f.channels for f in dataset.frames})
    if len(counts) > 1:
        by_count = {c: [f.path.name for f in dataset.frames if f.channels == c][:3] for c in counts}
        dataset.problems.append("mixed channel counts: " + "; ".join(
            f"{c} channels ({', '.join(names)}...)" for c, names in by_count.items())
            + ". Convert the set to one layout (RGB or RGBA) first")
    return dataset


def framed(pixels: np.ndarray, matte: np.ndarray | None, size: int) -> np.ndarray:
    """A training frame at ``size`` x ``size``: with a matte, framed as fill frames a plate (the matte's box plus
    fill's default context, grown to a square), so the character is learned at the scale fill generates it;
    without one (or an empty one), the centre square."""
    if matte is None or not (matte > 0).any():
        return square(pixels, size)
    height, width = matte.shape
    box = regions.context_box(regions.mask_box(matte), height, width, FILL_CONTEXT)
    side = min(max(box.height, box.width), height, width)
    top = min(max(0, (box.y0 + box.y1 - side) // 2), height - side)
    left = min(max(0, (box.x0 + box.x1 - side) // 2), width - side)
    return regions.resize(pixels[top:top + side, left:left + side], size, size)


def square(pixels: np.ndarray, size: int) -> np.ndarray:
    """Centre crop to a square, then resize: training images keep their aspect (no stretching)."""
    height, width = pixels.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return regions.resize(pixels[top:top + side, left:left + side], size, size)
