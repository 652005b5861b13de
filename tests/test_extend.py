"""Extend end to end: client -> ZeroMQ -> server -> tiny Wan VACE video pipeline with a LoRA -> EXR take.

The server here runs the embedded test video model with a 13-frame window, so a 30-frame extension is
three chunks. Plates are anamorphic (pixel aspect 2) ACEScg half EXRs with overbrights.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest

from bodydouble import errors
from bodydouble.client import Client
from bodydouble.jobspec import AdapterRef, ExtendRequest, FrameInput, ImageRef, sequence_frames
from bodydouble_server import samples
from bodydouble_server.operations import chunks
from bodydouble_server.imaging import seam

from .support import cancel_at_chunk, make_adapters, make_video_adapters, server_thread

WINDOW = 13
W, H = 96, 40          # 96 x 40 pixels at pixel aspect 2 look 192 x 40 wide


def write_plate(folder: Path, first: int, last: int) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for frame in range(first, last + 1):
        spec = oiio.ImageSpec(W, H, 4, oiio.HALF)
        spec.channelnames = ("R", "G", "B", "A")
        spec.attribute("PixelAspectRatio", 2.0)
        path = folder / f"sh040_plate.{frame:04d}.exr"
        out = oiio.ImageOutput.create(str(path))
        out.open(str(path), spec)
        out.write_image(samples.plate_pixels(W, H, frame))
        out.close()
    return str(folder / "sh040_plate.####.exr")


@pytest.fixture(scope="module")
def video_studio(tmp_path_factory):
    """A server with a 13-frame video window; image adapter 'hero', video adapters 'hero_video' and 'rival_video'."""
    from bodydouble_server.config import ServerConfig

    root = tmp_path_factory.mktemp("extend")
    adapters = root / "adapters"
    make_adapters(adapters, {"hero": 7})
    config = ServerConfig(port=0, roots=[str(root)], adapters=str(adapters), output_root=str(root / "takes"),
                          resolution=64, video_resolution=64, video_window=WINDOW)
    make_video_adapters(adapters, {"hero_video": 3, "rival_video": 5}, config)
    plate = write_plate(root / "sh040" / "plates", 1046, 1048)
    with server_thread(config) as server:
        yield {"root": root, "plate": plate, "address": server.bound_address, "server": server}


@pytest.fixture
def vclient(video_studio):
    with Client(video_studio["address"], timeout=60) as c:
        yield c


def extend(client, studio, count=3, first=1046, last=1048, **kw):
    request = ExtendRequest(frames=sequence_frames(studio["plate"], first, last), count=count,
                            **{"adapters": [AdapterRef("hero_video")], "prompt": "<hero_video> keeps walking",
                               "seed": 5, "steps": 2, "conditioning": 2, **kw})
    progress = []
    result = client.submit(request).wait(timeout=240, on_progress=progress.append)
    return result, progress


def header(path):
    image = oiio.ImageInput.open(str(path))
    spec = image.spec()
    pixels = image.read_image(oiio.FLOAT)
    image.close()
    return spec, {a.name: a.value for a in spec.extra_attribs if a.name.startswith("bodydouble:")}, pixels


# -- pure parts --------------------------------------------------------------------------------
def test_chunk_plan_conditions_on_the_tail_and_follows_the_frame_rule():
    plan = chunks.plan(30, conditioning=1, overlap=2, window=13, multiple=4)
    assert [(c.start, c.cond, c.overlap, c.new) for c in plan] == [(0, 1, 0, 12), (10, 1, 2, 10), (20, 1, 2, 8)]
    assert all(c.length <= 13 and (c.length - 1) % 4 == 0 for c in plan)
    assert sum(c.new for c in plan) == 30
    assert [c.pad for c in chunks.plan(3, 2, 2, 81, 4)] == [0]           # 2 + 3 = 5 = 4k+1
    assert [c.pad for c in chunks.plan(4, 2, 2, 81, 4)] == [3]           # 6 -> 9 frames, 3 dropped
    assert chunks.blend_weights(3).tolist() == [0.25, 0.5, 0.75]
    with pytest.raises(errors.RequestError, match="leaves no room"):
        chunks.plan(5, conditioning=13, overlap=0, window=13, multiple=4)
    with pytest.raises(errors.RequestError, match="overlap"):
        chunks.plan(40, conditioning=1, overlap=12, window=13, multiple=4)


def test_colour_match_takes_the_jump_out_of_the_seam():
    rng = np.random.default_rng(0)
    plate = rng.uniform(0.2, 0.6, (16, 16, 3)).astype(np.float32)
    drifted = np.clip(plate * 0.7 + [0.2, 0.0, -0.05], 0, 1).astype(np.float32)
    match = seam.ColourMatch.between(plate, drifted)
    before, after = seam.difference(plate, drifted), seam.difference(plate, match.apply(drifted[None])[0])
    assert max(map(abs, before["mean_diff"])) > 0.05 and max(map(abs, after["mean_diff"])) < 1e-3
    assert max(map(abs, after["std_diff"])) < 1e-3
    assert seam.ColourMatch().apply(drifted[None])[0] == pytest.approx(drifted)


# -- through the server ---------------------------------------------------------------------------
def test_hello_and_listing_know_the_video_model_and_its_adapters(vclient):
    info = vclient.connect()
    assert "extend" in info["operations"] and "fill" in info["operations"]
    video = info["model"]["video_model"]
    assert video["family"] == "wan-vace" and video["test_model"] and video["window"] == WINDOW
    adapters = {a.name: a.raw for a in vclient.list_adapters()}
    assert adapters["hero_video"]["status"] == "ready" and adapters["hero_video"]["model_kind"] == "video"
    assert adapters["hero"]["status"] == "ready" and adapters["hero"]["model_kind"] == "image"


def test_extend_writes_a_take_numbered_after_the_plate(vclient, video_studio):
    result, progress = extend(vclient, video_studio, output_dir=str(video_studio["root"] / "sh040"))
    take_dir = Path(result.take_dir)
    assert take_dir.parent == video_studio["root"] / "sh040" / "bodydouble" / "hero_video"
    assert (result.first, result.last) == (1049, 1051) and sorted(result.frames) == [1049, 1050, 1051]
    take = json.loads((take_dir / "take.json").read_text())
    assert take["status"] == "complete" and take["operation"] == "extend"
    assert [f["frame"] for f in take["request"]["frames"]] == [1046, 1047, 1048] and take["request"]["count"] == 3
    assert [(p.raw["chunk"], p.step) for p in progress] == [(1, 1), (1, 2)]
    assert progress[-1].fraction == pytest.approx(1.0)
    assert result.info["conditioning_frames"] == [1047, 1048] and result.info["size"] == [64, 16]
    seam_qc = result.info["seam"]
    assert set(seam_qc["before"]) == {"mean_diff", "std_diff"} and len(seam_qc["correction"]["gain"]) == 3
    assert max(map(abs, seam_qc["after"]["mean_diff"])) <= max(map(abs, seam_qc["before"]["mean_diff"])) + 1e-6
    plate_spec, _, _ = header(video_studio["plate"].replace("####", "1048"))
    for frame in (1049, 1050, 1051):
        path = Path(result.frames[frame])
        assert path.name == f"sh040_hero_video_take{result.take:03d}.{frame}.exr"
        spec, attrs, pixels = header(path)
        assert (spec.width, spec.height, spec.format) == (plate_spec.width, plate_spec.height, oiio.HALF)
        assert list(spec.channelnames) == ["R", "G", "B", "A"]
        assert spec.get_float_attribute("PixelAspectRatio") == 2.0
        assert np.isfinite(pixels).all() and (pixels[:, :, 3] == 1.0).all()
        assert attrs["bodydouble:operation"] == "extend" and attrs["bodydouble:frame"] == frame
        assert attrs["bodydouble:conditioning_frames"] == "1047,1048"
        assert attrs["bodydouble:adapter"] == "hero_video" and len(attrs["bodydouble:adapter_sha256"]) == 64
        assert attrs["bodydouble:base_model_family"] == "wan-vace" and attrs["bodydouble:test_model"] == 1
        assert "TEST MODEL" in attrs["bodydouble:base_model"]
        assert attrs["bodydouble:seed"] == 5 and attrs["bodydouble:steps"] == 2 and attrs["bodydouble:fps"] == 24.0
        assert attrs["bodydouble:source"].endswith("sh040_plate.1048.exr")
        assert len(attrs["bodydouble:colour_match_gain"].split(",")) == 3 and "bodydouble:seam_mean_diff" in attrs
        assert attrs["bodydouble:tool_version"] and attrs["bodydouble:time"]


def test_three_chunk_extension_blends_its_overlaps(vclient, video_studio):
    result, progress = extend(vclient, video_studio, count=30, conditioning=1, overlap=2, return_pixels=True)
    assert (result.first, result.last) == (1049, 1078) and len(result.frames) == 30
    assert [(c["first"], c["last"], c["overlap"]) for c in result.info["chunks"]] == [
        (1049, 1060, 0), (1059, 1070, 2), (1069, 1078, 2)]
    assert [p.raw["chunk"] for p in progress] == [1, 1, 2, 2, 3, 3]
    assert [p.message for p in progress][2] == "chunk 2/3: step 1/2"
    assert all(a.fraction <= b.fraction for a, b in zip(progress, progress[1:]))
    # overlap frames were rewritten by the next chunk: chunk 2's for 1059-1060, chunk 3's for 1069-1070
    chunk_of = {f: header(p)[1]["bodydouble:chunk"] for f, p in result.frames.items()}
    assert [chunk_of[f] for f in (1058, 1059, 1060, 1061, 1068, 1069, 1070, 1071)] == [1, 2, 2, 2, 2, 3, 3, 3]
    assert json.loads((Path(result.take_dir) / "take.json").read_text())["status"] == "complete"
    assert result.pixels[1078].shape == (H, W, 4) and result.pixels[1078].dtype == np.float16


def test_same_seed_reproduces_from_buffers_without_colour_match(vclient, video_studio):
    plate = [samples.plate_pixels(W, H, f).astype(np.float16) for f in (1, 2)]
    frames = [FrameInput(frame=f, plate=ImageRef(pixels=pixels)) for f, pixels in zip((1, 2), plate)]
    request = ExtendRequest(frames=frames, count=2, conditioning=2, adapters=[AdapterRef("rival_video")], seed=9,
                            steps=2, colour_match=False, shot="sh041", return_pixels=True)
    a = vclient.submit(request).wait(timeout=120)
    b = vclient.submit(request).wait(timeout=120)
    assert (a.first, a.last) == (3, 4) and b.take == a.take + 1
    assert np.array_equal(a.pixels[3], b.pixels[3]) and a.pixels[3].shape == (H, W, 4)
    assert a.info["seam"]["correction"] == {"gain": [1.0, 1.0, 1.0], "offset": [0.0, 0.0, 0.0]}
    assert a.info["seam"]["after"] == a.info["seam"]["before"]


def test_cancel_mid_way_keeps_finished_chunks_and_never_completes(vclient, video_studio):
    request = ExtendRequest(frames=sequence_frames(video_studio["plate"], 1046, 1048), count=30, conditioning=1,
                            adapters=[AdapterRef("hero_video")], steps=3, seed=1, shot="sh042")
    take_dir, take = cancel_at_chunk(vclient, request)
    assert take["status"] == "cancelled"
    written = sorted(int(f) for f in take["frames"])
    assert written == list(range(1049, 1061)), "chunk 1 (12 frames) on disk, nothing of chunk 2"
    assert len(list(take_dir.glob("*.exr"))) == 12 and not list(take_dir.glob(".*tmp*"))


def test_an_image_adapter_is_refused_on_the_video_model(vclient, video_studio):
    with pytest.raises(errors.AdapterIncompatible) as caught:
        extend(vclient, video_studio, adapters=[AdapterRef("hero")])
    message = str(caught.value)
    assert "'hero'" in message and "trained for an image model (sd15)" in message
    assert "video model" in message and "wan-vace" in message
    with pytest.raises(errors.AdapterIncompatible, match="video model"):   # and the other way round, for fill
        from bodydouble.jobspec import FillRequest

        vclient.submit(FillRequest(frames=sequence_frames(video_studio["plate"], 1048, 1048),
                                   adapters=[AdapterRef("hero_video")], steps=1)).wait(timeout=60)
    assert vclient.heartbeat()["state"] == "ready"


@pytest.mark.parametrize("changes, match", [
    ({"conditioning": 0}, "conditioning must be in 1..3"),
    ({"conditioning": 4}, "conditioning must be in 1..3"),
    ({"count": 0}, "count must be in 1..1000"),
    ({"count": 1001}, "count must be in 1..1000"),
    ({"count": 40, "conditioning": 3, "overlap": 10}, "does not fit the video model's window of 13"),
    ({"fps": 0.0}, "fps must be in"),
])
def test_bad_k_n_and_window_values_are_clear_errors(vclient, video_studio, changes, match):
    with pytest.raises(errors.RequestError, match=match) as caught:
        extend(vclient, video_studio, **changes)
    assert caught.value.code == errors.INVALID_REQUEST


def test_k_beyond_the_window_and_unreadable_plates(vclient, video_studio):
    frames = [FrameInput(frame=f, plate=ImageRef(pixels=np.zeros((8, 8, 3), np.float16))) for f in range(14)]
    with pytest.raises(errors.RequestError, match="leaves no room for new frames") as caught:
        vclient.submit(ExtendRequest(frames=frames, count=2, conditioning=13)).wait(timeout=60)
    assert caught.value.code == errors.INVALID_REQUEST
    missing = sequence_frames(video_studio["plate"], 1046, 1049)    # 1049 does not exist
    with pytest.raises(errors.RequestError) as caught:
        vclient.submit(ExtendRequest(frames=missing, count=2)).wait(timeout=60)
    assert caught.value.code == errors.UNREADABLE_FILE and "1049" in str(caught.value)
    mixed = [FrameInput(frame=1, plate=ImageRef(pixels=np.zeros((8, 8, 3), np.float16))),
             FrameInput(frame=2, plate=ImageRef(pixels=np.zeros((8, 16, 3), np.float16)))]
    with pytest.raises(errors.RequestError, match="must share one size"):
        vclient.submit(ExtendRequest(frames=mixed, count=2, conditioning=2)).wait(timeout=60)


def test_a_server_without_a_video_model_says_extend_is_not_supported(tmp_path):
    from bodydouble_server.config import ServerConfig
    from bodydouble_server.engine import Engine

    engine = Engine(ServerConfig(port=0, roots=[str(tmp_path)], adapters=str(tmp_path / "a"), video_model="none"))
    engine.load()
    assert engine.operations == ["fill", "train"]
    with pytest.raises(errors.RequestError, match="no video model") as caught:
        engine.video_model()
    assert caught.value.code == errors.NOT_SUPPORTED
    broken = Engine(ServerConfig(port=0, roots=[str(tmp_path)], adapters=str(tmp_path / "a"),
                                 video_model=str(tmp_path)))
    broken.load()                                   # fill still works; extend says why not
    with pytest.raises(errors.RequestError, match="video model is unavailable") as caught:
        broken.video_model()
    assert caught.value.code == errors.MODEL_UNAVAILABLE and broken.pipelines["fill"] is not None


def test_cli_extend(video_studio):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    run = subprocess.run([sys.executable, "-m", "bodydouble", "extend", "--server", video_studio["address"],
                          "--plate", video_studio["plate"], "--frames", "1046-1048", "--count", "2",
                          "--conditioning", "1", "--adapter", "hero_video", "--steps", "1", "--seed", "4", "--json"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert (out["first"], out["last"]) == (1049, 1050) and Path(out["take_dir"]).is_dir()
    assert set(out["seam"]) >= {"before", "after", "correction"} and "100.0%" in run.stderr
