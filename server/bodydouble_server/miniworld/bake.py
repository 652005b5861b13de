"""Bake the miniature world's "licensed base model": a small SD-inpaint-shaped diffusers model trained from
scratch on the world's base characters (never on the held-out ones), on CPU.

    python -m bodydouble_server.miniworld.bake OUT_FOLDER [--work WORK] [--tiny]

Phases, each deterministic from the settings' seed (per-step generators; bit-exact on the same machine
and thread count) and checkpointed in WORK so an interrupted bake resumes where it stopped:

1. render: ``renders_per_character`` random shots of each base character at random yaws, framed as fill
   frames a plate (the head's box plus fill's context, the OCIO view, the model's size), and where the back
   marking shows when ``marking_weight`` needs it; cached as .npz.
2. vae: an AutoencoderKL with two blocks (latents /2: 64x64 -> 32x32x4; ``--vae-channels 32,64,64`` for
   three, /4), L1 + a small KL, on random patches (it is fully convolutional); its ``scaling_factor`` is then
   measured (1 / std of the latents).
   ``--vae-from MODEL`` keeps another bake's VAE instead (a UNet rebaked on the same latents).
3. unet: an inpainting UNet (9 input channels, as SD-inpaint) and a 2-layer CLIP text encoder, jointly,
   v-prediction on a cosine schedule; the inpaint mask is the head's matte (what fill uses), a random box
   or everything; loss 1.0 inside the mask, 0.1 outside; the prompt names the view (with a random
   character name in front half the time, so a trigger word does not throw the base model), empty 10% of
   the time (classifier-free guidance); EMA weights are what ships. Settings for a bigger bake: the UNet's
   widths and attention (``--unet-channels``, ``--unet-attention``), captions that name the marking
   (``--marking-captions``, half of them by default) and extra loss weight on its pixels
   (``--marking-weight``: it made speckle, off by default); docs/likeness.md has each bake tried.
4. save: ``StableDiffusionInpaintPipeline.save_pretrained`` + the model's declaration (``bodydouble_model.json``:
   TEST MODEL label, resolution, size multiple) + ``bake-metrics.json`` (losses, VAE PSNR, base fill PSNR).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..models import miniworld as family
from . import characters as chars
from . import world

METRICS_FILE = "bake-metrics.json"

VIEW_PHRASES = {
    "front": ("front", "front view", "the face", "front of the head", "face"),
    "three-quarter-left": ("three quarter left", "three quarter view left", "turned left"),
    "three-quarter-right": ("three quarter right", "three quarter view right", "turned right"),
    "profile-left": ("profile left", "left side", "left profile", "side view left"),
    "profile-right": ("profile right", "right side", "right profile", "side view right"),
    "back": ("back", "back of the head", "back view", "from behind", "the back of the head"),
}
MAX_TOKENS = 24     # this world's prompts are a trigger and a view: short context, cheaper cross-attention
MARKING_WORD = "marking"
WORDS = sorted({w for phrases in VIEW_PHRASES.values() for p in phrases for w in p.split()} | {"head", "character"}
               | set(chars.SHAPES) | set(chars.COLOURS) | {MARKING_WORD})


@dataclass(frozen=True)
class BakeSettings:
    seed: int = 20261203
    characters: int = 48
    renders_per_character: int = 200
    plate: int = 96                 # renders are plates of plate x plate, framed like fill
    resolution: int = family.RESOLUTION
    multiple: int = family.MULTIPLE     # 16: two UNet downsamplings of latents /2 need 8, of /4 16
    # A block per entry; each after the first halves the latents. Two: /2 (64 px -> 32x32x4), where the back
    # marking spans 3-4 latents a side: the /4 VAE's round trip of held-out back views let the judge name 0.76
    # of them (the /2 one 0.95), and no /4 bake's adapters carried the marking (docs/likeness.md).
    vae_channels: tuple = (32, 64)
    unet_channels: tuple = (32, 64, 96)     # 2.7 M parameters; (48, 96, 144) is 6.1 M at ~1.6x a step's time
    unet_attention: tuple = (False, True, True)     # cross-attention per level (32x32, 16x16, 8x8 latents at /2)
    latent_channels: int = 4
    vae_from: str = ""              # a model folder whose VAE to keep (its UNet rebaked on it), "" to train one
    vae_steps: int = 1000
    vae_batch: int = 32
    vae_patch: int = 32
    unet_steps: int = 3000
    batch: int = 32
    learning_rate: float = 1e-3
    marking_captions: float = 0.5   # share of renders showing the marking whose caption names it ("red ring marking")
    marking_weight: float = 0.0     # extra loss weight on the marking's pixels (0: the head's pixels count alike)
    ema: float = 0.998
    checkpoint_every: int = 100
    eval_renders: int = 24          # held-out renders of base characters (new shots) to score the bake
    eval_steps: int = 20
    threads: int = 2                # two: the /2 UNet's steps fit the hour only so (one: bit-exact on any machine,
                                    # and faster than two on a busy CPU); bit-exact on the same machine either way
    device: str = "cpu"             # "cuda": the models train there; batches are still drawn on the CPU, so a
                                    # CPU bake is unchanged, and a GPU bake draws the same samples


TINY = BakeSettings(characters=3, renders_per_character=8, vae_steps=3, unet_steps=3, vae_batch=4, batch=4,
                    checkpoint_every=2, eval_renders=2, eval_steps=2, threads=1)   # one, as before the /2 recipe:
                                                    # a bake sets its process's torch threads, tests' workers too


# -- components --------------------------------------------------------------------------------------
def tokenizer():
    """A CLIP BPE tokenizer built in memory: the view words are whole tokens, anything else falls back to
    characters (trigger words such as <g0a> included)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in range(33, 127):
        vocab.setdefault(chr(c), len(vocab))
        vocab.setdefault(chr(c) + "</w>", len(vocab))
    merges = []
    for word in WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        current = pieces[0]
        for piece in pieces[1:]:
            if (current, piece) not in merges:
                merges.append((current, piece))
            current = current + piece
            vocab.setdefault(current, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TOKENS)


