"""The built-in tiny TEST video model: Wan-VACE-shaped, random weights, no download.

Lets extend, the demo and the tests run on any machine (CPU included) with nothing configured. Its frames
are noise-like; everywhere it shows up it says TEST MODEL. Built from configs with a fixed seed and cached.
"""
from __future__ import annotations

from pathlib import Path

from .embedded import cached_build

NAME = "bodydouble-embedded-tiny-wan-vace"
LABEL = f"{NAME} (TEST MODEL: random weights, not for production)"
REVISION = "v1"               # bump when the architecture below changes
# Generation long side when the server sets none: the family's 832 px would only make CPU runs slow.
RESOLUTION = 128


def embedded_video_model_path() -> Path:
    return cached_build(NAME, REVISION, LABEL, build_pipeline)


def _tokenizer():
    """A character-level T5-style tokenizer (pad 0, eos 1, unk 2) built in memory: no tokenizer files ship."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for code in range(32, 127):
        vocab.setdefault(chr(code), len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=512)


def build_pipeline():
    import torch
    from diffusers import (AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanVACEPipeline,
                           WanVACETransformer3DModel)
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = _tokenizer()
    with torch.random.fork_rng():
        torch.manual_seed(20261123)
        # Shapes after diffusers' own fast-test configuration of this pipeline (~75 k parameters).
        vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                               temperal_downsample=[False, True, True])
        text_encoder = UMT5EncoderModel(UMT5Config(
            vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
        transformer = WanVACETransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
            text_dim=32, freq_dim=256, ffn_dim=32, num_layers=3, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=32, vace_layers=[0, 2], vace_in_channels=96)
    return WanVACEPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                           scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
