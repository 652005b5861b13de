"""What one operation needs, as small typed dataclasses (the body of a ``submit`` message).

Hosts build these; the server decodes them with :func:`bodydouble.codec.from_wire`, which
calls each ``validate()``. Adding an operation = one request class + one ``OPERATIONS`` entry.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import errors
# Frame patterns and numbers in file names live in frames.py (fileseq); here for the requests' users.
from .frames import expand_pattern, format_frame, parse_range, split_frame  # noqa: F401

MODEL_KINDS = {"fill": "image", "extend": "video"}     # which of the server's models runs each operation
# How a fill runs (FillRequest.engine), named after the model kind it runs on: each frame through the image model,
# or the whole range through the video model as masked video inpainting. None: the server picks (docs/protocol.md).
FILL_ENGINES = ("image", "video")

# Caps on what a request may hold, in characters (and list lengths), checked at submit: a longer value is
# ``too_large``. Prompts go into every EXR header of a take; names become folder names.
TEXT_LIMITS = {"prompt": 4096, "name": 128, "character": 256, "trigger": 256, "colorspace": 256, "channel": 256,
               "path": 4096, "rights_holder": 1024, "licence": 4096, "view": 64}
MAX_FRAMES = 100_000           # frames in one request
MAX_ADAPTERS = 16              # adapters mixed in one request
# Frame numbers: what an EXR int attribute (and every host's frame counter) holds.
FRAME_RANGE = (-(2**31) + 1, 2**31 - 1)


def check_text(value: str, what: str, limit: str) -> None:
    """A string from the wire: within its cap (``too_large``), no NUL (C APIs and EXR headers cut there), no lone
    UTF-16 surrogate (not encodable as UTF-8: every file and reply would fail on it)."""
    cap = TEXT_LIMITS[limit]
    if len(value) > cap:
        raise errors.RequestError(f"{what} is {len(value)} characters; the limit is {cap}", code=errors.TOO_LARGE)
    if "\x00" in value:
        raise ValueError(f"{what} holds a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} holds a lone UTF-16 surrogate (not valid Unicode text)") from None


def check_count(items: list, what: str, cap: int) -> None:
    if len(items) > cap:
        raise errors.RequestError(f"{what} has {len(items)} entries; the limit is {cap}", code=errors.TOO_LARGE)


def check_frame_number(frame: int, what: str = "frame") -> None:
    if not FRAME_RANGE[0] <= frame <= FRAME_RANGE[1]:
        raise ValueError(f"{what} {frame} is outside {FRAME_RANGE[0]}..{FRAME_RANGE[1]} (what EXR headers hold)")


# An image: a path the server can read (shared storage: the normal studio case) or pixels.
# Pixels are (H, W, C) arrays, C in 1..4 (+ extra channels), float16/float32/uint8/uint16.


@dataclass
class ImageRef:
    path: Optional[str] = None
    pixels: Optional[np.ndarray] = None

    def validate(self) -> None:
        if (self.path is None) == (self.pixels is None):
            raise ValueError("an image is either a 'path' or 'pixels', exactly one of them")
        if self.path is not None and not self.path:
            raise ValueError("'path' is empty")
        if self.path is not None:
            check_text(self.path, "'path'", "path")
        if self.pixels is not None and self.pixels.ndim not in (2, 3):
            raise ValueError(f"pixels must be (H, W) or (H, W, C), got shape {self.pixels.shape}")

    @classmethod
    def of(cls, value: "str | np.ndarray | ImageRef | None") -> "ImageRef | None":
        if value is None or isinstance(value, ImageRef):
            return value
        if isinstance(value, np.ndarray):
            return cls(pixels=value)
        return cls(path=str(value))


@dataclass
class FrameInput:
    frame: int
    plate: ImageRef
    # None: use the plate's alpha channel as the mask.
    mask: Optional[ImageRef] = None

    def validate(self) -> None:
        check_frame_number(self.frame)


@dataclass
class AdapterRef:
    name: str
    weight: float = 1.0

    def validate(self) -> None:
        if not self.name:
            raise ValueError("adapter name is empty")
        check_text(self.name, "adapter name", "name")
        if not -4.0 <= self.weight <= 4.0:
            raise ValueError(f"adapter weight {self.weight} is outside [-4, 4]")


HIGHLIGHT_CEILING = 16.0


@dataclass
class PreviewOptions:
    """Live previews on a job's progress events (docs/protocol.md, "Live previews"): a small RGB picture of the
    model's work so far, at most one every ``every_ms``, its longest side at most ``max_side`` pixels. A request
    with ``preview: null`` gets none."""

    every_ms: int = 500
    max_side: int = 128

    MAX_SIDE = 256

    def validate(self) -> None:
        if not 50 <= self.every_ms <= 600_000:
            raise ValueError(f"preview.every_ms must be in 50..600000, got {self.every_ms}")
        if not 8 <= self.max_side <= self.MAX_SIDE:
            raise ValueError(f"preview.max_side must be in 8..{self.MAX_SIDE}, got {self.max_side}")


_SHOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def safe_name(text: str) -> str:
    """Any text as a name that can become a folder or node name: runs of other characters -> '_'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "untitled"


