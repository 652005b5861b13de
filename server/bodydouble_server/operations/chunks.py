"""Sequences longer than the video model's window (extend, fill's video engine): which frames each pipeline
call conditions on, regenerates and adds, and the loop over those calls.

A call makes ``cond + overlap + new (+ pad)`` frames, at most the model's window and following its frame rule
(``multiple * k + 1``). The first call is conditioned on ``lead`` known frames (extend: the last K plate frames;
fill: none, nothing comes before the shot). Each later call is conditioned on the K frames before the previous
call's last ``overlap`` frames, regenerates those (they are cross-faded with the previous call's version, hiding
the seam between calls) and adds new ones. ``pad`` frames only satisfy the frame rule and are dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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


def valid_length(length: int, multiple: int) -> int:
    """The smallest frame count >= length that follows the rule multiple * k + 1."""
    return -(-(length - 1) // multiple) * multiple + 1


def plan(count: int, conditioning: int, overlap: int, window: int, multiple: int,
         lead: int | None = None) -> list[Chunk]:
    """The calls that make ``count`` frames; ``lead``: known frames of the first call (default ``conditioning``)."""
    lead = conditioning if lead is None else lead
    longest = (window - 1) // multiple * multiple + 1
    if max(conditioning, lead) + 1 > longest:
        raise errors.RequestError(
            f"conditioning {max(conditioning, lead)} leaves no room for new frames in the video model's window of "
            f"{longest} frames per call; use at most {longest - 1}", code=errors.INVALID_REQUEST)
    first_new = min(count, longest - lead)
    # The window rule holds for every request (a one-chunk extend today is a two-chunk one with another model);
    # "overlap shorter than a chunk" only matters once there is a second chunk.
    if conditioning + overlap + 1 > longest or (count > first_new and overlap >= first_new):
        raise errors.RequestError(
            f"overlap {overlap} with conditioning {conditioning} does not fit the video model's window of {longest} "
            f"frames per call (a chunk needs conditioning + overlap + at least 1 new frame, and overlap must be "
            f"shorter than a chunk)", code=errors.INVALID_REQUEST)
    chunks, made = [], 0
    while made < count:
        blend, cond = (overlap, conditioning) if chunks else (0, lead)
        new = min(count - made, longest - cond - blend)
        length = cond + blend + new
        chunks.append(Chunk(index=len(chunks), start=made - blend, cond=cond, overlap=blend, new=new,
                            pad=valid_length(length, multiple) - length))
        made += new
    return chunks


def run(chunks: list[Chunk], tail: np.ndarray, keep: int, make: Callable, emit: Callable) -> np.ndarray:
    """Each call of the plan in turn: ``make(chunk, known)`` returns the chunk's ``outputs`` frames (the
    overlap first; ``known``: its conditioning frames, the tail's last ``cond`` before the overlap); the overlap
    is cross-faded with the previous call's version; ``emit(chunk, frames)`` takes them (to disk). ``tail``: the
    frames so far, at the model's size, of which only the last ``keep`` are kept (what a later call looks back
    at: memory follows the window, never the shot). Returns the last tail."""
    for chunk in chunks:
        end = len(tail) - chunk.overlap
        made = make(chunk, tail[max(0, end - chunk.cond):end])
        if chunk.overlap:
            w = blend_weights(chunk.overlap)[:, None, None, None]
            made[:chunk.overlap] = (1.0 - w) * tail[end:] + w * made[:chunk.overlap]
        joined = np.concatenate([tail[:end], made]) if end else made
        tail = joined[max(0, len(joined) - keep):]
        emit(chunk, made)
    return tail


def progress(job, chunk: Chunk, chunks: int, first: int, count: int):
    """The ``on_step`` of one call: a progress event per denoising step (and a cancel between steps)."""
    def on_step(step: int, steps: int, preview=None) -> None:
        job.check_cancelled()
        job.report((chunk.index + step / steps) / chunks, f"chunk {chunk.index + 1}/{chunks}: step {step}/{steps}",
                   preview=preview, chunk=chunk.index + 1, chunks=chunks, step=step, steps=steps,
                   frame=first + chunk.start, frames=count)
    return on_step


def blend_weights(overlap: int) -> np.ndarray:
    """Weight of the newer call for each overlapping frame: a linear cross-fade, never exactly 0 or 1."""
    return (np.arange(1, overlap + 1, dtype=np.float32) / (overlap + 1))
