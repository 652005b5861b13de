"""Fill a shot, not a frame: the parts of fill that make a range of frames temporally coherent.

Two ways, chosen by the request's ``engine`` (:func:`engine_for`):

- **video**: the range through the server's video model as masked video inpainting (Wan VACE: per-frame masks,
  the known pixels outside them), in chunks of the model's window with overlap as extend runs
  (chunks.py), with the character's video adapter. Every frame is cropped as per-frame fill crops it, at one
  size for the shot (:func:`survey`); the result goes back into each plate through fill's own composite
  (outside the mask every pixel bit-identical). A key frame (the first frame already filled) is held as a known
  frame; below strength 1 the frames start from it carried through the shot (:meth:`Carry.follow`).
- **image** with ``coherence`` > 0 (:class:`Carry`): frame by frame on the image model, in crops of one size
  that follow the mask (:func:`survey`), on the same noise per pixel (the same seed at the same size), each frame mixed with the previous result
  carried along by the plate's optical flow (imaging/flow.py; along the matte's own motion where the matte
  moves on the plate), ``coherence`` of it; at coherence 1 the first
  frame's fill is carried through the shot without the model.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from bodydouble import errors, protocol
from bodydouble.jobspec import FillRequest, ImageRef, check_shot

from ..engine import Engine
from ..imaging import flow, regions
from ..imaging.colour import ColourTransform
from ..previews import Previewer
from . import chunks as chunking
from . import common

# What a video-engine take records of its request beyond fill's own settings.
_VIDEO_SETTINGS = ("conditioning", "overlap", "key_frame")
# A matte moving this many plate pixels a frame or more is a roto of what moves under it (coherence carries the
# fill with the matte); one that stays put covers the plate behind it (carried with the plate around it).
_MATTE_MOVES_PX = 1.0


def engine_for(req: FillRequest, engine: Engine) -> str:
    """The engine a fill runs on: the request's, else ``video`` for a shot (consecutive frames, masks on all or
    none) whose adapters are all ready video adapters on a server whose video model inpaints, else ``image``.

    The adapters decide because they are the character as trained for one model: a request naming image
    adapters (every fill before engines existed) keeps running on the image model, and so does one naming
    none (the base model's fill) or asking for coherence (the image engine's option)."""
    if req.decided_engine:          # a key frame names the video engine (validate_video says where not)
        return req.decided_engine
    video = engine.video
    if (video is None or video.family.inpaint is None
            or not all(getattr(video.adapters.adapters.get(a.name), "status", "") == "ready" for a in req.adapters)):
        return "image"
    try:
        check_shot(req.frames, "the video engine")
    except ValueError:
        return "image"
    return "video"


def _video_model(engine: Engine):
    """The video model, if it can fill (not_supported: none, or one whose family takes no per-pixel masks)."""
    video = engine.model("video")           # not_supported / model_unavailable, with the reason
    if video.family.inpaint is None:
        raise errors.RequestError(
            f"this server's video model ({video.family.title}) cannot fill a shot: the video engine needs a family "
            "that takes per-pixel masks (Wan VACE); use engine 'image'", code=errors.NOT_SUPPORTED)
    return video


def _plan(req: FillRequest, video, adapters) -> list[chunking.Chunk]:
    # Nothing comes before the shot: the first call conditions on nothing (lead 0), later ones as extend's do.
    return chunking.plan(len(req.frames), req.conditioning, req.overlap, _window(req, video, adapters),
                         video.family.temporal_multiple, lead=0)


def _window(req: FillRequest, video, adapters) -> int:
    """Frames per video model call: the model's window; keyed by key adapters (every chunk keyed), as long as
    the clips the video adapters learned (stills: the shortest call, a key and one latent frame), at least what
    conditioning + overlap + a new frame need. A fill adapter knows the latent frames its clips spanned: in the
    miniature world keyed chunks of 5 frames from 5-frame clips 18.64 dB against 18.04 in chunks of the model's
    9 (per-frame fill 18.35); from 9-frame clips 18.47 in 9 against 18.01 in 5; from stills 18.39 in 5 against
    17.56 in 9 (per-frame fill 18.42)."""
    if not req.key_adapters:
        return video.window
    multiple = video.family.temporal_multiple
    learned = min((adapter.clip_frames for adapter, _ in adapters), default=1)
    fits = chunking.valid_length(req.conditioning + req.overlap + 1, multiple)
    return min(video.window, max(learned, multiple + 1, fits))


def validate_video(req: FillRequest, engine: Engine) -> None:
    """Submit time, after fill's own checks: a video model that inpaints, a shot, video adapters, a plan."""
    video = _video_model(engine)
    try:
        check_shot(req.frames, "the video engine")
    except ValueError as exc:
        raise errors.RequestError(str(exc), code=errors.INVALID_REQUEST) from None
    _plan(req, video, video.adapters.resolve(req.adapters))


