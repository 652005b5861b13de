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
import dataclasses
import functools

import numpy as np

from bodydouble import errors, protocol
from bodydouble.jobspec import FillRequest, ImageRef

from ..engine import Engine
from ..imaging import frames as frame_io
from ..imaging import regions
from ..imaging.colour import ColourTransform
from ..models.registry import step_callback
from ..previews import Previewer
from . import common, sequence


def validate(req: FillRequest, engine: Engine) -> None:
    """Submit-time checks, before ``accepted`` (cheap: no pixels decoded, nothing written; see common)."""
    key = [(ImageRef(path=req.key_frame), "key frame")] if req.key_frame else []
    common.check_inputs(engine, [(f.plate, f"plate {f.frame}") for f in req.frames]
                        + [(f.mask, f"mask {f.frame}") for f in req.frames if f.mask is not None] + key)
    # Headers of the first and last frames (a long sequence is not opened file by file on the socket's thread).
    ends = {id(f): f for f in (req.frames[0], req.frames[-1])}.values()
    common.check_headers(engine, [(f.plate, f"plate {f.frame}") for f in ends]
                         + [(f.mask, f"mask {f.frame}") for f in ends] + key)
    ColourTransform(req.colorspace)
    common.check_output(engine, req.output_dir, common.shot_name(req.shot, req.output_dir, req.frames[0].plate))
    common.check_adapters(engine.adapters, req.key_adapters)     # the image model's (None: still loading)
    if engine.loading:
        if not req.asks_for_video:
            common.check_adapters(engine.adapters, req.adapters)
        return                                # still loading: the worker checks the rest
    if sequence.engine_for(req, engine) == "video":
        sequence.validate_video(req, engine)      # not_supported without a video model that inpaints
    else:
        common.check_adapters(engine.adapters, req.adapters)


def run_fill(engine: Engine, job, req: FillRequest) -> protocol.Message:
    """The shot through the frame pipeline (docs/frame-pipeline.md): frame N+1 is read and prepared on one
    thread and frame N-1 composited and written on another while frame N generates, so a GPU waits on the
    CPU only for the first frame's preparation and the last frame's write. At most four frames are in memory:
    one being prepared, one (or one batch) generating, two finishing; fewer for plates so large that four
    would pass common.PIPELINE_BYTES (an 8K 16-channel shot runs one frame at a time).

    The video engine runs elsewhere (sequence.py); coherence here (sequence.Carry): crops of one size for the
    shot, each frame mixed with the one before, so frames go one at a time."""
    if sequence.engine_for(req, engine) == "video":
        return sequence.run_video(engine, job, req)
    model = engine.model_for("fill")
    adapters = model.adapters.resolve(req.adapters)
    colour = ColourTransform(req.colorspace)
    common.check_inputs(engine, [(f.plate, f"plate {f.frame}") for f in req.frames]
                        + [(f.mask, f"mask {f.frame}") for f in req.frames if f.mask is not None])
    pipe = model.pipeline("fill")
    model.adapters.activate(pipe, adapters)
    previews = Previewer.for_model(req.preview, pipe, model)
    shot_label = common.shot_name(req.shot, req.output_dir, req.frames[0].plate)
    take, attributes = None, {}
    returned: dict[int, np.ndarray] | None = {} if req.return_pixels else None
    repaired = {key: 0 for key in NONFINITE_KEYS}
    total = len(req.frames)
    carry = sequence.Carry(req) if req.coherence else None
    batch = 1 if carry else common.fill_batch(engine)
    boxes = dict(zip((f.frame for f in req.frames), sequence.survey(engine, job, req))) if carry else {}

    def read(item) -> Prepared:
        # One frame at a time, in its own pixel types: only what the model needs becomes float.
        plate, mask, mask_repaired = read_inputs(engine, req, item)
        return prepare_frame(model, req, colour, plate, mask, item=item, mask_repaired=mask_repaired,
                             box=boxes.get(item.frame))

    with contextlib.ExitStack() as finishing:
        # Read ahead and write behind as far as the plates' size allows (common.frames_in_flight).
        reader = finishing.enter_context(common.Prefetcher(
            read, req.frames, ahead=batch,
            fits=lambda prepared: batch if common.frames_in_flight(prepared.plate.nbytes) > 1 else 0))
        index = 0
        while index < total:
            job.check_cancelled()
            # The first call takes one frame: the model starts once one plate is read, not a batch of them (and
            # the artist sees the first frame sooner); the reader fills the next batch meanwhile.
            group = reader.next_batch(batch if index else 1)
            if take is None:
                # The take opens once the first frame's inputs are read and checked: a plate or mask that cannot
                # be used leaves no folder and uses no take number (a cancel or a model failure marks the take).
                take = common.open_take(engine, job, req.output_dir, shot_label, common.adapter_label(adapters), {
                    "operation": "fill", "engine": "image", "coherence": req.coherence,
                    "adapters": [a.describe() for a, _ in adapters], "base_model": model.identity.to_dict(),
                    "request": {k: getattr(req, k) for k in TAKE_SETTINGS},
                    "nonfinite": {"total": repaired, "frames": {}},
                })
                finishing.enter_context(common.completing(take))
                attributes = {**common.provenance(engine, "fill", adapters, req, take, job), "engine": "image",
                              "coherence": float(req.coherence)}
                # A batch's frames are all in memory already: the writer takes a whole batch without making the
                # model wait for earlier writes (with a smaller depth the worker stalled ~2 writes a batch).
                in_flight = common.frames_in_flight(group[0].plate.nbytes)
                writer = finishing.enter_context(common.TakeWriter(
                    take, returned, depth=max(in_flight - 2, batch if in_flight > 1 else 0),
                    after=nonfinite_recorder(take, repaired)))

            def on_step(step: int, steps: int, preview=None, _index=index, _frame=group[0].item.frame,
                        _last=group[-1].item.frame, _count=len(group)) -> None:
                # One pipeline call makes the whole batch: each step advances all its frames.
                job.check_cancelled()
                label = f"frame {_frame}" if _count == 1 else f"frames {_frame}-{_last}"
                job.report((_index + _count * step / steps) / total, f"{label}: step {step}/{steps}", preview=preview,
                           frame=_frame, frame_index=_index, frames=total, step=step, steps=steps)

            if carry is None:
                images = generate(pipe, req, group, previews.hook(on_step))
            else:
                images = carry.generate(group[0], lambda: generate(pipe, req, group, previews.hook(on_step)), on_step)
            for prepared, image in zip(group, images):
                writer.put(prepared.item.frame, functools.partial(composited, req, prepared, image, attributes))
            index += len(group)
            del group, images, prepared, image      # the plates are the writer's now: none kept past its write
        writer.flush()
    return common.result_message(job, "fill", take, {"adapter": attributes["adapter"], "seed": req.seed,
                                                     "test_model": model.identity.test_model, "engine": "image",
                                                     "nonfinite": dict(repaired)}, returned)


