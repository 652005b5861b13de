"""Extend: N new frames after the plate's last one, in the character's likeness, continuing its motion.

The last K plate frames -> the model's display-referred encoding (the same OCIO view as fill) -> resized
to the video model's size -> chunks of the model's frame window, each conditioned on the tail of what
exists (chunks.py) -> colour matched across the seam (seam.py) -> resized back -> inverse view -> EXRs
numbered after the plate, with the plate's resolution, pixel aspect, channels and pixel type. Every
finished chunk is on disk at once; the take is marked complete only after the last one.

Generated highlights never exceed the request's highlight_ceiling or the conditioning frames' brightest value
(imaging/colour.py's model encoding), as in fill.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from bodydouble import errors, protocol
from bodydouble.jobspec import ExtendRequest

from ..engine import Engine
from ..imaging import frames as frame_io
from ..imaging import regions, seam
from ..imaging import colour as colour_mod
from ..imaging.colour import ColourTransform, ModelEncoding
from ..previews import Previewer
from . import chunks as chunking
from . import common

_ROWS = 1 << 20      # pixels a step when a full-size frame is scanned or converted in place

_SETTINGS = ("prompt", "negative_prompt", "seed", "steps", "guidance", "fps", "count", "conditioning", "overlap",
             "colour_match", "colorspace", "highlight_ceiling")


def validate(req: ExtendRequest, engine: Engine) -> None:
    """Submit-time checks, before ``accepted`` (cheap: no pixels decoded, nothing written; see common)."""
    common.check_inputs(engine, [(f.plate, f"plate {f.frame}") for f in req.frames])
    common.check_headers(engine, [(f.plate, f"plate {f.frame}") for f in req.frames[-req.conditioning:]])
    ColourTransform(req.colorspace)
    common.check_output(engine, req.output_dir, common.shot_name(req.shot, req.output_dir, req.frames[0].plate))
    if engine.loading:
        return                                # still loading: the worker checks the rest
    video = engine.model_for("extend")        # not_supported / model_unavailable
    common.check_adapters(video.adapters, req.adapters)
    chunking.plan(req.count, req.conditioning, req.overlap, video.window, video.family.temporal_multiple)


def run_extend(engine: Engine, job, req: ExtendRequest) -> protocol.Message:
    import torch

    video = engine.model_for("extend")
    video.adapters.resolve(req.adapters)      # refuse unknown and image adapters before loading anything
    colour = ColourTransform(req.colorspace)
    plan = chunking.plan(req.count, req.conditioning, req.overlap, video.window, video.family.temporal_multiple)
    common.check_inputs(engine, [(f.plate, f"plate {f.frame}") for f in req.frames])
    conditioning = req.frames[-req.conditioning:]
    context, encoding, last, broken = _conditioning(engine, colour, req.highlight_ceiling, conditioning, video)
    gen_h, gen_w = context.shape[1:3]

    pipe = video.pipeline()
    adapters = video.adapters.resolve(req.adapters)     # again: the first load may have found broken weights
    video.adapters.activate(pipe, adapters)
    previews = Previewer.for_model(req.preview, pipe, video)
    shot = common.shot_name(req.shot, req.output_dir, req.frames[0].plate)
    take = common.open_take(engine, job, req.output_dir, shot, common.adapter_label(adapters), {
        "operation": "extend", "adapters": [a.describe() for a, _ in adapters], "base_model": video.identity.to_dict(),
        "request": {**{k: getattr(req, k) for k in _SETTINGS},
                    "frames": [{"frame": f.frame, "plate": f.plate.path or "buffer"} for f in req.frames]},
        "chunks": [dataclasses.asdict(c) for c in plan],
        "nonfinite": {"total": {"nonfinite_context": broken}},
    })
    first = req.frames[-1].frame + 1
    attributes = {
        **common.provenance(engine, "extend", adapters, req, take, job, identity=video.identity),
        "source": last.source, "conditioning_frames": ",".join(str(f.frame) for f in conditioning),
        "fps": float(req.fps), "count": req.count, "chunks": len(plan), "overlap": req.overlap,
        "nonfinite_context": broken,
    }
    returned: dict[int, np.ndarray] | None = {} if req.return_pixels else None
    # The sequence so far at the model's size, only as far back as a later chunk looks (its known frames and the
    # frames it regenerates): memory follows the model's window, never the shot's length.
    generator = torch.Generator(device="cpu").manual_seed(req.seed)
    qc: dict = {}

    def make(chunk: chunking.Chunk, known: np.ndarray) -> np.ndarray:
        nonlocal qc
        job.check_cancelled()
        made = video.family.extend(
            pipe, known, chunk.outputs + chunk.pad, height=gen_h, width=gen_w, prompt=req.prompt,
            negative_prompt=req.negative_prompt, steps=req.steps, guidance=req.guidance, fps=req.fps,
            generator=generator, on_step=previews.hook(chunking.progress(job, chunk, len(plan), first, req.count)),
        )[:chunk.outputs]
        if chunk.index == 0:
            qc = _seam_qc(context[-1], made[0], req.colour_match)
            attributes.update(_seam_attributes(qc))
        return qc["match"].apply(made)

    def emit(chunk: chunking.Chunk, made: np.ndarray) -> None:
        # Overlap frames are written again, blended: a take is only read once it says complete. Resize, inverse
        # view and write run on the writer's thread while the next frame (or chunk) goes on.
        for index, model_rgb in enumerate(made, start=chunk.start):
            writer.put(first + index, functools.partial(
                _to_plate, encoding, last, model_rgb, {**attributes, "frame": first + index, "chunk": chunk.index + 1}))
        writer.flush()      # every finished chunk is on disk and in take.json before the next starts

    with common.completing(take), common.TakeWriter(take, returned) as writer:
        chunking.run(plan, context, req.conditioning + req.overlap, make, emit)
    return common.result_message(job, "extend", take, {
        "adapter": attributes["adapter"], "seed": req.seed, "test_model": video.identity.test_model,
        "conditioning_frames": [f.frame for f in conditioning], "fps": req.fps,
        "size": [gen_w, gen_h], "chunks": [{"first": first + c.start, "last": first + c.start + c.outputs - 1,
                                            "overlap": c.overlap} for c in plan],
        "seam": {k: v for k, v in qc.items() if k != "match"} | {"correction": qc["match"].to_dict()},
        "nonfinite": {"nonfinite_context": broken},
    }, returned)


# The frames before the last keep the view values of their pixels above the knee (to convert them again) up to
# this many frames' worth of pixels in all (16 bytes a pixel); a frame past it is read again, only if the encoding
# changes (plates that are mostly highlights).
_KEPT_FRAMES = 1.0


@dataclasses.dataclass
class _Converted:
    """One conditioning frame at the model's size, unclipped, in ``encoding``; ``bright``/``shown``: its pixels above
    that encoding's knee and their view values (None: not kept, read again if the take's encoding differs)."""

    item: object
    small: np.ndarray
    shape: tuple
    encoding: ModelEncoding
    bright: np.ndarray | None = None
    shown: np.ndarray | None = None


def _conditioning(engine: Engine, colour: ColourTransform, ceiling: float, items,
                  video) -> tuple[np.ndarray, ModelEncoding, frame_io.Frame, int]:
    """The last K plate frames at the model's size, each read once and converted one at a time; the take's one
    encoding (the request's ceiling raised to these frames' brightest value); the last plate's layout (what every
    generated frame is written as); how many of their pixels were NaN/Inf (shown as black).

    The encoding is known only once the last frame is read, and it changes a frame's model pixels only above its
    knee. So each earlier frame is converted with the encoding of the frames read so far and keeps the view values
    of its pixels above that knee (a brighter encoding's knee is never lower); when the encoding changes after it,
    their difference is resized and added (a resize is linear). The last frame is converted with the take's."""
    converted, layout, broken, brightest, room = [], None, 0, 0.0, 0
    for index, item in enumerate(items):
        plate = common.load_image(engine, item.plate, f"plate {item.frame}")
        plate.require_rgb("extend")
        if layout is None:
            reference = item
            height, width = plate.shape
            gen_h, gen_w = regions.model_size(regions.Box(0, height, 0, width), plate.pixel_aspect, video.resolution,
                                              video.family.multiple)
            room = int(_KEPT_FRAMES * height * width)
        elif plate.shape != layout.shape:
            raise errors.RequestError(
                f"plate {item.frame} is {plate.shape[1]}x{plate.shape[0]} but plate {reference.frame} is "
                f"{layout.shape[1]}x{layout.shape[0]}: conditioning frames must share one size",
                code=errors.INVALID_REQUEST)
        rgb = plate.rgb()
        broken += int((~np.isfinite(rgb)).any(axis=2).sum())
        brightest = max(brightest, colour_mod.brightest(rgb))
        encoding = colour.encoding(brightest, ceiling)
        layout = plate.layout()
        del plate
        frame = _Converted(item, np.empty(0), rgb.shape, encoding)
        if index == len(items) - 1:              # the take's encoding is known now: nothing to keep
            frame.small = regions.resize(encoding.to_model(rgb), gen_h, gen_w)
            del rgb
        else:
            shown = colour.to_model(rgb)             # the plain view, full size
            del rgb
            flat = shown.reshape(-1, 3)
            bright = np.concatenate([
                (start + np.flatnonzero((flat[start:start + _ROWS] > encoding.knee).any(axis=1))).astype(np.int32)
                for start in range(0, len(flat), _ROWS)])
            if len(bright) <= room:
                frame.bright, frame.shown, room = bright, flat[bright], room - len(bright)
            del bright
            for start in range(0, len(flat), _ROWS):     # in place: no second full-size array
                flat[start:start + _ROWS] = encoding.from_view(flat[start:start + _ROWS])
            frame.small = regions.resize(shown, gen_h, gen_w)
            del shown, flat
        converted.append(frame)
    context = []
    for frame in converted:
        if frame.encoding != encoding and frame.bright is None:     # read again: its highlights were not kept
            plate = common.load_image(engine, frame.item.plate, f"plate {frame.item.frame}")
            frame.small = regions.resize(encoding.to_model(plate.rgb()), gen_h, gen_w)
            del plate
        elif frame.encoding != encoding and len(frame.bright):
            change = np.zeros(frame.shape, np.float32)
            change.reshape(-1, 3)[frame.bright] = encoding.from_view(frame.shown) - frame.encoding.from_view(frame.shown)
            frame.small += regions.resize(change, gen_h, gen_w)
            del change
        frame.bright = frame.shown = None
        context.append(np.clip(frame.small, 0.0, 1.0))    # common.model_input's clip, after the resize
    return np.stack(context), encoding, layout, broken


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


def _to_plate(encoding: ModelEncoding, layout: frame_io.Frame, model_rgb: np.ndarray, attributes: dict):
    """One generated frame in the plate's layout (every part, channel type and window): scene-linear RGB,
    opaque alpha, other channels zero; with its attributes, for common.TakeWriter."""
    frame = layout.blank()
    height, width = frame.shape
    frame.set_rgb(slice(None), slice(None), encoding.from_model(regions.resize(model_rgb, height, width)))
    return frame, attributes, None