def check_safe_name(value: str, what: str) -> None:
    """Names that become folder names (shots, adapters): no separators, no leading dot, no '..'."""
    if not _SHOT_NAME.match(value):
        raise ValueError(f"{what} {value!r} may hold only letters, digits, '.', '_' and '-' (not first)")


def _check_generation(req) -> None:
    """The ranges every generating request shares (sampling, naming, adapters)."""
    if not 1 <= req.steps <= 500:
        raise ValueError(f"steps must be in 1..500, got {req.steps}")
    if not 0.0 <= req.guidance <= 50.0:
        raise ValueError(f"guidance must be in [0, 50], got {req.guidance}")
    if not 0 <= req.seed < 2**63:
        raise ValueError(f"seed must be in [0, 2^63), got {req.seed}")
    check_text(req.prompt, "prompt", "prompt")
    check_text(req.negative_prompt, "negative_prompt", "prompt")
    check_text(req.colorspace, "colorspace", "colorspace")
    if not 1.0 <= req.highlight_ceiling <= 65504.0:
        raise ValueError(f"highlight_ceiling must be in [1, 65504] (scene-linear), got {req.highlight_ceiling}")
    if req.output_dir is not None:
        check_text(req.output_dir, "output_dir", "path")
    if req.shot is not None:
        check_text(req.shot, "shot name", "name")
        check_safe_name(req.shot, "shot name")
    check_count(req.frames, "'frames'", MAX_FRAMES)
    check_count(req.adapters, "'adapters'", MAX_ADAPTERS)
    if req.preview is not None:
        req.preview.validate()
    if len({a.name for a in req.adapters}) != len(req.adapters):
        raise ValueError("an adapter is named twice")


def check_shot(frames: list["FrameInput"], what: str) -> None:
    """Frames a coherent fill can run over (``what``: the video engine, coherence): numbers that increase by
    one, and a mask for every frame or for none (the plates' alpha), never some. ValueError names the first
    gap or the frames without a mask."""
    numbers = [f.frame for f in frames]
    for a, b in zip(numbers, numbers[1:]):
        if b != a + 1:
            raise ValueError(f"{what} fills a shot: frame numbers must follow each other (increasing by one), "
                             f"but {a} is followed by {b}")
    bare = [f.frame for f in frames if f.mask is None]
    if bare and len(bare) < len(frames):
        listed = ", ".join(map(str, bare[:8])) + (", ..." if len(bare) > 8 else "")
        raise ValueError(f"{what} needs a mask on every frame (or none: the plates' alpha), but frames {listed} "
                         f"have none")


