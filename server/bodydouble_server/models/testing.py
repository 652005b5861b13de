"""TEST-ONLY models: a GPU-like stand-in, a passthrough and a real-size random SD 1.5. Never for artists.

``bodydouble serve --model test:standin`` (and ``--video-model test:standin`` for extend):
    sleeps ``$BODYDOUBLE_STANDIN_STEP_S`` seconds (default 0.25) per denoising step, the way a process waits
    on a GPU: ``time.sleep`` releases the GIL, so frame I/O, colour and the socket loop run meanwhile, as they
    would beside a real GPU. It returns deterministic pixels: a smooth pattern fixed by the seed, the prompt,
    the active adapters and the size. It measures orchestration (queueing, pools, farm jobs, frame pipelines)
    on CPU-only machines.
``bodydouble serve --model test:passthrough`` (and ``--video-model test:passthrough``):
    returns its input unchanged (extend: the last known frame, held), so a fill through the real server gives
    back the plate inside the mask: colour, crop, pixel aspect, resize and feather checked end to end.

``bodydouble serve --model test:sd15-size``:
    a real diffusers SD 1.5 inpaint pipeline at its real size (860 M-parameter UNet) with random weights: a
    GPU's own time and memory per frame, measured with no model download (bench/shot_throughput.py --model).

The first two run through the real fill/extend code: they are pipelines with diffusers' call signature and its LoRA
methods (adapters are read, checked and switched, and change the stand-in's pixels). Every test model's identity says
TEST MODEL in every header and hello (``test_model: true``), their path is ``test:<name>`` (so nothing offers
to train on them) and no host lists them: a pipeline engineer types them on purpose.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from bodydouble import errors

from .embedded import build_sd15_size_pipeline, cached_build
from .registry import Family, register

PREFIX = "test:"
STEP_ENV = "BODYDOUBLE_STANDIN_STEP_S"
DEFAULT_STEP_S = 0.25
REVISION = "v1"          # bump when the folder layout below changes
_WEIGHTS = "test_model.safetensors"


def step_seconds() -> float:
    """The stand-in's seconds per step, read at every call so a benchmark can change it between runs."""
    value = os.environ.get(STEP_ENV, "")
    try:
        seconds = float(value) if value else DEFAULT_STEP_S
    except ValueError:
        raise errors.RequestError(f"{STEP_ENV}={value!r} is not a number of seconds",
                                  code=errors.INVALID_REQUEST) from None
    return max(0.0, seconds)


def _digest(*parts) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


