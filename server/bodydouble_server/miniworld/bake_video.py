"""Bake the miniature world's video base model: a small Wan-VACE-shaped diffusers model (causal video VAE, VACE
transformer, UMT5 text encoder) trained from scratch on turntable clips of the world's base characters (never
the held-out ones), on CPU. Issue #20's stage 7; fill's video engine (#18) and extend run on it.

    python -m bodydouble_server.miniworld.bake_video OUT_FOLDER [--work WORK] [--tiny]

Phases, deterministic from the settings' seed and checkpointed in WORK (an interrupted bake resumes):

1. render: ``clips_per_character`` clips of ``clip_frames`` (9 = 4 * 2 + 1, Wan's frame rule) of each base
   character turning (a random start yaw and speed, the head drifting as a camera pans), framed as the product
   frames them for the video model: half as **extend** does (the whole plate, resized), half as **fill's video
   engine** does (``regions.shot_boxes``: each frame's own crop, grown to one size for the clip), through fill's own
   ``prepare_frame`` (crop, OCIO view, resize to 64 px).
2. vae: ``AutoencoderKLWan`` with two downsamplings (latents /4 in space, /4 in time as Wan's: 9 frames -> 3
   latent frames of 16 x 16), on random 32 x 32 windows (it is convolutional) of 5 frames, then of whole clips
   (the causal cache between groups of 4 frames), L1 + L2 + a small KL, with the image bake's colour
   augmentation; then its ``latents_mean``/``latents_std`` are measured per channel (diffusers' Wan pipelines
   normalise with them).
3. transformer: ``WanVACETransformer3DModel``, Wan's flow matching (velocity ``noise - x0`` at ``1000 * sigma``),
   on the tasks the product gives a video model, each with the VACE control ``WanVACEPipeline`` builds
   (training/video.py's ``vace_control``): **extend** (the first 1 or 3 frames known, the rest made whole) on
   extend-framed clips; **shot fill** (the head's matte made on every frame, the first 0 or 1 frames known
   whole, as the video engine's chunks are) on fill-framed clips; now and then **everything** made. Loss 1.0
   on the latents of the pixels made, 0.1 elsewhere. The text encoder stays as built (Wan's UMT5 is frozen
   too); prompts name the view, with a random character name half the time, empty 10% of the time. EMA
   weights ship.
4. save: ``WanVACEPipeline.save_pretrained`` + the declaration (family ``miniworld-video``, TEST MODEL) +
   ``bake-metrics.json`` (curves, the VAE's PSNR on clips, extend and fill scored on held-out clips).
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..models import miniworld as family
from . import bake as image_bake
from . import characters as chars
from . import world

METRICS_FILE = image_bake.METRICS_FILE
TEXT_TOKENS = 512           # WanVACEPipeline's max_sequence_length: the padding every call's text attends over
EXTEND, FILL = 0, 1         # a clip's framing, and so its task


@dataclass(frozen=True)
class VideoBakeSettings:
    seed: int = 20261204
    characters: int = 48
    clips_per_character: int = 16
    clip_frames: int = family.VIDEO_WINDOW
    plate: int = 96
    resolution: int = family.RESOLUTION
    speed: tuple = (2.0, 12.0)      # turning, degrees a frame (either way)
    pan: float = 2.0                # the head's drift, px a frame at most (either way)
    grain: float = 0.04             # plate grain at most (relative), new every frame
    vae_base_dim: int = 16
    z_dim: int = 16                 # Wan's own: 4 frames of 4x4 pixels (192 values) in 16 numbers
    vae_steps: int = 1500
    vae_batch: int = 8
    vae_frames: int = 5             # first stage: windows of frame 0 + one group of 4 ...
    vae_clip_steps: int = 600       # ... then whole clips (their groups of 4 chained through the causal cache)
    vae_clip_learning_rate: float = 3e-4
    vae_patch: int = 32
    # Lone frames: each step also codes every window's last frame alone, at this weight. A still (a 1-frame clip,
    # what video adapters train on) and every chunk's first frame take Wan's first-frame path; trained only as
    # one frame of each window, it coded a held-out head at 13.5 dB against 24 dB for the same frame in a group
    # of 4, its yellow hair turned white (the first video bake).
    vae_lone_weight: float = 1.0
    transformer_steps: int = 1500
    batch: int = 16
    width: int = 128                # transformer: heads x head dim
    heads: int = 4
    layers: int = 4
    learning_rate: float = 1e-3
    transformer_learning_rate: float = 5e-4
    ema: float = 0.998
    shift: float = 1.0              # flow shift (training and the shipped scheduler): small latents need none
    checkpoint_every: int = 100
    eval_clips: int = 8
    eval_steps: int = 10
    threads: int = 2                # bit-exact on the same machine and thread count


TINY = VideoBakeSettings(characters=2, clips_per_character=2, vae_steps=2, vae_clip_steps=2, transformer_steps=2,
                         vae_batch=2, batch=2, checkpoint_every=1, eval_clips=2, eval_steps=2, vae_base_dim=8,
                         width=32, layers=2)


# -- components ------------------------------------------------------------------------------------------
def build_pipeline(settings: VideoBakeSettings):
    import torch
    from diffusers import (AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanVACEPipeline,
                           WanVACETransformer3DModel)
    from transformers import UMT5Config, UMT5EncoderModel

    from ..models.embedded_video import _tokenizer

    tokenizer = _tokenizer()
    z = settings.z_dim
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        vae = AutoencoderKLWan(base_dim=settings.vae_base_dim, z_dim=z, dim_mult=[1, 2, 2], num_res_blocks=1,
                               temperal_downsample=[True, True], latents_mean=[0.0] * z, latents_std=[1.0] * z)
        text_encoder = UMT5EncoderModel(UMT5Config(
            vocab_size=len(tokenizer), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
        spatial = 2 ** len(vae.temperal_downsample)
        transformer = WanVACETransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=settings.heads, attention_head_dim=settings.width // settings.heads,
            in_channels=z, out_channels=z, text_dim=64, freq_dim=64, ffn_dim=2 * settings.width,
            num_layers=settings.layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=64,
            vace_layers=list(range(0, settings.layers, 2)), vace_in_channels=2 * z + spatial * spatial)
    # The text encoder stays as built, in eval mode: UMT5's dropout (0.1) would make every embedding random, and
    # the served pipeline (loaded by from_pretrained) runs it without.
    pipe = WanVACEPipeline(tokenizer=tokenizer, text_encoder=text_encoder.requires_grad_(False).eval(), vae=vae,
                           transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=settings.shift))
    pipe.set_progress_bar_config(disable=True)
    return pipe


# -- phases ----------------------------------------------------------------------------------------------
def render_clip(rng: np.random.Generator, character: chars.Character, settings: VideoBakeSettings, framing_kind: int,
                colour, yaws=None):
    """One clip: (rgb (F, R, R, 3) float16 display-referred at the model's size, head masks (F, R, R) bool,
    yaws (F,)), framed for ``framing_kind`` (EXTEND: the whole plate; FILL: each frame's own crop at one size, as the video engine frames a shot)."""
    from ..imaging import frames as frame_io
    from ..imaging import regions
    from ..operations import fill

    f, size, plate = settings.clip_frames, settings.resolution, settings.plate
    if yaws is None:
        speed = float(rng.uniform(*settings.speed)) * (1 if rng.random() < 0.5 else -1)
        yaws = float(rng.uniform(0, 360)) + speed * np.arange(f)
    shot = chars.random_shot(rng, plate, plate)
    drift = float(rng.uniform(-settings.pan, settings.pan))
    drift *= min(1.0, (min(shot.cx, plate - shot.cx) - shot.radius) / max(1e-6, abs(drift) * (f - 1)))  # stay in frame
    grain = float(rng.uniform(0, settings.grain))
    renders, mattes = [], []
    for i in range(f):
        rgb, matte = chars.render(character, replace(shot, cx=shot.cx + drift * i), float(yaws[i]))
        renders.append(rgb * (1.0 + grain * rng.standard_normal(rgb.shape)).astype(np.float32))
        mattes.append(matte)
    if framing_kind == EXTEND:
        boxes = [regions.Box(0, plate, 0, plate)] * f
    else:
        boxes = regions.shot_boxes([regions.mask_box(m) for m in mattes], plate, plate, world.FILL_REQUEST.context)
    framing = world.Framing(size, family.VIDEO_MULTIPLE)
    rgbs, masks = np.zeros((f, size, size, 3), np.float16), np.zeros((f, size, size), bool)
    for i in range(f):
        prepared = fill.prepare_frame(framing, world.FILL_REQUEST, colour, frame_io.frame_from_buffer(renders[i]),
                                      mattes[i], box=boxes[i])
        rgbs[i] = world.square(prepared.model_rgb, size)
        masks[i] = world.square(prepared.model_mask[:, :, None], size)[:, :, 0] > 0.5
    return rgbs, masks, np.asarray(yaws, np.float32)


def render_phase(settings: VideoBakeSettings, work: Path, log) -> dict:
    cache = work / "clips.npz"
    if cache.is_file():
        with np.load(cache) as data:
            return {k: data[k] for k in data.files}
    from ..imaging.colour import ColourTransform

    colour = ColourTransform(world.PLATE_COLOURSPACE)
    parts = {"rgb": [], "mask": [], "yaw": [], "character": [], "framing": []}
    started = time.monotonic()
    for index in range(settings.characters):
        character = chars.base_character(image_bake.BakeSettings.seed, index)   # the image bake's cast
        rng = chars._rng(settings.seed, "video-clips", index)
        for clip in range(settings.clips_per_character):
            rgb, mask, yaw = render_clip(rng, character, settings, clip % 2, colour)
            for key, value in (("rgb", rgb), ("mask", mask), ("yaw", yaw), ("character", index),
                               ("framing", clip % 2)):
                parts[key].append(value)
        log(f"render: character {index + 1}/{settings.characters} ({time.monotonic() - started:.0f} s)")
    data = {k: np.stack(v) for k, v in parts.items()}
    evaluation = _eval_clips(settings, colour)
    data.update({f"eval_{k}": v for k, v in evaluation.items()})
    tmp = work / "clips.tmp.npz"
    np.savez(tmp, **data)
    os.replace(tmp, cache)
    return data


def _eval_clips(settings: VideoBakeSettings, colour) -> dict:
    """New clips of base characters (other seeds), alternately extend- and fill-framed: the bake's own score."""
    parts = {"rgb": [], "mask": [], "framing": []}
    for i in range(settings.eval_clips):
        character = chars.base_character(image_bake.BakeSettings.seed, i % settings.characters)
        rgb, mask, _ = render_clip(chars._rng(settings.seed, "video-eval", i), character, settings, i % 2, colour)
        parts["rgb"].append(rgb), parts["mask"].append(mask), parts["framing"].append(i % 2)
    return {k: np.stack(v) for k, v in parts.items()}


def _videos(rgb_f16) -> "torch.Tensor":
    """(N, F, H, W, 3) in [0, 1] -> (N, 3, F, H, W) in [-1, 1]."""
    import torch

    return torch.from_numpy(rgb_f16.astype(np.float32)).permute(0, 4, 1, 2, 3) * 2 - 1


def vae_phase(settings: VideoBakeSettings, vae, data: dict, work: Path, log) -> dict:
    """Two stages: short windows (frame 0 and one group of 4: cheap), then whole clips, so the causal cache that
    carries a clip from one group of 4 frames to the next is trained too (measured after the first stage alone:
    28 to 25 dB on frames 1-4, 13 dB on frames 5-8)."""
    import torch

    metrics = {}
    for phase, frames, steps, rate in (("vae", settings.vae_frames, settings.vae_steps, settings.learning_rate),
                                       ("vae-clips", settings.clip_frames, settings.vae_clip_steps,
                                        settings.vae_clip_learning_rate)):
        metrics[phase] = _vae_stage(settings, vae, data, work / phase, phase, frames, steps, rate, log)
    vae.eval()
    with torch.no_grad():
        x = _videos(data["eval_rgb"])
        recon = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        per_frame = ((recon - x) / 2).pow(2).mean(dim=(0, 1, 3, 4))
        alone = torch.stack([((vae.decode(vae.encode(x[:, :, i:i + 1]).latent_dist.mode()).sample.clamp(-1, 1)
                               - x[:, :, i:i + 1]) / 2).pow(2).mean() for i in range(x.shape[2])])
    return {"steps": {"vae": settings.vae_steps, "vae-clips": settings.vae_clip_steps}, "curve": metrics,
            "eval_psnr_db": world.decibels(per_frame.mean()),
            "eval_psnr_db_per_frame": [round(world.decibels(m), 2) for m in per_frame],
            "eval_psnr_db_frames_alone": round(world.decibels(alone.mean()), 2)}


def _vae_stage(settings: VideoBakeSettings, vae, data: dict, folder: Path, phase: str, frames: int, steps: int,
               rate: float, log) -> list[dict]:
    import torch

    optimizer = torch.optim.AdamW(vae.parameters(), lr=rate)
    count, size, patch = len(data["rgb"]), settings.resolution, settings.vae_patch

    def coding_loss(x, g):
        dist = vae.encode(x).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g)
        recon = vae.decode(z).sample
        kl = (0.5 * (dist.mean.pow(2) + dist.var - 1.0 - dist.logvar)).sum() / x.numel()
        return (recon - x).abs().mean() + 0.5 * (recon - x).pow(2).mean() + 1e-3 * kl

    def step_fn(step: int):
        g = image_bake._generator(settings.seed, "video-" + phase, step + 1)
        index = torch.randint(0, count, (settings.vae_batch,), generator=g).numpy()
        t0 = int(torch.randint(0, settings.clip_frames - frames + 1, (1,), generator=g))
        y0, x0 = (int(v) for v in torch.randint(0, size - patch + 1, (2,), generator=g))
        clip = data["rgb"][index, t0:t0 + frames, y0:y0 + patch, x0:x0 + patch]
        x = image_bake._recoloured(_videos(clip), g)
        loss = coding_loss(x, g)
        if settings.vae_lone_weight:
            # The window's last frame, coded again alone: a 1-frame clip takes the VAE's first-frame path (no
            # temporal conv), which windows train on one frame in five.
            loss = loss + settings.vae_lone_weight * coding_loss(x[:, :, -1:], g)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return loss

    vae.train()
    return image_bake.checkpointed_loop(phase, folder, {"": vae}, optimizer, steps, rate, 75,
                                        settings.checkpoint_every, log, step_fn)


