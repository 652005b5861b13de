"""Bounded inputs: strings, frame numbers and ranges, through the real client, the real server and the real CLI;
hypothesis for the string rules and the composite's treatment of any pixel value."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import OpenEXR
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bodydouble import codec, errors
from bodydouble.client import Client
from bodydouble.jobspec import (TEXT_LIMITS, ExtendRequest, FillRequest, FrameInput, ImageRef, expand_pattern,
                                parse_frame_range, split_frame)

from . import hostile
from .support import server_thread

H, W = 32, 48


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from bodydouble_server.config import ServerConfig
    from bodydouble_server.models import testing

    root = tmp_path_factory.mktemp("hostile-requests")
    before = os.environ.get(testing.STEP_ENV)
    os.environ[testing.STEP_ENV] = "0"
    plates = root / "plates"
    plates.mkdir()
    for frame in (-2, -1, 2_147_483_000):
        name = expand_pattern("plate.####.exr", frame)
        hostile.aov_plate(plates / name, H, W, seed=abs(frame) % 97)
        hostile.mask(plates / name.replace("plate", "mask"), (slice(8, 24), slice(12, 36)), H, W)
    config = ServerConfig(port=0, model="test:standin", video_model="test:standin", roots=[str(root)],
                          adapters=str(root / "adapters"), output_root=str(root / "takes"), resolution=64)
    try:
        # A long heartbeat: on a loaded CI box a busy server may miss 1 s beats; liveness is not what is tested here.
        with server_thread(config) as srv, Client(srv.bound_address, timeout=30, heartbeat_interval=3.0) as client:
            client.wait_ready()
            yield {"root": root, "client": client, "address": srv.bound_address, "plates": plates}
    finally:
        if before is None:
            os.environ.pop(testing.STEP_ENV, None)
        else:
            os.environ[testing.STEP_ENV] = before


def refused(served, request) -> errors.RequestError:
    before = sorted(served["root"].glob("**/take_*"))
    with pytest.raises(errors.RequestError) as caught:
        served["client"].submit(request).wait(timeout=60)
    assert sorted(served["root"].glob("**/take_*")) == before, "a refused request left a take folder"
    assert served["client"].heartbeat()["state"] == "ready"
    return caught.value


def test_strings_are_capped_and_must_be_text(served):
    plate = str(served["plates"] / "plate.-0002.exr")
    mask = str(served["plates"] / "mask.-0002.exr")

    def request(**fields):
        return FillRequest(frames=[FrameInput(-2, ImageRef(path=plate), ImageRef(path=mask))], steps=1, **fields)

    assert refused(served, request(prompt="p" * (TEXT_LIMITS["prompt"] + 1))).code == "too_large"
    assert refused(served, request(prompt="a hero\x00 and more")).code == "invalid_request"
    assert refused(served, request(negative_prompt="bad \ud800 text")).code == "invalid_request"
    assert refused(served, request(mask_channel="A" * 300)).code == "too_large"
    assert refused(served, request(colorspace="NoSuchSpace")).code == "unknown_colorspace"
    # A prompt at the cap is accepted and lands whole in the header.
    prompt = "é" * TEXT_LIMITS["prompt"]
    result = served["client"].submit(request(prompt=prompt)).wait(timeout=60)
    header = OpenEXR.File(result.frames[-2], header_only=True).parts[0].header
    assert header["bodydouble:prompt"] == prompt


def test_frame_numbers_are_limited_to_what_exr_holds(served):
    plate = str(served["plates"] / expand_pattern("plate.####.exr", 2_147_483_000))
    huge = FillRequest(frames=[FrameInput(2**31, ImageRef(path=plate))], steps=1)
    assert "2147483648" in refused(served, huge).message
    past = ExtendRequest(frames=[FrameInput(2_147_483_000, ImageRef(path=plate))], count=1000, steps=1)
    assert refused(served, past).code == "invalid_request"


def test_negative_frames_are_named_one_way_through_the_cli(served):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    pattern = str(served["plates"] / "plate.####.exr")
    run = subprocess.run([sys.executable, "-m", "bodydouble", "fill", "--server", served["address"],
                          "--plate", pattern, "--mask", pattern.replace("plate.", "mask."), "--frames=-2--1",
                          "--steps", "1", "--json"], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert (out["first"], out["last"]) == (-2, -1)
    for frame in (-2, -1):
        path = Path(expand_pattern(out["pattern"], frame))
        assert path.is_file() and path.name.endswith(f".-000{-frame}.exr")
        assert split_frame(str(path)) == (out["pattern"], frame)
    bad = subprocess.run([sys.executable, "-m", "bodydouble", "fill", "--server", served["address"],
                          "--plate", pattern, "--frames=1001-x"], capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "frame range" in bad.stderr


@given(st.integers(-(2**31) + 1, 2**31 - 1), st.integers(0, 100), st.integers(1, 8))
def test_printed_ranges_parse_back(first, length, padding):
    last = min(first + length, 2**31 - 1)
    assert parse_frame_range(f"{first}-{last}") == (first, last)
    assert split_frame(expand_pattern(f"/s/plate.{'#' * padding}.exr", first))[1] == first


@settings(max_examples=200)
@given(st.text(max_size=40))
def test_any_prompt_is_accepted_or_refused_with_a_code(text):
    body = {"frames": [{"frame": 1, "plate": {"path": "/p.exr"}}], "prompt": text}
    try:
        request = codec.from_wire(FillRequest, body, [])
    except errors.RequestError as exc:
        assert exc.code in {"invalid_request", "too_large"}
        assert "\x00" in text or any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    else:
        request.prompt.encode("utf-8")
        assert "\x00" not in request.prompt


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=16), min_size=12, max_size=12),
       st.lists(st.sampled_from([0.0, 0.25, 1.0]), min_size=4, max_size=4))
def test_composite_keeps_untouched_bits_and_never_mixes_a_non_finite_plate_in(values, weights):
    from bodydouble_server.imaging import regions

    plate = np.array(values, np.float32).reshape(2, 2, 3)
    weight = np.array(weights, np.float32).reshape(2, 2)
    generated = np.full((2, 2, 3), 0.5, np.float32)
    out = regions.composite(plate, generated, weight)
    untouched = weight == 0
    assert np.array_equal(out[untouched].view(np.uint32), plate[untouched].view(np.uint32))
    assert np.array_equal(out[weight >= 1], generated[weight >= 1])
    blended = (weight > 0) & (weight < 1)
    finite = np.isfinite(plate).all(axis=2)
    assert np.isfinite(out[blended & finite]).all()
