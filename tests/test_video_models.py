"""The second video family (LTX-Video's condition pipeline) through the same registry, server and wire as Wan VACE.

A tiny LTX-Video model is built from configs (diffusers' own fast-test shapes, random weights), saved as a
diffusers folder and served as ``video_model``: detection, LoRA video adapter, extend over ZeroMQ.
"""
import numpy as np
import pytest

from bodydouble.client import Client
from bodydouble.jobspec import AdapterRef, ExtendRequest, FrameInput, ImageRef

from .support import server_thread


def tiny_ltx(folder):
    import torch
    from diffusers import (AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXConditionPipeline,
                           LTXVideoTransformer3DModel)
    from transformers import T5Config, T5EncoderModel

    from bodydouble_server.models.embedded_video import _tokenizer

    tokenizer = _tokenizer()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        transformer = LTXVideoTransformer3DModel(
            in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4, attention_head_dim=8,
            cross_attention_dim=32, num_layers=1, caption_channels=32)
        vae = AutoencoderKLLTXVideo(
            in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
            decoder_spatio_temporal_scaling=(True, True, False, False),
            decoder_inject_noise=(False, False, False, False, False), upsample_residual=(False, False, False, False),
            upsample_factor=(1, 1, 1, 1), timestep_conditioning=False, patch_size=1, patch_size_t=1,
            encoder_causal=True, decoder_causal=False)
        text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=2,
                                               num_heads=4, relative_attention_num_buckets=8, pad_token_id=0,
                                               eos_token_id=1, decoder_start_token_id=0))
    LTXConditionPipeline(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(),
                         text_encoder=text_encoder, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def ltx_server(tmp_path_factory):
    import torch

    from bodydouble_server.adapter_files import synthetic_adapter
    from bodydouble_server.config import ServerConfig
    from bodydouble_server.models.slots import open_model

    root = tmp_path_factory.mktemp("ltx")
    model = tiny_ltx(root / "tiny-ltx")
    config = ServerConfig(port=0, roots=[str(root)], adapters=str(root / "adapters"), output_root=str(root / "takes"),
                          resolution=64, video_model=str(model), video_resolution=32, video_window=17,
                          adapters_without_consent="allow")   # a real (tiny) LTX folder: no consent record
    video = open_model("video", config, "cpu", torch.float32)
    synthetic_adapter(video.pipeline(), video.identity, root / "adapters" / "hero_ltx", character="Hero", seed=2)
    with server_thread(config) as server:
        yield server


def test_a_tiny_ltx_video_folder_is_detected_and_extends_over_zeromq(ltx_server):
    with Client(ltx_server.bound_address, timeout=60) as client:
        video = client.connect()["model"]["video_model"]
        assert video["family"] == "ltx-video" and not video["test_model"] and video["window"] == 17
        (adapter,) = [a for a in client.list_adapters() if a.name == "hero_ltx"]
        assert adapter.status == "ready" and adapter.raw["model_kind"] == "video"
        frames = [FrameInput(frame=f, plate=ImageRef(pixels=np.full((32, 48, 3), 0.18, np.float16))) for f in (7, 8)]
        progress = []
        result = client.submit(ExtendRequest(frames=frames, count=20, conditioning=1, adapters=[AdapterRef("hero_ltx")],
                                             steps=2, seed=3, shot="sh050", return_pixels=True)).wait(
            timeout=240, on_progress=progress.append)
    assert (result.first, result.last) == (9, 28) and len(result.pixels) == 20
    assert [c["first"] for c in result.info["chunks"]] == [9, 23] and max(p.raw["chunk"] for p in progress) == 2
    assert result.pixels[28].shape == (32, 48, 3) and np.isfinite(result.pixels[28].astype(np.float32)).all()


def test_a_half_precision_server_keeps_the_wan_vae_in_float32_and_extends(tmp_path):
    """On a GPU the server runs bf16/fp16; Wan's VAE stays float32 (as Wan's own examples load it). Run here on
    CPU in bfloat16: the mixed-dtype pipeline loads and makes finite frames."""
    import torch

    from bodydouble_server.config import ServerConfig
    from bodydouble_server.models.slots import open_model

    video = open_model("video", ServerConfig(port=0, adapters=str(tmp_path / "none")), "cpu", torch.bfloat16)
    pipe = video.pipeline()
    assert pipe.vae.dtype == torch.float32
    assert pipe.transformer.dtype == torch.bfloat16 and pipe.text_encoder.dtype == torch.bfloat16
    context = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    frames = video.family.extend(pipe, context, 4, height=64, width=64, prompt="<hero> walks on", negative_prompt="",
                                 steps=2, guidance=5.0, fps=24.0, generator=torch.Generator().manual_seed(0),
                                 on_step=lambda step, steps: None)
    assert frames.shape == (4, 64, 64, 3) and np.isfinite(frames).all() and frames.std() > 0