class TestPipeline:
    """What the operations and AdapterLibrary call on a diffusers pipeline, for an in-memory test model."""

    __test__ = False         # not a pytest class
    class_name = ""
    kind = "image"

    def __init__(self, folder: Path | None = None):
        import torch

        self.folder = folder
        self.loras: dict[str, str] = {}              # adapter name in the pipeline -> weights digest
        # Where a loaded adapter's matrices "land" (diffusers: the denoiser's lora_A/lora_B parameters), so the
        # server's check that every tensor of a weights file found a layer holds for test models too.
        self.denoiser = torch.nn.Module()
        self.denoiser.lora_A = torch.nn.ModuleDict()
        self.active: tuple[tuple[str, float], ...] = ()
        self.lora_enabled = True
        self.calls = 0
        self.num_timesteps = 0

    # -- diffusers' loading and saving ------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path, **_ignored):
        index = json.loads((Path(path) / "model_index.json").read_text())
        if index.get("_class_name") != cls.class_name:
            raise errors.RequestError(f"{path} is not a {cls.class_name} folder", code=errors.MODEL_UNAVAILABLE)
        return cls(Path(path))

    def save_pretrained(self, folder) -> None:
        from safetensors.numpy import save_file

        folder = Path(folder)
        (folder / "model_index.json").write_text(json.dumps({"_class_name": self.class_name, "kind": self.kind,
                                                             "bodydouble_test_model": True}, indent=2))
        # A weights file makes the identity hash differ per test family (adapters are checked against it).
        save_file({"identity": np.frombuffer(self.class_name.encode(), np.uint8).copy()}, str(folder / _WEIGHTS))

    @classmethod
    def save_lora_weights(cls, save_directory, weight_name: str, safe_serialization: bool = True, **layers) -> None:
        from safetensors.numpy import save_file

        tensors = {f"{component.removesuffix('_lora_layers')}.{key}": np.ascontiguousarray(value)
                   for component, state in layers.items() for key, value in state.items()}
        save_file(tensors, str(Path(save_directory) / weight_name))

    @property
    def components(self) -> dict:
        return {"unet" if self.kind == "image" else "transformer": self.denoiser}

    def to(self, *_args, **_kwargs):
        return self

    def set_progress_bar_config(self, **_kwargs) -> None:
        pass

    # -- diffusers' LoRA methods -------------------------------------------------------------
    def load_lora_weights(self, folder, weight_name: str, adapter_name: str, **_kwargs) -> None:
        from safetensors.numpy import load_file

        import torch

        tensors = load_file(str(Path(folder) / weight_name))   # a broken file raises, as diffusers would
        digest = hashlib.sha256()
        for key in sorted(tensors):
            digest.update(key.encode() + tensors[key].tobytes())
        self.loras[adapter_name] = digest.hexdigest()
        matrices = [k for k in tensors if not k.endswith(".alpha")]
        self.denoiser.lora_A[adapter_name] = torch.nn.ParameterList(
            torch.nn.Parameter(torch.from_numpy(tensors[k].astype(np.float32)), requires_grad=False) for k in matrices)

    def delete_adapters(self, names) -> None:
        for name in [names] if isinstance(names, str) else names:
            self.loras.pop(name, None)
            if name in self.denoiser.lora_A:
                del self.denoiser.lora_A[name]
        self.active = tuple((n, w) for n, w in self.active if n in self.loras)

    def set_adapters(self, names, adapter_weights=None) -> None:
        names = [names] if isinstance(names, str) else list(names)
        weights = adapter_weights if adapter_weights is not None else [1.0] * len(names)
        missing = [n for n in names if n not in self.loras]
        if missing:
            raise ValueError(f"adapters {missing} are not loaded")
        self.active = tuple(zip(names, (float(w) for w in weights)))

    def enable_lora(self) -> None:
        self.lora_enabled = True

    def disable_lora(self) -> None:
        self.lora_enabled = False

    def active_loras(self) -> tuple:
        """(weights digest, weight) of each adapter the next call runs with."""
        return tuple((self.loras[n], w) for n, w in self.active) if self.lora_enabled else ()

    # -- a denoising loop ------------------------------------------------------------------------
    def _steps(self, steps: int, callback, sleep: bool, latents=None) -> None:
        """``steps`` steps, each a GIL-free wait (stand-in) and a ``callback_on_step_end`` (progress, cancel;
        ``latents`` as diffusers hands them over, for live previews)."""
        self.num_timesteps = steps
        seconds = step_seconds() if sleep else 0.0
        for step in range(steps):
            if seconds:
                time.sleep(seconds)
            if callback is not None:
                callback(self, step, 1000 - step * 1000 // max(steps, 1), {} if latents is None else {"latents": latents})


def _inpaint_steps(num_inference_steps: int, strength: float) -> int:
    """Steps an inpaint pipeline runs: diffusers skips the first (1 - strength) of the schedule."""
    return max(1, min(int(num_inference_steps * strength), num_inference_steps))


def pattern(height: int, width: int, key: int, frames: int = 1) -> np.ndarray:
    """A smooth, deterministic (frames, height, width, 3) image in [0.05, 0.95] chosen by ``key``."""
    rng = np.random.default_rng(key)
    low, high = rng.uniform(0.05, 0.5, 3), rng.uniform(0.5, 0.95, 3)
    fy, fx, drift = rng.uniform(0.5, 3.0, 2).tolist() + [rng.uniform(0.02, 0.2)]
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    t = np.arange(frames, dtype=np.float32)[:, None, None]
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * (fy * y[None] + fx * x[None] + drift * t))
    return (low + (high - low) * wave[..., None]).astype(np.float32)


class StandInPipeline(TestPipeline):
    """Inpaint-shaped: sleeps per step, returns ``pattern`` keyed by seed, prompt, adapters and size."""

    class_name = "BodyDoubleStandInPipeline"

    def __call__(self, *, image, height: int, width: int, num_inference_steps: int = 20, strength: float = 1.0,
                 prompt: str = "", generator=None, callback_on_step_end=None, output_type: str = "np", **_kwargs):
        self.calls += 1
        steps, count = _inpaint_steps(num_inference_steps, strength), len(image)
        if count > 1:                   # a batch (fill_batch): every frame's steps, as a GPU at full use would take
            time.sleep(step_seconds() * steps * (count - 1))
        self._steps(steps, callback_on_step_end, sleep=True)
        first = generator[0] if isinstance(generator, list) else generator
        seed = first.initial_seed() if first is not None else 0
        key = _digest("standin", seed, prompt[0] if isinstance(prompt, list) else prompt, self.active_loras(),
                      height, width)
        return SimpleNamespace(images=np.repeat(pattern(height, width, key), count, axis=0))


