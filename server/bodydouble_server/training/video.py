"""LoRA training of the server's video model (extend): the transformer of a Wan VACE pipeline.

Objective: Wan's own, flow matching (rectified flow) on the VAE's normalised latents,
``x_t = (1 - sigma) * x0 + sigma * noise``, the transformer predicting the velocity ``noise - x0`` at
timestep ``1000 * sigma``. Latents are normalised as diffusers' Wan pipelines do,
``(z - latents_mean) / latents_std`` from the VAE config. Training sigmas are drawn uniformly and then
shifted with the pipeline scheduler's shift (``shift`` / ``flow_shift``), the way inference spaces its
steps; the held-out score uses the fixed sigmas ``t / 1000`` of the timesteps the shared loop passes in.
The text is the pipeline's own UMT5 embedding (``encode_prompt``, padded to 512 tokens as extend calls it).

Clips (``clip_frames`` 1, the default): every reference frame trains as a **1-frame clip**. Reference sets are stills (poses and views
chosen to cover the character), not footage: two "consecutive" frames of one view are no motion, so
clips built from them would teach jump cuts, and a still repeated into a clip would teach the model to
freeze. Wan trains jointly on images as 1-frame videos (its causal VAE encodes frame 0 on its own and
``1 = 4 * 0 + 1`` keeps the frame rule), so a still is in the base model's distribution: the LoRA learns
the character's appearance and leaves the base model's motion prior alone. The same weights act on every
latent frame of an extend call.

Clips of footage (``clip_frames`` F > 1, ``4k + 1`` for Wan): plate sequences of the character are cut into
clips of F consecutive frames (``clips.cut``: by file pattern, non-overlapping), each encoded as one video
(N, 3, F, H, W), and trained with **extend's own objective**: the first ``clip_conditioning`` (K) frames are
known -- kept in the control video, mask 0 -- and the rest are to generate -- grey, mask 1 --, exactly the
control an extend of K plate frames builds. The loss counts the latent frames that hold generated frames
only (Wan's causal VAE: latent 0 is frame 0, latent j frames 4j-3..4j), weighted by the character's matte
where there is one. The adapter then learns how the character moves as well as how they look.
A share ``clip_fill`` of the samples (drawn per sample) trains the **video engine's fill** instead: the
character's matte is to generate on every frame of the clip (grey, mask 1) and the rest of each frame is known,
the control a shot fill builds; the loss counts the matte on every latent frame. Why both: a video adapter
trained on stills (1-frame clips) learns the character for the latent frame the VAE codes alone -- a chunk's
first frame -- and carries little to the frames it codes four to a latent (measured in the miniature world:
+2.0 dB on the first frame of a fill chunk, +0.5 on the rest); footage with fill's objective teaches those.
With fill alone (``clip_fill`` 1) the frames in no clip -- stills, short runs, a run's tail -- are **held**, each
a clip of one frame repeated (``clips.cut``): a still's fill on every frame of a held plate, so a fill adapter
can be trained from stills alone and still learn the latent frames after the first.
A clip's control inputs need no random draw, so both are encoded once, with the clip's posterior.

Control (``control_hidden_states``), made by ``WanVACEPipeline``'s own ``prepare_video_latents`` and
``prepare_masks``, from what extend gives it: the control video is the frame(s) with the pixels to generate
set to mid-grey (0 in [-1, 1]) and the mask is 1 there; the pipeline splits the latents into *inactive*
(kept pixels) and *reactive* (pixels to generate: grey) and folds the mask's 8x8 pixel blocks into 64
channels. Those methods take one video at a time, so a batch is prepared sample by sample. Per sample the region to generate
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
from . import clips as clips_mod
from .contact import write_png
from .dataset import TrainingFrame
from .loop import Trainer
from .samples import FrameTensors, frame_prompt, inpaint_masks, split_holdout

TEXT_TOKENS = 512          # WanVACEPipeline's max_sequence_length default: what extend's calls use
ENCODE_FRAMES = 8          # a real Wan VAE at full size: encode this many frames' worth at a time
PREVIEW_FRAMES = 4         # frames a preview makes after its one conditioning frame (1 + 4 = 4 * 1 + 1)
TRAINABLE_FAMILIES = ("wan-vace", "miniworld-video")


def vace_control(pipe, videos, generate, device):
    """VACE's control input, as ``WanVACEPipeline.__call__`` makes it from extend's video and mask: (N, 3, F,
    H, W) pixels in [-1, 1] and the (N, 1, F, H, W) region to generate (1) -> (N, 2 z + s*s, F', h, w) (s: the
    VAE's spatial factor). The pixels to generate are set to grey first, as extend's control video has them.
    The pipeline's methods take one video at a time, so a batch is prepared sample by sample."""
    import torch

    generate = (generate > 0.5).to(videos.dtype)
    control = []
    with torch.no_grad():
        for video, mask in zip((videos * (1 - generate)).split(1), generate.split(1)):
            latents = pipe.prepare_video_latents(video, mask, [[]], device=device)   # [[]]: no reference images
            control.append(torch.cat([latents, pipe.prepare_masks(mask, [[]]).to(latents.dtype)], dim=1))
    return torch.cat(control)


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
        family = models.get_family(identity.family)
        if settings.resolution % family.multiple:
            raise errors.RequestError(f"resolution must be a multiple of {family.multiple} for the video model "
                                      f"({family.name}: its VAE's and transformer patch's scale), got "
                                      f"{settings.resolution}",
                                      code=errors.INVALID_REQUEST)
        self.clips = self._cut_clips(family, dataset, settings) if settings.clip_frames != 1 else None
        self._controls: dict[tuple, object] = {}     # 1-frame samples' controls that repeat (_sample_control)
        super().__init__(pipe, identity, dataset, settings, work_dir, device)

    @staticmethod
    def _cut_clips(family, dataset, settings) -> clips_mod.Clips:
        """The data set's clips, refused (before any model is loaded) when the frame rule or the footage
        cannot make them."""
        f, t = settings.clip_frames, family.temporal_multiple
        if (f - 1) % t or f > family.window:
            raise errors.RequestError(
                f"clip_frames must be 1 or {t}k+1 up to {family.window} for the video model ({family.name}: its VAE "
                f"compresses time by {t}, so {', '.join(str(t * k + 1) for k in (1, 2, 3))}, ...), got {f}",
                code=errors.INVALID_REQUEST)
        found = clips_mod.cut(dataset.frames, f, hold=settings.clip_fill == 1)
        if not found.clips:
            raise errors.RequestError(
                f"clip_frames {f} trains on clips of {f} consecutive frames of a sequence (one folder, names that "
                f"differ only in the frame number: hero_walk.1001.exr, hero_walk.1002.exr, ...), and the "
                f"{len(dataset.frames)} frame(s) given make none: {found.describe()}. Give footage, train a fill "
                "adapter (clip_fill 1: stills are held as clips), or train on single frames with clip_frames 1",
                code=errors.INVALID_REQUEST)
        return found

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
        if self.clips is not None:
            # The samples are clips: the loop draws from, and holds out, clips (the last of each view).
            self.train_frames, self.heldout = split_holdout(self.clips.clips, self.settings.holdout_per_view)
            tensors = self._clip_tensors
        else:
            tensors = self._frame_tensors
        self.data = tensors(self.train_frames)
        self.held = tensors(self.heldout) if self.heldout else None

    def objective(self) -> str:
        if self.clips is not None:
            k = self.settings.clip_conditioning
            share = self.settings.clip_fill
            parts = [(1 - share, f"extend: the first {k} frame(s) known (kept in the VACE control, mask 0), the rest "
                                 "generated (grey, mask 1), loss on the generated latent frames, character matte "
                                 "where present"),
                     (share, "fill: the character's matte generated on every frame, the rest known, loss on the "
                             "matte")]
            held = f" ({self.clips.held} of them stills held)" if self.clips.held else ""
            return (f"flow matching (velocity noise - x0) on {self.settings.clip_frames}-frame clips{held}; "
                    + "; ".join(f"{part:.0%} {what}" for part, what in parts if part > 0))
        return ("flow matching (velocity noise - x0) on 1-frame clips, VACE control: character matte, "
                "random box or whole frame to generate")

    def heldout_frames(self) -> list[TrainingFrame]:
        if self.clips is None:
            return self.heldout
        return [f for clip in self.heldout for f in clip.frames]

    def training_record(self) -> dict:
        if self.clips is None:
            return {}
        held = {id(c) for c in self.heldout}
        return {"clips": self.clips.summary() | {
            "clip_conditioning": self.settings.clip_conditioning, "heldout_clips": len(self.heldout),
            "list": [{"pattern": c.pattern, "first": c.first, "last": c.last, "view": c.view,
                      "heldout": id(c) in held, **({"held": True} if c.held else {})} for c in self.clips.clips]}}

    # -- tensors ---------------------------------------------------------------------------------------
    def _text(self, t: FrameTensors) -> None:
        """The UMT5 embedding of each prompt, once per distinct prompt (samples share trigger + view)."""
        import torch

        prompts = sorted(set(t.prompts))
        t.prompt_index = torch.tensor([prompts.index(p) for p in t.prompts], device=self.device)
        with torch.no_grad():
            t.text = self.pipe.encode_prompt(prompts, do_classifier_free_guidance=False,
                                             max_sequence_length=TEXT_TOKENS, device=self.device,
                                             dtype=self.weight_dtype)[0]

    def _posterior(self, t: FrameTensors, videos) -> None:
        """The VAE posterior of (N, 3, F, H, W) videos, a few at a time, in the normalised space the
        transformer works in: x0 = mean + std * eps."""
        import torch

        means, stds = [], []
        with torch.no_grad():
            for chunk in videos.split(max(1, ENCODE_FRAMES // videos.shape[2])):
                dist = self.pipe.vae.encode(chunk.to(self.pipe.vae.dtype)).latent_dist
                means.append(dist.mean.float())
                stds.append(dist.std.float())
        t.mean = (torch.cat(means) - self.latents_mean) / self.latents_std
        t.std = torch.cat(stds) / self.latents_std

    def _frame_tensors(self, frames: list[TrainingFrame]) -> FrameTensors:
        t = FrameTensors(frames, self.settings.trigger, self.device, self.weight_dtype)
        self._text(t)
        self._posterior(t, t.pixels[:, :, None])
        return t

    def _clip_tensors(self, clips: list[clips_mod.Clip]) -> FrameTensors:
        """Per clip: prompt (its first frame's), posterior, extend's control input and the loss weight. The
        pixels are dropped once encoded (previews read the frames themselves)."""
        import torch
        import torch.nn.functional as F

        frames, k = self.settings.clip_frames, self.settings.clip_conditioning
        t = FrameTensors([f for c in clips for f in c.frames], self.settings.trigger, self.device, self.weight_dtype)
        n, size = len(clips), self.settings.resolution
        t.prompts, t.has_matte = t.prompts[::frames], None
        videos = t.pixels.view(n, frames, 3, size, size).transpose(1, 2)
        self._text(t)
        self._posterior(t, videos)
        # Extend's control: the first K frames known (kept, mask 0), the rest to generate (grey, mask 1).
        generate = torch.zeros(n, 1, frames, size, size, device=self.device, dtype=videos.dtype)
        generate[:, :, k:] = 1
        t.control = self._control(videos, generate)
        # Loss weight per latent frame: the character's matte averaged over the frames it encodes (area
        # downsampled), zero on latent frames that hold known frames only.
        latent_frames, step = t.mean.shape[2], self.pipe.vae_scale_factor_temporal
        mattes = F.interpolate(t.mattes.float(), size=t.mean.shape[-2:], mode="area").view(n, frames, *t.mean.shape[-2:])
        mattes = torch.cat([mattes[:, :1], mattes[:, 1:].reshape(n, latent_frames - 1, step, *mattes.shape[-2:]).mean(2)],
                           dim=1)
        generated = (torch.arange(latent_frames, device=self.device) > (k - 1) // step).float()
        t.weight = (mattes * generated.view(1, -1, 1, 1))[:, None]
        if self.settings.clip_fill > 0:
            # Fill's control: every frame's matte to generate, the rest known; the loss on the matte everywhere
            # (a frame without a matte is all to generate, as a fill of the whole frame would be).
            region = (t.mattes > 0.5).to(videos.dtype).view(n, frames, 1, size, size).transpose(1, 2)
            t.fill_control, t.fill_weight = self._control(videos, region), mattes[:, None]
        del t.pixels, t.mattes
        return t

    def _control(self, videos, generate):
        return vace_control(self.pipe, videos, generate, self.device).to(self.weight_dtype)

    def _sample_control(self, tensors: FrameTensors, frame: int, mask):
        """One 1-frame sample's control. The whole frame and the character's matte come back every time a frame
        is drawn (2 of 3 draws): their controls are made once and kept (the VAE encodes are most of a step on
        small models); a random box is made each time."""
        import torch

        region = mask > 0.5
        whole = bool(region.all())
        key = ("whole",) if whole else (id(tensors), frame) \
            if tensors.has_matte[frame] and torch.equal(region, tensors.mattes[frame] > 0.5) else None
        control = self._controls.get(key) if key else None
        if control is None:
            control = self._control(tensors.pixels[frame][None, :, None], mask[None, :, None])
            if key:
                self._controls[key] = control
        return control

    def _loss(self, tensors: FrameTensors, index, generator, timesteps=None):
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
        if self.clips is None:
            # The region to generate is drawn as the image trainer draws its inpaint mask (matte / box / all).
            masks = inpaint_masks(tensors, index, generator)
            control = torch.cat([self._sample_control(tensors, frame, mask)
                                 for frame, mask in zip(index.tolist(), masks)])
            weight = F.interpolate(tensors.mattes[index], size=x0.shape[-2:], mode="area").float()[:, :, None]
        else:   # extend's control or fill's, fixed per clip: encoded once
            control, weight = tensors.control[index], tensors.weight[index]
            if self.settings.clip_fill > 0:
                fill = (torch.rand(n, generator=generator) < self.settings.clip_fill).to(self.device)
                control = torch.where(fill.view(n, 1, 1, 1, 1), tensors.fill_control[index], control)
                weight = torch.where(fill.view(n, 1, 1, 1, 1), tensors.fill_weight[index], weight)
        s = sigma.view(n, 1, 1, 1, 1)
        noisy = ((1 - s) * x0 + s * noise).to(self.weight_dtype)
        with torch.autocast(self.device.type, dtype=self.weight_dtype, enabled=self.autocast):
            pred = self.denoiser(hidden_states=noisy, timestep=sigma * self.scheduler.config.num_train_timesteps,
                                 encoder_hidden_states=tensors.text[tensors.prompt_index[index]],
                                 control_hidden_states=control, return_dict=False)[0]
        target = noise - x0
        error = (pred.float() - target) ** 2 * weight
        # weight spans the latent frames (one for a 1-frame clip): its sum counts every weighted position.
        return error.sum() / (weight.sum() * x0.shape[1]).clamp_min(1e-6)

    # -- output ----------------------------------------------------------------------------------------
    def previews(self, folder: Path) -> dict[str, Path]:
        """A short extend from a few held-out (else training) frames with the trained LoRA: PNG strips of
        the conditioning frame followed by the frames made after it. Trained on clips: an extend of each
        held-out (else training) clip from its known frames, the clip itself above the strip."""
        import torch

        samples = (self.heldout or self.train_frames)[:self.settings.preview_count]
        if not samples:
            return {}
        family = models.get_family(self.identity.family)
        pipe = type(self.pipe)(**{**self.pipe.components, self.component: self.denoiser})
        pipe.set_progress_bar_config(disable=True)
        self.denoiser.eval()
        folder.mkdir(parents=True, exist_ok=True)
        defaults = {f.name: f.default for f in fields(ExtendRequest)}   # an extend as the artist runs it
        files = {}
        size = self.settings.resolution
        k = self.settings.clip_conditioning
        for i, sample in enumerate(samples):
            if self.clips is None:
                frame, context, count = sample, sample.rgb[None], PREVIEW_FRAMES
            else:
                frame = sample.frames[0]
                context, count = np.stack([f.rgb for f in sample.frames[:k]]), len(sample.frames) - k
            made = family.extend(pipe, context, count, height=size, width=size,
                                 prompt=frame_prompt(frame, self.settings.trigger), negative_prompt="",
                                 steps=self.settings.preview_steps, guidance=defaults["guidance"], fps=defaults["fps"],
                                 generator=torch.Generator().manual_seed(self.settings.seed),
                                 on_step=lambda step, steps: None)
            name = f"previews/{i:02d}_{frame.view or 'untagged'}_{frame.path.stem}.png"
            strip = np.concatenate([*context, *made], axis=1)
            if self.clips is not None:
                strip = np.concatenate([np.concatenate([f.rgb for f in sample.frames], axis=1), strip], axis=0)
            write_png(folder / Path(name).name, strip)
            files[name] = folder / Path(name).name
        return files
