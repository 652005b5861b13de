"""Live previews (#15) over real ZeroMQ: progress events carry a small RGB picture of the model's work, rate-limited
and bounded, none when the request turns them off; the picture is the model's view of the crop.

The passthrough test model's latents are its input picture, area-averaged 8x (its family's projection is the
identity), so its preview must be the crop the model was given, downsized: checked against the plate resized to the
preview's size, mean error <= 1.5/255 and max <= 6/255 on a smooth plate (measured 0.45 and 1.2: resampling twice
blurs a smooth field by about a level; a flipped, transposed, channel-swapped or mis-scaled picture misses by 40+ levels).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from bodydouble.client import Client
from bodydouble.jobspec import FillRequest, FrameInput, ImageRef, PreviewOptions

from .support import server_thread
from .test_extend import video_studio  # noqa: F401  (a server with the embedded video model)

H, W = 64, 96


def _plate() -> np.ndarray:
    """Smooth, different in each channel and in each direction (a flip or a transpose shows), alpha 1 (the mask)."""
    y = np.linspace(0.0, 1.0, H, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, W, dtype=np.float32)[None, :]
    rgb = np.stack([0.1 + 0.8 * x + 0 * y, 0.1 + 0.8 * y + 0 * x, 0.5 + 0.4 * np.sin(3.0 * x + 2.0 * y) * 0.5], -1)
    return np.concatenate([rgb, np.ones((H, W, 1), np.float32)], -1).astype(np.float32)


def _fill(client, preview, frames=(1,), steps=3, shot="pv"):
    request = FillRequest(frames=[FrameInput(frame=f, plate=ImageRef(pixels=_plate())) for f in frames],
                          steps=steps, colorspace="Raw", shot=shot, preview=preview)
    job = client.submit(request)
    events = list(job.events(timeout=120))
    job.wait(timeout=120)
    return events


def _resized(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-average ``image`` (H, W, C) to (height, width) through a fine grid: independent of the server's code."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
    return torch.nn.functional.interpolate(t, size=(height, width), mode="area")[0].numpy().transpose(1, 2, 0)


@pytest.fixture(scope="module")
def passthrough(studio):
    from bodydouble_server.config import ServerConfig

    root = studio["root"]
    config = ServerConfig(port=0, model="test:passthrough", video_model="none", roots=[str(root)],
                          adapters=str(root / "adapters"), output_root=str(root / "takes"), resolution=512)
    with server_thread(config) as srv, Client(srv.bound_address, timeout=60) as client:
        yield client


def test_the_passthrough_preview_is_the_crop_the_model_saw(passthrough):
    events = _fill(passthrough, PreviewOptions(every_ms=50, max_side=256))
    shown = [e for e in events if e.preview is not None]
    assert shown, "no preview arrived"
    event = shown[-1]
    preview = event.preview
    assert preview.dtype == np.uint8 and preview.ndim == 3 and preview.shape[2] == 3
    spec = event.raw["preview"]
    assert (spec["height"], spec["width"], spec["channels"], spec["dtype"], spec["frame"]) == (
        *preview.shape[:2], 3, "uint8", 1)
    # The model's picture of this 96x64 crop is 512 wide; its latent grid (and so the preview) 8x smaller.
    assert preview.shape[:2] == (43, 64) or preview.shape[:2] == (42, 64), preview.shape
    expected = _resized(_plate()[..., :3], *preview.shape[:2]) * 255.0
    error = np.abs(preview.astype(np.float32) - expected)
    assert error.mean() <= 1.5 and error.max() <= 6.0, (float(error.mean()), float(error.max()))


def test_previews_are_bounded_and_off_when_asked(passthrough):
    small = [e.preview for e in _fill(passthrough, PreviewOptions(every_ms=50, max_side=16)) if e.preview is not None]
    assert small and all(max(p.shape[:2]) <= 16 for p in small)
    assert all(abs(p.shape[1] / p.shape[0] - W / H) < 0.2 for p in small)       # the crop's shape, only smaller
    events = _fill(passthrough, None)
    assert events and all(e.preview is None and "preview" not in e.raw for e in events)


def test_previews_are_rate_limited_on_a_real_tiny_pipeline(client):
    """The embedded tiny SD model (real diffusers latents): with a 10-minute interval one preview, at the first
    step, however many steps and frames follow; with 50 ms, never more than the elapsed time allows. (Four steps
    for each pipeline call: one per frame on the CPU, one for both frames where a GPU batches them.)"""
    events = _fill(client, PreviewOptions(every_ms=600_000), frames=(1, 2), steps=4, shot="pv_rate")
    shown = [e for e in events if e.preview is not None]
    calls = len({e.frame for e in events})
    assert len(events) == 4 * calls and len(shown) == 1 and shown[0] is events[0]
    assert shown[0].preview.shape[2] == 3 and shown[0].preview.dtype == np.uint8
    started = time.monotonic()
    events = _fill(client, PreviewOptions(every_ms=50), frames=(1, 2), steps=4, shot="pv_rate")
    elapsed = time.monotonic() - started
    assert 1 <= sum(e.preview is not None for e in events) <= 1 + elapsed / 0.05


def test_previewer_rate_limit_and_bounds_with_a_clock():
    import torch

    from bodydouble_server.previews import Previewer

    now = [0.0]
    identity = (np.eye(4, 3, dtype=np.float32), np.zeros(3, np.float32))
    previewer = Previewer(PreviewOptions(every_ms=500, max_side=32), identity, clock=lambda: now[0])
    latents = torch.zeros(1, 4, 40, 80)
    got = []
    for t in (0.0, 0.1, 0.49, 0.5, 0.7, 1.2):
        now[0] = t
        previewer.latents(latents)
        image = previewer.take()
        got.append(None if image is None else image.shape)
    assert got == [(16, 32, 3), None, None, (16, 32, 3), None, (16, 32, 3)]


def test_a_fitted_projection_reads_a_trained_vae():
    """The miniature world's trained VAE (its latent space is its own): the least-squares projection fitted on one
    set of pictures explains most of the pixels of others from their latents (measured R^2 0.60; SD 1.5's factors
    explain none of them)."""
    import torch
    from diffusers import AutoencoderKL

    from bodydouble_server.miniworld import bake
    from bodydouble_server.models.sd15 import SD15
    from bodydouble_server.previews import fit_projection

    vae = AutoencoderKL.from_pretrained(str(Path(bake.__file__).parent / "baked" / "base-model" / "vae"))
    factors, bias = fit_projection(vae)
    rng = np.random.default_rng(5)
    coarse = torch.from_numpy(rng.uniform(-1, 1, (6, 3, 4, 4)).astype(np.float32))
    images = torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bicubic").clamp(-1, 1)
    with torch.no_grad():
        latents = (vae.encode(images).latent_dist.mode() * vae.config.scaling_factor).numpy()
    target = torch.nn.functional.interpolate(images, size=latents.shape[2:], mode="area").numpy()

    def r2(f, b) -> float:
        predicted = np.einsum("nchw,cr->nrhw", latents, np.asarray(f, np.float32)) + np.asarray(b)[None, :, None, None]
        return 1.0 - float(((predicted - target) ** 2).sum() / ((target - target.mean()) ** 2).sum())

    assert r2(factors, bias) > 0.5
    assert r2(*SD15.latent_rgb) < 0.2


def test_extend_previews_show_the_newest_frame_of_a_video_model(video_studio):
    """The embedded tiny Wan VACE (5-D latents; its own VAE's fitted projection): previews arrive on extend too,
    from the first step, each (H, W, 3) uint8 within the bound; none when turned off."""
    from .test_extend import extend

    with Client(video_studio["address"], timeout=60) as client:
        _, progress = extend(client, video_studio, preview=PreviewOptions(every_ms=50, max_side=8))
        shown = [p.preview for p in progress if p.preview is not None]
        assert progress[0].preview is not None and all(p.dtype == np.uint8 and p.shape[2] == 3 and
                                                       max(p.shape[:2]) <= 8 for p in shown)
        _, progress = extend(client, video_studio, preview=None)
        assert all(p.preview is None for p in progress)
