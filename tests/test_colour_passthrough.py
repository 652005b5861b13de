"""Colour end to end (#14): the passthrough model through the real server gives the plate back inside the mask,
for every colour space a host usually sends; model whites never pass the ceiling; near-white stays ordered.

Tolerances, inside the mask, against the plate as read back (half):

- crop generated at its own size (no resize): |out - plate| <= 2e-3 * max(|plate|, 1). What remains is OCIO's
  display view and its inverse in float32 (ACES 2.0's fixed-function inverse: ~3e-4 relative up to 16,
  bench/colour_encoding.py) and the take's half storage (2^-11 = 4.9e-4 relative), so 2e-3 leaves 2x margin;
  a crop one pixel off, a wrong colour space or primaries, or a clipped overbright misses by far more.
- resized crop (pixel aspect 2: the model's picture is twice as wide): a smooth plate (features 16+ pixels),
  |out - plate| <= 2 % * max(|plate|, 1): resampling up and down again smooths a smooth field by well under 1 %.

Outside the mask the take is the plate bit for bit, and alpha everywhere (the plates' alpha is random).
A model made to paint pure white (fill and extend) or a near-white ramp checks the ceiling and the order.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest

from bodydouble import errors
from bodydouble.client import Client
from bodydouble.jobspec import FillRequest, sequence_frames

from .support import server_thread

H, W = 96, 128
MASK = (slice(32, 64), slice(40, 72))      # 32x32; context 0.5 -> a 64x64 crop


def _read(path) -> np.ndarray:
    return np.asarray(oiio.ImageBuf(str(path)).get_pixels(oiio.FLOAT))


def _write(path: Path, pixels: np.ndarray, channels, pixel_aspect: float = 1.0) -> None:
    spec = oiio.ImageSpec(pixels.shape[1], pixels.shape[0], pixels.shape[2], oiio.HALF)
    spec.channelnames = channels
    spec.attribute("PixelAspectRatio", float(pixel_aspect))
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), spec)
    out.write_image(np.ascontiguousarray(pixels, np.float32))
    out.close()


def _texture(rng, low: float, high: float, chroma: float = 0.3) -> np.ndarray:
    luminance = np.exp(rng.uniform(np.log(low), np.log(high), (H, W, 1)))
    return luminance * (1.0 + chroma * rng.uniform(-1.0, 1.0, (H, W, 3)))


# name sent -> (how the plate's values are made, what they stand for)
SPACES = {
    "ACEScg": lambda rng: _texture(rng, 0.005, 30.0),                       # overbrights up to ~39 in the crop
    "Linear Rec.709": lambda rng: _texture(rng, 0.005, 12.0),               # Blender's default, wide to 15.6
    "sRGB": lambda rng: np.clip(_texture(rng, 0.02, 0.9, 0.1), 0.0, 1.0),   # an sRGB-encoded plate (JPEG-like)
    "linear": lambda rng: _texture(rng, 0.005, 8.0),                        # Nuke default colour management
}


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    root = tmp_path_factory.mktemp("colour")
    plates = root / "plates"
    plates.mkdir()
    rng = np.random.default_rng(14)
    made = {}
    for index, (space, make) in enumerate(SPACES.items()):
        pixels = np.ones((H, W, 4), np.float32)
        pixels[..., :3] = make(rng)
        pixels[..., 3] = rng.uniform(0.1, 1.0, (H, W))
        _write(plates / f"p{index}.1.exr", pixels, ("R", "G", "B", "A"))
        made[space] = str(plates / f"p{index}.#.exr")
    # Smooth, with pixel aspect 2 (anamorphic): the crop is resized to twice its width for the model.
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    smooth = np.ones((H, W, 4), np.float32)
    for c, phase in enumerate((0.0, 1.0, 2.0)):
        smooth[..., c] = 0.6 * np.exp(2.5 * np.sin(x / 19.0 + phase) * np.cos(y / 23.0 - phase))   # 0.05..7.3
    _write(plates / "anamorphic.1.exr", smooth, ("R", "G", "B", "A"), pixel_aspect=2.0)
    made["anamorphic"] = str(plates / "anamorphic.#.exr")
    mask = np.zeros((H, W, 1), np.float32)
    mask[MASK] = 1.0
    _write(plates / "mask.1.exr", mask, ("A",))
    return {"root": root, "plates": made, "mask": str(plates / "mask.#.exr")}


def _config(studio, **extra):
    from bodydouble_server.config import ServerConfig

    root = studio["root"]
    return ServerConfig(port=0, model="test:passthrough", video_model="none", roots=[str(root)],
                        adapters=str(root / "adapters"), output_root=str(root / "takes"), **extra)


def _fill(client, studio, plate: str, **fields) -> np.ndarray:
    request = FillRequest(frames=sequence_frames(plate, 1, 1, studio["mask"]), steps=1, **{"feather": 4, **fields})
    return _read(client.submit(request).wait(timeout=120).frames[1])


def _crop_max(plate: np.ndarray) -> float:
    """The brightest R, G, B value in the crop the server gives the model (mask box plus 0.5 context)."""
    from bodydouble_server.imaging import regions

    mask = _inside().astype(np.float32)
    ys, xs = regions.context_box(regions.mask_box(mask), H, W, 0.5).slices()
    return float(plate[ys, xs, :3].max())


def _inside() -> np.ndarray:
    inside = np.zeros((H, W), bool)
    inside[MASK] = True
    return inside


def test_passthrough_gives_back_every_hosts_plate(studio):
    inside = _inside()
    with server_thread(_config(studio, resolution=64)) as srv, Client(srv.bound_address, timeout=30) as client:
        client.wait_ready()
        for space in SPACES:
            plate_path = studio["plates"][space]
            out = _fill(client, studio, plate_path, colorspace=space, shot=f"sh_{len(space)}")
            plate = _read(plate_path.replace("#", "1"))
            assert np.array_equal(out[~inside], plate[~inside]), space
            assert np.array_equal(out[..., 3], plate[..., 3]), space
            error = np.abs(out[inside][:, :3] - plate[inside][:, :3])
            bound = 2e-3 * np.maximum(np.abs(plate[inside][:, :3]), 1.0)
            assert np.all(error <= bound), (space, float((error / bound).max()))
            crop_max = _crop_max(plate)
            if space != "sRGB":       # the overbrights themselves came back, up to the crop's own maximum
                brightest = np.unravel_index(np.argmax(plate[..., :3] * inside[..., None]), plate[..., :3].shape)
                assert plate[brightest] > 4.0 and abs(out[brightest] - plate[brightest]) <= 2e-3 * plate[brightest]
            assert out[inside][:, :3].max() <= crop_max * (1 + 2e-3)


def test_passthrough_through_a_resize_and_pixel_aspect(studio):
    inside = _inside()
    with server_thread(_config(studio, resolution=128)) as srv, Client(srv.bound_address, timeout=30) as client:
        client.wait_ready()
        out = _fill(client, studio, studio["plates"]["anamorphic"], shot="sh_anamorphic")
    plate = _read(studio["plates"]["anamorphic"].replace("#", "1"))
    assert np.array_equal(out[~inside], plate[~inside])
    error = np.abs(out[inside][:, :3] - plate[inside][:, :3])
    assert np.all(error <= 0.02 * np.maximum(plate[inside][:, :3], 1.0)), float(error.max())


def _model_returns(monkeypatch, make):
    """The passthrough model made to return ``make(image)`` instead: a model that paints white, or a ramp."""
    from bodydouble_server.models import testing

    original = testing.PassthroughPipeline.__call__

    def call(self, *, image, **kwargs):
        result = original(self, image=image, **kwargs)
        result.images = make(result.images)
        return result
    monkeypatch.setattr(testing.PassthroughPipeline, "__call__", call)


def test_generated_white_never_exceeds_the_ceiling(studio, monkeypatch):
    _model_returns(monkeypatch, np.ones_like)
    inside = _inside()
    with server_thread(_config(studio, resolution=64)) as srv, Client(srv.bound_address, timeout=30) as client:
        client.wait_ready()
        plate_path = studio["plates"]["linear"]            # the crop's brightest is ~10: under the default 16
        default = _fill(client, studio, plate_path, colorspace="linear", shot="sh_white")
        low = _fill(client, studio, plate_path, colorspace="linear", shot="sh_white", highlight_ceiling=1.0)
        bright = _fill(client, studio, studio["plates"]["ACEScg"], shot="sh_white")
    plate = _read(plate_path.replace("#", "1"))
    crop_max = _crop_max(plate)
    assert 8.0 < crop_max < 16.0
    full = inside & (np.abs(default[..., 0] - default[48, 56, 0]) < 1e-6)     # feather weight 1
    assert full.sum() >= 256
    # Pure model white is the ceiling (16), never the view's 128; with a ceiling below the crop's own
    # brightest value, that value is the bound.
    assert np.allclose(default[full][:, :3], 16.0, rtol=2e-3), default[full][:, :3].max()
    assert default[..., :3].max() <= 16.0 * (1 + 1e-3)
    assert np.allclose(low[full][:, :3], crop_max, rtol=2e-3) and low[..., :3].max() <= crop_max * (1 + 1e-3)
    acescg = _read(studio["plates"]["ACEScg"].replace("#", "1"))
    assert np.allclose(bright[full][:, :3], _crop_max(acescg), rtol=2e-3)     # the crop's own 38, not 128


def test_near_white_gradients_stay_monotonic(studio, monkeypatch):
    def ramp(images):
        out = np.empty_like(images)
        out[...] = np.linspace(0.9, 1.0, images.shape[2], dtype=np.float32)[None, None, :, None]
        return out
    _model_returns(monkeypatch, ramp)
    with server_thread(_config(studio, resolution=64)) as srv, Client(srv.bound_address, timeout=30) as client:
        client.wait_ready()
        out = _fill(client, studio, studio["plates"]["ACEScg"], shot="sh_ramp", feather=0)
    row = out[48, 40:72, :3]                     # left to right across the mask: display 0.9 -> 1.0
    assert np.all(np.diff(row, axis=0) >= 0), row
    assert row[-1].max() <= 40.0 and row[-1].min() > row[0].max()


def test_unknown_colour_space_lists_the_valid_names(studio):
    with server_thread(_config(studio, resolution=64)) as srv, Client(srv.bound_address, timeout=30) as client:
        client.wait_ready()
        with pytest.raises(errors.BodyDoubleError) as info:
            _fill(client, studio, studio["plates"]["ACEScg"], colorspace="Filmic Log")
    assert info.value.code == errors.UNKNOWN_COLORSPACE
    assert "ACEScg" in info.value.message and "Linear Rec.709 (sRGB)" in info.value.message
    assert "ACEScg" in info.value.details["valid"] and "scene_linear" in info.value.details["roles"]


def test_extended_white_frames_stop_at_the_ceiling(studio, monkeypatch, tmp_path):
    """Extend: a video model that paints pure white gives the ceiling (raised to the conditioning frames'
    brightest value), never the view's 128."""
    from bodydouble.jobspec import ExtendRequest
    from bodydouble_server.models import testing

    monkeypatch.setattr(testing.PASSTHROUGH_VIDEO, "extend",
                        lambda pipe, context, count, **_: np.ones((count, *context.shape[1:]), np.float32))
    plates = tmp_path / "clip"
    plates.mkdir()
    rng = np.random.default_rng(5)
    for frame in (1, 2):           # 128x64: the test video model's own size
        pixels = np.ones((64, 128, 4), np.float32)
        pixels[..., :3] = np.exp(rng.uniform(np.log(0.01), np.log(5.0), (64, 128, 1))) * rng.uniform(0.9, 1.1, (64, 128, 3))
        _write(plates / f"clip.{frame}.exr", pixels, ("R", "G", "B", "A"))
    brightest = max(float(_read(plates / f"clip.{f}.exr")[..., :3].max()) for f in (1, 2))
    config = _config(studio)
    config.video_model = "test:passthrough"
    config.roots.append(str(tmp_path))
    with server_thread(config) as srv, Client(srv.bound_address, timeout=30) as client:
        client.wait_ready()
        for ceiling, expected in ((16.0, 16.0), (2.0, brightest)):
            result = client.submit(ExtendRequest(
                frames=sequence_frames(str(plates / "clip.#.exr"), 1, 2), count=2, conditioning=2, steps=1,
                colour_match=False, colorspace="Linear Rec.709", highlight_ceiling=ceiling)).wait(timeout=120)
            for path in result.frames.values():
                rgb = _read(path)[..., :3]
                assert np.allclose(rgb, expected, rtol=2e-3), (ceiling, float(rgb.min()), float(rgb.max()))


