"""Live previews: a small RGB picture of what the model is making, attached to a job's progress events.

A preview is a linear projection of the denoising latents to RGB (``rgb = latents @ factors + bias``, in [-1, 1],
then to 0..255), the way ComfyUI's "latent2rgb" previews work: a few multiply-adds per latent pixel, no VAE decode,
so it costs nothing next to a denoising step. The factors come from the model family (``Family.latent_rgb``: the
published SD 1.5 / SDXL / Wan 2.1 factors) or, for models whose latent space is their own (test and miniature
models: random or home-trained VAEs), from a least-squares fit of the model's own VAE: encode a few smooth colour
images once, solve for the linear map from their latents back to their pixels.

At most one preview every ``PreviewOptions.every_ms`` per job (a step that comes sooner projects nothing), the
longest side at most ``max_side`` (never enlarged beyond the latent grid). The picture is the model's view of the
crop it works on (display-referred), not the plate. See docs/protocol.md, "Live previews".
"""
from __future__ import annotations

import logging
import time
import weakref
from typing import Callable

import numpy as np

from bodydouble.jobspec import PreviewOptions

log = logging.getLogger("bodydouble.previews")

Projection = tuple[np.ndarray, np.ndarray]          # factors (C, 3), bias (3,): latents -> RGB in [-1, 1]
_fitted: "weakref.WeakKeyDictionary[object, Projection | None]" = weakref.WeakKeyDictionary()   # vae -> its fit


def projection_for(pipe, family, test_model: bool) -> Projection | None:
    """How this pipeline's latents become RGB: the family's published factors for real models, a fit of the
    model's own VAE for test models (their latent space is their own), None when neither is known."""
    factors = getattr(family, "latent_rgb", None)
    vae = getattr(pipe, "vae", None)
    if factors is not None and (not test_model or vae is None):
        return np.asarray(factors[0], np.float32), np.asarray(factors[1], np.float32)
    if vae is None:
        return None
    if vae not in _fitted:
        try:
            _fitted[vae] = fit_projection(vae, video=family.kind == "video")
        except Exception:       # a VAE this fit does not know: no previews, never a failed job
            log.exception("live previews: could not fit a latent->RGB projection for %s", type(vae).__name__)
            _fitted[vae] = None
    return _fitted[vae]


def fit_projection(vae, video: bool = False, size: int = 32, count: int = 8, seed: int = 0) -> Projection:
    """The least-squares linear map (with bias) from ``vae``'s scaled latents to the pixels they encode, area-
    averaged to the latent grid, in [-1, 1]. Video VAEs (5-D latents) are fitted on 1-frame clips and their
    latents normalised as diffusers' Wan pipelines do (``latents_mean`` / ``latents_std``)."""
    import torch

    rng = np.random.default_rng(seed)
    # Smooth colour fields: random 4x4 colour grids, upsampled; flat colours and ramps are in the span.
    coarse = torch.from_numpy(rng.uniform(-1.0, 1.0, (count, 3, 4, 4)).astype(np.float32))
    images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
    param = next(vae.parameters())
    config = vae.config
    with torch.no_grad():
        x = images.to(param.device, param.dtype)
        encoded = vae.encode(x[:, :, None] if video else x).latent_dist.mode().float()
        if video:
            channels = encoded.shape[1]
            mean = torch.tensor(config.latents_mean, dtype=torch.float32).view(1, channels, 1, 1, 1)
            std = torch.tensor(config.latents_std, dtype=torch.float32).view(1, channels, 1, 1, 1)
            encoded = ((encoded - mean.to(encoded.device)) / std.to(encoded.device))[:, :, 0]
        else:
            encoded = (encoded - (config.get("shift_factor") or 0.0)) * (config.get("scaling_factor") or 1.0)
    latents = encoded.cpu().numpy()                                    # (N, C, h, w)
    target = torch.nn.functional.interpolate(images, size=latents.shape[2:], mode="area").numpy()
    a = latents.transpose(0, 2, 3, 1).reshape(-1, latents.shape[1])
    a = np.concatenate([a, np.ones((len(a), 1), np.float32)], axis=1)
    b = target.transpose(0, 2, 3, 1).reshape(-1, 3)
    solution, *_ = np.linalg.lstsq(a.astype(np.float64), b.astype(np.float64), rcond=None)
    return solution[:-1].astype(np.float32), solution[-1].astype(np.float32)


def project(latents, projection: Projection, max_side: int) -> np.ndarray:
    """(H, W, 3) uint8 of the first item's latents ((B, C, h, w), or (B, C, F, h, w): its newest frame), the
    longest side at most ``max_side``."""
    import torch

    lat = latents[0].detach().float()
    if lat.ndim == 4:                                # (C, F, h, w): the newest frame
        lat = lat[:, -1]
    factors, bias = (torch.from_numpy(v).to(lat.device) for v in projection)
    if lat.shape[0] != factors.shape[0]:
        raise ValueError(f"latents have {lat.shape[0]} channels, the projection {factors.shape[0]}")
    rgb = torch.einsum("chw,cr->rhw", lat, factors) + bias[:, None, None]
    height, width = rgb.shape[1:]
    scale = max_side / max(height, width)
    if scale < 1.0:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        rgb = torch.nn.functional.interpolate(rgb[None], size=size, mode="area")[0]
    rgb = ((rgb + 1.0) * 127.5).clamp(0, 255).round().to(torch.uint8)
    return np.ascontiguousarray(rgb.permute(1, 2, 0).cpu().numpy())


class Previewer:
    """One job's previews: ``hook(report)`` makes the step callback the pipelines call (``registry.step_callback``
    hands it the latents first); ``report(step, steps, preview)`` gets a picture at most every ``every_ms``."""

    def __init__(self, options: PreviewOptions | None, projection: Projection | None,
                 clock: Callable[[], float] = time.monotonic):
        self.options = options
        self.projection = projection if options is not None else None
        self._clock = clock
        self._last: float | None = None
        self._pending: np.ndarray | None = None

    @classmethod
    def for_model(cls, options: PreviewOptions | None, pipe, model) -> "Previewer":
        """For ``pipe`` of the model slot ``model`` (the projection is worked out only when previews are on)."""
        if options is None:
            return cls(None, None)
        return cls(options, projection_for(pipe, model.family, model.test_model))

    def latents(self, latents, pipeline=None) -> None:
        if self.projection is None or self.options is None:
            return
        now = self._clock()
        if self._last is not None and now - self._last < self.options.every_ms / 1000.0:
            return
        try:
            self._pending = project(latents, self.projection, self.options.max_side)
        except Exception:            # a preview never fails a job
            log.exception("live preview failed; previews are off for this job")
            self.projection = None
            return
        self._last = now

    def take(self) -> np.ndarray | None:
        pending, self._pending = self._pending, None
        return pending

    def hook(self, report: Callable[[int, int, "np.ndarray | None"], None]) -> "StepHook":
        return StepHook(self, report)


class StepHook:
    """``on_step`` for :func:`~bodydouble_server.models.registry.step_callback`: ``latents`` first, then the call."""

    def __init__(self, previewer: Previewer, report: Callable[[int, int, "np.ndarray | None"], None]):
        self.previewer = previewer
        self.report = report

    def latents(self, latents, pipeline=None) -> None:
        self.previewer.latents(latents, pipeline)

    def __call__(self, step: int, steps: int) -> None:
        self.report(step, steps, self.previewer.take())
