"""The built-in tiny test model: SD-inpaint-shaped, random weights, no download.

It exists so the server, the demo and the tests run on any machine with nothing configured.
It is a TEST MODEL: its pictures are noise-like. Everywhere it shows up it says so.
Built from configs with a fixed seed and cached on disk (a few MB) so every start reuses it.
"""
from __future__ import annotations

import os
from pathlib import Path

from bodydouble import atomic

NAME = "bodydouble-embedded-tiny-sd-inpaint"
LABEL = f"{NAME} (TEST MODEL: random weights, not for production)"
# Bump when the architecture below changes, so stale caches are rebuilt.
REVISION = "v1"


def cache_root() -> Path:
    base = os.environ.get("BODYDOUBLE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "bodydouble"
    )
    return Path(base)


def embedded_model_path() -> Path:
    """Folder of the embedded model in diffusers layout, built on first use."""
    return cached_build(NAME, REVISION, LABEL, build_pipeline)


def cached_path(name: str, revision: str) -> Path:
    """Where ``cached_build`` keeps a built test model (whether or not it was built yet)."""
    return cache_root() / f"{name}-{revision}"


def cached_build(name: str, revision: str, label: str, build) -> Path:
    """``build()``'s pipeline saved once under the cache (diffusers layout) and reused by every start."""
    target = cached_path(name, revision)
    if (target / "model_index.json").is_file():
        return target
    try:
        with atomic.staged_dir(target) as staging:
            build().save_pretrained(staging)
            (staging / "BODYDOUBLE_TEST_MODEL.txt").write_text(label + "\n")
    except OSError:   # concurrent builders race harmlessly: the first rename wins
        if not (target / "model_index.json").is_file():
            raise
    return target


def _tokenizer():
    from transformers import CLIPTokenizer

    # A byte-level-ish vocabulary over printable ASCII: enough to tokenize any prompt.
    chars = [chr(c) for c in range(33, 127)]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    merges = [("t", "h"), ("th", "e</w>")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
        steps_offset=1,
    )


def _assemble(seed: int, unet_config: dict, vae_config: dict, text_config: dict, device=None):
    """An SD-inpaint pipeline with random weights drawn from ``seed`` (the global RNG is left as it was); the text
    encoder's vocabulary is the tokenizer's unless ``text_config`` sets one."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _tokenizer()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.device(device or "cpu"):
            unet = UNet2DConditionModel(in_channels=9, out_channels=4, **unet_config)
            vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, **vae_config)
            text_encoder = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1,
                                                        layer_norm_eps=1e-05,
                                                        **{"vocab_size": len(tokenizer), **text_config}))
    finally:
        torch.random.set_rng_state(generator_state)
    return StableDiffusionInpaintPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def build_pipeline():
    return _assemble(
        20261122,
        unet_config=dict(block_out_channels=(32, 64), layers_per_block=2, sample_size=32,
                         down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                         up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                         cross_attention_dim=32, attention_head_dim=(2, 4), norm_num_groups=8),
        vae_config=dict(block_out_channels=(16, 32, 32, 32), down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, norm_num_groups=8, sample_size=128),
        text_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                         projection_dim=32),
    )


def build_sd15_size_pipeline(device: str | None = None):
    """SD 1.5 inpaint's real architecture and size (UNet 860 M parameters, CLIP ViT-L text encoder, the
    512-channel VAE) with random weights: what a GPU's time and memory per frame are measured on, with no
    download (``--model test:sd15-size``). Built on the GPU where there is one (seconds, not minutes) and saved
    in half precision (2 GB). ``device="meta"`` gives the architecture without weights."""
    import torch

    pipe = _assemble(
        20261204,
        unet_config=dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8),   # diffusers' defaults: SD 1.x
        vae_config=dict(block_out_channels=(128, 256, 512, 512), down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=2, sample_size=512),
        text_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                         vocab_size=49408, max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu"),
        device=device or ("cuda" if torch.cuda.is_available() else "cpu"),
    )
    return pipe.to(torch.float16)