def survey(engine: Engine, job, req: FillRequest) -> list[regions.Box]:
    """Each frame's crop, all of one size (``regions.shot_boxes``): reads each frame's mask (and plate: the mask
    lies over its data window) once, one frame at a time; the plates must share a size. The flow between two
    crops is the plate's motion less the crop's. Adapters learn a character at per-frame fill's framing
    (training frames its references so); measured in the miniature world, one box for the whole shot (the union
    of its masks, the plate's own camera) cost the image engine 1.2 dB and all identity, the video engine 1.7 dB
    and identity 0.42 -> 0.12 (docs/likeness.md, "Stage 7")."""
    from .fill import read_inputs

    mask_boxes, first, size = [], None, None
    for item in req.frames:
        job.check_cancelled()
        plate, mask, _ = read_inputs(engine, req, item)
        if size is None:
            first, size = item.frame, plate.shape
        elif plate.shape != size:
            raise errors.RequestError(
                f"plate {item.frame} is {plate.shape[1]}x{plate.shape[0]} but plate {first} is {size[1]}x{size[0]}: "
                "a shot filled as one shares one size", code=errors.INVALID_REQUEST)
        try:
            mask_boxes.append(regions.mask_box(mask))
        except errors.RequestError as exc:
            raise errors.RequestError(f"frame {item.frame}: {exc}", code=exc.code) from None
        del plate, mask
    return regions.shot_boxes(mask_boxes, *size, req.context)


