"""The plate's motion between two frames (optical flow), to carry a fill from one frame to the next.

OpenCV's DIS flow (Kroeger et al. 2016: dense inverse search, a few ms at a model's crop size on a CPU) runs
on the plates as the model sees them. Inside the mask the plate shows what is being replaced (a stand-in's
head, a marker): its motion is not the motion the fill should follow, so there the flow is filled in from the
plate around the mask (normalised convolution: a Gaussian average of the surrounding flow, weighted by how
much texture each pixel has to measure motion by), unless the matte itself moves (:func:`follow_matte`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Flow inside the mask comes from the plate within about this fraction of the crop's size around it, from beyond
# a margin of _MARGIN of it; a plate whose texture (structure tensor) is below _FLAT everywhere there has no
# measurable motion.
_REACH = 0.25
_MARGIN = 0.12
_FLAT = 1e-5


def _grey(rgb: np.ndarray) -> np.ndarray:
    """[0, 1] RGB -> 8-bit luma, what DIS reads."""
    luma = rgb[..., 0] * 0.2126 + rgb[..., 1] * 0.7152 + rgb[..., 2] * 0.0722
    return np.clip(np.rint(luma * 255.0), 0, 255).astype(np.uint8)


def plate_flow(previous: np.ndarray, current: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W, 2) float32: for each pixel of ``current``, where it was in ``previous`` (x, y offsets), both
    (H, W, 3) in [0, 1]; inside ``mask`` (H, W, > 0.5) and a margin around it, the plate's motion around the
    mask (zero where nothing around it has texture to measure)."""
    import cv2

    height, width = mask.shape
    now = _grey(current)
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(now, _grey(previous), None)
    # The margin: DIS's patches (8 px) and its smoothing carry what changes inside the mask a little way out.
    grow = max(2, int(round(_MARGIN * max(height, width))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    hidden = cv2.dilate((mask > 0.5).astype(np.uint8), kernel) > 0
    if not hidden.any():
        return flow
    # Only textured plate is trusted: flat areas give DIS nothing to match (the aperture problem) and their
    # flow is whatever its smoothing made up. Weight: the structure tensor's smaller eigenvalue.
    weight = cv2.cornerMinEigenVal(now.astype(np.float32) / 255.0, 5) * (~hidden)
    if weight.max(initial=0.0) < _FLAT:
        flow[hidden] = 0.0
        return flow
    sigma = _REACH * max(height, width)
    total = cv2.GaussianBlur(weight, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    spread = cv2.GaussianBlur(flow * weight[..., None], (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    mean = (flow * weight[..., None]).sum(axis=(0, 1)) / weight.sum()     # where the blur reaches no texture
    filled = np.where(total[..., None] > 1e-3 * total.max(), spread / np.maximum(total, 1e-12)[..., None], mean)
    flow[hidden] = filled[hidden]
    return flow


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` (H, W, C) moved along ``flow`` (from :func:`plate_flow`): out(p) = image(p + flow(p)),
    bilinear, edges repeated."""
    import cv2

    height, width = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return cv2.remap(image.astype(np.float32), xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


@dataclass(frozen=True)
class Matte:
    """Where a mask lies in a crop: its centre (x, y) and its size (the square root of its area), in pixels."""
    centre: np.ndarray
    size: float

    @classmethod
    def of(cls, mask: np.ndarray) -> "Matte | None":
        ys, xs = np.nonzero(mask > 0.5)
        if ys.size == 0:
            return None
        return cls(np.array([xs.mean(), ys.mean()], np.float32), math.sqrt(ys.size))


def follow_matte(motion: np.ndarray, previous: Matte, current: Matte, mask: np.ndarray, weight: float) -> np.ndarray:
    """``motion`` (from :func:`plate_flow`) with, inside ``mask``, ``weight`` of the matte's own motion (its
    centre's shift and its growth about the centre, previous to current) mixed in.

    A matte that moves on the plate is a roto of something that moves (a head, a body double): what it covers
    moves with it, not with the plate around it. Measured in the miniature world, where each crop follows its
    head and the camera pans: the fill carried along the plate around the mask slipped on the head (coherent
    fill 0.02-0.08 dB below per-frame fill; docs/likeness.md). A matte that stays put while the plate moves (a
    burnt-in logo, a marker on a locked-off mask) covers the plate behind it: weight 0."""
    if weight <= 0.0:
        return motion
    height, width = mask.shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    scale = previous.size / current.size
    was_x = previous.centre[0] + (xs - current.centre[0]) * scale
    was_y = previous.centre[1] + (ys - current.centre[1]) * scale
    matte = np.stack([was_x - xs, was_y - ys], axis=-1)
    inside = mask > 0.5
    out = motion.copy()
    out[inside] = weight * matte[inside] + (1.0 - weight) * motion[inside]
    return out
