"""The model encoding and colour-space names (imaging/colour.py), without a server: bounds, order, exactness.

Numbers: the default config's ACES 2.0 SDR view; its own inverse sends display 1.0 to ~128 (FIELD-NOTES).
Round trips are held to 1e-3 relative: OCIO's float32 view + inverse is ~3e-4 (bench/colour_encoding.py).
"""
from __future__ import annotations

import numpy as np
import pytest

from bodydouble import errors
from bodydouble.jobspec import FillRequest, sequence_frames
from bodydouble_server.imaging import colour
from bodydouble_server.imaging.colour import ColourTransform


def _neutral(values) -> np.ndarray:
    return np.repeat(np.asarray(values, np.float32)[:, None], 3, axis=1)


@pytest.mark.parametrize("ceiling", [1.0, 6.0, 16.0, 100.0])
def test_every_model_pixel_comes_back_at_or_below_the_ceiling(ceiling):
    encoding = ColourTransform("ACEScg").encoding(0.0, ceiling)
    rng = np.random.default_rng(1)
    pixels = np.concatenate([rng.uniform(0, 1, (20000, 3)), np.eye(3), np.ones((1, 3)),
                             rng.uniform(0.95, 1.0, (2000, 3))]).astype(np.float32)
    back = encoding.from_model(pixels)
    assert back.max() <= ceiling and np.isfinite(back).all()
    assert encoding.from_model(_neutral([1.0]))[0] == pytest.approx(ceiling, rel=1e-3)    # white is the ceiling
    plain = ColourTransform("ACEScg")._apply(_neutral([1.0]), inverse=True)[0, 0]
    assert plain > 100.0, "the view's own inverse is what needed bounding"


@pytest.mark.parametrize("tint", [(1.0, 1.0, 1.0), (1.0, 0.93, 0.85), (0.85, 0.95, 1.0)])
def test_near_white_gradients_stay_monotonic_and_distinct(tint):
    encoding = ColourTransform("ACEScg").encoding()
    ramp = np.linspace(0.9, 1.0, 501, dtype=np.float32)[:, None] * np.asarray(tint, np.float32)
    back = encoding.from_model(ramp)
    steps = np.diff(back, axis=0)
    assert np.all(steps >= 0)
    # Unlike a cap, the top keeps its gradation: the neutral channel rises at every step up to white.
    assert np.all(np.diff(back[:, int(np.argmax(tint))]) > 0)


def test_plate_values_round_trip_up_to_the_crops_own_maximum_and_below_the_knee_nothing_changes():
    transform = ColourTransform("ACEScg")
    rng = np.random.default_rng(2)
    lum = np.exp(rng.uniform(np.log(0.002), np.log(60.0), (5000, 1)))
    crop = (lum * rng.uniform(0.75, 1.25, (5000, 3))).astype(np.float32)
    encoding, pixels = transform.encode(crop, ceiling=16.0)
    assert encoding.ceiling == pytest.approx(float(crop.max()))          # the crop's 70+ raises the ceiling
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    back = encoding.from_model(pixels)
    assert np.all(np.abs(back - crop) <= 1e-3 * np.maximum(np.abs(crop), 1.0))
    low = _neutral(np.linspace(0.0, 3.9, 50))
    assert np.allclose(transform.encoding().to_model(low), transform.to_model(low), atol=1e-6)


def test_raw_is_left_alone():
    encoding, pixels = ColourTransform("Non-Color").encode(np.full((4, 3), 0.25, np.float32))
    assert np.array_equal(pixels, np.full((4, 3), 0.25, np.float32))
    assert np.array_equal(encoding.from_model(pixels), pixels)


def test_the_model_making_nan_fails_the_frame():
    with pytest.raises(errors.RequestError) as info:
        ColourTransform("ACEScg").encoding().from_model(np.array([[np.nan, 0, 0]], np.float32))
    assert info.value.code == errors.JOB_FAILED


@pytest.mark.parametrize("name, expected", [
    ("ACEScg", "ACEScg"), ("acescg", "ACEScg"), ("ACES - ACEScg", "ACEScg"), ("scene_linear", "ACEScg"),
    ("Linear Rec.709", "Linear Rec.709 (sRGB)"), ("linear", "Linear Rec.709 (sRGB)"),
    ("sRGB", "sRGB Encoded Rec.709 (sRGB)"), ("Linear DCI-P3 D65", "Linear P3-D65"),
    ("Gamma2.2", "Gamma 2.2 Encoded Rec.709"), ("Non-Color", "raw"), ("data", "raw"), ("Raw", "raw"),
])
def test_host_names_resolve_against_the_config(name, expected):
    assert colour.resolve(name) == expected


def test_unknown_name_lists_every_valid_name():
    with pytest.raises(errors.RequestError) as info:
        colour.resolve("AgX Log")
    config, known = colour.config_in_use()
    assert info.value.code == errors.UNKNOWN_COLORSPACE
    assert info.value.details["valid"] == list(known) and all(n in info.value.message for n in known)


def test_the_ceiling_is_a_checked_request_field():
    frames = sequence_frames("/p/plate.####.exr", 1, 1)
    assert FillRequest(frames=frames).highlight_ceiling == colour.DEFAULT_CEILING == 16.0
    for bad in (0.5, 1e6):
        with pytest.raises(ValueError, match="highlight_ceiling"):
            FillRequest(frames=frames, highlight_ceiling=bad).validate()


def test_a_saturated_light_the_view_clips_does_not_switch_the_stretch_off():
    crop = np.array([[2.0, 0.1, 0.1], [16.0, 14.0, 12.0], [0.18, 0.18, 0.18]], np.float32)   # red: view white
    encoding, pixels = ColourTransform("ACEScg").encode(crop)
    assert encoding.top < 0.99 and encoding.ceiling == 16.0
    assert np.allclose(encoding.from_model(pixels)[1:], crop[1:], rtol=1e-3)
    assert encoding.from_model(_neutral([0.99]))[0, 0] < 14.0     # near white stays well conditioned
