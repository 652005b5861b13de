"""Pipelines looked up by model family and operation: a new family is one file that registers here."""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bodydouble import errors


@dataclass
class Family:
    name: str                       # "sd15", "sdxl", ...: recorded in adapter manifests
    title: str
    resolution: int                 # the long side the model was trained at
    multiple: int                   # generated width/height must be multiples of this
    # operation -> diffusers pipeline class name (resolved lazily so importing costs nothing)
    pipelines: dict[str, str]
    # Does a diffusers folder (its model_index.json) belong to this family?
    detect: Callable[[dict, Path], bool]
    kind: str = "image"             # "image" or "video": adapters record it; mismatches are refused
    # Video families only: the most frames one pipeline call makes (conditioning included), the rule its
    # frame count follows (temporal_multiple * k + 1: the VAE's temporal compression), and the call itself:
    # extend(pipe, context, count, **settings) -> (count, H, W, 3) display-referred frames in [0, 1].
    window: int = 0
    temporal_multiple: int = 1
    extend: Callable | None = None
    # Video families that take per-pixel masks (fill's video engine): inpaint(pipe, video, mask, **settings) ->
    # (F, H, W, 3) in [0, 1]; ``video`` (F, H, W, 3) known pixels in [0, 1], ``mask`` (F, H, W), 1 = make.
    inpaint: Callable | None = None
    # Components kept in float32 whatever the server's dtype (a VAE that loses quality in half precision).
    float32_components: tuple[str, ...] = ()
    # A family whose every model is a TEST model (the miniature world's): this label names it in every header.
    test_label: str = ""
    # Detection tries higher priorities first: a family that refines another (same pipelines) claims its folders.
    priority: int = 0
    # Live previews: (factors, bias), the linear map from this family's denoising latents (C channels) to RGB in
    # [-1, 1]: factors C x 3, bias 3 (previews.py). None: fitted from the model's own VAE, or no previews.
    latent_rgb: tuple | None = None

    def load_dtypes(self, dtype):
        """``torch_dtype`` for ``from_pretrained``: ``dtype``, with this family's float32 components."""
        import torch

        if not self.float32_components or dtype == torch.float32:
            return dtype
        return {"default": dtype, **{name: torch.float32 for name in self.float32_components}}

    def pipeline_class(self, operation: str):
        import diffusers

        name = self.pipelines.get(operation)
        if name is None:
            raise errors.RequestError(
                f"model family {self.title} cannot do '{operation}' (it can: {', '.join(sorted(self.pipelines))})",
                code=errors.NOT_SUPPORTED,
            )
        if ":" in name:   # "module:Class", a pipeline outside diffusers (the test-only families)
            module, _, attr = name.partition(":")
            return getattr(importlib.import_module(module), attr)
        return getattr(diffusers, name)


def step_callback(on_step, steps: int):
    """diffusers' ``callback_on_step_end`` -> ``on_step(step, steps)``; a cancel raises from inside it. An
    ``on_step`` with a ``latents(latents, pipeline)`` method (previews.StepHook) gets the step's latents first."""
    see = getattr(on_step, "latents", None)

    def callback(pipeline, step, timestep, kwargs):
        if see is not None and kwargs.get("latents") is not None:
            see(kwargs["latents"], pipeline)
        on_step(step + 1, getattr(pipeline, "num_timesteps", None) or steps)
        return kwargs
    return callback


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise errors.RequestError(
            f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))}", code=errors.INVALID_REQUEST
        ) from None


def read_model_index(path: Path) -> dict:
    index = path / "model_index.json"
    if not index.is_file():
        return {}
    return json.loads(index.read_text())


def detect_family(path: Path, kind: str | None = None) -> Family:
    """The family of a local diffusers folder, from its model_index.json and configs (of ``kind`` if given)."""
    index = read_model_index(path)
    candidates = [f for f in FAMILIES.values() if kind is None or f.kind == kind]
    for family in sorted(candidates, key=lambda f: -f.priority):
        if index and family.detect(index, path):
            return family
    raise errors.RequestError(
        f"{path}: not a diffusers model folder of a known {kind + ' ' if kind else ''}family "
        f"({', '.join(sorted(f.name for f in candidates))}); "
        "pass --family for a single-file checkpoint",
        code=errors.MODEL_UNAVAILABLE,
    )