def build_components(settings: BakeSettings, vocab_size: int):
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        vae = AutoencoderKL(
            block_out_channels=tuple(settings.vae_channels), in_channels=3, out_channels=3, layers_per_block=1,
            down_block_types=["DownEncoderBlock2D"] * len(settings.vae_channels),
            up_block_types=["UpDecoderBlock2D"] * len(settings.vae_channels),
            latent_channels=settings.latent_channels, norm_num_groups=8, sample_size=settings.resolution, mid_block_add_attention=False,
        )
        unet = UNet2DConditionModel(
            sample_size=settings.resolution // latent_scale(settings), in_channels=2 * settings.latent_channels + 1,
            out_channels=settings.latent_channels, layers_per_block=1,
            block_out_channels=tuple(settings.unet_channels),
            down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in settings.unet_attention),
            up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(settings.unet_attention)),
            cross_attention_dim=64, attention_head_dim=8, norm_num_groups=16,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(
            bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=64, intermediate_size=128,
            num_attention_heads=4, num_hidden_layers=2, vocab_size=vocab_size, projection_dim=64,
            max_position_embeddings=MAX_TOKENS,
        ))
    scheduler = DDIMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
        clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing", steps_offset=1,
    )
    return vae, unet, text_encoder, scheduler


def latent_scale(settings: BakeSettings) -> int:
    """Pixels per latent: each VAE block after the first halves the size (3 blocks: /4, 2 blocks: /2)."""
    return 2 ** (len(settings.vae_channels) - 1)


def prompt_for(rng: np.random.Generator, view: str, marking: str | None = None, named: float = 0.0) -> str:
    """A training caption: the view, a random name in front half the time (a trigger word does not throw the
    base model), and, a ``named`` share of the time when ``marking`` is given (the render shows it), what it
    shows there ("red ring marking"), as a licensed model's captions describe what is in the picture: a model
    that never heard a marking named can only draw the average of every marking it saw where it cannot see
    one. (The committed bake names it half the time; told the words, it still draws the marking it would have
    drawn anyway: docs/likeness.md.)"""
    if rng.random() < 0.1:
        return ""
    phrase = VIEW_PHRASES[view][rng.integers(len(VIEW_PHRASES[view]))]
    if rng.random() < 0.5:
        name = "".join(chr(97 + int(k)) for k in rng.integers(0, 26, rng.integers(2, 7)))
        digits = "".join(str(int(k)) for k in rng.integers(0, 10, rng.integers(0, 3)))
        phrase = f"<{name}{digits}> {phrase}"
    if marking is not None and named and rng.random() < named:
        phrase = f"{phrase} {marking} {MARKING_WORD}"
    return phrase


