"""Small image outputs of training: PNG previews and a contact sheet of the frames grouped by view."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import OpenImageIO as oiio

from .dataset import STANDARD_VIEWS, Dataset


def write_png(path: Path, rgb: np.ndarray) -> None:
    spec = oiio.ImageSpec(rgb.shape[1], rgb.shape[0], 3, oiio.UINT8)
    out = oiio.ImageOutput.create(str(path))
    if out is None or not out.open(str(path), spec):
        raise OSError(f"cannot write {path}: {oiio.geterror()}")
    out.write_image(np.ascontiguousarray(np.clip(rgb, 0, 1), dtype=np.float32))
    out.close()


def contact_sheet(dataset: Dataset, path: Path, columns: int = 8) -> Path:
    """One row band per view (standard views first, untagged last); each frame as its training square."""
    order = list(STANDARD_VIEWS) + sorted({f.view for f in dataset.frames} - set(STANDARD_VIEWS))
    rows = []
    for view in order:
        frames = [f for f in dataset.frames if f.view == view]
        for start in range(0, len(frames), columns):
            tiles = [f.rgb for f in frames[start:start + columns]]
            size = tiles[0].shape[0]
            tiles += [np.zeros_like(tiles[0])] * (columns - len(tiles))
            row = np.concatenate(tiles, axis=1)
            row[: max(1, size // 16), :, :] = (0.9, 0.6, 0.1)   # band marker: a new view starts here
            rows.append(row)
    if not rows:
        raise ValueError("no frames for a contact sheet")
    width = max(r.shape[1] for r in rows)
    write_png(path, np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0))
    return path
