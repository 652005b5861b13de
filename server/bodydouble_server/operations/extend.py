"""Extend: N new frames after the plate's last one, in the character's likeness, continuing its motion.

The last K plate frames -> the model's display-referred encoding (the same OCIO view as fill) -> resized
to the video model's size -> chunks of the model's frame window, each conditioned on the tail of what
exists (chunks.py) -> colour matched across the seam (seam.py) -> resized back -> inverse view -> EXRs
numbered after the plate, with the plate's resolution, pixel aspect, channels and pixel type. Every
finished chunk is on disk at once; the take is marked complete only after the last one.

Generated highlights are bounded by the inverse display view (about 16.0 for ACES SDR), as in fill.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from bodydouble import errors, protocol
from bodydouble.jobspec import ExtendRequest

from ..engine import Engine
from ..imaging import frames as frame_io
from ..imaging import regions, seam
from ..imaging.colour import ColourTransform
from . import chunks as chunking
from . import common

_SETTINGS = ("prompt", "negative_prompt", "seed", "steps", "guidance", "fps", "count", "conditioning", "overlap",
             "colour_match", "colorspace")


def validate(req: ExtendRequest, engine: Engine) -> None:
    """Submit-time checks, before ``accepted`` (cheap: no pixels decoded, nothing written; see common)."""
    common.check_inputs(engine, [(f.plate, f"plate {f.frame}") for f in req.frames])
    common.check_output(engine, req.output_dir, common.shot_name(req.shot, req.output_dir, req.frames[0].plate))
    if engine.video is None and engine.video_error is None:
        return                                # still loading: the worker checks the rest
    video = engine.video_model()              # not_supported / model_unavailable
    common.check_adapters(video.adapters, req.adapters)
    chunking.plan(req.count, req.conditioning, req.overlap, video.window, video.family.temporal_multiple)


def run_extend(engine: Engine, job, req: ExtendRequest) -> protocol.Message:
    import torch

    video = engine.video_model()
    video.adapters.resolve(req.adapters)      # refuse unknown and image adapters before loading anything
    colour = ColourTransform(req.colorspace)
    plan = chunking.plan(req.count, req.conditioning, req.overlap, video.window, video.family.temporal_multiple)
    common.check_inputs(engine, [(f.plate, f"plate {f.frame}") for f in req.frames])
    conditioning = req.frames[-req.conditioning:]
    plates = _conditioning_plates(engine, conditioning)
    last = plates[-1]
    height, width = last.shape
    gen_h, gen_w = regions.model_size(regions.Box(0, height, 0, width), last.pixel_aspect, video.resolution,
                                      video.family.multiple)
    context = np.stack([common.model_input(colour, p.pixels[:, :, :3], gen_h, gen_w) for p in plates])

    pipe = video.pipeline()
    adapters = video.adapters.resolve(req.adapters)     # again: the first load may have found broken weights
    video.adapters.activate(pipe, adapters)
    shot = common.shot_name(req.shot, req.output_dir, req.frames[0].plate)
    take = common.open_take(engine, job, req.output_dir, shot, common.adapter_label(adapters), {
        "operation": "extend", "adapters": [a.describe() for a, _ in adapters], "base_model": video.identity.to_dict(),
        "request": {**{k: getattr(req, k) for k in _SETTINGS},
                    "frames": [{"frame": f.frame, "plate": f.plate.path or "buffer"} for f in req.frames]},
        "chunks": [dataclasses.asdict(c) for c in plan],
    })
    first = req.frames[-1].frame + 1
    attributes = {
        **common.provenance(engine, "extend", adapters, req, take, job, identity=video.identity),
        "source": last.source, "conditioning_frames": ",".join(str(f.frame) for f in conditioning),
        "fps": float(req.fps), "count": req.count, "chunks": len(plan), "overlap": req.overlap,
    }
    returned: dict[int, np.ndarray] | None = {} if req.return_pixels else None
    generated = np.zeros((req.count, gen_h, gen_w, 3), np.float32)
    generator = torch.Generator(device="cpu").manual_seed(req.seed)
    qc: dict = {}
    with common.completing(take):
        for chunk in plan:
            job.check_cancelled()
            known = np.concatenate([context, generated[:chunk.start]])[-chunk.cond:]
            made = video.family.extend(
                pipe, known, chunk.outputs + chunk.pad, height=gen_h, width=gen_w, prompt=req.prompt,
                negative_prompt=req.negative_prompt, steps=req.steps, guidance=req.guidance, fps=req.fps,
                generator=generator, on_step=_progress(job, chunk, len(plan), first, req.count),
            )[:chunk.outputs]
            if chunk.index == 0:
                qc = _seam_qc(context[-1], made[0], req.colour_match)
                attributes.update(_seam_attributes(qc))
            made = qc["match"].apply(made)
            if chunk.overlap:
                w = chunking.blend_weights(chunk.overlap)[:, None, None, None]
                previous = generated[chunk.start:chunk.start + chunk.overlap]
                made[:chunk.overlap] = (1.0 - w) * previous + w * made[:chunk.overlap]
            generated[chunk.start:chunk.start + chunk.outputs] = made
            # Overlap frames are written again, blended: a take is only read once it says complete.
            outputs = _to_plate(colour, last, generated[chunk.start:chunk.start + chunk.outputs])
            for index, pixels in enumerate(outputs, start=chunk.start):
                path = take.frame_path(first + index)
                frame_io.write_exr_atomic(path, last, pixels, {**attributes, "frame": first + index,
                                                               "chunk": chunk.index + 1})
                take.add(first + index, path)
                if returned is not None:
                    returned[first + index] = common.wire_pixels(last, pixels)
    return common.result_message(job, "extend", take, {
        "adapter": attributes["adapter"], "seed": req.seed, "test_model": video.identity.test_model,
        "conditioning_frames": [f.frame for f in conditioning], "fps": req.fps,
        "size": [gen_w, gen_h], "chunks": [{"first": first + c.start, "last": first + c.start + c.outputs - 1,
                                            "overlap": c.overlap} for c in plan],
        "seam": {k: v for k, v in qc.items() if k != "match"} | {"correction": qc["match"].to_dict()},
    }, returned)


def _conditioning_plates(engine: Engine, items) -> list[frame_io.Frame]:
    plates = [common.load_image(engine, f.plate, f"plate {f.frame}") for f in items]
    last = plates[-1]
    for item, plate in zip(items, plates):
        if plate.pixels.shape[2] < 3:
            raise errors.RequestError(f"plate {item.frame} has {plate.pixels.shape[2]} channels; extend needs RGB",
                                      code=errors.INVALID_REQUEST)
        if plate.shape != last.shape:
            raise errors.RequestError(
                f"plate {item.frame} is {plate.shape[1]}x{plate.shape[0]} but plate {items[-1].frame} is "
                f"{last.shape[1]}x{last.shape[0]}: conditioning frames must share one size",
                code=errors.INVALID_REQUEST)
    return plates


def _progress(job, chunk: chunking.Chunk, chunks: int, first: int, count: int):
    def on_step(step: int, steps: int) -> None:
        job.check_cancelled()
        job.report((chunk.index + step / steps) / chunks, f"chunk {chunk.index + 1}/{chunks}: step {step}/{steps}",
                   chunk=chunk.index + 1, chunks=chunks, step=step, steps=steps, frame=first + chunk.start,
                   frames=count)
    return on_step


def _seam_qc(plate_last: np.ndarray, generated_first: np.ndarray, match: bool) -> dict:
    correction = seam.ColourMatch.between(plate_last, generated_first) if match else seam.ColourMatch()
    return {"space": "display-referred (the model's view)", "before": seam.difference(plate_last, generated_first),
            "after": seam.difference(plate_last, correction.apply(generated_first[None])[0]),
            "colour_match": match, "match": correction}


def _seam_attributes(qc: dict) -> dict:
    def rgb(values) -> str:
        return ",".join(f"{v:.6g}" for v in values)

    return {"seam_mean_diff": rgb(qc["before"]["mean_diff"]), "seam_std_diff": rgb(qc["before"]["std_diff"]),
            "seam_mean_diff_matched": rgb(qc["after"]["mean_diff"]),
            "seam_std_diff_matched": rgb(qc["after"]["std_diff"]),
            "colour_match_gain": rgb(qc["match"].gain), "colour_match_offset": rgb(qc["match"].offset)}


def _to_plate(colour: ColourTransform, plate: frame_io.Frame, model_rgb: np.ndarray) -> np.ndarray:
    """Generated frames in the plate's layout: scene-linear RGB, opaque alpha, other channels zero.

    One colour conversion for the whole batch: OCIO's per-call set-up then costs once per chunk."""
    height, width = plate.shape
    pixels = np.zeros((len(model_rgb), height, width, plate.pixels.shape[2]), np.float32)
    pixels[..., :3] = colour.from_model(np.stack([regions.resize(f, height, width) for f in model_rgb]))
    if plate.alpha_index is not None:
        pixels[..., plate.alpha_index] = 1.0
    return pixels