def marking_caption(character: chars.Character, yaw: float) -> str | None:
    """The words for a character's back marking where a render at ``yaw`` shows it (90 degrees or more from
    the front: it is hidden to 70 and grazes the silhouette to 80), else None."""
    return f"{character.marking_colour} {character.marking_shape}" if abs(chars.wrap_yaw(yaw)) >= 90 else None


# -- phases ------------------------------------------------------------------------------------------
def render_phase(settings: BakeSettings, work: Path, log) -> dict:
    cache = work / "renders.npz"
    marked = bool(settings.marking_weight)      # the markings' masks cost a second render of every shot
    if cache.is_file():
        with np.load(cache) as data:
            if "marking" in data.files or not marked:   # a cache without the masks is rendered again if they count
                return {k: data[k] for k in data.files}
    from ..imaging.colour import ColourTransform

    colour = ColourTransform(world.PLATE_COLOURSPACE)
    framing = world.Framing(settings.resolution, settings.multiple)
    parts = {"rgb": [], "mask": [], "yaw": [], "character": []} | ({"marking": []} if marked else {})
    started = time.monotonic()
    for index in range(settings.characters):
        character = chars.base_character(settings.seed, index)
        rng = chars._rng(settings.seed, "bake-renders", index)
        views = world.sample_views(rng, character, settings.renders_per_character, settings.plate, settings.plate,
                                   framing, colour, markings=marked)
        for key, value in zip(("rgb", "mask", "yaw", "marking"), views):
            parts[key].append(value)
        parts["character"].append(np.full(settings.renders_per_character, index, np.int16))
        log(f"render: character {index + 1}/{settings.characters} ({time.monotonic() - started:.0f} s)")
    data = {k: np.concatenate(v) for k, v in parts.items()}
    evaluation = _eval_renders(settings, colour, framing)
    data.update({f"eval_{k}": v for k, v in evaluation.items()})
    tmp = work / "renders.tmp.npz"
    np.savez(tmp, **data)
    os.replace(tmp, cache)
    return data


def _eval_renders(settings: BakeSettings, colour, framing) -> dict:
    """New shots of base characters (other seeds), half of them back views: the bake's own score."""
    rgbs, masks, yaws = [], [], []
    for i in range(settings.eval_renders):
        character = chars.base_character(settings.seed, i % settings.characters)
        rng = chars._rng(settings.seed, "bake-eval", i)
        yaw = 180.0 + rng.uniform(-40, 40) if i % 2 == 0 else rng.uniform(-80, 80)
        rgb, mask, yaw_out = world.sample_views(rng, character, 1, settings.plate, settings.plate, framing, colour,
                                                yaws=[yaw])
        rgbs.append(rgb), masks.append(mask), yaws.append(yaw_out)
    return {"rgb": np.concatenate(rgbs), "mask": np.concatenate(masks), "yaw": np.concatenate(yaws)}


def _pixels(rgb_f16) -> "torch.Tensor":
    import torch

    return torch.from_numpy(rgb_f16.astype(np.float32)).permute(0, 3, 1, 2) * 2 - 1


def _generator(seed: int, phase: str, step: int):
    import torch

    return torch.Generator().manual_seed(chars.hash_int(f"{seed}/{phase}/{step}") % (2**63))