class PassthroughPipeline(TestPipeline):
    """Returns the image it was given, unchanged (after its steps' callbacks, so cancel still works)."""

    class_name = "BodyDoublePassthroughPipeline"

    def __call__(self, *, image, num_inference_steps: int = 20, strength: float = 1.0, callback_on_step_end=None,
                 output_type: str = "np", **_kwargs):
        self.calls += 1
        self._steps(_inpaint_steps(num_inference_steps, strength), callback_on_step_end, sleep=False,
                    latents=_rgb_latents(image))
        return SimpleNamespace(images=np.array(image, dtype=np.float32, copy=True))


def _rgb_latents(image) -> "object":
    """The passthrough's "latents": its image in [-1, 1], area-averaged 8x like a VAE's grid, (1, 3, H/8, W/8);
    its family's preview projection is the identity, so a preview shows the model's input."""
    import torch

    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32)[:1]).permute(0, 3, 1, 2) * 2.0 - 1.0
    return torch.nn.functional.avg_pool2d(pixels, 8) if min(pixels.shape[2:]) >= 8 else pixels


class StandInVideoPipeline(StandInPipeline):
    class_name = "BodyDoubleStandInVideoPipeline"
    kind = "video"


class PassthroughVideoPipeline(PassthroughPipeline):
    class_name = "BodyDoublePassthroughVideoPipeline"
    kind = "video"


def _extend_standin(pipe, context: np.ndarray, count: int, *, height: int, width: int, prompt: str, steps: int,
                    generator, on_step, **_settings) -> np.ndarray:
    """Wan-shaped extend: one sleep per step for the whole call, then ``count`` drifting pattern frames."""
    import torch

    pipe.calls += 1
    pipe._steps(steps, _on_step(on_step, steps), sleep=True)
    draw = int(torch.randint(0, 2**31 - 1, (1,), generator=generator)) if generator is not None else 0
    key = _digest("standin-video", draw, prompt, pipe.active_loras(), height, width, len(context))
    return pattern(height, width, key, frames=count)


def _extend_passthrough(pipe, context: np.ndarray, count: int, *, steps: int, on_step, **_settings) -> np.ndarray:
    """The last known frame, held for ``count`` frames: extend's colour and resize path, checkable."""
    pipe.calls += 1
    pipe._steps(steps, _on_step(on_step, steps), sleep=False)
    return np.repeat(np.asarray(context[-1:], dtype=np.float32), count, axis=0)


def _inpaint_standin(pipe, video: np.ndarray, mask: np.ndarray, *, height: int, width: int, prompt: str, steps: int,
                     generator, on_step, strength: float = 1.0, **_settings) -> np.ndarray:
    """Fill's video engine on the stand-in: one sleep per step run for the whole call, drifting pattern frames."""
    return _extend_standin(pipe, video[:0], len(video), height=height, width=width, prompt=prompt,
                           steps=_inpaint_steps(steps, strength), generator=generator, on_step=on_step)


def _inpaint_passthrough(pipe, video: np.ndarray, mask: np.ndarray, *, steps: int, on_step, strength: float = 1.0,
                         **_settings) -> np.ndarray:
    """The video it was given, unchanged: fill's video engine gives back the plate (colour, crop, chunks)."""
    pipe.calls += 1
    steps = _inpaint_steps(steps, strength)
    pipe._steps(steps, _on_step(on_step, steps), sleep=False)
    return np.array(video, dtype=np.float32, copy=True)


def _on_step(on_step, steps: int):
    return lambda pipeline, step, timestep, kwargs: on_step(step + 1, steps)


def _module_class(cls) -> str:
    return f"{__name__}:{cls.__name__}"


def _detects(cls):
    return lambda index, path: index.get("_class_name") == cls.class_name


STANDIN = register(Family(
    name="test-standin", title="TEST stand-in (sleeps per step like a GPU; fixed pixels; benchmarks only)",
    resolution=512, multiple=8, pipelines={"fill": _module_class(StandInPipeline)},
    detect=_detects(StandInPipeline)))
PASSTHROUGH = register(Family(
    name="test-passthrough", title="TEST passthrough (returns its input; checks colour, crop, resize)",
    resolution=512, multiple=8, pipelines={"fill": _module_class(PassthroughPipeline)},
    detect=_detects(PassthroughPipeline), latent_rgb=(np.eye(3).tolist(), [0.0, 0.0, 0.0])))
