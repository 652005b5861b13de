"""The server's models, one slot per model kind: ``image`` (fill) and ``video`` (extend).

A slot is where every "which model?" question is answered, the same way for each kind: which setting names
the model (or a TEST model), its family and identity (content hash), the adapters folder inspected against
it, its pipelines (one per operation its family does) loaded at start or on first use, and, when the server
has none of this kind, the coded reason. A new kind is one ``Kind`` entry; a new family is one file in this
package.

Why the video model loads lazily: a video model with its text encoder is many GB of GPU memory (Wan 2.1
VACE 14B + UMT5-XXL is ~40 GB in bf16) that a fill-only session should not pay for, nor wait for at start.
What is cheap is done at start, so ``hello`` and ``list_adapters`` are right from the first answer.

Owned by the worker thread, like the Engine (diffusers pipelines are not thread-safe).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bodydouble import errors
from bodydouble.jobspec import MODEL_KINDS

from ..adapters import AdapterLibrary
from . import embedded_video, testing
from .identity import ModelIdentity, model_sha256
from .registry import Family, detect_family, get_family

log = logging.getLogger("bodydouble.models")

DISABLED = "none"             # e.g. video_model = "none": this server has no model of that kind


@dataclass(frozen=True)
class Kind:
    name: str                       # "image" | "video": what adapter manifests record as model_kind
    title: str                      # how messages name it
    setting: str                    # the ServerConfig field naming the model (unset: the embedded TEST model)
    resolution_setting: str         # the ServerConfig field overriding the family's generation size
    lazy: bool                      # load the pipelines on first use, not at start
    optional: bool                  # the server runs without it ("none", or it failed: its operations only fail)
    family_setting: str | None = None   # the ServerConfig field forcing the family (single-file checkpoints)
    window_setting: str | None = None   # video: frames per pipeline call
    test_resolution: int | None = None  # generation size of TEST models when none is set (CPU-friendly)

    @property
    def operations(self) -> list[str]:
        return sorted(op for op, kind in MODEL_KINDS.items() if kind == self.name)


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("image", "base model", "model", "resolution", lazy=False, optional=False, family_setting="family"),
    Kind("video", "video model", "video_model", "video_resolution", lazy=True, optional=True,
         window_setting="video_window", test_resolution=embedded_video.RESOLUTION),
)}


class ModelSlot:
    """One kind's model: ``load()`` it, then ``pipeline()``, ``identity``, ``family``, ``adapters``; or
    ``error`` (code, message) when the server has none of this kind."""

    def __init__(self, kind: Kind | str, config, device: str, dtype):
        self.kind = KINDS[kind] if isinstance(kind, str) else kind
        self.config, self.device, self.dtype = config, device, dtype
        self.path: Path | None = None
        self.family: Family | None = None
        self.identity: ModelIdentity | None = None
        self.adapters: AdapterLibrary | None = None
        self.error: tuple[str, str] | None = None
        self._pipes: dict[str, object] = {}

    # -- state ---------------------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        return self.identity is not None and self.error is None

    @property
    def loaded(self) -> bool:
        return bool(self._pipes)

    @property
    def test_model(self) -> bool:
        return bool(self.identity and self.identity.test_model)

    @property
    def operations(self) -> list[str]:
        return sorted(self.family.pipelines) if self.available else []

    @property
    def resolution(self) -> int:
        default = self.kind.test_resolution if self.test_model and self.kind.test_resolution else self.family.resolution
        return getattr(self.config, self.kind.resolution_setting) or default

    @property
    def window(self) -> int:
        """Frames per pipeline call (video families; 0 for image ones)."""
        configured = getattr(self.config, self.kind.window_setting) if self.kind.window_setting else None
        return configured or self.family.window

    def require(self) -> "ModelSlot":
        """This slot, or the coded error saying why the server has no model of this kind."""
        if not self.available:
            code, message = self.error or (errors.NOT_SUPPORTED, f"no {self.kind.title}")
            raise errors.RequestError(message, code=code)
        return self

    # -- loading -------------------------------------------------------------------------------------
    def load(self, strict: bool = False) -> "ModelSlot":
        """Resolve the configured model (identity, family, adapters; the pipelines too unless lazy). A
        required kind raises when it cannot; an optional one records ``error`` instead (``strict``: raises)."""
        source = getattr(self.config, self.kind.setting)
        if self.kind.optional and (source or "").lower() == DISABLED:
            self.error = (errors.NOT_SUPPORTED, f"this server has no {self.kind.title} ({self.kind.setting} = none): "
                                                f"{', '.join(self.kind.operations)} is not available")
            if strict:
                self.require()
            return self
        try:
            self._resolve(source)
            if self.kind.lazy:
                self.adapters.sync(None)      # inspect only: weights go into the pipelines when they load
            else:
                self._load_pipelines()
        except Exception as exc:
            if strict or not self.kind.optional:
                raise
            log.exception("%s unavailable", self.kind.title)
            self.identity = None
            self.error = (errors.MODEL_UNAVAILABLE, f"the server's {self.kind.title} is unavailable: {exc}")
        return self

    def _resolve(self, source: str | None) -> None:
        cfg, title = self.config, self.kind.title
        test = testing.resolve(source, self.kind.name)   # none set, or test:<name>: a TEST model
        path = test.folder if test else Path(source).expanduser()
        if not path.exists():
            raise errors.RequestError(f"{title} {path} does not exist", code=errors.MODEL_UNAVAILABLE)
        if path.is_file() and not self.kind.family_setting:
            raise errors.RequestError(f"{title} {path} is not a diffusers folder", code=errors.MODEL_UNAVAILABLE)
        forced = getattr(cfg, self.kind.family_setting) if self.kind.family_setting else None
        self.path = path
        self.family = get_family(forced) if forced else detect_family(path, kind=self.kind.name)
        label = test.label if test else self.family.test_label      # a test family's models are TEST models too
        self.identity = ModelIdentity(name=label or path.name, family=self.family.name,
                                      sha256=model_sha256(path), path=test.path if test else str(path),
                                      test_model=bool(label))
        self.adapters = AdapterLibrary(Path(cfg.adapters), self.identity, self.kind.name)

    def _load_pipelines(self) -> None:
        cfg, path = self.config, self.path
        log.info("loading %s %s (%s) on %s/%s", self.kind.title, path, self.family.title, self.device, self.dtype)
        for operation in self.family.pipelines:
            cls = self.family.pipeline_class(operation)
            if path.is_file():
                if not cfg.model_config:
                    raise errors.RequestError(
                        f"{path} is a single-file checkpoint: set model_config to a local diffusers config folder "
                        "of its family (no model hub is consulted)", code=errors.MODEL_UNAVAILABLE)
                pipe = cls.from_single_file(str(path), config=cfg.model_config, torch_dtype=self.dtype,
                                            local_files_only=True)
            else:
                pipe = cls.from_pretrained(str(path), torch_dtype=self.family.load_dtypes(self.dtype),
                                           local_files_only=True)
            pipe.to(self.device)
            pipe.set_progress_bar_config(disable=True)
            self._pipes[operation] = pipe
        self.rescan()

    def pipeline(self, operation: str | None = None):
        """The resident pipeline of ``operation`` (default: the kind's own), with every ready adapter loaded;
        built on first use for a lazy kind."""
        self.require()
        operation = operation or self.kind.operations[0]
        if operation not in self.family.pipelines:
            self.family.pipeline_class(operation)        # raises the clear "cannot do" error
        if not self._pipes:
            self._load_pipelines()
        return self._pipes[operation]

    @property
    def pipelines(self) -> dict[str, object]:
        """The pipelines loaded so far, by operation."""
        return dict(self._pipes)

    def rescan(self) -> None:
        if self.adapters is None:
            return
        for pipe in self._pipes.values() or [None]:
            self.adapters.sync(pipe)

    def describe(self) -> dict:
        entry = {**self.identity.to_dict(), "family_title": self.family.title, "resolution": self.resolution}
        if self.kind.window_setting:
            entry["window"] = self.window
            entry["fill_engine"] = self.family.inpaint is not None     # fill's video engine runs on it
        return entry | {"loaded": self.loaded}


def open_model(kind: str, config, device: str, dtype) -> ModelSlot:
    """A loaded slot outside a server (training on the command line, tests): any failure raises."""
    return ModelSlot(kind, config, device, dtype).load(strict=True)
