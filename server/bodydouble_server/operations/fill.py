"""Fill: inpaint an unseen angle inside the mask, frame by frame, and composite it into the plate.

Per frame: read plate + mask -> crop to the mask's box plus context -> plate colour space to the
model's display-referred encoding -> resize to the model's size -> inpaint with the adapter(s)
-> resize back -> the encoding's bounded inverse (never above the ceiling) -> composite in scene-linear through a feather
that is zero outside the mask -> write the EXR atomically into the take.

Only the plate's R, G, B samples the feathered mask reaches are rewritten (in their own type); every other
sample, channel and part comes back bit-identical. Non-finite samples (NaN, Inf): inside the mask they are
filled over, in the model's context they are shown to the model as black and stay as they were in the frame,
and each frame's header and take.json count both (docs/protocol.md, "Non-finite pixels").
"""
from __future__ import annotations

import contextlib

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
    # Headers of the first and last frames (a long sequence is not opened file by file on the socket's thread).
    ends = {id(f): f for f in (req.frames[0], req.frames[-1])}.values()
    common.check_headers(engine, [(f.plate, f"plate {f.frame}") for f in ends] + [(f.mask, f"mask {f.frame}") for f in ends])
    ColourTransform(req.colorspace)
    common.check_output(engine, req.output_dir, common.shot_name(req.shot, req.output_dir, req.frames[0].plate))
    common.check_adapters(engine.adapters, req.adapters)


def run_fill(engine: Engine, job, req: FillRequest) -> protocol.Message:
    model = engine.model_for("fill")
    adapters = model.adapters.resolve(req.adapters)
    colour = ColourTransform(req.colorspace)
    common.check_inputs(engine, [(f.plate, f"plate {f.frame}") for f in req.frames]
                        + [(f.mask, f"mask {f.frame}") for f in req.frames if f.mask is not None])
    pipe = model.pipeline("fill")
    model.adapters.activate(pipe, adapters)
    shot = common.shot_name(req.shot, req.output_dir, req.frames[0].plate)
    take, attributes = None, {}
    returned: dict[int, np.ndarray] | None = {} if req.return_pixels else None
    repaired = {key: 0 for key in NONFINITE_KEYS}
    total = len(req.frames)
    with contextlib.ExitStack() as finishing:
        for index, item in enumerate(req.frames):
            job.check_cancelled()
            # One frame at a time, in its own pixel types: only what the model needs becomes float.
            plate = common.load_image(engine, item.plate, f"plate {item.frame}")
            plate.require_rgb("fill")
            mask, mask_repaired = _mask_for(engine, item, plate, req.mask_channel)
            if take is None:
                # The take opens once the first frame's inputs are read and checked: a plate or mask that cannot
                # be used leaves no folder and uses no take number (a cancel or a model failure marks the take).
                regions.mask_box(mask)
                take = common.open_take(engine, job, req.output_dir, shot, common.adapter_label(adapters), {
                    "operation": "fill", "adapters": [a.describe() for a, _ in adapters],
                    "base_model": model.identity.to_dict(),
                    "request": {k: getattr(req, k) for k in TAKE_SETTINGS},
                    "nonfinite": {"total": repaired, "frames": {}},
                })
                finishing.enter_context(common.completing(take))
                attributes = common.provenance(engine, "fill", adapters, req, take, job)

            def on_step(step: int, steps: int, _index=index, _frame=item.frame) -> None:
                job.check_cancelled()
                job.report((_index + step / steps) / total, f"frame {_frame}: step {step}/{steps}",
                           frame=_frame, frame_index=_index, frames=total, step=step, steps=steps)

            counts = {**fill_frame(engine, pipe, req, colour, plate, mask, on_step), "nonfinite_mask": mask_repaired}
            del mask
            path = take.frame_path(item.frame)
            frame_io.write_exr_atomic(path, plate, {
                **attributes, "frame": item.frame, "source": plate.source, **counts,
                "mask_source": item.mask.path if item.mask and item.mask.path else ("buffer" if item.mask else "plate alpha"),
            })
            if any(counts.values()):
                take.info["nonfinite"]["frames"][str(item.frame)] = counts
                for key, value in counts.items():
                    repaired[key] += value
            take.add(item.frame, path)
            if returned is not None:
                returned[item.frame] = plate.wire()
            del plate
    return common.result_message(job, "fill", take, {"adapter": attributes["adapter"], "seed": req.seed,
                                                     "test_model": model.identity.test_model,
                                                     "nonfinite": dict(repaired)}, returned)


