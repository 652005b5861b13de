"""File-sequence naming, host-agnostic: ``plate.1001.exr`` <-> ``plate.####.exr`` (no bpy here)."""
from __future__ import annotations

import os
import re

# The last run of digits in the file name (not the folder), as Blender reads image sequences.
_FRAME = re.compile(r"(\d+)(?!.*\d)")


def split_frame(path: str) -> tuple[str, int | None]:
    """``/a/plate.1001.exr`` -> (``/a/plate.####.exr``, 1001); a name without digits -> (path, None)."""
    folder, name = os.path.split(path)
    match = _FRAME.search(name)
    if not match:
        return path, None
    pattern = name[: match.start()] + "#" * len(match.group(1)) + name[match.end():]
    return os.path.join(folder, pattern), int(match.group(1))


def frame_path(pattern: str, frame: int) -> str:
    from bodydouble.jobspec import expand_pattern

    return expand_pattern(pattern, frame)
