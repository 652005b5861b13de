"""LTX-Video with its condition pipeline: a second video family, one file.

``LTXConditionPipeline`` conditions on a frame sequence placed at frame 0 and takes LoRA adapters
(``LTXVideoLoraLoaderMixin``). Its VAE compresses time by 8 and it trims a conditioning sequence to
8k+1 frames, so only the last 8k+1 of the K frames given condition the call (K=1, 9, 17, ... use them all).
"""
from __future__ import annotations

import numpy as np

from .registry import Family, register, step_callback


def extend(pipe, context: np.ndarray, count: int, *, height: int, width: int, prompt: str, negative_prompt: str,
           steps: int, guidance: float, fps: float, generator, on_step) -> np.ndarray:
    import torch
    from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

    ratio = pipe.vae_temporal_compression_ratio     # 8 for LTX-Video's VAE
    used = (len(context) - 1) // ratio * ratio + 1
    # (F, C, H, W) in [0, 1]: the pipeline's video processor scales it to [-1, 1] itself.
    clip = torch.from_numpy(np.ascontiguousarray(context[-used:].transpose(0, 3, 1, 2)))
    total = used + count
    frames = pipe(
        conditions=[LTXVideoCondition(video=clip, frame_index=0)], prompt=prompt,
        negative_prompt=negative_prompt or None, height=height, width=width, num_frames=total,
        frame_rate=int(round(fps)), num_inference_steps=steps, guidance_scale=guidance, generator=generator,
        output_type="np", callback_on_step_end=step_callback(on_step, steps),
    ).frames[0]
    return np.asarray(frames[used:total], dtype=np.float32)


LTX_VIDEO = register(Family(
    name="ltx-video",
    title="LTX-Video (condition pipeline)",
    resolution=768,
    multiple=32,
    pipelines={"extend": "LTXConditionPipeline"},
    detect=lambda index, path: index.get("_class_name", "").startswith("LTX"),
    kind="video",
    window=161,
    temporal_multiple=8,
    extend=extend,
))