STANDIN_VIDEO = register(Family(
    name="test-standin-video", title="TEST stand-in video (sleeps per step like a GPU; fixed pixels)",
    resolution=832, multiple=16, pipelines={"extend": _module_class(StandInVideoPipeline)},
    detect=_detects(StandInVideoPipeline), kind="video", window=81, temporal_multiple=4, extend=_extend_standin,
    inpaint=_inpaint_standin))
PASSTHROUGH_VIDEO = register(Family(
    name="test-passthrough-video", title="TEST passthrough video (holds the last known frame)",
    resolution=832, multiple=16, pipelines={"extend": _module_class(PassthroughVideoPipeline)},
    detect=_detects(PassthroughVideoPipeline), kind="video", window=81, temporal_multiple=4,
    extend=_extend_passthrough, inpaint=_inpaint_passthrough))

# name, kind -> what builds its folder: a test pipeline class, or a builder of a real diffusers pipeline with
# random weights (sd15-size: SD 1.5 inpaint's real size, for GPU time and memory; its family is sd15's own).
_PIPELINES = {("standin", "image"): StandInPipeline, ("passthrough", "image"): PassthroughPipeline,
              ("standin", "video"): StandInVideoPipeline, ("passthrough", "video"): PassthroughVideoPipeline,
              ("sd15-size", "image"): build_sd15_size_pipeline}


@dataclass(frozen=True)
class TestModel:
    """The test model a ``model``/``video_model`` setting names: none set = the embedded tiny model of that kind;
    ``test:standin`` / ``test:passthrough`` = the families above."""

    __test__ = False
    label: str           # the identity's name: says TEST MODEL
    folder: Path         # its (cached) folder
    path: str            # the identity's path: a stand-in's is "test:<name>", so nothing offers to train on it


def _label(name: str, kind: str) -> str:
    return f"bodydouble-test-{name}{' video' if kind == 'video' else ''} (TEST MODEL: {name}, not for production)"


def is_test_spec(model: str | None) -> bool:
    return isinstance(model, str) and model.startswith(PREFIX)


def resolve(model: str | None, kind: str) -> TestModel | None:
    """The test model ``model`` names (built on first use), or None for a real model's path."""
    if model is None:
        from . import embedded, embedded_video

        label, folder = ((embedded.LABEL, embedded.embedded_model_path()) if kind == "image"
                         else (embedded_video.LABEL, embedded_video.embedded_video_model_path()))
        return TestModel(label=label, folder=folder, path=str(folder))
    if not is_test_spec(model):
        return None
    name = model.removeprefix(PREFIX)
    cls = _PIPELINES.get((name, kind))
    if cls is None:
        known = ", ".join(sorted({PREFIX + n for n, k in _PIPELINES if k == kind}))
        raise errors.RequestError(f"unknown test model {model!r}; test models: {known}", code=errors.MODEL_UNAVAILABLE)
    label = _label(name, kind)
    return TestModel(label=label, folder=cached_build(f"bodydouble-test-{name}-{kind}", REVISION, label, cls),
                     path=model)


def identity_of(model: str, kind: str = "image"):
    """The identity a server gives the test model ``model`` (what an adapter's manifest must name to run on it)."""
    from .identity import ModelIdentity, model_sha256
    from .registry import detect_family

    test = resolve(model, kind)
    return ModelIdentity(name=test.label, family=detect_family(test.folder, kind).name,
                         sha256=model_sha256(test.folder), path=test.path, test_model=True)


def test_adapter(folder: Path, identity, character: str, seed: int, kind: str = "image") -> Path:
    """A random adapter for a test model (tests and benchmarks: what the stand-in's pixels are keyed by)."""
    from ..adapter_files import base_model_entry, write_adapter

    weights = np.random.default_rng(seed).standard_normal((4, 8)).astype(np.float32)
    component = "unet" if kind == "image" else "transformer"
    return write_adapter(folder, TestPipeline, {component: {"lora_A.weight": weights}}, {
        "name": Path(folder).name, "character": character, "trigger": f"<{Path(folder).name}>",
        "base_model": base_model_entry(identity), "model_kind": kind, "rank": 4,
        "rights_holder": "BodyDouble test data", "licence": "random adapter for test models; not trained",
        "training": {"kind": "synthetic", "seed": seed}, "version": "1",
    })
