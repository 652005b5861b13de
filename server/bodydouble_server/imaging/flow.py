"""The plate's motion between two frames (optical flow), to carry a fill from one frame to the next.

OpenCV's DIS flow (Kroeger et al. 2016: dense inverse search, a few ms at a model's crop size on a CPU) runs
on the plates as the model sees them. Inside the mask the plate shows what is being replaced (a stand-in's
head, a marker). Where it moves consistently (the flow forward and back agree) it moves as what is filled there
does, the head it stands in for; where it does not (it flickers, changes, has nothing to match) the flow is
filled in from the plate around the mask (normalised convolution: a Gaussian average of the surrounding flow,
weighted by how much texture each pixel has to measure motion by).
"""
from __future__ import annotations

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
    mask (zero where nothing around it has texture to measure), except where the plate inside the mask moves
    consistently (forward and backward flow agree): there its own motion."""
    import cv2

    now, before = _grey(current), _grey(previous)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    own = dis.calc(now, before, None)
    flow = _around_the_mask(own, now, mask)
    # Inside the mask, the plate's own motion where it is consistent: a stand-in's head turning moves as the head
    # being filled does (measured in the miniature world: carried along the surrounding plate's pan, the fill
    # slipped on the tracked head, 0.08 dB below per-frame fill over 8 frames; 0.01 with its own motion), while
    # a stand-in that changes rather than moves (a flicker, a prop swapped) fails the check, and one with no
    # texture has nothing to measure: those keep the surroundings' motion.
    textured = cv2.cornerMinEigenVal(now.astype(np.float32) / 255.0, 5) > _FLAT
    trusted = (mask > 0.5) & textured & _consistent(own, dis.calc(before, now, None))
    flow[trusted] = own[trusted]
    return flow


def _around_the_mask(flow: np.ndarray, now: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``flow`` with the mask and a margin around it filled in from the textured plate around them."""
    import cv2

    height, width = mask.shape
    flow = flow.copy()
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


def _consistent(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Where following ``forward`` then ``backward`` comes back to the start (within half a pixel and 5 % of the
    motion: Sundaram et al. 2010's occlusion test)."""
    back_there = warp(backward, forward)
    error = np.sum((forward + back_there) ** 2, axis=-1)
    return error <= 0.25 + 0.01 * (np.sum(forward ** 2, axis=-1) + np.sum(back_there ** 2, axis=-1))


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` (H, W, C) moved along ``flow`` (from :func:`plate_flow`): out(p) = image(p + flow(p)),
    bilinear, edges repeated."""
    import cv2

    height, width = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return cv2.remap(image.astype(np.float32), xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def carry(result: np.ndarray, previous_plate: np.ndarray, plate: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The previous frame's ``result`` moved by the plate's motion from ``previous_plate`` to ``plate``."""
    return warp(result, plate_flow(previous_plate, plate, mask))