class Carry:
    """Coherence for the image engine: a temporal filter along the plate's motion. Each frame is generated as
    per-frame fill would (in a crop of the shot's one size, on the same noise per pixel) and, inside the mask, mixed with
    the previous result carried by the motion between the two frames: the plate's (measured on the plates as
    the model sees them, around the mask), or, where the matte itself moves on the plate, the matte's
    (:func:`flow.follow_matte`); ``coherence`` of the carried result, the rest this frame's own.

    Why not start each frame's denoising from the carried result (img2img at 1 - coherence of the strength):
    measured in the miniature world (bench/shot_fill.py, base model, coherence 0.5) that feeds the model's
    output back into it, and the fill drifted from frame to frame: flicker 1.07 against per-frame fill's 0.35."""

    def __init__(self, req: FillRequest):
        self.req = req
        self.result: np.ndarray | None = None       # the previous frame's picture at the model's size
        self.plate: np.ndarray | None = None        # the previous frame's plate as the model saw it
        self.box: regions.Box | None = None         # ... its crop on the plate
        self.matte: flow.Matte | None = None        # ... and its mask in that crop

    def generate(self, prepared, run, on_step) -> list[np.ndarray]:
        """``prepared``'s picture: ``run()`` (fill.generate on this frame), mixed with the carried result inside
        the mask; at coherence 1 the carried result alone (the model is not run)."""
        coherence, plate, mask = self.req.coherence, prepared.model_rgb.copy(), prepared.model_mask
        carried = self._carried(prepared)
        if carried is None:
            picture = run()[0]
        elif coherence >= 1.0:
            prepared.model_rgb = prepared.model_mask = None
            on_step(1, 1)
            picture = carried
        else:
            own = run()[0]
            picture = np.where((mask > 0.5)[..., None], coherence * carried + (1.0 - coherence) * own, own)
        self._keep(picture, plate, prepared.box, mask)
        return [picture]

    def follow(self, prepared) -> np.ndarray:
        """The first frame's picture (``prepared``'s own) carried to ``prepared``'s frame, as coherence 1 carries
        a fill without the model: the video engine's start from a key frame (:func:`run_video`)."""
        picture = self._carried(prepared)
        picture = prepared.model_rgb.copy() if picture is None else picture
        self._keep(picture, prepared.model_rgb.copy(), prepared.box, prepared.model_mask)
        return picture

    def _carried(self, prepared) -> np.ndarray | None:
        """The previous result carried by the motion to ``prepared``'s frame inside its mask, its own model
        picture outside; None on the first frame."""
        if self.result is None:
            return None
        plate, mask = prepared.model_rgb, prepared.model_mask
        matte = flow.Matte.of(mask)
        motion = flow.follow_matte(flow.plate_flow(self.plate, plate, mask), self.matte, matte, mask,
                                   self._attached(prepared.box, matte, prepared.size))
        return np.where((mask > 0.5)[..., None], flow.warp(self.result, motion), plate)

    def _keep(self, picture: np.ndarray, plate: np.ndarray, box: regions.Box, mask: np.ndarray) -> None:
        self.result, self.plate, self.box, self.matte = picture, plate, box, flow.Matte.of(mask)

    def _attached(self, box: regions.Box, matte: flow.Matte | None, size: tuple[int, int]) -> float:
        """How much the matte moved on the plate since the previous frame, 0 (still) to 1 (a plate pixel or
        more: its centre, or its edge as it grows, about half its size's change)."""
        if self.matte is None or matte is None:
            return 0.0
        across, down = box.width / size[1], box.height / size[0]     # plate pixels a model pixel (one crop size)
        shift = np.array([box.x0 - self.box.x0, box.y0 - self.box.y0], np.float32) + (
            (matte.centre - self.matte.centre) * np.array([across, down], np.float32))
        growth = abs(matte.size - self.matte.size) * math.sqrt(across * down) / 2.0
        return min(1.0, max(float(np.hypot(*shift)), growth) / _MATTE_MOVES_PX)


