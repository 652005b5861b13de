"""Long extensions: which frames each video pipeline call conditions on, regenerates and adds.

A call makes ``cond + overlap + new (+ pad)`` frames, at most the model's window and following its frame rule
(``multiple * k + 1``). The first call is conditioned on the last K plate frames. Each later call is
conditioned on the K frames before the previous call's last ``overlap`` frames, regenerates those (they are
cross-faded with the previous call's version, hiding the seam between calls) and adds new ones. ``pad``
frames only satisfy the frame rule and are dropped.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bodydouble import errors


@dataclass(frozen=True)
class Chunk:
    index: int
    start: int          # index, among the generated frames, of the first frame this call outputs
    cond: int           # known frames it is conditioned on
    overlap: int        # frames the previous call made that this one regenerates and blends
    new: int            # frames nobody made before
    pad: int            # extra frames for the frame rule, dropped

    @property
    def length(self) -> int:
        return self.cond + self.overlap + self.new + self.pad

    @property
    def outputs(self) -> int:
        return self.overlap + self.new


def _valid_length(length: int, multiple: int) -> int:
    """The smallest frame count >= length that follows the rule multiple * k + 1."""
    return -(-(length - 1) // multiple) * multiple + 1


def plan(count: int, conditioning: int, overlap: int, window: int, multiple: int) -> list[Chunk]:
    longest = (window - 1) // multiple * multiple + 1
    if conditioning + 1 > longest:
        raise errors.RequestError(
            f"conditioning {conditioning} leaves no room for new frames in the video model's window of {longest} "
            f"frames per call; use at most {longest - 1}", code=errors.INVALID_REQUEST)
    first_new = min(count, longest - conditioning)
    # The window rule holds for every request (a one-chunk extend today is a two-chunk one with another model);
    # "overlap shorter than a chunk" only matters once there is a second chunk.
    if conditioning + overlap + 1 > longest or (count > first_new and overlap >= first_new):
        raise errors.RequestError(
            f"overlap {overlap} with conditioning {conditioning} does not fit the video model's window of {longest} "
            f"frames per call (a chunk needs conditioning + overlap + at least 1 new frame, and overlap must be "
            f"shorter than a chunk)", code=errors.INVALID_REQUEST)
    chunks, made = [], 0
    while made < count:
        blend = overlap if chunks else 0
        new = min(count - made, longest - conditioning - blend)
        length = conditioning + blend + new
        chunks.append(Chunk(index=len(chunks), start=made - blend, cond=conditioning, overlap=blend, new=new,
                            pad=_valid_length(length, multiple) - length))
        made += new
    return chunks


def blend_weights(overlap: int) -> np.ndarray:
    """Weight of the newer call for each overlapping frame: a linear cross-fade, never exactly 0 or 1."""
    return (np.arange(1, overlap + 1, dtype=np.float32) / (overlap + 1))