NONFINITE_KEYS = ("nonfinite_filled", "nonfinite_context", "nonfinite_mask")
# The request's settings a fill take records in take.json (here, in the pool and in farm jobs).
TAKE_SETTINGS = ("prompt", "negative_prompt", "seed", "steps", "strength", "guidance", "colorspace",
                 "highlight_ceiling", "context", "feather")


def _mask_for(engine: Engine, item, plate: frame_io.Frame, channel: str | None) -> tuple[np.ndarray, int]:
    """The mask over the plate's data window (float32) and how many of its samples were NaN/Inf."""
    if item.mask is None:
        if plate.alpha_name is None:
            raise errors.RequestError(f"plate {item.frame} has no alpha and no mask was given", code=errors.EMPTY_MASK)
        return frame_io.clean_mask(plate.channel(plate.alpha_name))
    mask_frame = common.load_image(engine, item.mask, f"mask {item.frame}")
    values = frame_io.mask_channel(mask_frame, channel)
    return frame_io.clean_mask(frame_io.place_mask(mask_frame, values, plate, f"mask {item.frame}"))


def fill_frame(engine: Engine, pipe, req: FillRequest, colour: ColourTransform, plate: frame_io.Frame,
               mask: np.ndarray, on_step) -> dict:
    """Inpaint inside ``mask`` and write the result into ``plate``'s R, G, B in place (only the pixels the
    feathered mask reaches). Returns the non-finite counts: RGB samples inside the mask filled over, and
    those in the model's context, which the model saw as black and which stay as they were in the frame."""
    import torch

    height, width = plate.shape
    box = regions.context_box(regions.mask_box(mask), height, width, req.context)
    model = engine.model_for("fill")
    gen_h, gen_w = regions.model_size(box, plate.pixel_aspect, model.resolution, model.family.multiple)
    ys, xs = box.slices()
    crop_rgb = plate.rgb(ys, xs, native=True)          # half stays half: an 8K crop is big
    crop_mask = mask[ys, xs]
    broken = ~np.isfinite(crop_rgb).all(axis=2)
    # The crop's own encoding: the request's ceiling, raised to the crop's brightest value (imaging/colour.py).
    encoding, shown = colour.encode(crop_rgb, req.highlight_ceiling)
    model_rgb = common.model_input(shown, gen_h, gen_w)
    del shown
    model_mask = (regions.resize(crop_mask[:, :, None], gen_h, gen_w)[:, :, 0] > 0.01).astype(np.float32)

    generator = torch.Generator(device="cpu").manual_seed(req.seed)
    out = pipe(
        prompt=req.prompt, negative_prompt=req.negative_prompt or None,
        image=model_rgb[None], mask_image=model_mask[None, :, :, None],
        height=gen_h, width=gen_w, num_inference_steps=req.steps, strength=req.strength,
        guidance_scale=req.guidance, generator=generator, output_type="np",
        callback_on_step_end=step_callback(on_step, req.steps),
    ).images[0]
    del model_rgb, model_mask
    # From here on only the mask's own box matters (the weight is 0 elsewhere), and in it only the pixels the
    # feathered mask reaches: the composite runs on those alone.
    inner = regions.mask_box(crop_mask)
    iy, ix = inner.slices()
    weight = regions.feathered(crop_mask[iy, ix], req.feather)
    # A NaN/Inf inside the mask is filled over completely, even where the feather would keep some plate.
    filled = broken[iy, ix] & (crop_mask[iy, ix] > 0)
    weight[filled] = 1.0
    inside = weight > 0
    # The inverse view transform is the costly part: run it only where the result is used.
    generated = encoding.from_model(regions.resize(np.asarray(out, dtype=np.float32), box.height, box.width)[iy, ix][inside])
    mixed = regions.composite(crop_rgb[iy, ix][inside].astype(np.float32), generated, weight[inside])
    plate.set_rgb(slice(box.y0 + inner.y0, box.y0 + inner.y1), slice(box.x0 + inner.x0, box.x0 + inner.x1),
                  mixed, inside)
    return {"nonfinite_filled": int(filled.sum()), "nonfinite_context": int(broken.sum()) - int(filled.sum())}