def run_video(engine: Engine, job, req: FillRequest) -> protocol.Message:
    """The shot through the video model, chunk by chunk: each chunk's frames are read and prepared (crop to the
    shot's box, model encoding, the model's size), inpainted in one call, cross-faded over the overlap, and
    composited into their plates on the writer's thread (which reads each plate again rather than holding a
    window of full-size plates). Every finished chunk is on disk and in take.json before the next starts."""
    import torch

    from . import fill

    video = _video_model(engine)
    # Unknown and image adapters refused before anything is read.
    plan = _plan(req, video, video.adapters.resolve(req.adapters))
    key_adapters = engine.model_for("fill").adapters.resolve(req.key_adapters)     # the image model's
    colour = ColourTransform(req.colorspace)
    common.check_inputs(engine, [(f.plate, f"plate {f.frame}") for f in req.frames]
                        + [(f.mask, f"mask {f.frame}") for f in req.frames if f.mask is not None])
    boxes = survey(engine, job, req)
    pipe = video.pipeline()
    adapters = video.adapters.resolve(req.adapters)     # again: the first load may have found broken weights
    video.adapters.activate(pipe, adapters)
    previews = Previewer.for_model(req.preview, pipe, video)
    take = common.open_take(engine, job, req.output_dir, common.shot_name(req.shot, req.output_dir, req.frames[0].plate),
                            common.adapter_label(adapters), {
        "operation": "fill", "engine": "video", "adapters": [a.describe() for a, _ in adapters],
        **({"key_adapters": [a.describe() for a, _ in key_adapters]} if key_adapters else {}),
        "base_model": video.identity.to_dict(),
        "request": {k: getattr(req, k) for k in fill.TAKE_SETTINGS + _VIDEO_SETTINGS},
        "chunks": [{"first": req.frames[c.start].frame, "last": req.frames[c.start + c.outputs - 1].frame,
                    "overlap": c.overlap, "conditioning": c.cond} for c in plan],
        "nonfinite": {"total": {key: 0 for key in fill.NONFINITE_KEYS}, "frames": {}},
    })
    repaired = take.info["nonfinite"]["total"]
    attributes = {**common.provenance(engine, "fill", adapters, req, take, job, identity=video.identity),
                  "engine": "video", "chunks": len(plan), "overlap": req.overlap, "conditioning": req.conditioning,
                  **({"key_frame": req.key_frame} if req.key_frame else {}),
                  **({"key_adapter": "+".join(a.name for a, _ in key_adapters),
                      "key_adapter_sha256": "+".join(a.sha256 for a, _ in key_adapters)} if key_adapters else {})}
    returned: dict[int, np.ndarray] | None = {} if req.return_pixels else None
    total, first = len(req.frames), req.frames[0].frame
    generator = torch.Generator(device="cpu").manual_seed(req.seed)
    prepared: dict[int, fill.Prepared] = {}          # the current chunk's frames, by index in the shot
    # Strength below 1 with a key frame starts from the key carried through the shot, not the plate's stand-in
    # (miniature world, strength 0.8: 18.32 dB / identity 0.25 against 15.79 / 0.12 from the stand-in; at 1,
    # 18.04 / 0.33): each frame's start, by index, for as long as a chunk may prepare it again (overlap, pad).
    carry = Carry(req) if req.keyed and req.strength < 1.0 else None
    starts: dict[int, np.ndarray] = {}

    def read(index: int, keyed: bool = False, at: float = 0.0) -> fill.Prepared:
        """Frame ``index`` as the video model sees it; ``keyed``: its plate filled first (_key_frame), a key."""
        item = req.frames[index]
        plate, mask, mask_repaired = fill.read_inputs(engine, req, item)
        if keyed:
            plate = _key_frame(engine, job, req, plate, mask, colour, key_adapters, index, at)
        return fill.prepare_frame(video, req, colour, plate, mask, item=item, mask_repaired=mask_repaired,
                                  box=boxes[index])

    def prepare(index: int) -> fill.Prepared:
        keyed = index == 0 and req.keyed
        ready = read(index, keyed)
        if carry is not None:
            if index not in starts:
                starts[index] = carry.follow(ready)
            ready.model_rgb = starts[index]
        if keyed:                                     # known to the model, held to its latents (wan.inpaint)
            ready.model_mask = np.zeros_like(ready.model_mask)
        ready.plate = None                            # read again when it is composited: a window of plates is big
        return ready

    def make(chunk: chunking.Chunk, known: np.ndarray) -> np.ndarray:
        job.check_cancelled()
        prepared.clear()
        for index in [i for i in starts if i < chunk.start]:
            del starts[index]
        # Pad frames (the model's frame rule) repeat the last frame; they are dropped.
        indices = [min(i, total - 1) for i in range(chunk.start, chunk.start + chunk.outputs + chunk.pad)]
        for i in indices:
            if i not in prepared:
                prepared[i] = prepare(i)
        frames = [prepared[i] for i in indices]
        gen_h, gen_w = frames[0].size
        # Key adapters key every chunk: its first conditioning frame filled anew (the first chunk's key fades
        # beyond its window).
        rekey = bool(chunk.index and key_adapters and len(known))
        if rekey:
            key = read(chunk.start - len(known), keyed=True, at=chunk.index / len(plan)).model_rgb
            known = np.concatenate([key[None], known[1:]])
        rgb = np.concatenate([known.reshape(-1, gen_h, gen_w, 3), np.stack([p.model_rgb for p in frames])])
        mask = np.concatenate([np.zeros((len(known), gen_h, gen_w), np.float32),
                               np.stack([p.model_mask for p in frames])])
        for p in frames:
            p.model_rgb = p.model_mask = None
        made = video.family.inpaint(
            pipe, rgb, mask, height=gen_h, width=gen_w, prompt=req.prompt, negative_prompt=req.negative_prompt,
            steps=req.steps, strength=req.strength, guidance=req.guidance, fps=24.0, generator=generator,
            # A key held to its own latents (the model would redraw it): the first chunk's, and with key
            # adapters each later chunk's fresh one (world, 16 frames, two keys: 17.03 -> 18.25 dB, identity
            # 0.27 -> 0.33; per-frame fill 18.30 / 0.33). Not a later chunk's conditioning frame as the chunk
            # before made it: that steadied a 16-frame shot (flicker 1.07 -> 0.78) and cost its likeness
            # (15.43 -> 15.17 dB, identity 0.25 -> 0.15).
            pin_known=req.keyed and (chunk.index == 0 or rekey),
            on_step=previews.hook(chunking.progress(job, chunk, len(plan), first, total)))
        return np.asarray(made[len(known):len(known) + chunk.outputs], dtype=np.float32)

    def emit(chunk: chunking.Chunk, made: np.ndarray) -> None:
        for index, image in enumerate(made, start=chunk.start):
            frame = req.frames[index].frame
            writer.put(frame, functools.partial(_finished, engine, req, prepared[index], image,
                                                {**attributes, "chunk": chunk.index + 1}))
        writer.flush()      # every finished chunk is on disk and in take.json before the next starts

    record = fill.nonfinite_recorder(take, repaired)
    with common.completing(take), common.TakeWriter(take, returned, after=record) as writer:
        chunking.run(plan, np.zeros((0, 1, 1, 3), np.float32), req.conditioning + req.overlap, make, emit)
    return common.result_message(job, "fill", take, {
        "adapter": attributes["adapter"], "seed": req.seed, "test_model": video.identity.test_model,
        "engine": "video", "nonfinite": dict(repaired),
        "chunks": take.info["chunks"]}, returned)


