"""The training loop every model kind shares: deterministic steps, checkpoints, resume, held-out score,
publishing. An objective (``image.ImageTrainer``, ``video.VideoTrainer``) subclasses ``Trainer`` with what its
model kind trains and how it scores a batch.

Determinism: all randomness of step ``s`` comes from a generator seeded by (seed, s) on the CPU,
so a run resumed from a checkpoint at step ``s`` continues exactly as the uninterrupted run.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from bodydouble import errors

from .. import adapter_files
from ..models.identity import ModelIdentity
from . import checkpoints
from .contact import contact_sheet
from .dataset import Dataset, TrainingFrame
from .samples import split_holdout
from .settings import TrainSettings

ADAPTER = "bd_train"   # not "training": peft adapter names become module attributes


class TrainingCancelled(Exception):
    def __init__(self, step: int, checkpoint: Path | None):
        super().__init__(f"training cancelled at step {step}; last checkpoint {checkpoint}")
        self.step, self.checkpoint = step, checkpoint


def view_balanced_weights(samples: list):
    """Sampling weights giving every view tag the same share of the batches, however few frames it has: a set
    of 200 front frames and 2 back views still trains on the back 1/(number of views) of the time."""
    import torch

    counts: dict[str, int] = {}
    for sample in samples:
        counts[sample.view] = counts.get(sample.view, 0) + 1
    return torch.tensor([1.0 / counts[sample.view] for sample in samples], dtype=torch.float64)


def step_generator(seed: int, step: int):
    import torch

    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


class Trainer:
    """The shared loop. A subclass sets ``component``/``model_kind`` and implements ``load_denoiser``,
    ``prepare`` (scheduler and per-frame tensors: ``self.data``, ``self.held``), ``_loss``, ``previews``
    and ``objective``."""

    component = "unet"      # the pipeline component the LoRA trains (how the weights file names it)
    lora_targets = adapter_files.LORA_TARGETS   # the denoiser's modules that get a LoRA
    model_kind = "image"    # manifest ``model_kind``: the server model the adapter is for

    def __init__(self, pipe, identity: ModelIdentity, dataset: Dataset, settings: TrainSettings, work_dir: Path,
                 device: str = "cpu"):
        import torch
        from peft import LoraConfig

        self.pipe, self.identity, self.settings = pipe, identity, settings
        self.work_dir = Path(work_dir)
        self.device = torch.device(device)
        gpu = self.device.type == "cuda"
        self.weight_dtype = getattr(pipe, self.component).dtype if gpu else torch.float32
        self.autocast = gpu and settings.mixed_precision and self.weight_dtype != torch.float32
        self.train_frames, self.heldout = split_holdout(dataset.frames, settings.holdout_per_view)
        if not self.train_frames:
            raise errors.RequestError("no frames left to train on", code=errors.INVALID_REQUEST)
        if not Path(identity.path).is_dir():
            raise errors.RequestError("training needs the base model as a diffusers folder", code=errors.MODEL_UNAVAILABLE)
        # A fresh denoiser: the server's resident one carries the character adapters it serves.
        self.denoiser = self.load_denoiser().to(self.device)
        self.denoiser.requires_grad_(False)
        with torch.random.fork_rng(devices=[]):   # the initial LoRA weights come from the global RNG: pin them
            torch.manual_seed(settings.seed)
            self.denoiser.add_adapter(LoraConfig(r=settings.rank, lora_alpha=settings.rank,
                                                 init_lora_weights="gaussian",
                                                 target_modules=self.lora_targets), adapter_name=ADAPTER)
        if gpu and settings.gradient_checkpointing:
            self.denoiser.enable_gradient_checkpointing()
        self.prepare()
        self.params = [p for m in self.lora_modules().values() for p in m.parameters() if p.requires_grad]
        for p in self.params:
            p.data = p.data.float()   # trainable weights in float32 even when the base is half
        self.optimizer = torch.optim.AdamW(self.params, lr=settings.learning_rate)
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast and self.weight_dtype == torch.float16 else None
        self.fingerprint = hashlib.sha256(json.dumps({
            "settings": settings.fingerprint_fields(), "base": identity.sha256,
            "frames": [f.sha256 for f in dataset.frames]}, sort_keys=True).encode()).hexdigest()
        self.sample_weights = view_balanced_weights(self.train_frames)
        self.step = 0
        self.metrics: list[dict] = []

    # -- what a model kind provides -------------------------------------------------------------------
    def load_denoiser(self):
        raise NotImplementedError

    def prepare(self) -> None:
        raise NotImplementedError

    def _loss(self, tensors, index, generator, timesteps=None):
        raise NotImplementedError

    def previews(self, folder: Path) -> dict[str, Path]:
        raise NotImplementedError

    def objective(self) -> str:
        raise NotImplementedError

    def heldout_frames(self) -> list[TrainingFrame]:
        """The frames kept out of training (a trainer whose samples are clips: the held-out clips' frames)."""
        return self.heldout

    def training_record(self) -> dict:
        """What a model kind adds to the manifest's ``training`` entry."""
        return {}

    def lora_modules(self) -> dict:
        """The modules carrying the LoRA being trained, by pipeline component (``prepare`` may add some)."""
        return {self.component: self.denoiser}

    # -- the loop --------------------------------------------------------------------------------------
    def resume(self) -> int:
        """Continue from the latest checkpoint in the work folder (at most ``steps``), if it belongs to this run."""
        from peft import set_peft_model_state_dict

        found = checkpoints.latest(self.work_dir, at_most=self.settings.steps)
        if found is None:
            return 0
        if found.state.get("fingerprint") != self.fingerprint:
            raise errors.RequestError(
                f"{self.work_dir} holds checkpoints of a different training run (other frames, base model or "
                "settings); use another work folder", code=errors.INVALID_REQUEST)
        lora, optimizer = checkpoints.load(found)
        for component, module in self.lora_modules().items():
            prefix = f"{component}."
            set_peft_model_state_dict(module, {k[len(prefix):]: v.to(self.device) for k, v in lora.items()
                                               if k.startswith(prefix)}, adapter_name=ADAPTER)
        self.optimizer.load_state_dict(optimizer)
        self.step, self.metrics = found.step, list(found.state.get("metrics", []))
        return self.step

    def save_checkpoint(self, loss: float | None) -> Path:
        from peft import get_peft_model_state_dict

        self.check_finite()          # a diverged state is never saved: resuming starts from the last good one
        metric = {"step": self.step, "loss": loss, "heldout": self.heldout_score(), "time": time.time()}
        self.metrics = [m for m in self.metrics if m["step"] != self.step] + [metric]
        lora = {f"{component}.{k}": v for component, module in self.lora_modules().items()
                for k, v in get_peft_model_state_dict(module, adapter_name=ADAPTER).items()}
        return checkpoints.save(self.work_dir, self.step, lora, self.optimizer.state_dict(),
                                {"fingerprint": self.fingerprint, "metrics": self.metrics})

    def check_finite(self) -> None:
        """Every trained LoRA weight is a number: else ``training_diverged`` (never saved, never published)."""
        import torch

        for component, module in self.lora_modules().items():
            for name, param in module.named_parameters():
                if param.requires_grad and not torch.isfinite(param.detach()).all():
                    self._diverged(f"{component} weight {name} holds NaN or Inf after step {self.step}")

    def _diverged(self, what: str) -> None:
        last = checkpoints.latest(self.work_dir)
        raise errors.RequestError(
            f"training diverged: {what}; nothing was published. Lower learning_rate (or check the base model and "
            f"the frames); " + (f"the last good checkpoint is step {last.step}" if last else "no checkpoint was kept"),
            code=errors.TRAINING_DIVERGED, details={"step": self.step, "checkpoint_step": last.step if last else None})

    def heldout_score(self) -> float | None:
        """Masked denoising error on the held-out frames at fixed timesteps and noise: lower is better."""
        import torch

        if self.held is None:
            return None
        total = self.scheduler.config.num_train_timesteps
        scores = []
        with torch.no_grad():
            for k, t in enumerate((total // 4, total // 2, 3 * total // 4)):
                index = torch.arange(len(self.heldout))
                scores.append(float(self._loss(self.held, index, step_generator(self.settings.seed + 7919, k),
                                               timesteps=torch.full((len(index),), t))))
        return float(np.mean(scores))

    def run(self, on_progress: Callable[[dict], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> None:
        import torch

        s = self.settings
        started, start_step, loss_value = time.monotonic(), self.step, None
        last_saved = self.step
        for module in self.lora_modules().values():
            module.train()   # once, not per step: it walks every module (~12 ms a step on the tiny model)
        while self.step < s.steps:
            if should_stop is not None and should_stop():
                path = self.save_checkpoint(loss_value) if self.step != last_saved or not checkpoints.latest(self.work_dir) \
                    else checkpoints.latest(self.work_dir).folder
                raise TrainingCancelled(self.step, path)
            generator = step_generator(s.seed, self.step + 1)
            index = torch.multinomial(self.sample_weights, s.batch, replacement=True, generator=generator)
            loss = self._loss(self.data, index, generator)
            if not torch.isfinite(loss.detach()).all():
                self._diverged(f"the loss became {float(loss.detach().float().mean())} at step {self.step + 1}")
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            self.step += 1
            loss_value = loss.item()
            elapsed = time.monotonic() - started
            rate = (self.step - start_step) * s.batch / max(elapsed, 1e-9)
            if self.step % s.checkpoint_every == 0 or self.step == s.steps:
                self.save_checkpoint(loss_value)
                last_saved = self.step
            if on_progress is not None:
                on_progress({"step": self.step, "steps": s.steps, "loss": loss_value, "images_per_s": rate,
                             "eta_s": (s.steps - self.step) * s.batch / max(rate, 1e-9),
                             "heldout": self.metrics[-1]["heldout"] if last_saved == self.step else None})

    # -- output ----------------------------------------------------------------------------------------
    def lora_layers(self) -> dict[str, dict]:
        """The trained LoRA per pipeline component, keyed as diffusers' ``load_lora_weights`` reads them."""
        from peft import get_peft_model_state_dict

        return {component: adapter_files.export_lora(component, get_peft_model_state_dict(module, adapter_name=ADAPTER))
                for component, module in self.lora_modules().items()}

    def write(self, adapters_dir: Path, dataset: Dataset, report: dict, forced: bool,
              base_check: dict | None = None) -> Path:
        s = self.settings
        self.check_finite()
        held = {id(f) for f in self.heldout_frames()}
        manifest = {
            "name": s.name, "character": s.character, "trigger": s.trigger,
            "base_model": adapter_files.base_model_entry(self.identity), "model_kind": self.model_kind, "rank": s.rank,
            "rights_holder": s.rights_holder, "licence": s.licence, "version": s.version,
            "training": {
                "kind": "lora", "settings": asdict(s), "steps_done": self.step, "objective": self.objective(),
                "frames": [{"path": str(f.path), "sha256": f.sha256, "view": f.view, "caption": f.caption,
                            "mask": f.mask is not None, "heldout": id(f) in held} for f in dataset.frames],
                "report": {k: report[k] for k in ("frame_count", "distinct_frames", "resolutions", "colourspaces",
                                                   "masks_present", "captions_present", "refusals")}
                | {"views": report["views"]["counts"], "gaps": [g["message"] for g in report["views"]["gaps"]],
                   "forced": forced},
                "metrics": self.metrics,
                "base_model_check": base_check,      # the base's hashes before and after (policy/basemodel.py)
            } | self.training_record(),
        }
        files = self.previews(self.work_dir / "previews")
        files["contact_sheet.png"] = contact_sheet(dataset, self.work_dir / "contact_sheet.png")
        return adapter_files.write_adapter(Path(adapters_dir) / s.name, type(self.pipe), self.lora_layers(), manifest,
                                           files=files)
