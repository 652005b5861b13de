"""Strict request decoding: every bad field is named in the error."""
import numpy as np
import pytest

from bodydouble import codec, errors
from bodydouble.jobspec import AdapterRef, ExtendRequest, FillRequest, FrameInput, ImageRef, expand_pattern, sequence_frames, split_frame


def wire(request):
    buffers, meanings = [], []
    return codec.to_wire(request, buffers, meanings), buffers


def test_fill_request_round_trip_with_paths_and_pixels():
    pixels = np.zeros((8, 8, 4), np.float16)
    req = FillRequest(frames=[FrameInput(1001, ImageRef(path="/a/p.1001.exr")), FrameInput(1002, ImageRef(pixels=pixels))],
                      adapters=[AdapterRef("hero", 0.8)], prompt="p", seed=3)
    body, buffers = wire(req)
    assert body["frames"][1]["plate"] == {"path": None, "pixels": {"buffer": 0}}
    back = codec.from_wire(FillRequest, body, buffers)
    assert back.frames[1].plate.pixels is pixels and back.adapters[0].weight == 0.8 and back.seed == 3


@pytest.mark.parametrize("mutate, fragment", [
    (lambda b: b.update(steps="20"), "steps: expected int"),
    (lambda b: b.update(steps=True), "steps: expected int"),
    (lambda b: b.update(stepz=20), "unknown fields ['stepz']"),
    (lambda b: b.pop("frames"), "frames: is required"),
    (lambda b: b.update(frames=[]), "'frames' is empty"),
    (lambda b: b.update(strength=1.5), "strength must be in (0, 1]"),
    (lambda b: b.update(steps=0), "steps must be in 1..500"),
    (lambda b: b["frames"][0].update(plate={"path": None, "pixels": None}), "exactly one"),
    (lambda b: b["frames"][0].update(plate={"pixels": {"buffer": 9}}), "buffer 9 was not sent"),
    (lambda b: b.update(shot="../../etc"), "shot name"),
    (lambda b: b.update(adapters=[{"name": "a"}, {"name": "a"}]), "named twice"),
    (lambda b: b.update(adapters=[{"name": "a", "weight": 99}]), "outside [-4, 4]"),
])
def test_bad_fields_are_refused_by_name(mutate, fragment):
    body, buffers = wire(FillRequest(frames=[FrameInput(1, ImageRef(path="/x.exr"))]))
    mutate(body)
    with pytest.raises(errors.RequestError) as info:
        codec.from_wire(FillRequest, body, buffers)
    assert info.value.code == "invalid_request"
    assert fragment in str(info.value)


def test_extend_request_validation():
    frames = [FrameInput(f, ImageRef(path=f"/p.{f}.exr")) for f in (1, 2, 3)]
    body, buffers = wire(ExtendRequest(frames=frames, count=4, conditioning=2))
    assert codec.from_wire(ExtendRequest, body, buffers).count == 4
    body["conditioning"] = 5
    with pytest.raises(errors.RequestError, match="conditioning must be in 1..3"):
        codec.from_wire(ExtendRequest, body, buffers)


def test_patterns():
    assert expand_pattern("/s/p.####.exr", 1001) == "/s/p.1001.exr"
    assert expand_pattern("/s/p.%04d.exr", 7) == "/s/p.0007.exr"
    assert expand_pattern("/s/p.$F3.exr", 7) == "/s/p.007.exr"
    frames = sequence_frames("/s/p.####.exr", 1, 3, "/s/m.####.exr")
    assert [f.frame for f in frames] == [1, 2, 3] and frames[2].mask.path == "/s/m.0003.exr"
    # The last digits of the file name are the frame, never the folder's or the version's.
    assert split_frame("/show/v002/sh010_plate_v3.1001.exr") == ("/show/v002/sh010_plate_v3.####.exr", 1001)
    assert split_frame("/show/sh010/plate.exr") == ("/show/sh010/plate.exr", None)
    pattern, number = split_frame("/s/p.0042.exr")
    assert expand_pattern(pattern, number) == "/s/p.0042.exr"
