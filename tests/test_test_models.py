"""The test-only model families (test:standin, test:passthrough) through the real server, fill and extend.

Passthrough tolerance, inside the mask: |out - plate| <= 1.5e-3 * max(|plate|, 1) + 1e-4 for scene-linear
values up to 8.0. The plate's crop is generated at its own size here (no resize), so what remains is the
OCIO display view and its inverse (float32; OCIO's fixed-function ACES 2.0 inverse is good to ~1e-4
relative below ~16: 3e-4 measured) and half-float storage of the take (2^-11 relative). Colours are kept inside
what the display view can invert (chroma +-30%): strongly saturated ACEScg beyond the display gamut is clipped
by the view, which is colour issue #14's subject, not this one's. Outside the mask the take is bit-identical
to the plate, and alpha everywhere.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest

from bodydouble.client import Client
from bodydouble.jobspec import AdapterRef, ExtendRequest, FillRequest, sequence_frames

from .support import server_thread, start_server_process, stop_process

H, W = 96, 128
MASK = (slice(32, 64), slice(40, 72))     # 32x32; with context 0.5 the crop is 64x64: the model's size below


def _read(path) -> np.ndarray:
    return np.asarray(oiio.ImageBuf(str(path)).get_pixels(oiio.FLOAT))


def _header(path) -> dict:
    spec = oiio.ImageInput.open(str(path)).spec()
    return {a.name: a.value for a in spec.extra_attribs}


def _texture(rng, height: int, width: int, low: float, high: float) -> np.ndarray:
    luminance = np.exp(rng.uniform(np.log(low), np.log(high), (height, width, 1)))
    return luminance * (1.0 + 0.3 * rng.uniform(-1.0, 1.0, (height, width, 3)))


@pytest.fixture(scope="module")
def shot(tmp_path_factory):
    """A textured ACEScg plate (luminance log-uniform 0.005..8 per pixel, so a crop placed one pixel off cannot
    pass; chroma +-30%, inside what the display view can invert) and a mask."""
    from bodydouble_server import samples

    root = tmp_path_factory.mktemp("test-models")
    plates = root / "plates"
    plates.mkdir()
    rng = np.random.default_rng(19)
    for frame in (1001, 1002):
        pixels = np.ones((H, W, 4), np.float32)
        pixels[..., :3] = _texture(rng, H, W, 0.005, 8.0)
        pixels[..., 3] = rng.uniform(0.2, 1.0, (H, W))
        samples.write_exr(plates / f"plate.{frame}.exr", pixels, ("R", "G", "B", "A"))
        mask = np.zeros((H, W, 1), np.float32)
        mask[MASK] = 1.0
        samples.write_exr(plates / f"mask.{frame}.exr", mask, ("A",))
    return {"root": root, "plate": str(plates / "plate.####.exr"), "mask": str(plates / "mask.####.exr")}


def _config(shot, model: str, **extra):
    from bodydouble_server.config import ServerConfig

    root = shot["root"]
    return ServerConfig(port=0, model=model, video_model=model, roots=[str(root)],
                        adapters=str(root / f"adapters-{model.split(':')[1]}"), output_root=str(root / "takes"),
                        **extra)


def _fill(client, data, frames=(1001, 1002), **fields):
    request = FillRequest(frames=sequence_frames(data["plate"], frames[0], frames[-1], data["mask"]), **fields)
    return client.submit(request).wait(timeout=120)


def test_passthrough_fill_gives_back_the_plate(shot):
    with server_thread(_config(shot, "test:passthrough", resolution=64)) as srv, \
            Client(srv.bound_address, timeout=30) as client:
        info = client.wait_ready()
        assert info["model"]["test_model"] is True and "TEST MODEL" in info["model"]["name"]
        assert "train" not in info["operations"]          # nothing offers training on a test family
        result = _fill(client, shot, steps=3, feather=4, shot="sh_pass")
    inside = np.zeros((H, W), bool)
    inside[MASK] = True
    for frame, path in result.frames.items():
        plate = _read(shot["plate"].replace("####", str(frame)))
        out = _read(path)
        assert np.array_equal(out[~inside], plate[~inside]), "outside the mask the take must be the plate, bit for bit"
        assert np.array_equal(out[..., 3], plate[..., 3])
        error = np.abs(out[inside][:, :3] - plate[inside][:, :3])
        assert np.all(error <= 1.5e-3 * np.maximum(np.abs(plate[inside][:, :3]), 1.0) + 1e-4), error.max()
        header = _header(path)
        assert header["bodydouble:test_model"] == 1 and "TEST MODEL" in header["bodydouble:base_model"]


def test_standin_is_deterministic_follows_adapters_and_waits_without_the_cpu(shot, monkeypatch):
    from bodydouble_server.models import testing

    config = _config(shot, "test:standin", resolution=64)
    for name, seed in (("hero", 1), ("villain", 2)):
        if not (Path(config.adapters) / name).exists():
            testing.test_adapter(Path(config.adapters) / name, testing.identity_of("test:standin"), name.title(), seed)
    monkeypatch.setenv(testing.STEP_ENV, "0.2")
    given = []                     # (seed, active adapters' weight digests) of each call: what reached the model
    call = testing.StandInPipeline.__call__

    def spy(self, *, generator=None, **kwargs):
        first = generator[0] if isinstance(generator, list) else generator
        given.append((first.initial_seed(), self.active_loras()))
        return call(self, generator=generator, **kwargs)
    monkeypatch.setattr(testing.StandInPipeline, "__call__", spy)
    with server_thread(config) as srv, Client(srv.bound_address, timeout=30) as client:
        assert {a.name: a.status for a in client.list_adapters()} == {"hero": "ready", "villain": "ready"}
        wall, cpu = time.monotonic(), time.process_time()
        first = _fill(client, shot, adapters=[AdapterRef("hero")], steps=4, seed=5)
        wall, cpu = time.monotonic() - wall, time.process_time() - cpu
        again = _fill(client, shot, frames=(1001,), adapters=[AdapterRef("hero")], steps=4, seed=5)
        again_path = again.frames[1001]
        other = _fill(client, shot, frames=(1001,), adapters=[AdapterRef("villain")], steps=4, seed=5)
        reseeded = _fill(client, shot, frames=(1001,), adapters=[AdapterRef("hero")], steps=4, seed=6)
    assert wall >= 2 * 4 * 0.2, "every step sleeps BODYDOUBLE_STANDIN_STEP_S"
    # The whole in-process server (socket loop, EXR I/O, colour) used well under half the wall time: the
    # 1.6 s of steps hold no CPU, as a GPU wait would not.
    assert cpu < 0.5 * wall, (cpu, wall)
    first, again, other, reseeded = (_read(r.frames[1001]) for r in (first, again, other, reseeded))
    assert np.array_equal(first, again)
    inside = np.zeros((H, W), bool)
    inside[MASK] = True
    # The request's seed and adapter reach the model (the stand-in's picture is keyed by them, so the pixels follow):
    # hero's weights at 1.0 with seed 5, then villain's (other weights), then hero's again with seed 6.
    (_, (hero,)), (_, (villain,)), (_, (hero_again,)) = given[-3:]
    assert [seed for seed, _ in given[-3:]] == [5, 5, 6]
    assert hero[1] == villain[1] == 1.0 and hero == hero_again and villain[0] != hero[0]
    assert not np.allclose(first[inside], other[inside], atol=1e-3)   # a different key, a different picture
    plate = _read(shot["plate"].replace("####", "1001"))
    assert np.array_equal(first[~inside], plate[~inside])
    assert "TEST MODEL" in _header(again_path)["bodydouble:base_model"]


def test_passthrough_extend_holds_the_last_plate_frame(shot, tmp_path):
    from bodydouble_server import samples

    plates = tmp_path / "plates"
    plates.mkdir()
    rng = np.random.default_rng(3)
    for frame in (1, 2):            # 128x64: the test video model's own size, so nothing is resized
        pixels = np.ones((64, 128, 4), np.float32)
        pixels[..., :3] = _texture(rng, 64, 128, 0.01, 4.0)
        samples.write_exr(plates / f"clip.{frame}.exr", pixels, ("R", "G", "B", "A"))
    config = _config(shot, "test:passthrough")
    config.roots.append(str(tmp_path))
    with server_thread(config) as srv, Client(srv.bound_address, timeout=30) as client:
        assert client.wait_ready()["model"]["video_model"]["test_model"] is True
        result = client.submit(ExtendRequest(frames=sequence_frames(str(plates / "clip.#.exr"), 1, 2), count=6,
                                             conditioning=2, steps=2, colour_match=False)).wait(timeout=120)
    last = _read(plates / "clip.2.exr")
    assert sorted(result.frames) == [3, 4, 5, 6, 7, 8]
    for path in result.frames.values():
        out = _read(path)
        assert np.all(np.abs(out[..., :3] - last[..., :3]) <= 1.5e-3 * np.maximum(last[..., :3], 1.0) + 1e-4)
        assert "TEST MODEL" in _header(path)["bodydouble:base_model"]


def test_unknown_test_model_is_a_clear_error():
    from bodydouble import errors
    from bodydouble_server.models import testing

    with pytest.raises(errors.BodyDoubleError, match="test:passthrough, test:sd15-size, test:standin"):
        testing.resolve("test:nonesuch", "image")


def test_sd15_size_model_has_sd15_inpaints_real_architecture():
    """What test:sd15-size builds (weights left out: the meta device) is SD 1.5 inpaint's size, parameter for
    parameter (the published counts of runwayml/stable-diffusion-inpainting's three models), in half precision:
    GPU timings on it are the real model's."""
    from bodydouble_server.models import embedded

    pipe = embedded.build_sd15_size_pipeline(device="meta")
    counts = {name: sum(p.numel() for p in getattr(pipe, name).parameters()) for name in ("unet", "vae", "text_encoder")}
    assert counts == {"unet": 859_535_364, "vae": 83_653_863, "text_encoder": 123_060_480}
    assert pipe.unet.dtype.itemsize == 2
    assert type(pipe).__name__ == "StableDiffusionInpaintPipeline"


def test_serve_command_starts_the_standin(shot):
    root = shot["root"]
    proc, address = start_server_process(root, root / "adapters-cli", extra=["--model", "test:standin",
                                                                            "--video-model", "none"])
    try:
        with Client(address, timeout=10) as client:
            model = client.wait_ready()["model"]
        assert model["family"] == "test-standin" and model["test_model"] is True
        assert model["name"].startswith("bodydouble-test-standin (TEST MODEL")
    finally:
        stop_process(proc)
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