def composited(req: FillRequest, prepared: "Prepared", image: np.ndarray, attributes: dict):
    """The writer thread's part of a frame (common.TakeWriter here, a pool or farm worker's writer): the
    composite, and what its EXR says. Returns (frame, EXR attributes, non-finite counts)."""
    counts = {**finish_frame(req, prepared, image), "nonfinite_mask": prepared.mask_repaired}
    item = prepared.item
    return prepared.plate, {
        **attributes, "frame": item.frame, "source": prepared.plate.source, **counts,
        "mask_source": item.mask.path if item.mask and item.mask.path else ("buffer" if item.mask else "plate alpha"),
    }, counts


NONFINITE_KEYS = ("nonfinite_filled", "nonfinite_context", "nonfinite_mask")


def nonfinite_recorder(take, repaired: dict):
    """common.TakeWriter's ``after``: each frame's non-finite counts into take.json and the ``repaired`` totals
    (the worker's thread, in frame order, before take.add)."""
    def record(frame: int, counts: dict) -> None:
        if any(counts.values()):
            take.info["nonfinite"]["frames"][str(frame)] = counts
            for key, value in counts.items():
                repaired[key] += value
    return record
# The request's settings a fill take records in take.json (here, in the pool and in farm jobs).
TAKE_SETTINGS = ("prompt", "negative_prompt", "seed", "steps", "strength", "guidance", "colorspace",
                 "highlight_ceiling", "context", "feather")


def read_inputs(engine: Engine, req: FillRequest, item) -> tuple[frame_io.Frame, np.ndarray, int]:
    """One frame's plate (with RGB), its mask over the plate's data window, and the mask's NaN/Inf count."""
    plate = common.load_image(engine, item.plate, f"plate {item.frame}")
    plate.require_rgb("fill")
    mask, mask_repaired = _mask_for(engine, item, plate, req.mask_channel)
    return plate, mask, mask_repaired


def _mask_for(engine: Engine, item, plate: frame_io.Frame, channel: str | None) -> tuple[np.ndarray, int]:
    """The mask over the plate's data window (float32) and how many of its samples were NaN/Inf."""
    if item.mask is None:
        if plate.alpha_name is None:
            raise errors.RequestError(f"plate {item.frame} has no alpha and no mask was given", code=errors.EMPTY_MASK)
        return frame_io.clean_mask(plate.channel(plate.alpha_name))
    mask_frame = common.load_image(engine, item.mask, f"mask {item.frame}")
    values = frame_io.mask_channel(mask_frame, channel)
    return frame_io.clean_mask(frame_io.place_mask(mask_frame, values, plate, f"mask {item.frame}"))


@dataclasses.dataclass
class Prepared:
    """One frame made ready for the model (the reader thread's work): the plate, where the model works and
    what it sees there."""

    item: object                    # the request's FrameInput (None outside a request's frame list)
    plate: frame_io.Frame
    mask_repaired: int
    box: regions.Box
    crop_mask: np.ndarray           # the mask over the box
    broken: np.ndarray              # the box's RGB samples that are NaN/Inf (shown to the model as black)
    encoding: object                # the crop's ModelEncoding
    model_rgb: np.ndarray           # (gen_h, gen_w, 3) in [0, 1]
    model_mask: np.ndarray          # (gen_h, gen_w) 0/1

    @property
    def size(self) -> tuple[int, int]:
        return self.model_rgb.shape[:2]


