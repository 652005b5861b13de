"""LoRA training of the server's video model (extend): the transformer of a Wan VACE pipeline.

Objective: Wan's own, flow matching (rectified flow) on the VAE's normalised latents,
``x_t = (1 - sigma) * x0 + sigma * noise``, the transformer predicting the velocity ``noise - x0`` at
timestep ``1000 * sigma``. Latents are normalised as diffusers' Wan pipelines do,
``(z - latents_mean) / latents_std`` from the VAE config. Training sigmas are drawn uniformly and then
shifted with the pipeline scheduler's shift (``shift`` / ``flow_shift``), the way inference spaces its
steps; the held-out score uses the fixed sigmas ``t / 1000`` of the timesteps the shared loop passes in.
The text is the pipeline's own UMT5 embedding (``encode_prompt``, padded to 512 tokens as extend calls it).

Clips: every reference frame trains as a **1-frame clip**. Reference sets are stills (poses and views
chosen to cover the character), not footage: two "consecutive" frames of one view are no motion, so
clips built from them would teach jump cuts, and a still repeated into a clip would teach the model to
freeze. Wan trains jointly on images as 1-frame videos (its causal VAE encodes frame 0 on its own and
``1 = 4 * 0 + 1`` keeps the frame rule), so a still is in the base model's distribution: the LoRA learns
the character's appearance and leaves the base model's motion prior alone. The same weights act on every
latent frame of an extend call.

Control (``control_hidden_states``), built as ``WanVACEPipeline`` builds it for extend: the control video
is the frame with the pixels to generate set to mid-grey (0 in [-1, 1]); its latents split into
*inactive* (kept pixels) and *reactive* (pixels to generate: grey, so always the latent of a grey frame),
plus the binary mask folded from 8x8 pixel blocks into 64 channels. Per sample the region to generate
is the character's matte (when there is one: the character regenerated inside its kept plate), a
random box, or the whole frame -- the last is exactly what every frame extend makes sees (grey, mask 1).
With a matte, the loss counts only the character's pixels.

Determinism: as in the shared loop, every random draw of a step comes from ``step_generator(seed, step)``.
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np

from bodydouble import errors
from bodydouble.jobspec import ExtendRequest

from .. import models
from .contact import write_png
from .dataset import TrainingFrame
from .trainer import Trainer, _Tensors, frame_prompt

TEXT_TOKENS = 512          # WanVACEPipeline's max_sequence_length default: what extend's calls use
PREVIEW_FRAMES = 4         # frames a preview makes after its one conditioning frame (1 + 4 = 4 * 1 + 1)
TRAINABLE_FAMILIES = ("wan-vace",)


class VideoTrainer(Trainer):
    """The server's video (extend) model: a LoRA on its Wan VACE transformer."""

    component = "transformer"
    model_kind = "video"

    def __init__(self, pipe, identity, dataset, settings, work_dir: Path, device: str = "cpu"):
        if identity.family not in TRAINABLE_FAMILIES:
            raise errors.RequestError(
                f"video training supports {', '.join(TRAINABLE_FAMILIES)} models; this server's video model is "
                f"{identity.family}", code=errors.NOT_SUPPORTED)
        if getattr(pipe, "transformer_2", None) is not None:
            raise errors.RequestError("video training does not support two-expert models (Wan 2.2 transformer_2) "
                                      "yet: a LoRA on one expert would serve only part of the steps",
                                      code=errors.NOT_SUPPORTED)
        if settings.train_text_encoder:
            raise errors.RequestError("train_text_encoder is for the image model; video training trains the "
                                      "transformer only", code=errors.INVALID_REQUEST)
        multiple = models.get_family(identity.family).multiple
        if settings.resolution % multiple:
            raise errors.RequestError(f"resolution must be a multiple of {multiple} for the video model "
                                      f"(VAE / 8 x transformer patch 2), got {settings.resolution}",
                                      code=errors.INVALID_REQUEST)
        super().__init__(pipe, identity, dataset, settings, work_dir, device)

    def load_denoiser(self):
        return type(self.pipe.transformer).from_pretrained(self.identity.path, subfolder="transformer",
                                                           torch_dtype=self.weight_dtype, local_files_only=True)

    def prepare(self) -> None:
        import torch

        vae = self.pipe.vae
        self.scheduler = self.pipe.scheduler      # read only: its train timesteps and shift
        config = self.scheduler.config
        self.shift = float(config.get("shift") or config.get("flow_shift") or 1.0)
        z = vae.config.z_dim
        self.latents_mean = torch.tensor(vae.config.latents_mean, device=self.device).view(1, z, 1, 1, 1)
        self.latents_std = torch.tensor(vae.config.latents_std, device=self.device).view(1, z, 1, 1, 1)
        self.block = self.pipe.vae_scale_factor_spatial
        size = self.settings.resolution
        with torch.no_grad():
            # The reactive half of every control input: the latent of the grey pixels to generate.
            self.reactive = self._encode(torch.zeros(1, 3, size, size, device=self.device))
        self.data = self._frame_tensors(self.train_frames)
        self.held = self._frame_tensors(self.heldout) if self.heldout else None

    def objective(self) -> str:
        return ("flow matching (velocity noise - x0) on 1-frame clips, VACE control: character matte, "
                "random box or whole frame to generate")

    # -- tensors ---------------------------------------------------------------------------------------
    def _normalise(self, latents):
        return ((latents.float() - self.latents_mean) / self.latents_std).to(self.weight_dtype)

    def _encode(self, pixels):
        """(N, 3, H, W) pixels in [-1, 1] -> normalised 1-frame latents (N, z, 1, h, w), the VAE's mode."""
        vae = self.pipe.vae
        return self._normalise(vae.encode(pixels[:, :, None].to(vae.dtype)).latent_dist.mode())

    def _frame_tensors(self, frames: list[TrainingFrame]) -> _Tensors:
        import torch

        t = _Tensors(frames, self.settings.trigger, self.device, self.weight_dtype)
        prompts = sorted(set(t.prompts))      # frames share prompts (trigger + view): encode each once
        t.prompt_index = torch.tensor([prompts.index(p) for p in t.prompts], device=self.device)
        means, stds = [], []
        with torch.no_grad():
            t.text = self.pipe.encode_prompt(prompts, do_classifier_free_guidance=False,
                                             max_sequence_length=TEXT_TOKENS, device=self.device,
                                             dtype=self.weight_dtype)[0]
            for pixels in t.pixels.split(8):  # a real Wan VAE at full size: a few frames at a time
                dist = self.pipe.vae.encode(pixels[:, :, None].to(self.pipe.vae.dtype)).latent_dist
                means.append(dist.mean.float())
                stds.append(dist.std.float())
        # Posterior in the normalised space the transformer works in: x0 = mean + std * eps.
        t.mean = (torch.cat(means) - self.latents_mean) / self.latents_std
        t.std = torch.cat(stds) / self.latents_std
        return t

    def _control(self, tensors: _Tensors, index, masks):
        """VACE's control input for 1-frame clips: inactive latents (kept pixels; grey where generated),
        reactive latents (the grey to generate) and the mask folded into vae_scale_factor_spatial**2 channels."""
        import torch

        generate = (masks > 0.5).to(tensors.pixels.dtype)
        with torch.no_grad():
            inactive = self._encode(tensors.pixels[index] * (1 - generate))
        n, _, height, width = generate.shape
        b = self.block
        folded = generate.view(n, height // b, b, width // b, b).permute(0, 2, 4, 1, 3).reshape(n, b * b, 1,
                                                                                                height // b, width // b)
        return torch.cat([inactive, self.reactive.expand_as(inactive), folded.to(inactive.dtype)], dim=1)

    def _loss(self, tensors: _Tensors, index, generator, timesteps=None):
        import torch
        import torch.nn.functional as F

        n = len(index)
        mean, std = tensors.mean[index], tensors.std[index]
        x0 = mean + std * torch.randn(mean.shape, generator=generator).to(self.device)
        noise = torch.randn(x0.shape, generator=generator).to(self.device)
        if timesteps is None:
            u = torch.rand(n, generator=generator)
            sigma = self.shift * u / (1 + (self.shift - 1) * u)
        else:
            sigma = timesteps.float() / self.scheduler.config.num_train_timesteps
        sigma = sigma.to(self.device)
        # The region to generate is drawn as the image trainer draws its inpaint mask (matte / box / all).
        masks = self._inpaint_masks(tensors, index, generator)
        s = sigma.view(n, 1, 1, 1, 1)
        noisy = ((1 - s) * x0 + s * noise).to(self.weight_dtype)
        control = self._control(tensors, index, masks)
        with torch.autocast(self.device.type, dtype=self.weight_dtype, enabled=self.autocast):
            pred = self.denoiser(hidden_states=noisy, timestep=sigma * self.scheduler.config.num_train_timesteps,
                                 encoder_hidden_states=tensors.text[tensors.prompt_index[index]],
                                 control_hidden_states=control, return_dict=False)[0]
        target = noise - x0
        weight = F.interpolate(tensors.mattes[index], size=x0.shape[-2:], mode="area").float()[:, :, None]
        error = (pred.float() - target) ** 2 * weight
        return error.sum() / (weight.sum() * x0.shape[1] * x0.shape[2]).clamp_min(1e-6)

    # -- output ----------------------------------------------------------------------------------------
    def previews(self, folder: Path) -> dict[str, Path]:
        """A short extend from a few held-out (else training) frames with the trained LoRA: PNG strips of
        the conditioning frame followed by the frames made after it."""
        import torch

        frames = (self.heldout or self.train_frames)[:self.settings.preview_count]
        if not frames:
            return {}
        family = models.get_family(self.identity.family)
        pipe = type(self.pipe)(**{**self.pipe.components, self.component: self.denoiser})
        pipe.set_progress_bar_config(disable=True)
        self.denoiser.eval()
        folder.mkdir(parents=True, exist_ok=True)
        defaults = {f.name: f.default for f in fields(ExtendRequest)}   # an extend as the artist runs it
        files = {}
        size = self.settings.resolution
        for i, frame in enumerate(frames):
            made = family.extend(pipe, frame.rgb[None], PREVIEW_FRAMES, height=size, width=size,
                                 prompt=frame_prompt(frame, self.settings.trigger), negative_prompt="",
                                 steps=self.settings.preview_steps, guidance=defaults["guidance"], fps=defaults["fps"],
                                 generator=torch.Generator().manual_seed(self.settings.seed),
                                 on_step=lambda step, steps: None)
            name = f"previews/{i:02d}_{frame.view or 'untagged'}_{frame.path.stem}.png"
            write_png(folder / Path(name).name, np.concatenate([frame.rgb, *made], axis=1))
            files[name] = folder / Path(name).name
        return files
