"""A job's live preview as a file Nuke can read: plain Python (no ``nuke``), run on the job's worker thread.

Each picture (docs/protocol.md, "Live previews": (H, W, 3) uint8) is written atomically as a new PNG,
``<folder>/preview.<n>.png``, so a Read pointed at it never sees half a file and never shows a cached older picture
under the same name; the files before the last ``KEEP`` are removed.
"""
from __future__ import annotations

import os
import struct
import zlib
from typing import Any

from bodydouble import atomic

KEEP = 2


def png_bytes(image: Any) -> bytes:
    """An 8-bit RGB PNG of ``image`` ((H, W, 3) uint8, top row first)."""
    height, width, channels = image.shape
    if channels != 3 or str(image.dtype) != "uint8":
        raise ValueError(f"a preview is (H, W, 3) uint8, got {image.shape} {image.dtype}")
    rows = b"".join(b"\x00" + image[y].tobytes() for y in range(height))   # filter 0 on every row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)          # 8-bit, truecolour
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b"")


def write_preview(folder: str, image: Any, index: int) -> str:
    """Write picture number ``index`` of a job into ``folder``; returns its path ('/' separators, as Nuke wants)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"preview.{index:04d}.png").replace("\\", "/")
    atomic.write_bytes(path, png_bytes(image))
    for old in range(max(0, index - 16), index - KEEP + 1):
        try:
            os.unlink(os.path.join(folder, f"preview.{old:04d}.png"))
        except FileNotFoundError:
            pass
    return path
