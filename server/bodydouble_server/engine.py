"""The resident models: one slot per model kind (``models.slots``: image for fill, video for extend), each
with its pipelines on the device and the character adapters loaded into them.

Owned by the worker thread only (diffusers pipelines are not thread-safe).
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

from bodydouble import errors
from bodydouble.jobspec import MODEL_KINDS

from .config import ServerConfig
from .models.slots import KINDS, ModelSlot
from .paths import AllowedRoots
from .policy import Policy

log = logging.getLogger("bodydouble.engine")


def resolve_device(device: str, dtype: str):
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "float16" if device.startswith("cuda") else "float32"
    if device == "cpu" and dtype != "float32":
        log.warning("%s on CPU is slow or unsupported; using float32", dtype)
        dtype = "float32"
    return device, getattr(torch, dtype)


def quiet_libraries() -> None:
    """No per-load progress bars or info chatter from diffusers/transformers in a server's (or a job's) log."""
    import diffusers
    import transformers

    for library in (diffusers, transformers):
        library.utils.logging.set_verbosity_error()
        library.utils.logging.disable_progress_bar()
    # `torch_dtype` still works everywhere in our supported range; newer releases only nag.
    warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)


class Engine:
    def __init__(self, config: ServerConfig):
        self.config = config
        self.roots = AllowedRoots(config.roots)
        self.slots: dict[str, ModelSlot] = {}     # by model kind, filled by load(): empty while loading
        self.policy = Policy(config)  # consent, audit log, provenance (policy/)

    def load(self) -> None:
        quiet_libraries()
        self.device, self.dtype = resolve_device(self.config.device, self.config.dtype)
        for kind in KINDS.values():     # the image model first: without it the server does not start
            self.slots[kind.name] = ModelSlot(kind, self.config, self.device, self.dtype).load()

    # -- models by kind ------------------------------------------------------------------------------
    @property
    def loading(self) -> bool:
        return len(self.slots) < len(KINDS)

    def model(self, kind: str) -> ModelSlot:
        """The model of ``kind``, or the coded error why this server has none (not_supported,
        model_unavailable)."""
        if kind not in KINDS:
            raise errors.RequestError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)}",
                                      code=errors.INVALID_REQUEST)
        slot = self.slots.get(kind)
        if slot is None:
            raise errors.RequestError(f"the server is still loading its {KINDS[kind].title}",
                                      code=errors.MODEL_UNAVAILABLE)
        return slot.require()

    def model_for(self, operation: str) -> ModelSlot:
        """The model that runs ``operation`` (fill: image, extend: video)."""
        if operation not in MODEL_KINDS:
            raise errors.RequestError(f"no model runs '{operation}'", code=errors.NOT_SUPPORTED)
        return self.model(MODEL_KINDS[operation])

    def check_model(self, kind: str) -> None:
        """Submit time: refuse a kind this server has not got; while loading, the worker checks later."""
        if kind in self.slots or kind not in KINDS:
            self.model(kind)

    def available(self) -> list[ModelSlot]:
        return [slot for slot in self.slots.values() if slot.available]

    # The image model's, and the video slot by its old names (callers that predate the slots).
    @property
    def identity(self):
        return self.slots["image"].identity if "image" in self.slots else None

    @property
    def family(self):
        return self.slots["image"].family if "image" in self.slots else None

    @property
    def adapters(self):
        return self.slots["image"].adapters if "image" in self.slots else None

    @property
    def pipelines(self) -> dict[str, object]:
        return self.slots["image"].pipelines if "image" in self.slots else {}

    @property
    def resolution(self) -> int:
        return self.slots["image"].resolution

    def pipeline(self, operation: str):
        return self.model_for(operation).pipeline(operation)

    @property
    def video(self) -> ModelSlot | None:
        """The video slot when the server has a video model (None: not configured, failed, or loading)."""
        slot = self.slots.get("video")
        return slot if slot is not None and slot.available else None

    @property
    def video_error(self) -> tuple[str, str] | None:
        slot = self.slots.get("video")
        return slot.error if slot is not None else None

    def video_model(self) -> ModelSlot:
        return self.model("video")

    # -- what every kind shares ----------------------------------------------------------------------
    def rescan(self) -> None:
        for slot in self.available():
            slot.rescan()

    def adapter_listing(self) -> list[dict]:
        """Each adapter folder once: as the model of its kind sees it (video adapters by the video model)."""
        entries: dict[str, dict] = {}
        for slot in self.available():
            for entry in slot.adapters.listing():
                if entry["model_kind"] == slot.kind.name or entry["name"] not in entries:
                    entries[entry["name"]] = entry
        return [self.policy.with_scope(entries[name]) for name in sorted(entries)]

    @property
    def operations(self) -> list[str]:
        # Training reads the base model's components from its diffusers folder (not a single-file checkpoint).
        image = self.slots.get("image")
        trainable = image is not None and image.available and Path(image.identity.path).is_dir()
        return sorted({op for slot in self.available() for op in slot.operations} | ({"train"} if trainable else set()))

    def describe(self) -> dict:
        image, video = self.slots["image"], self.slots.get("video")
        return {
            **image.identity.to_dict(),
            "family_title": image.family.title,
            "device": self.device,
            "dtype": str(self.dtype).removeprefix("torch."),
            "resolution": image.resolution,
            "operations": self.operations,
            "video_model": video.describe() if video is not None and video.available else None,
            "video_error": video.error[1] if video is not None and video.error else None,
        }
