"""Clips of consecutive frames for video training: sequences found by file pattern, cut into clips.

A sequence is the frames of one folder whose names differ only in the frame number (the last run of
digits, as Nuke, Hiero and Blender read sequences: ``hero_walk.1001.exr`` ... ``hero_walk.1040.exr`` are
``hero_walk.####.exr``). A gap in the numbering ends a run: a clip never spans one (it would teach a jump).

Each run is cut into **non-overlapping** clips of ``clip_frames`` consecutive numbers, from its first frame
(a stride of ``clip_frames``); what is left at its end is left out. Not overlapping windows, because:
the held-out clips are then disjoint from the training clips (an overlapping window would share frames
with its neighbours, so the held-out score would measure frames the LoRA trained on); every frame trains
in exactly one clip, so a long sequence does not outweigh the others ``clip_frames`` times over; and each
clip is VAE-encoded once and kept, so memory grows with the footage, not with footage x clip_frames.
Stills (a name without a number) and runs shorter than a clip make no clip and are counted as left out,
unless the clips train fill alone (``hold``): then every such frame is **held**, a clip of that one frame
repeated. Fill's objective generates the character's matte on every frame of a clip with the rest known, so a
held still is a fill of a held plate: the adapter learns the character on every latent frame a fill chunk
codes, not only the first, which the VAE codes alone (a 1-frame clip teaches only that one; measured in the
miniature world, docs/training.md). Extend's objective never gets a held still: it would learn to freeze.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from bodydouble.jobspec import split_frame

from .dataset import TrainingFrame


@dataclass
class Clip:
    pattern: str                    # the sequence's file pattern: /refs/hero_walk.####.exr (held: the still's path)
    first: int                      # frame number of the clip's first frame (held: the still's, else 0)
    frames: list[TrainingFrame]
    held: bool = False              # one frame repeated (a still held for fill)

    @property
    def view(self) -> str:          # the hold-out groups clips by view, as it groups frames
        return self.frames[0].view

    @property
    def last(self) -> int:
        return self.first if self.held else self.first + len(self.frames) - 1


@dataclass
class Clips:
    clip_frames: int
    clips: list[Clip] = field(default_factory=list)
    sequences: int = 0              # runs of consecutive numbers found (a clip or not)
    left_out: list[TrainingFrame] = field(default_factory=list)
    stills: int = 0                 # frames whose name has no frame number

    @property
    def held(self) -> int:
        return sum(c.held for c in self.clips)

    def summary(self) -> dict:
        return {"clip_frames": self.clip_frames, "clips": len(self.clips), "sequences": self.sequences,
                "frames_in_clips": sum(len(set(map(id, c.frames))) for c in self.clips),
                "frames_held": self.held, "frames_left_out": len(self.left_out), "stills": self.stills}

    def describe(self) -> str:
        held = f", {self.held} of them frames held (a still repeated)" if self.held else ""
        return (f"{len(self.clips)} clip(s) of {self.clip_frames} frames from {self.sequences} run(s) of consecutive "
                f"frames{held}; {len(self.left_out)} frame(s) left out ({self.stills} still(s) without a frame "
                "number, the rest runs shorter than a clip, the tail of a run or a file given twice)")


def cut(frames: list[TrainingFrame], clip_frames: int, hold: bool = False) -> Clips:
    """Group ``frames`` into sequences by file pattern and cut each run of consecutive numbers into clips
    of ``clip_frames`` frames (stride ``clip_frames``). Order: sequences as their first frame comes in
    ``frames``, clips in frame order, then (``hold``) the frames in no clip, each held as a clip of its own in
    the order they came, so the cut (and the hold-out after it) is deterministic."""
    found = Clips(clip_frames)
    sequences: dict[str, dict[int, TrainingFrame]] = {}
    unclipped, twice = [], []
    for frame in frames:
        pattern, number = split_frame(str(frame.path))
        if number is None:
            found.stills += 1
            unclipped.append(frame)
        elif number in sequences.setdefault(pattern, {}):
            twice.append(frame)          # the same file given twice
        else:
            sequences[pattern][number] = frame
    for pattern, by_number in sequences.items():
        numbers = sorted(by_number)
        runs, start = [], 0
        for i in range(1, len(numbers) + 1):
            if i == len(numbers) or numbers[i] != numbers[i - 1] + 1:
                runs.append(numbers[start:i])
                start = i
        for run in runs:
            found.sequences += 1
            usable = len(run) - len(run) % clip_frames
            for i in range(0, usable, clip_frames):
                found.clips.append(Clip(pattern, run[i], [by_number[n] for n in run[i:i + clip_frames]]))
            unclipped += [by_number[n] for n in run[usable:]]
    if hold:
        order = {id(f): i for i, f in enumerate(frames)}
        for frame in sorted(unclipped, key=lambda f: order[id(f)]):
            found.clips.append(Clip(str(frame.path), split_frame(str(frame.path))[1] or 0, [frame] * clip_frames,
                                    held=True))
        unclipped = []
    found.left_out = unclipped + twice
    return found