@pytest.mark.parametrize("ceiling", [16.0, 2.0])
def test_extend_reads_each_conditioning_frame_once(ceiling, monkeypatch):
    """The take's encoding needs the conditioning frames' brightest value, and their model pixels need the
    encoding: each frame is still read once (counted through the reader), and the model sees exactly what
    converting each frame with the take's encoding gives (the old two-read path, computed here). The last frame
    holds a light brighter than the ceiling (~38), so the encoding changes after the others were converted. The
    highlights kept to convert again stay within a frame's worth of pixels: frame 1002, all of it above the knee,
    is read a second time (with room for three frames' worth, never)."""
    from types import SimpleNamespace

    from bodydouble.jobspec import ImageRef
    from bodydouble_server.imaging import colour as colour_mod
    from bodydouble_server.operations import common, extend

    rng = np.random.default_rng(11)
    plates = [_texture(rng, 0.005, 3.0).astype(np.float32) for _ in range(3)]
    plates[1][...] = rng.uniform(5.0, 9.0, (H, W, 3))                       # a white wall in the sun
    plates[2][10:14, 20:30] = 38.0 * rng.uniform(0.8, 1.0, (4, 10, 3))       # a practical light
    items = [SimpleNamespace(frame=1001 + i, plate=ImageRef(pixels=p)) for i, p in enumerate(plates)]
    video = SimpleNamespace(resolution=48, family=SimpleNamespace(multiple=16))
    reads: list[str] = []
    load = common.load_image
    monkeypatch.setattr(common, "load_image", lambda engine, ref, what: (reads.append(what), load(engine, ref, what))[1])
    colour = colour_mod.ColourTransform("ACEScg")
    expected = colour.encoding(max(colour_mod.brightest(p) for p in plates), ceiling)
    assert expected != colour.encoding(max(colour_mod.brightest(p) for p in plates[:2]), ceiling)
    for kept, twice in ((extend._KEPT_FRAMES, ["plate 1002"]), (3.0, [])):
        monkeypatch.setattr(extend, "_KEPT_FRAMES", kept)
        reads.clear()
        context, encoding, _, broken = extend._conditioning(None, colour, ceiling, items, video)
        assert sorted(reads) == sorted(["plate 1001", "plate 1002", "plate 1003", *twice])
        assert encoding == expected and encoding.ceiling > 30.0 and broken == 0      # raised by the last frame
        for got, plate in zip(context, plates):
            want = common.model_input(expected.to_model(plate), *got.shape[:2])
            assert np.abs(got - want).max() < 1e-5
