"""Extend's video model: configured at server start, its pipeline loaded on the first extend.

Why lazily: a video model with its text encoder is many GB of GPU memory (Wan 2.1 VACE 14B + UMT5-XXL is
~40 GB in bf16) that a fill-only session should not pay for, nor wait for at start. What is cheap is done at
start, so ``hello`` and ``list_adapters`` are right from the first answer: the model's folder, family and
content hash, and the adapters folder inspected against it. Owned by the worker thread, like the Engine.
"""
from __future__ import annotations

import logging
from pathlib import Path

from bodydouble import errors

from . import models
from .adapters import AdapterLibrary
from .models import embedded_video, testing
from .models.identity import ModelIdentity, model_sha256

log = logging.getLogger("bodydouble.video")

DISABLED = "none"             # video_model = "none": this server does no extend


class VideoModel:
    def __init__(self, config, device: str, dtype):
        self.config = config
        self.device, self.dtype = device, dtype
        test = testing.resolve(config.video_model, "video")   # none set, test:standin, test:passthrough: TEST
        self.test_model = test is not None
        path = test.folder if test else Path(config.video_model).expanduser()
        if not path.is_dir():
            raise errors.RequestError(f"video model {path} is not a diffusers folder", code=errors.MODEL_UNAVAILABLE)
        self.path = path
        self.family = models.detect_family(path, kind="video")
        self.identity = ModelIdentity(name=test.label if test else path.name, family=self.family.name,
                                      sha256=model_sha256(path), path=test.path if test else str(path),
                                      test_model=self.test_model)
        self.adapters = AdapterLibrary(Path(config.adapters), self.identity, "video")
        self.adapters.sync(None)          # inspect only: weights go into the pipeline when it loads
        self._pipe = None

    @property
    def resolution(self) -> int:
        default = embedded_video.RESOLUTION if self.test_model else self.family.resolution
        return self.config.video_resolution or default

    @property
    def window(self) -> int:
        return self.config.video_window or self.family.window

    def pipeline(self):
        """The resident pipeline with every ready adapter loaded, built on first use."""
        if self._pipe is None:
            cls = self.family.pipeline_class("extend")
            log.info("loading video model %s (%s) on %s/%s", self.path, self.family.title, self.device, self.dtype)
            pipe = cls.from_pretrained(str(self.path), torch_dtype=self.family.load_dtypes(self.dtype),
                                       local_files_only=True)
            pipe.to(self.device)
            pipe.set_progress_bar_config(disable=True)
            self.adapters.sync(pipe)
            self._pipe = pipe
        return self._pipe

    def rescan(self) -> None:
        self.adapters.sync(self._pipe)

    def describe(self) -> dict:
        return {**self.identity.to_dict(), "family_title": self.family.title, "resolution": self.resolution,
                "window": self.window, "loaded": self._pipe is not None}