@dataclass
class FillRequest:
    """Inpaint what the plate never showed, inside the mask, in the character's likeness."""

    frames: list[FrameInput]
    adapters: list[AdapterRef] = field(default_factory=list)
    prompt: str = ""
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 20
    strength: float = 1.0
    guidance: float = 7.5
    # Colour space of the plate pixels (an OCIO name, alias, role or the host's usual name); ACEScg by default.
    colorspace: str = "ACEScg"
    # Generated pixels are never brighter than this (or than the brightest plate value in the crop), in the
    # plate's units (scene-linear for scene-linear plates): pure model white comes back as this (docs/colour.md).
    highlight_ceiling: float = HIGHLIGHT_CEILING
    # Channel of the mask image to use; None: alpha if present, else the first channel.
    mask_channel: Optional[str] = None
    # Context around the mask's bounding box, as a fraction of its size, given to the model.
    context: float = 0.5
    # Soft edge inside the mask, in plate pixels. Outside the mask nothing changes.
    feather: int = 4
    # Takes go to <output_dir>/bodydouble/<adapter>/take_NNN/; output_dir defaults to <server output root>/<shot>.
    shot: Optional[str] = None
    output_dir: Optional[str] = None
    return_pixels: bool = False
    # Live previews on progress events; None: none.
    preview: Optional[PreviewOptions] = field(default_factory=PreviewOptions)
    # "image": frame by frame on the image model; "video": the range as one shot through the video model (masked
    # video inpainting with the adapters as video adapters); None: the server picks ("video" for a range of
    # consecutive frames whose adapters are video adapters, on a server with a video model).
    engine: Optional[str] = None
    # Image engine: 0 (each frame on its own) .. 1 (the first frame's fill carried along by the plate's motion).
    # Between: each frame, generated in crops of one size that follow the mask on the same noise per pixel, is
    # mixed inside the mask with the previous result carried by the plate's optical flow (this much of it).
    coherence: float = 0.0
    # Video engine: chunks of the video model's window, as extend's (each later chunk sees ``conditioning``
    # filled frames as known and regenerates and cross-fades the previous chunk's last ``overlap`` frames).
    conditioning: int = 1
    overlap: int = 2
    # Video engine: a picture of the shot's first frame already filled (say an approved image-engine take's EXR),
    # the plates' size. The video model is given it as a known frame, held to its own latents, and carries it
    # through the shot (the first chunk: the model's window); the take's first frame is the key as the video
    # model's VAE codes it. None: every frame starts from noise. With strength below 1 the frames start from the
    # key carried through the shot along its motion, not from the plate under the mask.
    key_frame: Optional[str] = None
    # Video engine, instead of key_frame: image adapters (the character's, as an image-engine fill names them)
    # with which the server fills the shot's first frame on its image model, as per-frame fill would, and uses
    # that as the key frame: one request, no file in between. Every later chunk is keyed so too, and the chunks
    # are as long as the clips the video adapter was trained on.
    key_adapters: list[AdapterRef] = field(default_factory=list)

    operation = "fill"

    @property
    def keyed(self) -> bool:
        """Whether the video engine is given the shot's first frame: a key frame's file, or key adapters."""
        return self.key_frame is not None or bool(self.key_adapters)

    @property
    def asks_for_video(self) -> bool:
        """Whether the request itself names the video engine: ``engine`` "video", or a key (its option)."""
        return self.engine == "video" or self.keyed

    @property
    def decided_engine(self) -> Optional[str]:
        """The engine the request alone decides: its own, ``video`` for a key (the video engine's option),
        ``image`` for coherence (the image engine's), a single frame or no adapters; None where the server
        decides by the adapters it has and its video model (``sequence.engine_for`` on the server)."""
        if self.engine or self.asks_for_video:
            return self.engine or "video"
        if self.coherence or len(self.frames) < 2 or not self.adapters:
            return "image"
        return None

    @property
    def whole_shot(self) -> bool:
        """Whether this fill needs the whole shot on one server (frames condition on each other): the video
        engine, or coherence. The pool and the farm, which split a fill's frames, refuse it."""
        return self.asks_for_video or bool(self.coherence)

    def validate(self) -> None:
        if not self.frames:
            raise ValueError("'frames' is empty: give at least one plate frame")
        numbers = [f.frame for f in self.frames]
        if len(set(numbers)) != len(numbers):
            raise ValueError("frame numbers repeat")
        _check_generation(self)
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {self.strength}")
        if not 0.0 <= self.context <= 4.0:
            raise ValueError(f"context must be in [0, 4], got {self.context}")
        if not 0 <= self.feather <= 256:
            raise ValueError(f"feather must be in 0..256 pixels, got {self.feather}")
        if self.mask_channel is not None:
            check_text(self.mask_channel, "mask_channel", "channel")
        if self.engine is not None and self.engine not in FILL_ENGINES:
            raise ValueError(f"engine must be one of {', '.join(FILL_ENGINES)} (or null: the server picks), "
                             f"got {self.engine!r}")
        if not 0.0 <= self.coherence <= 1.0:
            raise ValueError(f"coherence must be in [0, 1], got {self.coherence}")
        if self.coherence and self.engine == "video":
            raise ValueError("coherence is the image engine's option (the video engine is coherent by itself)")
        if self.key_frame is not None:
            if not self.key_frame:
                raise ValueError("'key_frame' is empty: give the filled first frame's path, or none")
            check_text(self.key_frame, "'key_frame'", "path")
        check_count(self.key_adapters, "'key_adapters'", MAX_ADAPTERS)
        if self.keyed:
            option = "key_frame" if self.key_frame is not None else "key_adapters"
            if self.engine == "image" or self.coherence:
                raise ValueError(f"{option} is the video engine's option (the video model carries the key frame "
                                 "through the shot)")
            if self.key_frame is not None and self.key_adapters:
                raise ValueError("give key_frame (a filled first frame) or key_adapters (the server fills it), "
                                 "not both")
        if not 0 <= self.conditioning <= 64 or not 0 <= self.overlap <= 64:
            raise ValueError(f"conditioning and overlap must be in 0..64 frames, got {self.conditioning} and "
                             f"{self.overlap}")
        if self.whole_shot:
            check_shot(self.frames, "coherence" if self.coherence else "the video engine")


