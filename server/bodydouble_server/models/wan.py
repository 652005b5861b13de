"""Wan 2.1 / 2.2 VACE: the video family extend runs on by default (and the embedded test video model's).

Why VACE: it conditions on any set of frames through a per-frame mask (known frames 0, frames to make 1),
so the last K plate frames condition the shot whatever K is (and fill's video engine gives it per-pixel masks
over a whole shot), and its pipeline takes LoRA adapters on the
transformer (``WanLoraLoaderMixin``). Wan's VAE compresses time by 4: a call makes 4k+1 frames.
"""
from __future__ import annotations

import contextlib

import numpy as np

from .registry import Family, register, step_callback


def inpaint(pipe, video: np.ndarray, mask: np.ndarray, *, height: int, width: int, prompt: str,
            negative_prompt: str, steps: int, guidance: float, fps: float, generator, on_step,
            strength: float = 1.0, pin_known: bool = False) -> np.ndarray:
    """Masked video inpainting: ``video`` (F, H, W, 3) in [0, 1], ``mask`` (F, H, W), 1 where pixels are made.
    Returns all F frames (outside the mask the model's version: the caller composites). ``strength`` below 1
    starts from ``video`` itself noised to that point of the schedule, as image inpainting's strength starts
    from the plate: the plate's layout under the mask survives (``WanVACEPipeline`` has no strength of its own)."""
    # Pixels to make are mid-grey in the control video (0 after VACE's [-1, 1] scaling), as VACE was trained.
    control = np.where(mask[..., None] > 0.5, np.float32(0.5), video).astype(np.float32)
    start = steps - max(1, min(int(steps * strength), steps))     # diffusers' img2img rule: the skipped steps
    known = _known_latent_frames(pipe, mask) if pin_known else []
    clean = _clean_latents(pipe, video) if start or known else None     # one encode serves both
    latents = _noised_latents(pipe, clean, steps, start, generator) if start else None
    callback = step_callback(on_step, steps - start)
    if known:
        callback = _pinning(clean, known, generator, callback)
    with _schedule_from(pipe.scheduler, start):
        frames = pipe(
            video=control[None], mask=mask[None, ..., None].astype(np.float32), prompt=prompt,
            negative_prompt=negative_prompt or None, height=height, width=width, num_frames=len(video),
            num_inference_steps=steps, guidance_scale=guidance, generator=generator, output_type="np",
            latents=latents, callback_on_step_end=callback,
        ).frames[0]
    return np.asarray(frames, dtype=np.float32)


def _known_latent_frames(pipe, mask: np.ndarray) -> list[int]:
    """The latent frames whose pixels are all known (mask 0): Wan's latent frame 0 codes pixel frame 0 alone,
    latent frame j the frames 4j-3 .. 4j."""
    temporal, count = pipe.vae_scale_factor_temporal, len(mask)
    groups = [range(0, 1)] + [range(j, min(j + temporal, count)) for j in range(1, count, temporal)]
    return [j for j, group in enumerate(groups) if all(mask[f].max() <= 0 for f in group)]


def _pinning(clean, known: list[int], generator, callback):
    """``callback`` after each step puts the ``known`` latent frames back on their own ``clean`` latents, noised
    to the schedule's next sigma: VACE is told those frames, but its transformer redraws them."""
    from diffusers.utils.torch_utils import randn_tensor

    noise = randn_tensor(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)

    def pinned(pipeline, step, timestep, kwargs):
        sigma = float(pipeline.scheduler.sigmas[pipeline.scheduler.step_index])
        latents = kwargs["latents"]
        latents[:, :, known] = (sigma * noise[:, :, known] + (1.0 - sigma) * clean[:, :, known]).to(latents.dtype)
        return callback(pipeline, step, timestep, {**kwargs, "latents": latents})
    return pinned