def checkpointed_loop(phase: str, folder: Path, modules: dict, optimizer, total: int, learning_rate: float,
                      warm_cap: int, every: int, log, step_fn, after_step=None) -> list[dict]:
    """The loop every bake phase runs: resume from the newest checkpoint in ``folder`` (``modules``: prefix ->
    module, their weights saved under those prefixes), then per step ``step_fn(step)`` (the batch's forward
    and backward; returns the loss), the learning rate's schedule, the optimizer's step, ``after_step(step)``
    (an EMA); a checkpoint and a log line every ``every`` steps. Returns the loss curve."""
    from ..training import checkpoints

    step, metrics = 0, []
    found = checkpoints.latest(folder)
    if found is not None:
        state, opt_state = checkpoints.load(found)
        for prefix, module in modules.items():
            module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        optimizer.load_state_dict(opt_state)
        step, metrics = found.step, list(found.state.get("metrics", []))
    started, losses = time.monotonic(), []
    while step < total:
        loss = step_fn(step)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * _lr_scale(step, total, min(warm_cap, max(1, total // 10)))
        optimizer.step()
        step += 1
        if after_step is not None:
            after_step(step)
        losses.append(float(loss.detach()))
        if step % every == 0 or step == total:
            metrics.append({"step": step, "loss": float(np.mean(losses)), "time": time.time()})
            losses = []
            state = {f"{prefix}{k}": v.contiguous() for prefix, module in modules.items()
                     for k, v in module.state_dict().items()}
            checkpoints.save(folder, step, state, optimizer.state_dict(), {"metrics": metrics})
            log(f"{phase}: step {step}/{total} loss {metrics[-1]['loss']:.4f} ({time.monotonic() - started:.0f} s)")
    return metrics


def ema_update(ema_modules, live_modules, decay: float) -> None:
    import torch

    with torch.no_grad():
        for ema, live in zip(ema_modules, live_modules):
            for pe, pl in zip(ema.parameters(), live.parameters()):
                pe.mul_(decay).add_(pl.detach(), alpha=1 - decay)


def vae_phase(settings: BakeSettings, vae, data: dict, work: Path, log) -> dict:
    import torch

    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.learning_rate)
    count, size, patch = len(data["rgb"]), settings.resolution, settings.vae_patch

    def step_fn(step: int):
        g = _generator(settings.seed, "vae", step + 1)
        index = torch.randint(0, count, (settings.vae_batch,), generator=g)
        y0, x0 = (int(v) for v in torch.randint(0, size - patch + 1, (2,), generator=g))
        x = _recoloured(_pixels(data["rgb"][index.numpy()])[:, :, y0:y0 + patch, x0:x0 + patch], g).to(vae.device)
        dist = vae.encode(x).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g).to(vae.device)
        recon = vae.decode(z).sample
        kl = dist.kl().mean() / (patch * patch * 3)
        loss = (recon - x).abs().mean() + 0.5 * (recon - x).pow(2).mean() + 1e-3 * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return loss

    vae.train()
    metrics = checkpointed_loop("vae", work / "vae", {"": vae}, optimizer, settings.vae_steps, settings.learning_rate,
                                75, settings.checkpoint_every, log, step_fn)
    vae.eval()
    return {"steps": settings.vae_steps, "curve": metrics, "eval_psnr_db": vae_psnr(vae, data)}


def vae_psnr(vae, data: dict) -> float:
    """The VAE's round trip of the bake's held-out renders, in dB."""
    import torch

    with torch.no_grad():
        x = _pixels(data["eval_rgb"]).to(vae.device)
        recon = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        return world.decibels(float(((recon - x) / 2).pow(2).mean()))


def _recoloured(x, generator):
    """The VAE's colour augmentation: each sample's channels permuted and scaled (0.6-1.4). The base
    characters' few dozen palettes are not every colour a held-out character wears; a VAE trained on them
    alone codes an unseen yellow as the nearest skin tone it knows (the first bake did: the judge named the
    character from its VAE round trip no better than chance), and no adapter can put back what the latents
    cannot hold."""
    import torch

    n, ones = x.shape[0], (1,) * (x.dim() - 2)     # (N, 3, H, W) images or (N, 3, F, H, W) clips
    perm = torch.stack([torch.randperm(3, generator=generator) for _ in range(n)])
    x = torch.gather((x + 1) / 2, 1, perm.view(n, 3, *ones).expand_as(x))
    gain = 0.6 + 0.8 * torch.rand(n, 3, *ones, generator=generator)
    return (x * gain).clamp(0, 1) * 2 - 1


def _lr_scale(step: int, total: int, warm: int) -> float:
    """Linear warm-up over ``warm`` steps, constant, linear decay to 10% over the last 30%. With a fixed
    ``warm``, the schedule does not depend on ``total`` until the decay starts: a bake can be lengthened or
    shortened from a checkpoint taken before then and still equal a fresh bake of that length."""
    if step < warm:
        return (step + 1) / warm
    tail = int(total * 0.7)
    return 1.0 if step < tail else 1.0 - 0.9 * (step - tail) / max(1, total - tail)


def encode_phase(vae, data: dict, batch: int = 256) -> dict:
    """Posterior mean/std of every render, the head-masked render's latents (on the CPU, where batches are
    drawn), and the scaling factor."""
    import torch

    means, stds, masked = [], [], []
    with torch.no_grad():
        for start in range(0, len(data["rgb"]), batch):
            x = _pixels(data["rgb"][start:start + batch]).to(vae.device)
            dist = vae.encode(x).latent_dist
            means.append(dist.mean.cpu()), stds.append(dist.std.cpu())
            m = torch.from_numpy(data["mask"][start:start + batch])[:, None].float().to(vae.device)
            masked.append(vae.encode(x * (m < 0.5)).latent_dist.mode().cpu())
        empty = vae.encode(torch.zeros(1, 3, *data["rgb"].shape[1:3], device=vae.device)).latent_dist.mode().cpu()
    mean = torch.cat(means)
    scaling = float(1.0 / mean.std())
    return {"mean": mean, "std": torch.cat(stds), "masked": torch.cat(masked), "empty": empty, "scaling": scaling}


def unet_phase(settings: BakeSettings, unet, text_encoder, tok, scheduler, vae, data: dict, latents: dict,
               work: Path, log) -> dict:
    import copy

    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    noise_scheduler = DDPMScheduler.from_config(scheduler.config)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=1e-2)
    ema_unet, ema_text = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)
    views = [chars.view_of(float(y)) for y in data["yaw"]]
    characters = [chars.base_character(settings.seed, i) for i in range(settings.characters)]
    markings = [marking_caption(characters[c], float(y)) for c, y in zip(data["character"].tolist(), data["yaw"])]
    count, size = len(views), settings.resolution
    scaling = latents["scaling"]

    def step_fn(step: int):
        g = _generator(settings.seed, "unet", step + 1)
        index = torch.randint(0, count, (settings.batch,), generator=g)
        rng = np.random.default_rng(chars.hash_int(f"{settings.seed}/prompts/{step + 1}"))
        prompts = [prompt_for(rng, views[i], markings[i], settings.marking_captions) for i in index.tolist()]
        ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        mean, std = latents["mean"][index], latents["std"][index]
        z = (mean + std * torch.randn(mean.shape, generator=g)) * scaling
        noise = torch.randn(z.shape, generator=g)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(index),), generator=g)
        kinds = torch.rand(len(index), generator=g)
        boxes = torch.rand(len(index), 4, generator=g)
        masks = torch.from_numpy(data["mask"][index.numpy()])[:, None].float()
        masked_latents = latents["masked"][index].clone()
        for i in range(len(index)):
            if kinds[i] < 0.6:
                continue                                   # the head's matte, as fill masks it
            if kinds[i] < 0.85:                            # a random box
                y0, x0 = int(boxes[i, 0] * size * 0.6), int(boxes[i, 1] * size * 0.6)
                y1, x1 = y0 + max(8, int(boxes[i, 2] * size * 0.6)), x0 + max(8, int(boxes[i, 3] * size * 0.6))
                masks[i] = 0.0
                masks[i, :, y0:y1, x0:x1] = 1.0
                with torch.no_grad():
                    x = _pixels(data["rgb"][index[i:i + 1].numpy()])
                    kept = (x * (masks[i:i + 1] < 0.5)).to(vae.device)
                    masked_latents[i] = vae.encode(kept).latent_dist.mode()[0].cpu()
            else:                                          # everything
                masks[i] = 1.0
                masked_latents[i] = latents["empty"][0]
        small = F.interpolate(masks, size=z.shape[-2:])
        noisy = noise_scheduler.add_noise(z, noise, t)
        model_in = torch.cat([noisy, small, masked_latents * scaling], dim=1)
        target = noise_scheduler.get_velocity(z, noise, t)
        weight = 0.1 + 0.9 * F.interpolate(masks, size=z.shape[-2:], mode="area")
        if settings.marking_weight:
            marks = torch.from_numpy(data["marking"][index.numpy()])[:, None].float() * masks
            weight = weight + settings.marking_weight * F.interpolate(marks, size=z.shape[-2:], mode="area")
        model_in, t, ids, target, weight = (v.to(unet.device) for v in (model_in, t, ids, target, weight))
        pred = unet(model_in, t, text_encoder(ids)[0]).sample
        loss = ((pred - target) ** 2 * weight).sum() / (weight.sum() * target.shape[1])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        return loss

    def after_step(step: int) -> None:
        ema_update((ema_unet, ema_text), (unet, text_encoder), min(settings.ema, (1 + step) / (10 + step)))

    unet.train(), text_encoder.train()
    metrics = checkpointed_loop("unet", work / "unet", {"unet.": unet, "text.": text_encoder, "ema_unet.": ema_unet,
                                                       "ema_text.": ema_text}, optimizer, settings.unet_steps,
                                settings.learning_rate, 100, settings.checkpoint_every, log, step_fn, after_step)
    return {"steps": settings.unet_steps, "curve": metrics, "unet": ema_unet.eval(), "text_encoder": ema_text.eval()}


