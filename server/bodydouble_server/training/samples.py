"""What the loop draws from: the hold-out split, each frame's prompt, per-frame tensors and the region
each sample learns to generate. Shared by every objective."""
from __future__ import annotations

import numpy as np

from .dataset import TrainingFrame


def split_holdout(frames: list, per_view: int) -> tuple[list, list]:
    """Hold out the last ``per_view`` samples (frames or clips: anything with a ``view``) of each view that
    keeps at least one to train on."""
    train, held = [], []
    by_view: dict[str, list] = {}
    for f in frames:
        by_view.setdefault(f.view, []).append(f)
    for group in by_view.values():
        cut = len(group) - per_view if len(group) > per_view else len(group)
        train += group[:cut]
        held += group[cut:]
    order = {id(f): i for i, f in enumerate(frames)}
    return sorted(train, key=lambda f: order[id(f)]), sorted(held, key=lambda f: order[id(f)])


def frame_prompt(frame: TrainingFrame, trigger: str) -> str:
    """What a frame trains with: its caption when that names the trigger, else trigger + view + caption."""
    if trigger and trigger in frame.caption:
        return frame.caption
    return " ".join(p for p in (trigger, frame.view.replace("-", " "), frame.caption) if p)


class FrameTensors:
    """Per-frame tensors computed once: pixels in [-1, 1], mattes, prompts (an objective adds its own)."""

    def __init__(self, frames: list[TrainingFrame], trigger: str, device, dtype):
        import torch

        self.pixels = torch.stack([torch.from_numpy(f.rgb).permute(2, 0, 1) * 2 - 1 for f in frames]).to(device, dtype)
        self.mattes = torch.stack([torch.from_numpy(f.mask if f.mask is not None else np.ones(f.rgb.shape[:2], np.float32))
                                   for f in frames])[:, None].to(device, dtype)
        self.has_matte = [f.mask is not None for f in frames]
        self.prompts = [frame_prompt(f, trigger) for f in frames]


def inpaint_masks(tensors: FrameTensors, index, generator):
    """The region each sample of the batch learns to generate: the character's matte (when there is one), a
    random box, or the whole frame (inpainting and extend objectives alike). (N, 1, H, W), on the pixels'
    device and dtype."""
    import torch

    n, _, h, w = tensors.pixels[index].shape
    masks = torch.zeros(n, 1, h, w)
    choices = torch.randint(0, 3, (n,), generator=generator)
    boxes = torch.rand(n, 4, generator=generator)
    for i, frame in enumerate(index.tolist()):
        kind = int(choices[i])
        if kind == 0 and tensors.has_matte[frame]:
            masks[i] = (tensors.mattes[frame].cpu() > 0.5).float()
        elif kind == 2:
            masks[i] = 1.0
        else:
            y0, x0 = int(boxes[i, 0] * h * 0.5), int(boxes[i, 1] * w * 0.5)
            y1, x1 = y0 + max(8, int(boxes[i, 2] * h * 0.5)), x0 + max(8, int(boxes[i, 3] * w * 0.5))
            masks[i, :, y0:y1, x0:x1] = 1.0
    return masks.to(tensors.pixels.device, tensors.pixels.dtype)
