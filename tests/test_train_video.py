"""Video adapters: training a LoRA for the server's video model (extend), on the embedded tiny Wan VACE.

Through the server's train job over ZeroMQ (published, listed for extend only, changes extend, loads in
plain diffusers), in process (stop + resume = an uninterrupted run), from the command line, and bad input.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from bodydouble import errors
from bodydouble.client import Client
from bodydouble.jobspec import AdapterRef, ExtendRequest, FillRequest, TrainRequest, sequence_frames
from bodydouble_server import samples
from bodydouble_server.models import embedded_video

from .support import make_video_adapters, server_thread
from .test_training import write_frames

SIZE = 64                     # a multiple of 16: the Wan VAE's 8 x the transformer's patch 2
TRAIN = {"character": "Hero", "model_kind": "video", "resolution": SIZE, "steps": 4, "checkpoint_every": 2,
         "learning_rate": 1e-2, "preview_steps": 1, "preview_count": 1, "rights_holder": "Studio test data",
         "licence": "test frames, consent n/a"}


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """A server with the embedded image and video test models; video adapter 'rival_video' already there."""
    from bodydouble_server.config import ServerConfig

    root = tmp_path_factory.mktemp("train-video")
    adapters = root / "adapters"
    config = ServerConfig(port=0, roots=[str(root)], adapters=str(adapters), output_root=str(root / "takes"),
                          resolution=SIZE, video_resolution=SIZE, video_window=9, device="cpu")
    make_video_adapters(adapters, {"rival_video": 5}, config)
    plate, _ = samples.write_sequence(root / "plates", 1001, 1002, SIZE, SIZE)
    with server_thread(config) as server:
        yield {"root": root, "adapters": adapters, "frames": write_frames(root / "frames"), "plate": plate,
               "address": server.bound_address}


@pytest.fixture
def client(studio):
    with Client(studio["address"], timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def video():
    """The embedded video model in this process, for training without a server."""
    import torch

    from bodydouble_server.config import ServerConfig
    from bodydouble_server.models.slots import open_model

    return open_model("video", ServerConfig(port=0, adapters="/nonexistent-bodydouble-adapters"), "cpu", torch.float32)


def extend(client, studio, adapters):
    request = ExtendRequest(frames=sequence_frames(studio["plate"], 1001, 1002), count=4, conditioning=1,
                            adapters=adapters, prompt="<hero> turns around", seed=5, steps=2, return_pixels=True)
    result = client.submit(request).wait(timeout=120)
    return np.stack([result.pixels[f] for f in sorted(result.pixels)])


def test_train_job_publishes_a_video_adapter_that_extend_serves_and_fill_refuses(client, studio):
    rival, plain = extend(client, studio, [AdapterRef("rival_video")]), extend(client, studio, [])
    progress = []
    result = client.submit(TrainRequest(frames=[str(studio["frames"])], name="hero", **TRAIN)) \
        .wait(timeout=300, on_progress=progress.append)

    assert [p.step for p in progress if p.raw.get("phase") == "train"] == [1, 2, 3, 4]
    assert result.adapter == "hero" and result.info["adapter_status"] == "ready", result.info["adapter_reason"]
    assert result.info["model_kind"] == "video" and result.info["test_model"]
    assert [m["step"] for m in result.metrics] == [2, 4] and all(m["heldout"] > 0 for m in result.metrics)
    folder = Path(result.adapter_dir)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["model_kind"] == "video" and manifest["base_model"]["family"] == "wan-vace"
    assert manifest["training"]["objective"].startswith("flow matching")
    assert result.info["previews"] == ["previews/00_back_hero_51.png"]   # the first held-out frame
    assert (folder / "contact_sheet.png").is_file()

    listed = {a.name: a for a in client.list_adapters()}          # the job rescanned: listed at once
    hero = listed["hero"]
    assert hero.status == "ready" and hero.model_kind == "video"
    assert hero.serves("extend") and not hero.serves("fill")
    with pytest.raises(errors.AdapterIncompatible, match="video model"):
        client.submit(FillRequest(frames=sequence_frames(studio["plate"], 1001, 1001), adapters=[AdapterRef("hero")],
                                  steps=1)).wait(timeout=60)

    trained = extend(client, studio, [AdapterRef("hero")])
    assert trained.shape == plain.shape == (4, SIZE, SIZE, 4)
    assert not np.array_equal(trained, plain) and not np.array_equal(trained, rival)
    assert np.array_equal(extend(client, studio, [AdapterRef("rival_video")]), rival)   # served adapters untouched

    from diffusers import WanVACEPipeline
    from safetensors.torch import load_file

    pipe = WanVACEPipeline.from_pretrained(str(embedded_video.embedded_video_model_path()), local_files_only=True)
    pipe.load_lora_weights(str(folder), adapter_name="hero")
    assert pipe.get_list_adapters() == {"transformer": ["hero"]}
    weights = load_file(str(folder / "pytorch_lora_weights.safetensors"))
    key = "transformer.blocks.0.attn1.to_q.lora_B.weight"
    assert weights[key].abs().sum() > 0    # trained: lora_B starts at zero
    assert np.array_equal(pipe.transformer.blocks[0].attn1.to_q.lora_B["hero"].weight.detach().numpy(),
                          weights[key].numpy())


def test_stopped_and_resumed_run_matches_an_uninterrupted_one(tmp_path, studio, video):
    from safetensors.torch import load_file

    from bodydouble_server.training.run import train_adapter
    from bodydouble_server.training.loop import TrainingCancelled
    from bodydouble_server.training.settings import TrainSettings

    settings = TrainSettings(**{**TRAIN, "steps": 5, "preview_count": 0, "seed": 9})
    pipe = video.pipeline()
    straight, _ = train_adapter(pipe, video.identity, [studio["frames"]], settings, tmp_path / "straight")

    steps = []
    with pytest.raises(TrainingCancelled) as caught:
        train_adapter(pipe, video.identity, [studio["frames"]], settings, tmp_path / "resumed",
                      on_progress=lambda p: steps.append(p["step"]), should_stop=lambda: steps[-1:] == [3])
    assert caught.value.step == 3 and caught.value.checkpoint.name == "step_0000003"   # between checkpoints
    resumed, _ = train_adapter(pipe, video.identity, [studio["frames"]], settings, tmp_path / "resumed",
                               on_progress=lambda p: steps.append(p["step"]))
    assert steps == [1, 2, 3, 4, 5]

    a = load_file(str(straight / "pytorch_lora_weights.safetensors"))
    b = load_file(str(resumed / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys() and len(a) > 0
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    metrics = [json.loads((f / "manifest.json").read_text())["training"]["metrics"] for f in (straight, resumed)]
    held = [{m["step"]: m["heldout"] for m in run} for run in metrics]
    assert held[1].pop(3) and held[0] == held[1]     # the stop's own checkpoint at step 3 aside


def test_cli_trains_a_video_adapter(tmp_path, studio):
    from bodydouble.cli import main

    code = main(["train", str(studio["frames"]), "--character", "Hero", "--model-kind", "video", "--device", "cpu",
                 "--out", str(tmp_path), "--resolution", str(SIZE), "--steps", "2", "--preview-count", "0",
                 "--rights-holder", "Studio", "--licence", "test", "--quiet", "--json"])
    assert code == 0
    manifest = json.loads((tmp_path / "hero" / "manifest.json").read_text())
    assert manifest["model_kind"] == "video" and manifest["training"]["steps_done"] == 2
    assert manifest["base_model"]["name"] == embedded_video.LABEL


@pytest.mark.parametrize("changes, code, text", [
    ({"resolution": 72}, errors.INVALID_REQUEST, "resolution must be a multiple of 16 for the video model"),
    ({"train_text_encoder": True}, errors.INVALID_REQUEST, "video training trains the transformer only"),
])
def test_bad_video_training_requests_are_clear_errors(client, studio, changes, code, text):
    with pytest.raises(errors.RequestError) as caught:
        client.submit(TrainRequest(frames=[str(studio["frames"])], name="bad", **{**TRAIN, **changes})).wait(timeout=60)
    assert caught.value.code == code and text in caught.value.message, caught.value.message
    assert client.heartbeat()["state"] == "ready" and not (studio["adapters"] / "bad").exists()


def test_a_server_without_a_video_model_refuses_video_training_and_keeps_serving(tmp_path):
    from bodydouble_server.config import ServerConfig

    frames = write_frames(tmp_path / "frames", views=["front"], per_view=2)
    config = ServerConfig(port=0, roots=[str(tmp_path)], adapters=str(tmp_path / "adapters"),
                          output_root=str(tmp_path / "takes"), resolution=SIZE, video_model="none", device="cpu",
                          adapters_without_consent="allow")   # a model-kind test, not a consent one
    with server_thread(config) as server, Client(server.bound_address, timeout=60) as client:
        with pytest.raises(errors.RequestError) as caught:
            client.submit(TrainRequest(frames=[str(frames)], force=True, **TRAIN)).wait(timeout=60)
        assert caught.value.code == errors.NOT_SUPPORTED and "no video model" in caught.value.message
        assert client.heartbeat()["state"] == "ready"
        report = client.submit(TrainRequest(frames=[str(frames)], character="Hero", model_kind="video",
                                            resolution=SIZE, report_only=True)).wait(timeout=60)
        assert report.report["frame_count"] == 2     # the data report needs no model