def evaluate(pipe, settings: BakeSettings, data: dict) -> dict:
    """Inpaint the held-out renders' heads (prompt: their view) and score inside the mask against the render,
    beside a grey fill (an undertrained model sits there)."""
    import torch

    rgb = data["eval_rgb"].astype(np.float32)
    masks = data["eval_mask"]
    psnr, grey, back = [], [], []
    for i in range(len(rgb)):
        view = chars.view_of(float(data["eval_yaw"][i]))
        out = pipe(prompt=VIEW_PHRASES[view][1], image=rgb[i:i + 1], mask_image=masks[i:i + 1, :, :, None].astype(np.float32),
                   height=settings.resolution, width=settings.resolution, num_inference_steps=settings.eval_steps,
                   guidance_scale=1.0, generator=torch.Generator().manual_seed(i), output_type="np").images[0]
        inside = masks[i]
        psnr.append(_psnr(out[inside], rgb[i][inside]))
        grey.append(_psnr(np.full_like(rgb[i][inside], 0.5), rgb[i][inside]))
        back.append(view == "back")
    psnr, grey, back = np.array(psnr), np.array(grey), np.array(back)
    return {"masked_psnr_db": float(psnr.mean()), "grey_fill_psnr_db": float(grey.mean()),
            "back_masked_psnr_db": float(psnr[back].mean()) if back.any() else None,
            "renders": int(len(rgb)), "steps": settings.eval_steps, "guidance": 1.0}


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return world.decibels(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))