def _key_frame(engine: Engine, job, req: FillRequest, plate, mask, colour: ColourTransform, key_adapters,
               index: int = 0, at: float = 0.0):
    """The shot's frame ``index`` filled, in its plate's place: the request's key frame (the first frame: a filled
    copy of the plate, its size), or the plate filled here on the image model with the key adapters, as
    per-frame fill fills it (progress: ``at``, the shot's share done)."""
    from . import fill

    if req.key_frame is None:
        model = engine.model_for("fill")
        pipe = model.pipeline("fill")
        model.adapters.activate(pipe, key_adapters)
        item = req.frames[index]
        ready = fill.prepare_frame(model, req, colour, plate, mask, item=item)

        def on_step(step: int, steps: int, preview=None) -> None:
            job.check_cancelled()
            job.report(at, f"key frame {item.frame}: step {step}/{steps}", step=step, steps=steps, frame=item.frame)

        fill.finish_frame(req, ready, fill.generate(pipe, req, [ready], on_step)[0])
        return ready.plate
    key = common.load_image(engine, ImageRef(path=req.key_frame), "key frame")
    if key.shape != plate.shape:
        raise errors.RequestError(
            f"the key frame is {key.shape[1]}x{key.shape[0]} but plate {req.frames[0].frame} is "
            f"{plate.shape[1]}x{plate.shape[0]}: give the first frame filled, at the plate's size",
            code=errors.INVALID_REQUEST)
    return key


def _finished(engine: Engine, req: FillRequest, prepared, image: np.ndarray, attributes: dict):
    """The writer thread's part: the plate read again, then fill's own composite and header."""
    from . import fill

    plate = common.load_image(engine, prepared.item.plate, f"plate {prepared.item.frame}")
    if plate.shape[0] < prepared.box.y1 or plate.shape[1] < prepared.box.x1:
        raise errors.RequestError(f"plate {prepared.item.frame} changed size while the shot was being filled",
                                  code=errors.JOB_FAILED)
    prepared.plate = plate
    return fill.composited(req, prepared, image, attributes)
