"""One training run end to end, shared by ``bodydouble train`` and the server's train job:
load frames -> data report -> refuse or train (resuming from the work folder) -> adapter folder."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Callable

from bodydouble import errors
from bodydouble.jobspec import TrainOptions, TrainRequest

from ..paths import AllowedRoots
from ..policy.basemodel import BaseModelGuard, base_modules
from . import dataset as dataset_mod
from .report import Thresholds, build_report, check_trainable
from .image import ImageTrainer
from .settings import TrainSettings
from .video import VideoTrainer

WORK_FOLDER = ".training"   # hidden inside the adapters folder: the server's rescan skips dot-folders


def work_dir_for(adapters_dir: Path, name: str) -> Path:
    return Path(adapters_dir) / WORK_FOLDER / name


def from_request(req: TrainRequest) -> tuple[TrainSettings, Thresholds]:
    """The trainer's settings and the report's thresholds of a request: the CLI and the train job alike."""
    settings = TrainSettings(**{f.name: getattr(req, f.name) for f in fields(TrainOptions)})
    views = Thresholds().required_views if req.required_views is None else tuple(req.required_views)
    return settings, Thresholds(min_frames=req.min_frames, min_per_view=req.min_per_view, required_views=views)


def progress_line(p: dict) -> str:
    """One line a person reads: step, loss, speed, ETA and, at checkpoints, the held-out score."""
    held = f"  held-out {p['heldout']:.4f}" if p.get("heldout") is not None else ""
    return (f"step {p['step']}/{p['steps']}  loss {p['loss']:.4f}  {p['images_per_s']:.1f} img/s  "
            f"ETA {p['eta_s']:.0f} s{held}")


def data_report(inputs: list, resolution: int, thresholds: Thresholds | None = None, roots: AllowedRoots | None = None,
                colourspace: str = "auto", on_frame: Callable[[int, int, Path], None] | None = None,
                ) -> tuple[dataset_mod.Dataset, dict]:
    data = dataset_mod.load(inputs, resolution, roots=roots, colourspace=colourspace, on_frame=on_frame)
    return data, build_report(data, thresholds)


def train_adapter(pipe, identity, inputs: list, settings: TrainSettings, adapters_dir: Path, *,
                  thresholds: Thresholds | None = None, force: bool = False, work_dir: Path | None = None,
                  roots: AllowedRoots | None = None, colourspace: str = "auto", device: str = "cpu",
                  on_progress: Callable[[dict], None] | None = None,
                  should_stop: Callable[[], bool] | None = None,
                  on_frame: Callable[[int, int, Path], None] | None = None) -> tuple[Path, dict]:
    """Train and publish; returns (adapter folder, data report). Raises TrainingCancelled on a stop request.

    ``pipe``/``identity``: the model ``settings.model_kind`` names, the image (fill) model's or the video
    (extend) model's."""
    missing = [flag for flag, value in (("rights holder", settings.rights_holder), ("licence/consent note", settings.licence))
               if not value.strip()]
    if missing:
        raise errors.RequestError(f"an adapter must say its {' and '.join(missing)}: set them before training",
                                  code=errors.INVALID_REQUEST)
    target = Path(adapters_dir) / settings.name
    if target.exists():
        raise errors.RequestError(f"adapter {target} already exists; choose another name or version",
                                  code=errors.INVALID_REQUEST)
    data, report = data_report(inputs, settings.resolution, thresholds, roots, colourspace, on_frame)
    check_trainable(report, force)
    trainer_cls = VideoTrainer if settings.model_kind == "video" else ImageTrainer
    trainer = trainer_cls(pipe, identity, data, settings, work_dir or work_dir_for(adapters_dir, settings.name), device)
    guard = BaseModelGuard(base_modules(trainer), identity)      # the base weights before any step
    trainer.resume()
    trainer.run(on_progress, should_stop)
    base_check = guard.check()                                   # a changed base model is never published
    return trainer.write(adapters_dir, data, report, forced=force and bool(report["refusals"]),
                         base_check=base_check), report