def _clean_latents(pipe, video: np.ndarray):
    """``video``'s latents, normalised as the pipeline normalises them."""
    import torch
    from diffusers.pipelines.wan.pipeline_wan_vace import retrieve_latents

    vae = pipe.vae
    pixels = torch.from_numpy(np.ascontiguousarray(video, dtype=np.float32)).permute(3, 0, 1, 2)[None] * 2.0 - 1.0
    with torch.no_grad():
        clean = retrieve_latents(vae.encode(pixels.to(vae.device, vae.dtype)), sample_mode="argmax").float()
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean, device=clean.device).view(shape)
    std = torch.tensor(vae.config.latents_std, device=clean.device).view(shape)
    return (clean - mean) / std


def _noised_latents(pipe, clean, steps: int, start: int, generator):
    """``clean`` latents noised to the schedule's step ``start``: flow matching's
    x_t = (1 - sigma) x_0 + sigma noise."""
    from diffusers.utils.torch_utils import randn_tensor

    noise = randn_tensor(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
    pipe.scheduler.set_timesteps(steps, device=clean.device)
    sigma = float(pipe.scheduler.sigmas[start])
    return sigma * noise + (1.0 - sigma) * clean


@contextlib.contextmanager
def _schedule_from(scheduler, start: int):
    """The pipeline's own ``set_timesteps`` with the first ``start`` steps skipped: it runs the rest of the
    schedule from where ``_noised_latents`` put the latents."""
    if not start:
        yield
        return
    full = scheduler.set_timesteps

    def set_timesteps(*args, **kwargs):
        full(*args, **kwargs)
        scheduler.timesteps = scheduler.timesteps[start:]
        scheduler.set_begin_index(start)

    scheduler.set_timesteps = set_timesteps
    try:
        yield
    finally:
        del scheduler.set_timesteps      # the class's method again


def extend(pipe, context: np.ndarray, count: int, *, height: int, width: int, **settings) -> np.ndarray:
    """``context``: (K, H, W, 3) known frames in [0, 1]; returns the ``count`` frames after them: inpainting
    whose mask covers the new frames whole."""
    known = len(context)
    video = np.concatenate([context, np.full((count, height, width, 3), 0.5, np.float32)])
    mask = np.ones((known + count, height, width), np.float32)
    mask[:known] = 0.0
    return inpaint(pipe, video, mask, height=height, width=width, **settings)[known:]


WAN_VACE = register(Family(
    name="wan-vace",
    title="Wan VACE (video)",
    resolution=832,
    multiple=16,                    # VAE /8 x transformer patch 2
    pipelines={"extend": "WanVACEPipeline"},
    detect=lambda index, path: index.get("_class_name") == "WanVACEPipeline",
    kind="video",
    window=81,                      # Wan 2.1's 5 s at 16 fps
    temporal_multiple=4,
    extend=extend,
    inpaint=inpaint,
    float32_components=("vae",),    # as Wan's own examples load it; the pipelines cast latents to the VAE's dtype
    # Live previews: Wan 2.1's latent->RGB factors for its normalised 16-channel latents (ComfyUI latent_formats.Wan21).
    latent_rgb=([[-0.1299, -0.1692, 0.2932], [0.0671, 0.0406, 0.0442], [0.3568, 0.2548, 0.1747],
                 [0.0372, 0.2344, 0.1420], [0.0313, 0.0189, -0.0328], [0.0296, -0.0956, -0.0665],
                 [-0.3477, -0.4059, -0.2925], [0.0166, 0.1902, 0.1975], [-0.0412, 0.0267, -0.1364],
                 [-0.1293, 0.0740, 0.1636], [0.0680, 0.3019, 0.1128], [0.0032, 0.0581, 0.0639],
                 [-0.1251, 0.0927, 0.1699], [0.0060, -0.0633, 0.0005], [0.3477, 0.2275, 0.2950],
                 [0.1984, 0.0913, 0.1861]], [-0.1835, -0.0868, -0.3360]),
))
