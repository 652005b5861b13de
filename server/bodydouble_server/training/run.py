"""One training run end to end, shared by ``bodydouble train`` and the server's train job:
load frames -> data report -> refuse or train (resuming from the work folder) -> adapter folder."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from bodydouble import errors

from ..paths import AllowedRoots
from . import dataset as dataset_mod
from .report import Thresholds, build_report, check_trainable
from .trainer import Trainer, TrainSettings

WORK_FOLDER = ".training"   # hidden inside the adapters folder: the server's rescan skips dot-folders


def work_dir_for(adapters_dir: Path, name: str) -> Path:
    return Path(adapters_dir) / WORK_FOLDER / name


def data_report(inputs: list, resolution: int, thresholds: Thresholds | None = None, roots: AllowedRoots | None = None,
                colourspace: str = "auto") -> tuple[dataset_mod.Dataset, dict]:
    data = dataset_mod.load(inputs, resolution, roots=roots, colourspace=colourspace)
    return data, build_report(data, thresholds)


def train_adapter(pipe, identity, inputs: list, settings: TrainSettings, adapters_dir: Path, *,
                  thresholds: Thresholds | None = None, force: bool = False, work_dir: Path | None = None,
                  roots: AllowedRoots | None = None, colourspace: str = "auto", device: str = "cpu",
                  on_progress: Callable[[dict], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> tuple[Path, dict]:
    """Train and publish; returns (adapter folder, data report). Raises TrainingCancelled on a stop request."""
    missing = [flag for flag, value in (("rights holder", settings.rights_holder), ("licence/consent note", settings.licence))
               if not value.strip()]
    if missing:
        raise errors.RequestError(f"an adapter must say its {' and '.join(missing)}: set them before training",
                                  code=errors.INVALID_REQUEST)
    target = Path(adapters_dir) / settings.name
    if target.exists():
        raise errors.RequestError(f"adapter {target} already exists; choose another name or version",
                                  code=errors.INVALID_REQUEST)
    data, report = data_report(inputs, settings.resolution, thresholds, roots, colourspace)
    check_trainable(report, force)
    trainer = Trainer(pipe, identity, data, settings, work_dir or work_dir_for(adapters_dir, settings.name), device)
    trainer.resume()
    trainer.run(on_progress, should_stop)
    return trainer.write(adapters_dir, data, report, forced=force and bool(report["refusals"])), report
