"""LoRA training of a base model's denoiser on a character's reference frames.

``Trainer`` is the loop every model shares (deterministic steps, checkpoints, resume, held-out
score, publishing); a subclass is one model kind's objective: ``ImageTrainer`` here (the UNet of
the server's fill model), the video model's in ``video_trainer``.

The image objective is the one the base model was trained with: epsilon (or v) prediction on noised
latents; for an inpainting UNet (9 input channels) the input is noisy latents + the inpaint mask
+ the masked image's latents, with the inpaint mask drawn per sample (the character's matte, a
random box, or everything). With a matte, the loss counts only the character's pixels.

Determinism: all randomness of step ``s`` comes from a generator seeded by (seed, s) on the CPU,
so a run resumed from a checkpoint at step ``s`` continues exactly as the uninterrupted run.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from bodydouble import errors
from bodydouble.jobspec import TrainOptions

from .. import adapter_files
from ..models.identity import ModelIdentity
from . import checkpoints
from .contact import contact_sheet, write_png
from .dataset import Dataset, TrainingFrame

ADAPTER = "bd_train"   # not "training": peft adapter names become module attributes


class TrainingCancelled(Exception):
    def __init__(self, step: int, checkpoint: Path | None):
        super().__init__(f"training cancelled at step {step}; last checkpoint {checkpoint}")
        self.step, self.checkpoint = step, checkpoint


@dataclass
class TrainSettings(TrainOptions):
    version: str = "1"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name = self.name or re.sub(r"[^0-9A-Za-z_-]+", "_", self.character.strip()).strip("_").lower()
        self.trigger = self.trigger or f"<{self.name}>"
        try:
            if not self.name and self.character.strip():
                raise ValueError(f"character {self.character!r} gives no folder name: set an adapter name")
            self.validate()
        except ValueError as exc:
            raise errors.RequestError(str(exc), code=errors.INVALID_REQUEST) from None

    def fingerprint_fields(self) -> dict:
        # Steps and checkpoint cadence may change on resume (train longer); nothing else may. Without clips the
        # clip fields are left out: checkpoints of 1-frame runs written before they existed still resume.
        unfingerprinted = ("steps", "checkpoint_every", "preview_steps", "preview_count") + \
            (("clip_frames", "clip_conditioning") if self.clip_frames == 1 else ())
        return {k: v for k, v in asdict(self).items() if k not in unfingerprinted}


def step_generator(seed: int, step: int):
    import torch

    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


def split_holdout(frames: list[TrainingFrame], per_view: int) -> tuple[list[TrainingFrame], list[TrainingFrame]]:
    """Hold out the last ``per_view`` frames of each view that keeps at least one frame to train on."""
    train, held = [], []
    by_view: dict[str, list[TrainingFrame]] = {}
    for f in frames:
        by_view.setdefault(f.view, []).append(f)
    for group in by_view.values():
        cut = len(group) - per_view if len(group) > per_view else len(group)
        train += group[:cut]
        held += group[cut:]
    order = {id(f): i for i, f in enumerate(frames)}
    return sorted(train, key=lambda f: order[id(f)]), sorted(held, key=lambda f: order[id(f)])


def frame_prompt(frame: TrainingFrame, trigger: str) -> str:
    """What a frame trains with: its caption when that names the trigger, else trigger + view + caption."""
    if trigger and trigger in frame.caption:
        return frame.caption
    return " ".join(p for p in (trigger, frame.view.replace("-", " "), frame.caption) if p)


class _Tensors:
    """Per-frame tensors computed once: pixels in [-1, 1], mattes, prompts (a trainer adds its own)."""

    def __init__(self, frames: list[TrainingFrame], trigger: str, device, dtype):
        import torch

        self.pixels = torch.stack([torch.from_numpy(f.rgb).permute(2, 0, 1) * 2 - 1 for f in frames]).to(device, dtype)
        self.mattes = torch.stack([torch.from_numpy(f.mask if f.mask is not None else np.ones(f.rgb.shape[:2], np.float32))
                                   for f in frames])[:, None].to(device, dtype)
        self.has_matte = [f.mask is not None for f in frames]
        self.prompts = [frame_prompt(f, trigger) for f in frames]


class Trainer:
    """The shared loop. A subclass sets ``component``/``model_kind`` and implements ``load_denoiser``,
    ``prepare`` (scheduler and per-frame tensors: ``self.data``, ``self.held``), ``_loss``, ``previews``
    and ``objective``."""

    component = "unet"      # the pipeline component the LoRA trains (how the weights file names it)
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
                                                 target_modules=adapter_files.LORA_TARGETS), adapter_name=ADAPTER)
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

    def _inpaint_masks(self, tensors: _Tensors, index, generator):
        """The region each sample learns to generate: the character's matte (when there is one), a random
        box, or the whole frame (inpainting and extend objectives alike)."""
        import torch

        n, _, h, w = tensors.pixels[index].shape
        masks = torch.zeros(n, 1, h, w)
        choices = torch.randint(0, 3, (n,), generator=generator)
        boxes = torch.rand(n, 4, generator=generator)
        for i, frame in enumerate(index.tolist()):
            kind = int(choices[i])
            if kind == 0 and tensors.has_matte[frame]:
                masks[i] = (tensors.mattes[frame].cpu() > 0.5).float()
            elif kind == 2:
                masks[i] = 1.0
            else:
                y0, x0 = int(boxes[i, 0] * h * 0.5), int(boxes[i, 1] * w * 0.5)
                y1, x1 = y0 + max(8, int(boxes[i, 2] * h * 0.5)), x0 + max(8, int(boxes[i, 3] * w * 0.5))
                masks[i, :, y0:y1, x0:x1] = 1.0
        return masks.to(self.device, tensors.pixels.dtype)

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

        metric = {"step": self.step, "loss": loss, "heldout": self.heldout_score(), "time": time.time()}
        self.metrics = [m for m in self.metrics if m["step"] != self.step] + [metric]
        lora = {f"{component}.{k}": v for component, module in self.lora_modules().items()
                for k, v in get_peft_model_state_dict(module, adapter_name=ADAPTER).items()}
        return checkpoints.save(self.work_dir, self.step, lora, self.optimizer.state_dict(),
                                {"fingerprint": self.fingerprint, "metrics": self.metrics})

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
            index = torch.randint(0, len(self.train_frames), (s.batch,), generator=generator)
            loss = self._loss(self.data, index, generator)
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

    def write(self, adapters_dir: Path, dataset: Dataset, report: dict, forced: bool) -> Path:
        s = self.settings
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
            } | self.training_record(),
        }
        files = self.previews(self.work_dir / "previews")
        files["contact_sheet.png"] = contact_sheet(dataset, self.work_dir / "contact_sheet.png")
        return adapter_files.write_adapter(Path(adapters_dir) / s.name, type(self.pipe), self.lora_layers(), manifest,
                                           files=files)


class ImageTrainer(Trainer):
    """The server's image (fill) model: its UNet (SD 1.5 or SDXL) and, optionally, its text encoder(s)."""

    def load_denoiser(self):
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(self.identity.path, subfolder="unet", torch_dtype=self.weight_dtype,
                                                    local_files_only=True)
        if unet.config.addition_embed_type not in (None, "text_time"):
            raise errors.RequestError(f"training does not know {self.identity.family}'s UNet conditioning "
                                      f"({unet.config.addition_embed_type})", code=errors.NOT_SUPPORTED)
        return unet

    def prepare(self) -> None:
        from diffusers import DDPMScheduler

        self.inpaint = self.denoiser.config.in_channels == 9
        self.sdxl = self.denoiser.config.addition_embed_type == "text_time"   # pooled text + size ids
        self.scheduler = DDPMScheduler.from_config(self.pipe.scheduler.config)
        self.vae = self._encoding_vae()
        self.scaling = self.vae.config.scaling_factor
        self.tokenizers = [t for t in (self.pipe.tokenizer, getattr(self.pipe, "tokenizer_2", None)) if t is not None]
        self.text_encoders = self._text_encoders()
        self.data = self._frame_tensors(self.train_frames)
        self.held = self._frame_tensors(self.heldout) if self.heldout else None

    def objective(self) -> str:
        what = "inpaint (noisy latents + mask + masked-image latents)" if self.inpaint else "denoise"
        return what + (" + text encoder LoRA" if self.settings.train_text_encoder else "")

    def lora_modules(self) -> dict:
        trained = self.text_encoders if self.settings.train_text_encoder else {}
        return {self.component: self.denoiser, **trained}

    def _encoding_vae(self):
        """The VAE frames are encoded with: the pipeline's, or a float32 copy of one that overflows in half
        precision (SDXL's: config ``force_upcast``), as diffusers' own pipelines upcast it when they encode."""
        import copy

        import torch

        vae = self.pipe.vae
        if vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
            return copy.deepcopy(vae).to(torch.float32)
        return vae

    # -- text conditioning -----------------------------------------------------------------------------
    def _text_encoders(self) -> dict:
        """The pipeline's text encoders by component name: borrowed frozen, or fresh copies with a LoRA to train
        (the resident ones may carry served adapters' LoRA layers)."""
        import torch
        from peft import LoraConfig

        names = [n for n in ("text_encoder", "text_encoder_2") if getattr(self.pipe, n, None) is not None]
        if not self.settings.train_text_encoder:
            return {n: getattr(self.pipe, n) for n in names}
        encoders = {}
        for i, name in enumerate(names):
            encoder = type(getattr(self.pipe, name)).from_pretrained(
                self.identity.path, subfolder=name, torch_dtype=self.weight_dtype, local_files_only=True).to(self.device)
            encoder.requires_grad_(False)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.settings.seed + 1 + i)
                encoder.add_adapter(LoraConfig(r=self.settings.rank, lora_alpha=self.settings.rank,
                                               init_lora_weights="gaussian",
                                               target_modules=adapter_files.TEXT_LORA_TARGETS), adapter_name=ADAPTER)
            if self.device.type == "cuda" and self.settings.gradient_checkpointing:
                encoder.gradient_checkpointing_enable()
            encoders[name] = encoder
        return encoders

    def _encode_text(self, tokens: list):
        """(token embeddings, pooled embedding or None), as the pipeline's ``encode_prompt`` makes them:
        SD 1.5 the last hidden state; SDXL both encoders' penultimate states and the second one's projection."""
        import torch

        hidden, pooled = [], None
        for encoder, ids in zip(self.text_encoders.values(), tokens):
            out = encoder(ids, output_hidden_states=self.sdxl)
            if self.sdxl:
                hidden.append(out.hidden_states[-2])
                pooled = out[0]
            else:
                hidden.append(out[0])
        return torch.cat(hidden, dim=-1).to(self.weight_dtype), pooled

    def _frame_tensors(self, frames: list[TrainingFrame]) -> _Tensors:
        import torch

        t = _Tensors(frames, self.settings.trigger, self.device, self.weight_dtype)
        t.tokens = [tok(t.prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                        return_tensors="pt").input_ids.to(self.device) for tok in self.tokenizers]
        with torch.no_grad():
            # Frozen encoders: encode once. Trained ones encode per step, with gradients.
            t.text = None if self.settings.train_text_encoder else self._encode_text(t.tokens)
            dist = self.vae.encode(t.pixels.to(self.vae.dtype)).latent_dist
        t.mean, t.std = dist.mean.to(self.weight_dtype), dist.std.to(self.weight_dtype)
        return t

    def _conditioning(self, tensors: _Tensors, index, height: int, width: int):
        """Text embeddings for the batch and, for SDXL, the added conditioning (pooled text, size/crop ids)."""
        import torch

        if tensors.text is not None:
            embeds, pooled = tensors.text[0][index], (tensors.text[1][index] if self.sdxl else None)
        else:
            embeds, pooled = self._encode_text([ids[index] for ids in tensors.tokens])
        if not self.sdxl:
            return embeds, None
        # Frames are trained uncropped at their training size: original = target size, crop (0, 0).
        ids = [height, width, 0, 0, 6.0] if getattr(self.pipe.config, "requires_aesthetics_score", False) \
            else [height, width, 0, 0, height, width]
        time_ids = torch.tensor([ids] * len(index), device=self.device, dtype=self.weight_dtype)
        return embeds, {"text_embeds": pooled.to(self.weight_dtype), "time_ids": time_ids}

    def _unet_input(self, tensors: _Tensors, index, latents, inpaint_mask):
        """Noisy latents, plus (inpainting UNet) the mask and the masked image's latents, as SD-inpaint does."""
        import torch
        import torch.nn.functional as F

        if not self.inpaint:
            return latents
        masked = tensors.pixels[index] * (inpaint_mask < 0.5)
        with torch.no_grad():
            masked_latents = self.vae.encode(masked.to(self.vae.dtype)).latent_dist.mode() * self.scaling
        small = F.interpolate(inpaint_mask, size=latents.shape[-2:])
        return torch.cat([latents, small.to(latents.dtype), masked_latents.to(latents.dtype)], dim=1)

    def _loss(self, tensors: _Tensors, index, generator, timesteps=None):
        import torch
        import torch.nn.functional as F

        n = len(index)
        latents = (tensors.mean[index] + tensors.std[index] * torch.randn(
            tensors.mean[index].shape, generator=generator).to(self.device, tensors.mean.dtype)) * self.scaling
        noise = torch.randn(latents.shape, generator=generator).to(self.device, latents.dtype)
        if timesteps is None:
            timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (n,), generator=generator)
        timesteps = timesteps.to(self.device).long()
        inpaint_mask = self._inpaint_masks(tensors, index, generator)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        model_input = self._unet_input(tensors, index, noisy, inpaint_mask)
        with torch.autocast(self.device.type, dtype=self.weight_dtype, enabled=self.autocast):
            embeds, added = self._conditioning(tensors, index, *tensors.pixels.shape[-2:])
            pred = self.denoiser(model_input, timesteps, embeds, added_cond_kwargs=added).sample
        target = noise if self.scheduler.config.prediction_type == "epsilon" else \
            self.scheduler.get_velocity(latents, noise, timesteps)
        weight = F.interpolate(tensors.mattes[index], size=latents.shape[-2:], mode="area").float()
        error = (pred.float() - target.float()) ** 2 * weight
        return error.sum() / (weight.sum() * latents.shape[1]).clamp_min(1e-6)

    def previews(self, folder: Path) -> dict[str, Path]:
        """Inpaint a few held-out (else training) frames with the trained adapter: PNGs for a TD to look at."""
        import torch

        frames = (self.heldout or self.train_frames)[:self.settings.preview_count]
        pipe = type(self.pipe)(**{**self.pipe.components, **self.lora_modules()})
        pipe.set_progress_bar_config(disable=True)
        files = {}
        folder.mkdir(parents=True, exist_ok=True)
        for module in self.lora_modules().values():
            module.eval()
        for i, frame in enumerate(frames):
            size = self.settings.resolution
            mask = frame.mask if frame.mask is not None else np.ones((size, size), np.float32)
            image = pipe(prompt=frame_prompt(frame, self.settings.trigger), image=frame.rgb[None], mask_image=mask[None, :, :, None], height=size, width=size,
                         num_inference_steps=self.settings.preview_steps, output_type="np",
                         generator=torch.Generator().manual_seed(self.settings.seed)).images[0]
            name = f"previews/{i:02d}_{frame.view or 'untagged'}_{frame.path.stem}.png"
            write_png(folder / Path(name).name, np.concatenate([frame.rgb, image], axis=1))
            files[name] = folder / Path(name).name
        return files

