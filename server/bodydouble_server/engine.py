"""The resident model: base pipeline(s) on the device plus the character adapters loaded into them.

Owned by the worker thread only (diffusers pipelines are not thread-safe).
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

from bodydouble import errors

from . import models
from .adapters import AdapterLibrary
from .config import ServerConfig
from .models import testing
from .models.identity import ModelIdentity, model_sha256
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
        self.pipelines: dict[str, object] = {}
        self.identity: ModelIdentity | None = None
        self.family = None
        self.adapters: AdapterLibrary | None = None
        self.video = None             # VideoModel for extend (None: not configured or failed; see video_error)
        self.video_error: tuple[str, str] | None = None     # (error code, message)
        self.policy = Policy(config)  # consent, audit log, provenance (policy/)

    def load(self) -> None:
        quiet_libraries()
        cfg = self.config
        test = testing.resolve(cfg.model, "image")   # no model set, test:standin, test:passthrough: a TEST model
        path = test.folder if test else Path(cfg.model).expanduser()
        if not path.exists():
            raise errors.RequestError(f"base model {path} does not exist", code=errors.MODEL_UNAVAILABLE)
        family = models.get_family(cfg.family) if cfg.family else models.detect_family(path, kind="image")
        self.device, self.dtype = resolve_device(cfg.device, cfg.dtype)
        log.info("loading %s (%s) on %s/%s", path, family.title, self.device, self.dtype)
        for operation in family.pipelines:
            cls = family.pipeline_class(operation)
            if path.is_file():
                if not cfg.model_config:
                    raise errors.RequestError(
                        f"{path} is a single-file checkpoint: set model_config to a local diffusers config folder "
                        "of its family (no model hub is consulted)", code=errors.MODEL_UNAVAILABLE)
                pipe = cls.from_single_file(str(path), config=cfg.model_config, torch_dtype=self.dtype,
                                            local_files_only=True)
            else:
                pipe = cls.from_pretrained(str(path), torch_dtype=self.dtype, local_files_only=True)
            pipe.to(self.device)
            pipe.set_progress_bar_config(disable=True)
            self.pipelines[operation] = pipe
        self.family = family
        self.identity = ModelIdentity(name=test.label if test else path.name, family=family.name,
                                      sha256=model_sha256(path), path=test.path if test else str(path),
                                      test_model=test is not None)
        self.adapters = AdapterLibrary(Path(cfg.adapters), self.identity, family.kind)
        self.rescan()
        self._configure_video()

    def _configure_video(self) -> None:
        """Extend's video model; a broken one costs extend only, never fill."""
        from .video import DISABLED, VideoModel

        if (self.config.video_model or "").lower() == DISABLED:
            self.video_error = (errors.NOT_SUPPORTED, "this server has no video model (video_model = none): "
                                                      "extend is not available")
            return
        try:
            self.video = VideoModel(self.config, self.device, self.dtype)
        except Exception as exc:
            log.exception("video model unavailable")
            self.video_error = (errors.MODEL_UNAVAILABLE, f"the server's video model is unavailable: {exc}")

    def video_model(self):
        if self.video is None:
            code, message = self.video_error or (errors.NOT_SUPPORTED, "no video model")
            raise errors.RequestError(message, code=code)
        return self.video

    def rescan(self) -> None:
        for pipe in self.pipelines.values():
            self.adapters.sync(pipe)
        if self.video is not None:
            self.video.rescan()

    def adapter_listing(self) -> list[dict]:
        """Each adapter folder once: as the model of its kind sees it (video adapters by the video model)."""
        entries = {a["name"]: a for a in self.adapters.listing()} if self.adapters else {}
        if self.video is not None:
            for entry in self.video.adapters.listing():
                if entry["model_kind"] == "video" or entry["name"] not in entries:
                    entries[entry["name"]] = entry
        return [self.policy.with_scope(entries[name]) for name in sorted(entries)]

    @property
    def operations(self) -> list[str]:
        # Training reads the base model's components from its diffusers folder (not a single-file checkpoint).
        trainable = self.identity is not None and Path(self.identity.path).is_dir()
        return sorted({*self.pipelines, *(["extend"] if self.video is not None else []),
                       *(["train"] if trainable else [])})

    @property
    def resolution(self) -> int:
        return self.config.resolution or self.family.resolution

    def pipeline(self, operation: str):
        pipe = self.pipelines.get(operation)
        if pipe is None:
            self.family.pipeline_class(operation)  # raises the clear "cannot do" error
        return pipe

    def describe(self) -> dict:
        return {
            **self.identity.to_dict(),
            "family_title": self.family.title,
            "device": self.device,
            "dtype": str(self.dtype).removeprefix("torch."),
            "resolution": self.resolution,
            "operations": self.operations,
            "video_model": self.video.describe() if self.video is not None else None,
            "video_error": self.video_error[1] if self.video_error else None,
        }