def task_region(data: dict, index: int) -> np.ndarray:
    """The clip's task as the product asks it of the video model: the region to make (F, H, W). Extend-framed
    clips: the first 1 or 3 frames known, the rest made whole (extend's calls); fill-framed clips: the head's
    matte made on every frame, or on every frame but a first one known whole (the video engine's later chunks)."""
    frames, size = data["rgb"].shape[1:3]
    known = 1 + 2 * (index // 2 % 2) if data["framing"][index] == EXTEND else index // 2 % 2
    if data["framing"][index] == EXTEND:
        region = np.ones((frames, size, size), bool)
    else:
        region = data["mask"][index].copy()
    region[:known] = False
    return region


def encode_phase(pipe, data: dict, work: Path, log) -> dict:
    """Per clip: the normalised posterior (mean, std) and the VACE control of its task, once (the
    control of a task needs no random draw); the latents' per-channel mean and std go into the VAE's config."""
    import torch

    from ..training.video import vace_control

    cache = work / "latents.pt"
    if cache.is_file():
        return torch.load(cache)
    vae, count, frames = pipe.vae, len(data["rgb"]), data["rgb"].shape[1]
    means, stds = [], []
    with torch.no_grad():
        for start in range(0, count, 16):
            dist = vae.encode(_videos(data["rgb"][start:start + 16])).latent_dist
            means.append(dist.mean), stds.append(dist.std)
    mean, std = torch.cat(means), torch.cat(stds)
    channel_mean = mean.mean(dim=(0, 2, 3, 4))
    channel_std = mean.transpose(0, 1).reshape(mean.shape[1], -1).std(dim=1)
    vae.register_to_config(latents_mean=[float(v) for v in channel_mean], latents_std=[float(v) for v in channel_std])
    view = (1, -1, 1, 1, 1)
    result = {"mean": (mean - channel_mean.view(view)) / channel_std.view(view), "std": std / channel_std.view(view),
              "latents_mean": channel_mean, "latents_std": channel_std, "controls": [], "weights": []}
    started = time.monotonic()
    for index in range(count):
        made = torch.from_numpy(task_region(data, index)).float()[None, None]
        result["controls"].append(vace_control(pipe, _videos(data["rgb"][index:index + 1]), made, "cpu")[0].half())
        result["weights"].append(_latent_weight(made, mean.shape[2:], pipe.vae_scale_factor_temporal)[0])
        if (index + 1) % 100 == 0:
            log(f"encode: clip {index + 1}/{count} ({time.monotonic() - started:.0f} s)")
    result["controls"], result["weights"] = torch.stack(result["controls"]), torch.stack(result["weights"])
    # "Everything made": one control for every clip (all grey, mask 1), weight 1 everywhere.
    result["everything"] = vace_control(pipe, torch.zeros_like(_videos(data["rgb"][:1])),
                                        torch.ones(1, 1, *data["rgb"].shape[1:4]), "cpu")[0].half()
    torch.save(result, work / "latents.tmp.pt")
    os.replace(work / "latents.tmp.pt", cache)
    return result


def _latent_weight(made, latent_shape, temporal: int):
    """(N, 1, F, H, W) region to make -> (N, 1, F', h, w) loss weight: 1.0 where a latent holds made pixels
    (area-averaged; Wan's causal VAE: latent 0 is frame 0, latent j frames 4j-3..4j), 0.1 elsewhere."""
    import torch
    import torch.nn.functional as F

    n, frames = made.shape[0], made.shape[2]
    spatial = F.interpolate(made[:, 0], size=latent_shape[-2:], mode="area")      # (N, F, h, w)
    rest = spatial[:, 1:].reshape(n, (frames - 1) // temporal, temporal, *latent_shape[-2:]).mean(2)
    share = torch.cat([spatial[:, :1], rest], dim=1)[:, None]
    return 0.1 + 0.9 * share


def transformer_phase(settings: VideoBakeSettings, pipe, data: dict, latents: dict, work: Path, log) -> dict:
    import copy

    import torch

    transformer = pipe.transformer
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=settings.transformer_learning_rate, weight_decay=1e-2)
    ema = copy.deepcopy(transformer).requires_grad_(False)
    views = [chars.view_of(float(y[0])) for y in data["yaw"]]
    count, texts = len(views), {}

    def step_fn(step: int):
        g = image_bake._generator(settings.seed, "video-transformer", step + 1)
        index = torch.randint(0, count, (settings.batch,), generator=g)
        rng = np.random.default_rng(chars.hash_int(f"{settings.seed}/video-prompts/{step + 1}"))
        prompts = [image_bake.prompt_for(rng, views[i]) for i in index.tolist()]
        missing = sorted(set(prompts) - texts.keys())
        if missing:
            with torch.no_grad():
                embeds = pipe.encode_prompt(missing, do_classifier_free_guidance=False,
                                            max_sequence_length=TEXT_TOKENS, device="cpu")[0]
            texts.update(zip(missing, embeds))
        everything = torch.rand(len(index), generator=g) < 0.1
        control = latents["controls"][index].float()
        weight = latents["weights"][index]
        control[everything] = latents["everything"].float()
        weight[everything] = 1.0
        mean, std = latents["mean"][index], latents["std"][index]
        x0 = mean + std * torch.randn(mean.shape, generator=g)
        noise = torch.randn(x0.shape, generator=g)
        u = torch.rand(len(index), generator=g)
        sigma = settings.shift * u / (1 + (settings.shift - 1) * u)
        s = sigma.view(-1, 1, 1, 1, 1)
        pred = transformer(hidden_states=(1 - s) * x0 + s * noise, timestep=sigma * 1000,
                           encoder_hidden_states=torch.stack([texts[p] for p in prompts]),
                           control_hidden_states=control, return_dict=False)[0]
        loss = ((pred - (noise - x0)) ** 2 * weight).sum() / (weight.sum() * x0.shape[1])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        return loss

    def after_step(step: int) -> None:
        image_bake.ema_update((ema,), (transformer,), min(settings.ema, (1 + step) / (10 + step)))

    transformer.train()
    metrics = image_bake.checkpointed_loop(
        "transformer", work / "transformer", {"live.": transformer, "ema.": ema}, optimizer,
        settings.transformer_steps, settings.transformer_learning_rate, 100, settings.checkpoint_every, log, step_fn,
        after_step)
    return {"steps": settings.transformer_steps, "curve": metrics, "transformer": ema.eval()}


def evaluate(pipe, settings: VideoBakeSettings, data: dict) -> dict:
    """Held-out clips of base characters: extend-framed ones extended from their first frame (PSNR of the
    frames made, beside holding the first frame), fill-framed ones with the head made on every frame (PSNR
    inside the mask, beside a grey fill)."""
    import torch

    from ..models import wan

    scores = {"extend": [], "hold": [], "fill": [], "grey": []}
    size = settings.resolution
    for i in range(len(data["eval_rgb"])):
        truth = data["eval_rgb"][i].astype(np.float32)
        common = dict(height=size, width=size, prompt="", negative_prompt="", steps=settings.eval_steps,
                      guidance=1.0, fps=24.0, generator=torch.Generator().manual_seed(i), on_step=lambda *a: None)
        if data["eval_framing"][i] == EXTEND:
            made = wan.extend(pipe, truth[:1], len(truth) - 1, **common)
            scores["extend"].append(image_bake._psnr(made, truth[1:]))
            scores["hold"].append(image_bake._psnr(np.repeat(truth[:1], len(truth) - 1, 0), truth[1:]))
        else:
            mask = data["eval_mask"][i]
            made = wan.inpaint(pipe, truth, mask.astype(np.float32), **common)
            scores["fill"].append(image_bake._psnr(made[mask], truth[mask]))
            scores["grey"].append(image_bake._psnr(np.full_like(truth[mask], 0.5), truth[mask]))
    return {**{f"{k}_psnr_db": float(np.mean(v)) if v else None for k, v in scores.items()},
            "clips": int(len(data["eval_rgb"])), "steps": settings.eval_steps, "guidance": 1.0}


def declaration(settings: VideoBakeSettings) -> dict:
    return {"family": "miniworld-video", "label": family.VIDEO_LABEL, "test_model": True,
            "resolution": settings.resolution, "multiple": family.VIDEO_MULTIPLE, "window": settings.clip_frames,
            "seed": settings.seed, "base_characters": settings.characters}


def bake(out: Path, settings: VideoBakeSettings, work: Path, log=print) -> dict:
    started = image_bake.begin(settings, work)
    data = render_phase(settings, work, log)
    pipe = build_pipeline(settings)
    vae_metrics = vae_phase(settings, pipe.vae, data, work, log)
    log(f"vae: eval PSNR {vae_metrics['eval_psnr_db']:.2f} dB")
    latents = encode_phase(pipe, data, work, log)
    pipe.vae.register_to_config(latents_mean=[float(v) for v in latents["latents_mean"]],
                                latents_std=[float(v) for v in latents["latents_std"]])
    result = transformer_phase(settings, pipe, data, latents, work, log)
    pipe.register_modules(transformer=result["transformer"])
    evaluation = evaluate(pipe, settings, data)
    log(f"eval: {evaluation}")
    metrics = {
        "name": family.VIDEO_NAME, "settings": asdict(settings), "wall_s": round(time.time() - started, 1),
        "torch_threads": settings.threads, "clips": int(len(data["rgb"])),
        "parameters": {name: image_bake._count(getattr(pipe, name)) for name in ("vae", "transformer", "text_encoder")},
        "vae": vae_metrics, "transformer": {"steps": result["steps"], "curve": result["curve"]},
        "evaluation": evaluation, "note": "wall_s counts this run only (a resumed bake: the last part)",
    }
    image_bake.publish(pipe, out, declaration(settings), family.VIDEO_LABEL, metrics)
    return metrics


def main(argv: list[str] | None = None) -> int:
    return image_bake.command_line(argv, __doc__, VideoBakeSettings(), TINY, bake,
                                   {"--vae-steps": ("vae_steps", int),
                                    "--transformer-steps": ("transformer_steps", int)})


if __name__ == "__main__":
    sys.exit(main())
