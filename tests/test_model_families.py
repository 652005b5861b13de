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

from .support import tiny_sdxl_inpaint


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
                                                  adapters=str(studio["adapters"]), resolution=64,
                                                  adapters_without_consent="allow"))   # family test, not consent
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
