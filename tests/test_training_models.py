"""Training beyond SD 1.5's UNet: an SDXL inpaint model (pooled text + size ids) and text-encoder LoRA.

The adapters are trained for a few steps on tiny random-weight models, then loaded by plain diffusers and
by a server whose fill they change; a text-encoder LoRA resumes exactly and switches cleanly against a
UNet-only adapter on the same server.
"""
import json

import numpy as np
import pytest

from bodydouble.client import Client
from bodydouble.jobspec import AdapterRef, FillRequest, sequence_frames
from bodydouble_server import samples
from bodydouble_server.config import ServerConfig
from bodydouble_server.training.report import Thresholds
from bodydouble_server.training.run import train_adapter

from .support import make_adapters, server_thread, tiny_sdxl_inpaint
from .test_training import VIEWS, settings, write_frames

THRESHOLDS = Thresholds(min_frames=4, required_views=("front",))


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    return write_frames(tmp_path_factory.mktemp("frames"), views=VIEWS[:2], per_view=3)


@pytest.fixture(scope="module")
def sdxl_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "tiny-sdxl-inpaint"
    tiny_sdxl_inpaint().save_pretrained(folder)
    return folder


def engine_for(model=None):
    from bodydouble_server.engine import Engine

    engine = Engine(ServerConfig(port=0, device="cpu", model=str(model) if model else None, video_model="none",
                                 adapters="/nonexistent-bodydouble-adapters"))
    engine.load()
    return engine.pipelines["fill"], engine.identity


def weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "pytorch_lora_weights.safetensors"))


def fills(address, plate, mask, adapter_sets, prompt="<hero> back of head"):
    """One fill per adapter set (same seed), in order, on one server."""
    with Client(address, timeout=60) as client:
        client.wait_ready()
        listed = {a.name: a for a in client.list_adapters()}
        assert all(a.status == "ready" for a in listed.values()), {n: a.reason for n, a in listed.items()}
        out = []
        for names in adapter_sets:
            req = FillRequest(frames=sequence_frames(plate, 1001, 1001, mask), adapters=[AdapterRef(n) for n in names],
                              prompt=prompt, seed=3, steps=2, return_pixels=True)
            out.append(client.submit(req).wait(timeout=120).pixels[1001])
        return out


def test_sdxl_adapter_with_text_encoder_lora_trains_loads_and_changes_fill(tmp_path, frames_dir, sdxl_folder):
    from diffusers import StableDiffusionXLInpaintPipeline

    pipe, identity = engine_for(sdxl_folder)
    assert identity.family == "sdxl"
    progress = []
    folder, _ = train_adapter(pipe, identity, [frames_dir], settings(
        steps=3, checkpoint_every=3, learning_rate=1e-2, preview_count=1, train_text_encoder=True),
        tmp_path / "adapters", thresholds=THRESHOLDS, on_progress=progress.append)
    assert [p["step"] for p in progress] == [1, 2, 3] and all(np.isfinite(p["loss"]) for p in progress)

    state = weights(folder)
    assert {k.split(".")[0] for k in state} == {"unet", "text_encoder", "text_encoder_2"}
    # The text encoders really trained: LoRA B ("up" in diffusers' names) starts at zero and moved.
    assert any(state[k].abs().max() > 0 for k in state if k.startswith("text_encoder_2.") and ".up." in k)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["base_model"]["family"] == "sdxl" and manifest["model_kind"] == "image"
    assert manifest["training"]["objective"].endswith("+ text encoder LoRA")
    assert manifest["training"]["metrics"][-1]["heldout"] > 0
    assert len(list((folder / "previews").glob("*.png"))) == 1

    plain = StableDiffusionXLInpaintPipeline.from_pretrained(str(sdxl_folder), local_files_only=True)
    plain.load_lora_weights(str(folder), adapter_name="hero")
    assert {part for part, names in plain.get_list_adapters().items() if "hero" in names} == \
        {"unet", "text_encoder", "text_encoder_2"}

    plate, mask = samples.write_sequence(tmp_path / "plates", 1001, 1001, 64, 64)
    config = ServerConfig(port=0, model=str(sdxl_folder), video_model="none", roots=[str(tmp_path)],
                          adapters=str(tmp_path / "adapters"), output_root=str(tmp_path / "takes"), resolution=64,
                          device="cpu", adapters_without_consent="allow")   # a real (tiny) SDXL folder: no record
    with server_thread(config) as srv:
        with_adapter, without = fills(srv.bound_address, plate, mask, [["hero"], []])
    assert not np.array_equal(with_adapter, without)


