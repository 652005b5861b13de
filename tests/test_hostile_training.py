"""A base model with one NaN weight (a damaged checkpoint on the share): training stops with training_diverged and
publishes nothing; a fill with it fails with job_failed instead of writing a NaN take. Real server, real train job."""
from __future__ import annotations

import shutil

import pytest
from safetensors.torch import load_file, save_file

from bodydouble import errors
from bodydouble.client import Client
from bodydouble.jobspec import FillRequest, TrainRequest, sequence_frames
from bodydouble_server import samples

from .support import server_thread
from .test_training import write_frames

SIZE = 64


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from bodydouble_server.config import ServerConfig
    from bodydouble_server.models.embedded import embedded_model_path

    root = tmp_path_factory.mktemp("nan-base")
    model = root / "damaged-model"
    shutil.copytree(embedded_model_path(), model)
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    tensors["conv_in.weight"][0, 0, 0, 0] = float("nan")
    save_file(tensors, weights)
    plate, mask = samples.write_sequence(root / "plates", 1, 1, SIZE, SIZE)
    config = ServerConfig(port=0, model=str(model), video_model="none", roots=[str(root)],
                          adapters=str(root / "adapters"), output_root=str(root / "takes"), resolution=SIZE,
                          device="cpu", adapters_without_consent="allow")    # consent is not what is tested
    # A long heartbeat: on a loaded CI box a busy server may miss 1 s beats; liveness is not what is tested here.
    with server_thread(config) as srv, Client(srv.bound_address, timeout=60, heartbeat_interval=3.0) as client:
        client.wait_ready()
        yield {"root": root, "client": client, "frames": write_frames(root / "frames"), "plate": plate, "mask": mask}


def test_training_on_a_nan_base_stops_with_training_diverged_and_publishes_nothing(served):
    request = TrainRequest(frames=[str(served["frames"])], character="Hero", name="hero_nan", resolution=SIZE,
                           steps=4, checkpoint_every=2, learning_rate=1e-2, preview_steps=1, preview_count=1,
                           rights_holder="Studio test data", licence="test frames")
    with pytest.raises(errors.RequestError) as caught:
        served["client"].submit(request).wait(timeout=300)
    assert caught.value.code == "training_diverged", caught.value
    assert "nothing was published" in str(caught.value)
    assert not (served["root"] / "adapters" / "hero_nan").exists()
    assert "hero_nan" not in [a.name for a in served["client"].rescan()]
    assert served["client"].heartbeat()["state"] == "ready"


def test_a_fill_whose_model_makes_nan_fails_without_a_nan_take(served):
    request = FillRequest(frames=sequence_frames(served["plate"], 1, 1, served["mask"]), steps=1)
    with pytest.raises(errors.RequestError) as caught:
        served["client"].submit(request).wait(timeout=120)
    assert caught.value.code == "job_failed" and "NaN" in str(caught.value)
    for take in served["root"].glob("**/take.json"):
        assert '"complete"' not in take.read_text()


def test_a_report_on_frames_with_nan_pixels_and_a_latin1_caption_answers(served):
    import numpy as np

    from .test_training import VIEWS, frame_pixels

    folder = write_frames(served["root"] / "nan_frames")
    pixels = frame_pixels(0)
    pixels[2:6, 2:6, :3] = np.nan
    samples.write_exr(folder / VIEWS[0] / "hero_00.exr", pixels, ("R", "G", "B", "A"))
    (folder / VIEWS[0] / "hero_01.txt").write_bytes(b"caf\xe9 cr\xe8me, back view\x00")   # Latin-1, not UTF-8
    result = served["client"].submit(TrainRequest(frames=[str(folder)], character="Hero", resolution=SIZE,
                                                  report_only=True)).wait(timeout=120)
    assert result.report["frame_count"] == len(VIEWS) * 2
