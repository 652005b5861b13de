"""Fill: inpaint an unseen angle inside the mask, frame by frame, and composite it into the plate.

Per frame: read plate + mask -> crop to the mask's box plus context -> plate colour space to the
model's display-referred encoding -> resize to the model's size -> inpaint with the adapter(s)
-> resize back -> inverse display transform -> composite in scene-linear through a feather
that is zero outside the mask -> write the EXR atomically into the take.
"""
from __future__ import annotations

import numpy as np

from bodydouble import errors, protocol
from bodydouble.jobspec import FillRequest

from ..engine import Engine
from ..imaging import frames as frame_io
from ..imaging import regions
from ..imaging.colour import ColourTransform
from ..models.registry import step_callback
from . import common


def validate(req: FillRequest, engine: Engine) -> None:
    """Submit-time checks, before ``accepted`` (cheap: no pixels decoded, nothing written; see common)."""
    common.check_inputs(engine, [(f.plate, f"plate {f.frame}") for f in req.frames]
                        + [(f.mask, f"mask {f.frame}") for f in req.frames if f.mask is not None])
    common.check_output(engine, req.output_dir, common.shot_name(req.shot, req.output_dir, req.frames[0].plate))
    common.check_adapters(engine.adapters, req.adapters)


def run_fill(engine: Engine, job, req: FillRequest) -> protocol.Message:
    adapters = engine.adapters.resolve(req.adapters)
    colour = ColourTransform(req.colorspace)
    common.check_inputs(engine, [(f.plate, f"plate {f.frame}") for f in req.frames]
                        + [(f.mask, f"mask {f.frame}") for f in req.frames if f.mask is not None])
    pipe = engine.pipeline("fill")
    engine.adapters.activate(pipe, adapters)
    shot = common.shot_name(req.shot, req.output_dir, req.frames[0].plate)
    take = common.open_take(engine, job, req.output_dir, shot, common.adapter_label(adapters), {
        "operation": "fill", "adapters": [a.describe() for a, _ in adapters], "base_model": engine.identity.to_dict(),
        "request": {k: getattr(req, k) for k in ("prompt", "negative_prompt", "seed", "steps", "strength", "guidance",
                                                  "colorspace", "context", "feather")},
    })
    attributes = common.provenance(engine, "fill", adapters, req, take, job)
    returned: dict[int, np.ndarray] | None = {} if req.return_pixels else None
    total = len(req.frames)
    with common.completing(take):
        for index, item in enumerate(req.frames):
            job.check_cancelled()
            plate = common.load_image(engine, item.plate, f"plate {item.frame}")
            if plate.pixels.shape[2] < 3:
                raise errors.RequestError(f"plate {item.frame} has {plate.pixels.shape[2]} channels; fill needs RGB",
                                          code=errors.INVALID_REQUEST)
            mask = _mask_for(engine, item, plate, req.mask_channel)

            def on_step(step: int, steps: int, _index=index, _frame=item.frame) -> None:
                job.check_cancelled()
                job.report((_index + step / steps) / total, f"frame {_frame}: step {step}/{steps}",
                           frame=_frame, frame_index=_index, frames=total, step=step, steps=steps)

            pixels = fill_frame(engine, pipe, req, colour, plate, mask, on_step)
            path = take.frame_path(item.frame)
            frame_io.write_exr_atomic(path, plate, pixels, {
                **attributes, "frame": item.frame, "source": plate.source,
                "mask_source": item.mask.path if item.mask and item.mask.path else ("buffer" if item.mask else "plate alpha"),
            })
            take.add(item.frame, path)
            if returned is not None:
                returned[item.frame] = common.wire_pixels(plate, pixels)
    return common.result_message(job, "fill", take, {"adapter": attributes["adapter"], "seed": req.seed,
                                                     "test_model": engine.identity.test_model}, returned)


def _mask_for(engine: Engine, item, plate: frame_io.Frame, channel: str | None) -> np.ndarray:
    if item.mask is None:
        if plate.alpha_index is None:
            raise errors.RequestError(f"plate {item.frame} has no alpha and no mask was given", code=errors.EMPTY_MASK)
        return plate.pixels[:, :, plate.alpha_index]
    mask_frame = common.load_image(engine, item.mask, f"mask {item.frame}")
    if mask_frame.shape != plate.shape:
        raise errors.RequestError(
            f"mask {item.frame} is {mask_frame.shape[1]}x{mask_frame.shape[0]} but the plate is "
            f"{plate.shape[1]}x{plate.shape[0]}", code=errors.INVALID_REQUEST)
    return frame_io.mask_channel(mask_frame, channel)


def fill_frame(engine: Engine, pipe, req: FillRequest, colour: ColourTransform, plate: frame_io.Frame,
               mask: np.ndarray, on_step) -> np.ndarray:
    """The composited frame (float32, all of the plate's channels)."""
    import torch

    height, width = plate.shape
    box = regions.context_box(regions.mask_box(mask), height, width, req.context)
    gen_h, gen_w = regions.model_size(box, plate.pixel_aspect, engine.resolution, engine.family.multiple)
    ys, xs = box.slices()
    crop_rgb = plate.pixels[ys, xs, :3]
    crop_mask = mask[ys, xs]
    model_rgb = common.model_input(colour, crop_rgb, gen_h, gen_w)
    model_mask = (regions.resize(crop_mask[:, :, None], gen_h, gen_w)[:, :, 0] > 0.01).astype(np.float32)

    generator = torch.Generator(device="cpu").manual_seed(req.seed)
    out = pipe(
        prompt=req.prompt, negative_prompt=req.negative_prompt or None,
        image=model_rgb[None], mask_image=model_mask[None, :, :, None],
        height=gen_h, width=gen_w, num_inference_steps=req.steps, strength=req.strength,
        guidance_scale=req.guidance, generator=generator, output_type="np",
        callback_on_step_end=step_callback(on_step, req.steps),
    ).images[0]
    weight = regions.feathered(crop_mask, req.feather)
    inside = weight > 0
    # The inverse view transform is the costly part: run it only where the result is used.
    generated = np.zeros_like(crop_rgb)
    generated[inside] = colour.from_model(regions.resize(np.asarray(out, dtype=np.float32), box.height, box.width)[inside])
    result = plate.pixels.copy()
    result[ys, xs] = regions.composite(plate.pixels[ys, xs], generated, weight)
    return result