def prepare_frame(model, req: FillRequest, colour: ColourTransform, plate: frame_io.Frame, mask: np.ndarray, *,
                  item=None, mask_repaired: int = 0, box: regions.Box | None = None) -> Prepared:
    """Crop to the mask's box plus context (``box``: a given one, a whole shot's), the crop's model encoding,
    both resized to the model's size.

    Colour runs on the crop only, never on the whole frame; and through OCIO only where a pixel can reach the
    take (the mask's box, grown by the reach of the two resizes): the context around it, which only the model
    sees, goes through the baked view (imaging/colour.py, BakedView and its tolerance)."""
    height, width = plate.shape
    box = box or regions.context_box(regions.mask_box(mask), height, width, req.context)
    gen_h, gen_w = regions.model_size(box, plate.pixel_aspect, model.resolution, model.family.multiple)
    ys, xs = box.slices()
    crop_rgb = plate.rgb(ys, xs, native=True)          # half stays half: an 8K crop is big
    crop_mask = mask[ys, xs]
    broken = ~np.isfinite(crop_rgb).all(axis=2)
    # The crop's own encoding: the request's ceiling, raised to the crop's brightest value (imaging/colour.py).
    encoding, shown = colour.encode(crop_rgb, req.highlight_ceiling, exact=_reach(crop_mask, gen_h, gen_w))
    del crop_rgb
    model_rgb = common.model_input(shown, gen_h, gen_w)
    del shown
    model_mask = (regions.resize(crop_mask, gen_h, gen_w) > 0.01).astype(np.float32)
    return Prepared(item, plate, mask_repaired, box, crop_mask, broken, encoding, model_rgb, model_mask)


def _reach(crop_mask: np.ndarray, gen_h: int, gen_w: int) -> np.ndarray:
    """The crop's pixels that can reach the take: the mask's box grown by how far the way to the model and back
    spreads a pixel (the resize filters' radii: lanczos3 3 output pixels down, blackman-harris 1.5 source
    pixels up, in crop pixels), plus two."""
    height, width = crop_mask.shape
    inner = regions.mask_box(crop_mask)
    grow = int(np.ceil(4.5 * max(1.0, height / gen_h, width / gen_w))) + 2
    exact = np.zeros((height, width), bool)
    exact[max(0, inner.y0 - grow):inner.y1 + grow, max(0, inner.x0 - grow):inner.x1 + grow] = True
    return exact


def generate(pipe, req: FillRequest, group: list[Prepared], on_step) -> list[np.ndarray]:
    """One pipeline call for the group (frames of one model size): each frame's (gen_h, gen_w, 3) picture.

    Every frame gets its own generator seeded with the request's seed, so a frame comes out the same whether
    it was generated alone or in a batch (up to the batch's floating-point summation order)."""
    import torch

    gen_h, gen_w = group[0].size
    one = len(group) == 1
    generator = [torch.Generator(device="cpu").manual_seed(req.seed) for _ in group]
    out = pipe(
        prompt=req.prompt if one else [req.prompt] * len(group),
        negative_prompt=(req.negative_prompt or None) if one else [req.negative_prompt] * len(group)
        if req.negative_prompt else None,
        image=np.stack([p.model_rgb for p in group]), mask_image=np.stack([p.model_mask for p in group])[..., None],
        height=gen_h, width=gen_w, num_inference_steps=req.steps, strength=req.strength,
        guidance_scale=req.guidance, generator=generator[0] if one else generator, output_type="np",
        callback_on_step_end=step_callback(on_step, req.steps),
    ).images
    if len(out) != len(group):
        raise errors.RequestError(f"the model returned {len(out)} pictures for {len(group)} frames (does it take "
                                  "batches? set fill_batch = 1)", code=errors.JOB_FAILED)
    for prepared in group:                       # what only the model needed
        prepared.model_rgb = prepared.model_mask = None
    return [np.asarray(image, dtype=np.float32) for image in out[:len(group)]]


def finish_frame(req: FillRequest, prepared: Prepared, image: np.ndarray) -> dict:
    """Write the model's ``image`` into the plate's R, G, B in place (only the pixels the feathered mask
    reaches). Returns the non-finite counts: RGB samples inside the mask filled over, and those in the model's
    context, which the model saw as black and which stay as they were in the frame."""
    box, crop_mask, broken, plate = prepared.box, prepared.crop_mask, prepared.broken, prepared.plate
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
    generated = prepared.encoding.from_model(regions.resize(image, box.height, box.width)[iy, ix][inside])
    ys, xs = slice(box.y0 + inner.y0, box.y0 + inner.y1), slice(box.x0 + inner.x0, box.x0 + inner.x1)
    mixed = regions.composite(plate.rgb(ys, xs)[inside], generated, weight[inside])
    plate.set_rgb(ys, xs, mixed, inside)
    return {"nonfinite_filled": int(filled.sum()), "nonfinite_context": int(broken.sum()) - int(filled.sum())}

