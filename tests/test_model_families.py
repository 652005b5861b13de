"""Real checkpoints load from a local folder through the same code as the embedded model: SD 1.5 and SDXL
inpaint families (tiny random-weight stand-ins built here from configs, saved in diffusers layout)."""
import shutil

import numpy as np
import pytest

from bodydouble import errors
from bodydouble.client import Client
from bodydouble.jobspec import AdapterRef, FillRequest, FrameInput, ImageRef
from bodydouble_server import samples
from bodydouble_server.cli import start_in_thread
from bodydouble_server.config import ServerConfig
from bodydouble_server.models import detect_family, embedded


def tiny_sdxl_inpaint():
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=9, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80, cross_attention_dim=64, norm_num_groups=8,
    )
    vae = AutoencoderKL(block_out_channels=(16, 32, 32, 32), in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        latent_channels=4, norm_num_groups=8, sample_size=128)
    tokenizer = embedded._tokenizer()
    config = CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
                            layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=2,
                            vocab_size=len(tokenizer), projection_dim=32)
    return StableDiffusionXLInpaintPipeline(
        vae=vae, text_encoder=CLIPTextModel(config), text_encoder_2=CLIPTextModelWithProjection(config),
        tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet,
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                         beta_schedule="scaled_linear", timestep_spacing="leading"),
        requires_aesthetics_score=False,
    )


def fill_once(address):
    plate = samples.plate_pixels(64, 48, 1).astype(np.float16)
    with Client(address, timeout=60) as client:
        info = client.wait_ready()
        result = client.submit(FillRequest(
            frames=[FrameInput(1, ImageRef(pixels=plate), ImageRef(pixels=samples.mask_pixels(64, 48, 1)))],
            steps=2, shot="family", return_pixels=True)).wait(timeout=120)
        return info, result, client.list_adapters()


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_local_diffusers_folder_loads_and_fills(tmp_path, studio, family):
    folder = tmp_path / f"my-{family}-inpaint"
    if family == "sdxl":
        tiny_sdxl_inpaint().save_pretrained(folder)
    else:
        shutil.copytree(embedded.embedded_model_path(), folder)
    assert detect_family(folder).name == family
    server, thread = start_in_thread(ServerConfig(port=0, model=str(folder), roots=[str(tmp_path)],
                                                  adapters=str(studio["adapters"]), resolution=64))
    try:
        info, result, adapters = fill_once(server.bound_address)
        assert info["model"]["family"] == family and info["model"]["test_model"] is False
        assert info["model"]["name"] == folder.name
        assert result.pixels[1].shape == (48, 64, 4)
        # the studio's adapters were trained on the embedded model, not on this folder's weights
        listed = {a.name: a for a in adapters}
        if family == "sdxl":
            assert listed["hero"].status == "incompatible"
        else:  # a byte-identical copy of the embedded model: same sha256, so its adapters are valid here
            assert listed["hero"].status == "ready"
    finally:
        server.stop()
        thread.join(10)


def test_a_folder_that_is_not_a_model_fails_clearly(tmp_path):
    (tmp_path / "junk").mkdir()
    server, thread = start_in_thread(ServerConfig(port=0, model=str(tmp_path / "junk"), roots=[str(tmp_path)]))
    try:
        with Client(server.bound_address, timeout=30) as client:
            with pytest.raises(errors.RequestError, match="not a diffusers model folder"):
                client.wait_ready(timeout=60)
            job = client.submit(FillRequest(frames=[FrameInput(1, ImageRef(pixels=np.ones((8, 8, 4), np.float16)))]))
            with pytest.raises(errors.RequestError) as info:
                job.wait(timeout=30)
            assert info.value.code == "model_unavailable"
    finally:
        server.stop()
        thread.join(10)
