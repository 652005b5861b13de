"""The image objective: LoRA on the UNet (SD 1.5 or SDXL) of the server's fill model and, optionally, its
text encoder(s).

The objective is the one the base model was trained with: epsilon (or v) prediction on noised
latents; for an inpainting UNet (9 input channels) the input is noisy latents + the inpaint mask
+ the masked image's latents, with the inpaint mask drawn per sample (the character's matte, a
random box, or everything). With a matte, the loss counts only the character's pixels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bodydouble import errors

from .. import adapter_files
from .contact import write_png
from .dataset import TrainingFrame
from .loop import ADAPTER, Trainer
from .samples import FrameTensors, frame_prompt, inpaint_masks


class ImageTrainer(Trainer):
    """The server's image (fill) model: its UNet (SD 1.5 or SDXL) and, optionally, its text encoder(s)."""

    lora_targets = adapter_files.UNET_LORA_TARGETS

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

        # An inpainting UNet takes noisy latents + the mask + the masked image's latents (SD-inpaint: 4 + 1 + 4).
        self.inpaint = self.denoiser.config.in_channels == 2 * self.denoiser.config.out_channels + 1
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

    def _frame_tensors(self, frames: list[TrainingFrame]) -> FrameTensors:
        import torch

        t = FrameTensors(frames, self.settings.trigger, self.device, self.weight_dtype)
        t.tokens = [tok(t.prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                        return_tensors="pt").input_ids.to(self.device) for tok in self.tokenizers]
        with torch.no_grad():
            # Frozen encoders: encode once. Trained ones encode per step, with gradients.
            t.text = None if self.settings.train_text_encoder else self._encode_text(t.tokens)
            dist = self.vae.encode(t.pixels.to(self.vae.dtype)).latent_dist
        t.mean, t.std = dist.mean.to(self.weight_dtype), dist.std.to(self.weight_dtype)
        return t

    def _conditioning(self, tensors: FrameTensors, index, height: int, width: int):
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

    def _unet_input(self, tensors: FrameTensors, index, latents, inpaint_mask):
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

    def _loss(self, tensors: FrameTensors, index, generator, timesteps=None):
        import torch
        import torch.nn.functional as F

        n = len(index)
        latents = (tensors.mean[index] + tensors.std[index] * torch.randn(
            tensors.mean[index].shape, generator=generator).to(self.device, tensors.mean.dtype)) * self.scaling
        noise = torch.randn(latents.shape, generator=generator).to(self.device, latents.dtype)
        if timesteps is None:
            timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (n,), generator=generator)
        timesteps = timesteps.to(self.device).long()
        inpaint_mask = inpaint_masks(tensors, index, generator)
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