def declaration(settings: BakeSettings) -> dict:
    return {"family": "miniworld", "label": family.LABEL, "test_model": True, "resolution": settings.resolution,
            "multiple": settings.multiple, "seed": settings.seed, "base_characters": settings.characters}


def begin(settings, work: Path) -> float:
    """A bake's first steps, either bake: quiet libraries, its thread count (bit-exact per count), the work folder
    with the settings it runs on; the start time."""
    import torch

    from ..engine import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(settings.threads)
    work.mkdir(parents=True, exist_ok=True)
    (work / "settings.json").write_text(json.dumps(asdict(settings), indent=1))
    return time.time()


def bake(out: Path, settings: BakeSettings, work: Path, log=print) -> dict:
    from diffusers import StableDiffusionInpaintPipeline

    started = begin(settings, work)
    data = render_phase(settings, work, log)
    tok = tokenizer()
    vae, unet, text_encoder, scheduler = build_components(settings, len(tok))
    if settings.vae_from:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(Path(settings.vae_from) / "vae").eval().to(settings.device)
        vae_metrics = {"from": settings.vae_from, "eval_psnr_db": vae_psnr(vae, data)}
    else:
        vae_metrics = vae_phase(settings, vae.to(settings.device), data, work, log)
    latents = encode_phase(vae, data)
    vae.register_to_config(scaling_factor=latents["scaling"])
    log(f"vae: eval PSNR {vae_metrics['eval_psnr_db']:.2f} dB, scaling factor {latents['scaling']:.4f}")
    result = unet_phase(settings, unet.to(settings.device), text_encoder.to(settings.device), tok, scheduler, vae,
                        data, latents, work, log)
    pipe = StableDiffusionInpaintPipeline(
        vae=vae, text_encoder=result["text_encoder"], tokenizer=tok, unet=result["unet"], scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    evaluation = evaluate(pipe, settings, data)
    log(f"eval: masked PSNR {evaluation['masked_psnr_db']:.2f} dB (grey fill {evaluation['grey_fill_psnr_db']:.2f})")
    metrics = {
        "name": family.NAME, "settings": asdict(settings), "wall_s": round(time.time() - started, 1),
        "torch_threads": settings.threads, "renders": int(len(data["rgb"])),
        "parameters": {"vae": _count(vae), "unet": _count(unet), "text_encoder": _count(text_encoder)},
        "vae": vae_metrics, "vae_scaling_factor": latents["scaling"],
        "unet": {"steps": result["steps"], "curve": result["curve"]}, "evaluation": evaluation,
        "note": "wall_s counts this run only (a resumed bake: the last part)",
    }
    publish(pipe.to("cpu"), out, declaration(settings), family.LABEL, metrics)
    return metrics


def _count(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def publish(pipe, out: Path, declared: dict, label: str, metrics: dict) -> None:
    """The model folder with its declaration, TEST MODEL label and bake metrics, staged beside ``out`` and
    renamed into place: a reader never sees half a model."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        pipe.save_pretrained(staging)
        (staging / family.DECLARATION).write_text(json.dumps(declared, indent=1) + "\n")
        (staging / "BODYDOUBLE_TEST_MODEL.txt").write_text(label + "\n")
        (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.rename(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def command_line(argv, doc: str, default, tiny, bake_fn, options: dict[str, tuple[str, object]]) -> int:
    """A bake script's command line: OUT, --work, --tiny and settings overrides (``options``: option ->
    (settings field, its parser), e.g. "--vae-steps" -> ("vae_steps", int))."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("out", help="model folder to write (diffusers layout)")
    parser.add_argument("--work", help="work folder for the render cache and checkpoints (default: OUT.work)")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long bake (CI: the script still runs)")
    for option, (name, parse) in options.items():
        parser.add_argument(option, type=parse, dest=name, help=f"override the settings' {name}")
    args = parser.parse_args(argv)
    settings = replace(tiny if args.tiny else default,
                       **{name: getattr(args, name) for name, _ in options.values() if getattr(args, name)})
    out = Path(args.out)
    work = Path(args.work) if args.work else out.with_name(out.name + ".work")

    def log(message: str) -> None:
        print(time.strftime("%H:%M:%S"), message, flush=True)

    metrics = bake_fn(out, settings, work, log)
    log(f"baked {out} in {metrics['wall_s']:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_line(argv, __doc__, BakeSettings(), TINY, bake, {
        "--vae-steps": ("vae_steps", int), "--unet-steps": ("unet_steps", int),
        "--vae-channels": ("vae_channels", widths), "--unet-channels": ("unet_channels", widths),
        "--unet-attention": ("unet_attention", levels),
        "--vae-from": ("vae_from", str),
        "--marking-captions": ("marking_captions", float), "--marking-weight": ("marking_weight", float),
        "--device": ("device", str), "--threads": ("threads", int), "--batch": ("batch", int)})


def widths(text: str) -> tuple:
    """"48,96,144" -> (48, 96, 144)."""
    return tuple(int(v) for v in text.split(","))


def levels(text: str) -> tuple:
    """"1,1,1" -> (True, True, True): cross-attention at each UNet level."""
    return tuple(bool(int(v)) for v in text.split(","))


if __name__ == "__main__":
    sys.exit(main())