@dataclass
class ExtendRequest:
    """Generate ``count`` frames after the plate's last frame, continuing its numbering."""

    frames: list[FrameInput]          # the plate's frames, in order; masks are ignored
    count: int
    adapters: list[AdapterRef] = field(default_factory=list)
    prompt: str = ""
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 20
    guidance: float = 5.0
    fps: float = 24.0
    conditioning: int = 1             # K: how many of the last plate frames condition the model
    # Long extensions run in chunks of the model's frame window; each chunk regenerates the previous one's
    # last ``overlap`` frames and cross-fades them, hiding the seam between chunks.
    overlap: int = 2
    # Match the generated frames' per-channel mean/spread to the last plate frame (measured at the seam).
    colour_match: bool = True
    colorspace: str = "ACEScg"
    highlight_ceiling: float = HIGHLIGHT_CEILING   # as FillRequest's (the conditioning frames' brightest value)
    shot: Optional[str] = None
    output_dir: Optional[str] = None
    return_pixels: bool = False
    preview: Optional[PreviewOptions] = field(default_factory=PreviewOptions)   # as FillRequest's

    operation = "extend"

    def validate(self) -> None:
        if not self.frames:
            raise ValueError("'frames' is empty: give the plate frames to continue from")
        numbers = [f.frame for f in self.frames]
        if numbers != sorted(set(numbers)):
            raise ValueError("plate frame numbers must increase without repeats")
        if not 1 <= self.count <= 1000:
            raise ValueError(f"count must be in 1..1000, got {self.count}")
        if not 1 <= self.conditioning <= len(self.frames):
            raise ValueError(f"conditioning must be in 1..{len(self.frames)} (the plate frames given), got {self.conditioning}")
        _check_generation(self)
        if not 0.0 < self.fps <= 240.0:
            raise ValueError(f"fps must be in (0, 240], got {self.fps}")
        if not 0 <= self.overlap <= 64:
            raise ValueError(f"overlap must be in 0..64 frames, got {self.overlap}")
        check_frame_number(numbers[-1] + self.count, "the last new frame")


@dataclass
class TrainOptions:
    """How a character adapter is trained: the fields the train request and the server's trainer share."""

    character: str = ""
    model_kind: str = "image"         # which server model the adapter is for: image (fill) or video (extend)
    name: str = ""                    # adapter folder name; default: the character, slugged
    trigger: str = ""                 # default: <name>
    resolution: int = 512
    rank: int = 4
    steps: int = 500
    learning_rate: float = 1e-4
    batch: int = 1
    seed: int = 0
    checkpoint_every: int = 100
    holdout_per_view: int = 1         # frames per view kept out of training to score checkpoints
    preview_steps: int = 20
    preview_count: int = 4            # held-out (else training) frames inpainted into previews/ at the end
    mixed_precision: bool = True      # GPU only; CPU always trains in float32
    gradient_checkpointing: bool = True   # GPU only
    train_text_encoder: bool = False  # also a LoRA on the text encoder(s): stronger trigger binding, more memory
    # Video only: train on clips of this many consecutive frames of a sequence (1: every frame a 1-frame clip).
    # The model's frame rule applies: 1 or temporal_multiple * k + 1 (5, 9, 13, ... for Wan).
    clip_frames: int = 1
    clip_conditioning: int = 1        # frames at the start of each clip given as known (extend's K)
    # Share of clip samples trained on the video engine's fill (the character's matte to generate on every frame
    # of the clip, the rest known); the others train extend's objective. 0: extend only; 1: a fill adapter
    # (in the miniature world a fill share lifts the video engine's fill and lowers extend: docs/training.md).
    # At 1 the frames in no clip (stills, short runs) are held: each a clip of itself repeated, filled throughout.
    clip_fill: float = 0.0
    rights_holder: str = ""           # required to train (not for a report)
    licence: str = ""                 # licence / consent note; required to train

    def validate(self) -> None:
        for key, limit in (("character", "character"), ("name", "name"), ("trigger", "trigger"),
                           ("rights_holder", "rights_holder"), ("licence", "licence")):
            check_text(getattr(self, key), f"'{key}'", limit)
        if not self.character.strip():
            raise ValueError("'character' is empty")
        if self.model_kind not in MODEL_KINDS.values():
            raise ValueError("model_kind must be 'image' or 'video' (the server's fill or extend model), "
                             f"got {self.model_kind!r}")
        if self.name:
            check_safe_name(self.name, "adapter name")   # it becomes a folder inside the adapters folder
        if not 64 <= self.resolution <= 2048 or self.resolution % 8:
            raise ValueError(f"resolution must be a multiple of 8 in 64..2048, got {self.resolution}")
        for key, low, high in (("rank", 1, 256), ("steps", 1, 100_000), ("batch", 1, 64),
                               ("checkpoint_every", 1, 100_000), ("holdout_per_view", 0, 100),
                               ("preview_steps", 1, 500), ("preview_count", 0, 64)):
            if not low <= getattr(self, key) <= high:
                raise ValueError(f"{key} must be in {low}..{high}, got {getattr(self, key)}")
        if not 0.0 < self.learning_rate <= 1.0:
            raise ValueError(f"learning_rate must be in (0, 1], got {self.learning_rate}")
        if not 1 <= self.clip_frames <= 81:
            raise ValueError(f"clip_frames must be in 1..81 (1, or the video model's temporal_multiple * k + 1: "
                             f"5, 9, 13, ... for Wan), got {self.clip_frames}")
        if self.clip_frames != 1 and self.model_kind != "video":
            raise ValueError(f"clip_frames {self.clip_frames} is for video training (model_kind 'video'); "
                             "image adapters train on single frames: leave clip_frames at 1")
        if not 1 <= self.clip_conditioning <= max(1, self.clip_frames - 1):
            raise ValueError(f"clip_conditioning (known frames at the start of each clip) must be in "
                             f"1..{max(1, self.clip_frames - 1)} for clip_frames {self.clip_frames}, "
                             f"got {self.clip_conditioning}")
        if not 0.0 <= self.clip_fill <= 1.0:
            raise ValueError(f"clip_fill (the share of clips trained on fill, the rest on extend) must be in 0..1, "
                             f"got {self.clip_fill}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be in [0, 2^63), got {self.seed}")


