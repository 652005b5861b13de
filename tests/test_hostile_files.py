"""Plates and masks as pipelines (and accidents) write them, through the real server and the real client.

The server runs the test-only stand-in model (deterministic pixels unlike the plate, no sleeping), so a pixel
the fill touched differs from the plate and one it did not is bit-identical. Files come from tests/hostile.py.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import OpenEXR
import pytest

from bodydouble import errors
from bodydouble.client import Client
from bodydouble.jobspec import ExtendRequest, FillRequest, FrameInput, ImageRef

from . import hostile
from .support import server_thread

H, W = 48, 64
BOX = (slice(16, 32), slice(24, 40))          # the mask, in the plate's array coordinates


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from bodydouble_server.config import ServerConfig
    from bodydouble_server.models import testing

    root = tmp_path_factory.mktemp("hostile")
    before = os.environ.get(testing.STEP_ENV)
    os.environ[testing.STEP_ENV] = "0"
    config = ServerConfig(port=0, model="test:standin", video_model="test:standin", roots=[str(root)],
                          adapters=str(root / "adapters"), output_root=str(root / "takes"), resolution=64)
    try:
        # A long heartbeat: on a loaded CI box a busy server may miss 1 s beats; liveness is not what is tested here.
        with server_thread(config) as srv, Client(srv.bound_address, timeout=30, heartbeat_interval=3.0) as client:
            client.wait_ready()
            yield {"root": root, "client": client}
    finally:
        if before is None:
            os.environ.pop(testing.STEP_ENV, None)
        else:
            os.environ[testing.STEP_ENV] = before


@pytest.fixture
def work(served, request) -> Path:
    """A folder inside the server's root for this test's files."""
    folder = served["root"] / "files" / request.node.name.replace("[", "_").replace("]", "")
    folder.mkdir(parents=True)
    return folder


def fill(served, plate: Path, mask: Path | None = None, frame: int = 1, **fields):
    request = FillRequest(frames=[FrameInput(frame, ImageRef(path=str(plate)),
                                             ImageRef(path=str(mask)) if mask else None)],
                          steps=2, feather=0, **fields)
    return served["client"].submit(request).wait(timeout=60)


def parts(path) -> list:
    return OpenEXR.File(str(path), separate_channels=True).parts


def bits(array: np.ndarray) -> np.ndarray:
    return array.view({2: np.uint16, 4: np.uint32}[array.dtype.itemsize])


def take_folders(root: Path) -> list[Path]:
    return sorted(root.glob("**/take_*"))


def test_every_part_channel_type_and_window_is_kept(served, work):
    """Offset data window, larger display window, half RGBA + float Z + uint32 ids + a depth part, and an
    autocropped mask (data window = the box only): the fill lands exactly in the mask; all else keeps its bits."""
    origin, display = (10, 6), (W + 30, H + 20)
    plate = work / "render.0001.exr"
    written = hostile.aov_plate(plate, H, W, seed=3, origin=origin, display=display, depth_part=True)
    # The mask file holds only the box, placed by its data window in display space.
    crop = work / "roto.0001.exr"
    box_h, box_w = BOX[0].stop - BOX[0].start, BOX[1].stop - BOX[1].start
    hostile.mask(crop, (slice(None), slice(None)), box_h, box_w,
                 origin=(origin[0] + BOX[1].start, origin[1] + BOX[0].start), display=display)
    result = fill(served, plate, crop, mask_channel="A")
    out = parts(result.frames[1])
    source = parts(plate)
    assert [p.name() for p in out] == ["beauty", "depth"]
    for got, want in zip(out, source):
        for key in ("dataWindow", "displayWindow"):
            assert all(np.array_equal(a, b) for a, b in zip(got.header[key], want.header[key]))
        assert got.channels.keys() == want.channels.keys()
    beauty = {n: c.pixels for n, c in out[0].channels.items()}
    for name in ("A", "Z", "id"):
        assert beauty[name].dtype == written[name].dtype
        assert np.array_equal(bits(beauty[name]), bits(written[name])), name
    assert np.array_equal(out[1].channels["depth.Z"].pixels, source[1].channels["depth.Z"].pixels)
    inside = np.zeros((H, W), bool)
    inside[BOX] = True
    for name in "RGB":
        assert beauty[name].dtype == np.float16
        same = bits(beauty[name]) == bits(written[name])
        assert same[~inside].all(), f"{name} changed outside the mask"
        assert not same[inside].any(), f"{name} not filled inside the mask"
    header = out[0].header
    assert header["bodydouble:nonfinite_filled"] == 0 and header["bodydouble:nonfinite_context"] == 0


def test_a_mask_with_its_own_window_lines_up_and_a_disjoint_one_is_empty(served, work):
    plate = work / "plate.0001.exr"
    written = hostile.aov_plate(plate, H, W, seed=4)
    # A full-size mask whose data window is shifted right by 8: its box lands 8 px right in display space.
    shifted = hostile.mask(work / "shifted.0001.exr", BOX, H, W, origin=(8, 0))
    out = {n: c.pixels for n, c in parts(fill(served, plate, shifted).frames[1])[0].channels.items()}
    inside = np.zeros((H, W), bool)
    inside[BOX[0], BOX[1].start + 8:BOX[1].stop + 8] = True
    changed = bits(out["R"]) != bits(written["R"])
    assert np.array_equal(changed, inside)
    far = hostile.mask(work / "far.0001.exr", BOX, H, W, origin=(500, 500), display=(W, H))
    with pytest.raises(errors.RequestError) as caught:
        fill(served, plate, far)
    assert caught.value.code == "empty_mask"


@pytest.mark.parametrize("colorspace", ["ACEScg", "Raw"])
def test_non_finite_pixels_are_filled_inside_and_never_spread(served, work, colorspace):
    plate = work / f"nan_{colorspace}.0001.exr"
    inside = [(20, 30), (17, 25)]                  # in the mask
    context = [(12, 30), (20, 20)]                 # in the model's crop (context 0.5), outside the mask
    outside = [(2, 2)]                             # outside the crop
    written = hostile.aov_plate(plate, H, W, seed=5, nan_at=inside + context + outside, inf_at=[(24, 33)])
    mask = hostile.mask(work / f"nanmask_{colorspace}.0001.exr", BOX, H, W, nan_rows=[40])
    result = fill(served, plate, mask, colorspace=colorspace, context=0.5)
    out = {n: c.pixels for n, c in parts(result.frames[1])[0].channels.items()}
    for name in "RGB":
        assert np.isfinite(out[name][BOX]).all(), f"{name}: non-finite left inside the mask"
        keep = np.ones((H, W), bool)
        keep[BOX] = False
        assert np.array_equal(bits(out[name])[keep], bits(written[name])[keep])   # NaN kept, bit for bit
    header = parts(result.frames[1])[0].header
    assert header["bodydouble:nonfinite_filled"] == 3          # two NaN + one Inf inside the mask
    assert header["bodydouble:nonfinite_context"] == 2
    assert header["bodydouble:nonfinite_mask"] == W            # the NaN row of the matte: no coverage
    take = json.loads((Path(result.take_dir) / "take.json").read_text())
    assert take["status"] == "complete"
    assert take["nonfinite"]["total"] == {"nonfinite_filled": 3, "nonfinite_context": 2, "nonfinite_mask": W}
    assert result.info["nonfinite"]["nonfinite_filled"] == 3


def test_non_finite_wire_buffers_follow_the_same_policy(served):
    plate = np.ones((32, 32, 4), np.float32)
    plate[..., :3] = 0.25
    plate[8:24, 8:24, :3] = np.nan
    mask = np.zeros((32, 32), np.float32)
    mask[8:24, 8:24] = 1.0
    request = FillRequest(frames=[FrameInput(1, ImageRef(pixels=plate), ImageRef(pixels=mask))], steps=1,
                          feather=0, return_pixels=True, colorspace="Raw")
    result = served["client"].submit(request).wait(timeout=60)
    pixels = result.pixels[1]
    assert np.isfinite(pixels).all()
    assert np.array_equal(pixels[0, 0], plate[0, 0])


def _refusal(served, plate: Path, mask: Path | None = None) -> str:
    before = take_folders(served["root"])
    with pytest.raises(errors.RequestError) as caught:
        fill(served, plate, mask)
    assert take_folders(served["root"]) == before, "a refused plate left a take folder"
    assert served["client"].heartbeat()["state"] == "ready"
    return caught.value.code


def test_hostile_files_are_refused_with_codes_and_leave_no_take(served, work):
    good = work / "good.0001.exr"
    hostile.aov_plate(good, H, W, seed=6)
    mask = hostile.mask(work / "m.0001.exr", BOX, H, W)
    cases = {
        "garbage": (hostile.garbage(work / "garbage.exr"), {"unreadable_file"}),
        "not an image": (hostile.garbage(work / "noise.exr", magic=False), {"unreadable_file"}),
        "truncated": (hostile.truncated(good, work / "truncated.exr"), {"unreadable_file"}),
        "huge header": (hostile.crafted_size(good, work / "huge.exr", 100_000, 100_000), {"too_large"}),
        "fifo": (hostile.fifo(work / "fifo.exr"), {"unreadable_file"}),
        "dev zero": (hostile.link(work / "zero.exr", "/dev/zero"), {"path_not_allowed", "unreadable_file"}),
        "folder": (work / "folder.exr", {"unreadable_file"}),
    }
    (work / "folder.exr").mkdir()
    for what, (path, codes) in cases.items():
        assert _refusal(served, path, mask) in codes, what
        assert _refusal(served, good, path) in codes, f"{what} as the mask"


def test_an_id_only_plate_and_a_mask_of_another_format_are_refused(served, work):
    ids = hostile.exr(work / "ids.exr", {"id": np.ones((H, W), np.uint32)})
    assert _refusal(served, ids) in {"empty_mask", "invalid_request"}
    plate = work / "p.0001.exr"
    hostile.aov_plate(plate, H, W)
    other = hostile.mask(work / "half_res.0001.exr", BOX, H // 2, W // 2)
    assert _refusal(served, plate, other) == "invalid_request"


def test_extend_from_a_nan_plate_in_raw_always_answers_with_finite_frames(served, work):
    plates = []
    for frame in (1, 2):
        path = work / f"clip.{frame}.exr"
        hostile.aov_plate(path, 64, 128, seed=frame, nan_at=[(5, 5)] if frame == 2 else ())
        plates.append(FrameInput(frame, ImageRef(path=str(path))))
    result = served["client"].submit(ExtendRequest(frames=plates, count=4, conditioning=2, steps=1,
                                                   colorspace="Raw")).wait(timeout=60)
    assert sorted(result.frames) == [3, 4, 5, 6]
    for path in result.frames.values():
        beauty = parts(path)[0]
        for name in "RGB":
            assert np.isfinite(beauty.channels[name].pixels).all()
        assert beauty.channels["id"].pixels.dtype == np.uint32        # the plate's layout, every channel typed
        assert beauty.header["bodydouble:nonfinite_context"] == 1
    assert json.loads((Path(result.take_dir) / "take.json").read_text())["status"] == "complete"
    assert all(np.isfinite(v) for v in result.info["seam"]["before"]["mean_diff"])
