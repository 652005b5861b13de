"""A generator of hostile files: what studio pipelines (and accidents, and attackers) put where a plate, a mask
or an adapter should be. Every function writes real files and returns what the tests need to judge the result.

EXRs are written with the ASWF ``OpenEXR`` bindings, so every channel keeps its own type (half RGB, float Z,
uint32 ids) and files can have several parts and data windows that differ from the display window.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import OpenEXR


def window(x0: int, y0: int, x1: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
    """An EXR box (inclusive corners)."""
    return np.array([x0, y0], np.int32), np.array([x1, y1], np.int32)


def exr(path: Path, channels: dict[str, np.ndarray], data_origin: tuple[int, int] = (0, 0),
        display: tuple[int, int] | None = None, parts: list[tuple[str, dict[str, np.ndarray], tuple[int, int]]] = (),
        extra: dict | None = None, compression=OpenEXR.ZIP_COMPRESSION) -> Path:
    """Write ``channels`` (each (h, w) in its own dtype) with the data window's top-left at ``data_origin`` and a
    display window of ``display`` (width, height; default: the data window's size at 0, 0). ``parts``: further
    parts as (name, channels, origin) make the file multi-part."""
    height, width = next(iter(channels.values())).shape
    dw, dh = display or (width, height)
    display_window = window(0, 0, dw - 1, dh - 1)

    def header(shape, origin):
        h, w = shape
        return {"compression": compression, "type": OpenEXR.scanlineimage, "displayWindow": display_window,
                "dataWindow": window(origin[0], origin[1], origin[0] + w - 1, origin[1] + h - 1), **(extra or {})}

    first = header((height, width), data_origin)
    if not parts:
        OpenEXR.File(first, dict(channels)).write(str(path))
        return path
    all_parts = [OpenEXR.Part(first, dict(channels), name="beauty")]
    for name, more, origin in parts:
        all_parts.append(OpenEXR.Part(header(next(iter(more.values())).shape, origin), dict(more), name=name))
    OpenEXR.File(all_parts).write(str(path))
    return path


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Scene-linear RGB with detail everywhere (0.02..4.0), so a pixel moved or rewritten shows."""
    rng = np.random.default_rng(seed)
    return np.exp(rng.uniform(np.log(0.02), np.log(4.0), (height, width, 3))).astype(np.float32)


def aov_plate(path: Path, height: int, width: int, seed: int = 0, nan_at=(), inf_at=(),
              origin: tuple[int, int] = (0, 0), display: tuple[int, int] | None = None, depth_part: bool = False) -> dict:
    """A render as pipelines write it: half RGBA, float Z, uint32 object ids (values far past 2^24, which a
    float conversion would corrupt), optionally NaN/Inf samples in R, an offset data window and a second part
    with depth. Returns the channels written."""
    rgb = texture(height, width, seed)
    channels = {"R": rgb[..., 0].astype(np.float16), "G": rgb[..., 1].astype(np.float16),
                "B": rgb[..., 2].astype(np.float16), "A": np.ones((height, width), np.float16),
                "Z": np.random.default_rng(seed + 1).uniform(1, 1e4, (height, width)).astype(np.float32),
                "id": (np.arange(height * width, dtype=np.uint32).reshape(height, width) * 40_503 + 3_000_000_019)}
    for y, x in nan_at:
        channels["R"][y, x] = np.nan
    for y, x in inf_at:
        channels["G"][y, x] = np.inf
    parts = []
    if depth_part:
        parts = [("depth", {"depth.Z": np.full((height, width), 7.5, np.float32)}, origin)]
    exr(path, channels, data_origin=origin, display=display, parts=parts)
    return channels


def mask(path: Path, box: tuple[slice, slice], height: int, width: int, origin=(0, 0),
         display: tuple[int, int] | None = None, nan_rows=()) -> Path:
    """A one-channel (A) matte, 1 inside ``box`` (in the mask's own array coordinates)."""
    values = np.zeros((height, width), np.float16)
    values[box] = 1.0
    for row in nan_rows:
        values[row, :] = np.nan
    return exr(path, {"A": values}, data_origin=origin, display=display)


def crafted_size(src: Path, dst: Path, width: int, height: int) -> Path:
    """A copy of ``src`` whose header claims a ``width`` x ``height`` data window (pixels never written)."""
    data = bytearray(src.read_bytes())
    key = b"dataWindow\x00box2i\x00" + struct.pack("<i", 16)
    at = data.index(key) + len(key)
    x0, y0, _, _ = struct.unpack_from("<4i", data, at)
    struct.pack_into("<4i", data, at, x0, y0, x0 + width - 1, y0 + height - 1)
    dst.write_bytes(bytes(data))
    return dst


def truncated(src: Path, dst: Path, fraction: float = 0.6) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def garbage(dst: Path, magic: bool = True, size: int = 4096) -> Path:
    """Random bytes, behind EXR's magic number (so only the header parser can refuse it) or not."""
    body = np.random.default_rng(size).integers(0, 256, size, np.uint8).tobytes()
    dst.write_bytes((b"\x76\x2f\x31\x01" if magic else b"") + body)
    return dst


def fifo(dst: Path) -> Path:
    os.mkfifo(dst)
    return dst


def link(dst: Path, target: str | Path) -> Path:
    os.symlink(target, dst)
    return dst


# -- adapter folders ------------------------------------------------------------------------------------
def hostile_adapters(folder: Path, good: Path) -> dict[str, str]:
    """Copies of the working adapter ``good`` broken one way each, in ``folder``; returns name -> what is wrong.

    ``good`` must be a ready adapter (manifest + diffusers-format weights) for the server's model."""
    import shutil

    from safetensors.torch import load_file, save_file

    cases = {}

    def copy(name: str) -> Path:
        target = folder / name
        shutil.copytree(good, target)
        return target

    def manifest(target: Path) -> dict:
        return json.loads((target / "manifest.json").read_text())

    (copy("array_manifest") / "manifest.json").write_text("[1, 2, 3]")
    cases["array_manifest"] = "JSON list"
    target = copy("huge_field")
    (target / "manifest.json").write_text(json.dumps({**manifest(target), "licence": "x" * 2_000_000}))
    cases["huge_field"] = "larger than"
    target = copy("wrong_types")
    (target / "manifest.json").write_text(json.dumps({**manifest(target), "character": {"first": "Ann"},
                                                      "base_model": "sd15"}))
    cases["wrong_types"] = "not a string"
    target = copy("fifo_manifest")
    (target / "manifest.json").unlink()
    fifo(target / "manifest.json")
    cases["fifo_manifest"] = "not a regular file"
    target = copy("zero_manifest")
    (target / "manifest.json").unlink()
    link(target / "manifest.json", "/dev/zero")
    cases["zero_manifest"] = "outside the adapters folder"
    target = copy("deep_manifest")
    (target / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    cases["deep_manifest"] = "unreadable"
    target = copy("zero_weights")
    (target / "pytorch_lora_weights.safetensors").unlink()
    link(target / "pytorch_lora_weights.safetensors", "/dev/zero")
    cases["zero_weights"] = "outside the adapters folder"
    target = copy("half_unknown")
    weights = load_file(target / "pytorch_lora_weights.safetensors")
    bogus = {k.replace("unet.", "unet.no_such_block.", 1): v.clone() for k, v in weights.items()}
    save_file({**weights, **bogus}, target / "pytorch_lora_weights.safetensors")
    cases["half_unknown"] = "match no layer"
    outside = folder.parent / f"{folder.name}-outside"
    shutil.copytree(good, outside / "escaped")
    link(folder / "escaped", outside / "escaped")
    cases["escaped"] = "outside the adapters folder"
    return cases