@dataclass
class TrainRequest(TrainOptions):
    """Train a character adapter (LoRA) on reference frames the server can read, or only report on them.

    ``frames``: absolute folders or files under the server's allowed roots. Masks, captions and
    view tags come from the layout beside the frames (``masks/``, ``*.txt``, ``frames.json``, view
    folders: see docs/training.md). The adapter is published into the server's adapters folder;
    rerunning the same request after a cancel or crash resumes from the last checkpoint.
    """

    frames: list[str] = field(default_factory=list)
    colorspace: str = "auto"          # auto: float files ACEScg, integer files display-referred
    # Thresholds of the data report; below them training refuses unless ``force``.
    min_frames: int = 8
    min_per_view: int = 1
    required_views: Optional[list[str]] = None    # None: every standard view but top
    force: bool = False
    report_only: bool = False
    contact_sheet: Optional[str] = None           # report_only: PNG path (under the roots) for the contact sheet

    operation = "train"

    def validate(self) -> None:
        if not self.frames or not all(self.frames):
            raise ValueError("'frames' is empty: give folders or files of reference frames")
        check_count(self.frames, "'frames'", MAX_FRAMES)
        for index, item in enumerate(self.frames):
            check_text(item, f"frames[{index}]", "path")
        check_text(self.colorspace, "colorspace", "colorspace")
        for index, view in enumerate(self.required_views or []):
            check_text(view, f"required_views[{index}]", "view")
        if self.contact_sheet is not None:
            check_text(self.contact_sheet, "contact_sheet", "path")
        super().validate()
        if self.min_frames < 0 or self.min_per_view < 0:
            raise ValueError("min_frames and min_per_view must not be negative")
        if self.contact_sheet is not None and not self.report_only:
            raise ValueError("'contact_sheet' goes with report_only")


# operation name -> request class; the server looks operations up here.
OPERATIONS: dict[str, type] = {"fill": FillRequest, "extend": ExtendRequest, "train": TrainRequest}


def parse_frame_range(text: str) -> tuple[int, int]:
    """``1001-1010``, ``1001``, ``-5--1``, ``-3-2``: (first, last), as ranges are printed. ValueError if not one."""
    first, last = parse_range(text)
    for value in (first, last):
        check_frame_number(value)
    return first, last


def sequence_frames(plate_pattern: str, first: int, last: int, mask_pattern: str | None = None) -> list[FrameInput]:
    """Frame inputs for a file sequence on shared storage."""
    if last < first:
        raise ValueError(f"frame range {first}-{last} is empty")
    return [
        FrameInput(
            frame=f,
            plate=ImageRef(path=expand_pattern(plate_pattern, f)),
            mask=ImageRef(path=expand_pattern(mask_pattern, f)) if mask_pattern else None,
        )
        for f in range(first, last + 1)
    ]