def test_text_encoder_lora_resumes_exactly_and_switches_cleanly_with_a_unet_only_adapter(tmp_path, frames_dir):
    pipe, identity = engine_for()
    train = dict(steps=4, checkpoint_every=2, learning_rate=1e-2, preview_count=0, train_text_encoder=True)
    straight, _ = train_adapter(pipe, identity, [frames_dir], settings(**train), tmp_path / "straight",
                                thresholds=THRESHOLDS)
    # Stopped at step 2 (published there), then the same run asked for 4 steps resumes from its checkpoint.
    work = tmp_path / "work"
    train_adapter(pipe, identity, [frames_dir], settings(**{**train, "steps": 2}), tmp_path / "early",
                  thresholds=THRESHOLDS, work_dir=work)
    resumed, _ = train_adapter(pipe, identity, [frames_dir], settings(**train), tmp_path / "resumed",
                               thresholds=THRESHOLDS, work_dir=work)
    a, b, early = weights(straight), weights(resumed), weights(tmp_path / "early" / "hero")
    assert {k.split(".")[0] for k in a} == {"unet", "text_encoder"} and a.keys() == b.keys()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert not all(np.array_equal(a[k].numpy(), early[k].numpy()) for k in a)

    # A server holding the text-encoder adapter and a UNet-only one: after the first was used, the second
    # fills exactly as on a server that never had the first (its text-encoder LoRA is not left active).
    plate, mask = samples.write_sequence(tmp_path / "plates", 1001, 1001, 64, 64)
    make_adapters(tmp_path / "straight", {"plain": 3}, identity=identity, pipe=pipe)
    make_adapters(tmp_path / "only_plain", {"plain": 3}, identity=identity, pipe=pipe)
    base = dict(port=0, video_model="none", roots=[str(tmp_path)], output_root=str(tmp_path / "takes"), resolution=64,
                device="cpu")
    with server_thread(ServerConfig(adapters=str(tmp_path / "straight"), **base)) as srv:
        plain_first, hero, plain_after, none = fills(srv.bound_address, plate, mask, [["plain"], ["hero"], ["plain"], []])
    with server_thread(ServerConfig(adapters=str(tmp_path / "only_plain"), **base)) as srv:
        plain_alone, none_alone = fills(srv.bound_address, plate, mask, [["plain"], []])
    assert np.array_equal(plain_first, plain_alone) and np.array_equal(plain_after, plain_alone)
    assert np.array_equal(none, none_alone)
    assert not np.array_equal(hero, plain_alone) and not np.array_equal(hero, none)


def test_a_half_precision_sdxl_vae_encodes_in_float32(tmp_path, frames_dir, sdxl_folder):
    """SDXL's VAE overflows in fp16 (config force_upcast): training encodes through a float32 copy and leaves
    the server's resident half-precision VAE as it is."""
    import torch
    from diffusers import StableDiffusionXLInpaintPipeline

    from bodydouble_server.models.identity import ModelIdentity
    from bodydouble_server.training.run import data_report
    from bodydouble_server.training.image import ImageTrainer

    pipe = StableDiffusionXLInpaintPipeline.from_pretrained(str(sdxl_folder), torch_dtype=torch.float16,
                                                            local_files_only=True)
    assert pipe.vae.config.force_upcast
    identity = ModelIdentity(name="tiny-sdxl", family="sdxl", sha256="0" * 64, path=str(sdxl_folder))
    data, _ = data_report([frames_dir], 64)
    trainer = ImageTrainer(pipe, identity, data, settings(steps=1, preview_count=0), tmp_path / "work")
    assert trainer.vae is not pipe.vae and trainer.vae.dtype == torch.float32 and pipe.vae.dtype == torch.float16
    assert torch.isfinite(trainer.data.mean).all() and trainer.data.mean.dtype == torch.float32
    trainer.run()
    assert trainer.step == 1 and np.isfinite(trainer.metrics[-1]["loss"])
