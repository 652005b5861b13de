"""Pixel plumbing: boxes, model sizes, feathering, colour round trips, EXR writing."""
import numpy as np
import OpenImageIO as oiio
import pytest

from bodydouble import errors
from bodydouble.protocol import Limits
from bodydouble_server.imaging import frames, regions
from bodydouble_server.imaging.colour import ColourTransform


def test_mask_box_and_context():
    mask = np.zeros((100, 200), np.float32)
    mask[40:60, 150:170] = 1
    box = regions.mask_box(mask)
    assert (box.y0, box.y1, box.x0, box.x1) == (40, 60, 150, 170)
    grown = regions.context_box(box, 100, 200, context=0.5)
    assert (grown.y0, grown.y1, grown.x0, grown.x1) == (30, 70, 140, 180)
    clipped = regions.context_box(regions.Box(0, 10, 190, 200), 100, 200, context=2.0)
    assert clipped.y0 == 0 and clipped.x1 == 200
    with pytest.raises(errors.RequestError) as info:
        regions.mask_box(np.zeros((4, 4)))
    assert info.value.code == "empty_mask"


def test_a_shots_crops_are_each_frames_own_crop_at_the_shots_largest_size():
    """regions.shot_boxes: the video engine and the world's video bake frame a shot with it."""
    own = [regions.Box(40, 60, 20, 40), regions.Box(30, 70, 100, 140), regions.Box(0, 20, 180, 200)]
    boxes = regions.shot_boxes(own, 100, 200, context=0.5)
    sizes = {(b.height, b.width) for b in boxes}
    assert sizes == {(80, 80)}                                  # the largest own crop: 40 x 40 grown by half a side
    for mask_box, box in zip(own, boxes):
        context = regions.context_box(mask_box, 100, 200, 0.5)
        assert box.y0 <= context.y0 and context.y1 <= box.y1 and box.x0 <= context.x0 and context.x1 <= box.x1
        assert 0 <= box.y0 and box.y1 <= 100 and 0 <= box.x0 and box.x1 <= 200
    assert (boxes[0].y0, boxes[0].x0) == (10, 0)                # centred on its own (50, 30), held inside the frame
    assert (boxes[1].y0, boxes[1].x0) == (10, 80)               # centred on its own (50, 120)
    assert (boxes[2].y0, boxes[2].x1) == (0, 200)               # at the corner: pushed back inside


def test_model_size_respects_pixel_aspect_and_multiples():
    box = regions.Box(0, 100, 0, 200)
    assert regions.model_size(box, 1.0, 512, 8) == (256, 512)
    # anamorphic 2.0: 100 px wide are 200 px of picture, so the box is square in reality
    assert regions.model_size(regions.Box(0, 200, 0, 100), 2.0, 512, 8) == (512, 512)
    h, w = regions.model_size(regions.Box(0, 37, 0, 91), 1.0, 64, 8)
    assert h % 8 == 0 and w % 8 == 0 and w == 64


def test_feather_is_zero_outside_and_soft_inside():
    mask = np.zeros((40, 40), np.float32)
    mask[10:30, 10:30] = 1
    weight = regions.feathered(mask, 4)
    assert np.all(weight[mask == 0] == 0)
    assert weight[20, 20] == pytest.approx(1.0)
    assert weight[10, 20] == pytest.approx(1 / 9)  # the edge row sees one eroded row of a 9x9 box
    assert weight[12, 20] < weight[20, 20]


def test_composite_touches_only_weighted_rgb():
    plate = np.random.default_rng(1).random((8, 8, 5)).astype(np.float32) * 4
    weight = np.zeros((8, 8), np.float32)
    weight[2:4, 2:4] = 0.5
    out = regions.composite(plate, np.zeros((8, 8, 3), np.float32), weight)
    assert np.array_equal(out[weight == 0], plate[weight == 0])
    assert np.array_equal(out[:, :, 3:], plate[:, :, 3:])
    assert np.allclose(out[2:4, 2:4, :3], plate[2:4, 2:4, :3] * 0.5)


def test_colour_round_trip_keeps_overbrights_and_rejects_unknown_names():
    rgb = np.array([[[0.18, 0.18, 0.18], [4.0, 2.0, 1.0], [12.0, 12.0, 12.0]]], np.float32)
    encoding, display = ColourTransform("ACEScg").encode(rgb)
    assert display.min() >= 0 and display.max() <= 1
    back = encoding.from_model(display)
    assert np.allclose(back, rgb, rtol=0.02)
    assert np.array_equal(ColourTransform("Raw").to_model(np.clip(rgb, 0, 1)), np.clip(rgb, 0, 1))
    with pytest.raises(errors.RequestError) as info:
        ColourTransform("Definitely Not A Space")
    assert info.value.code == "unknown_colorspace"


def test_large_frame_refused_from_its_header(tmp_path):
    path = tmp_path / "big.exr"
    spec = oiio.ImageSpec(3000, 2000, 4, oiio.HALF)
    out = oiio.ImageOutput.create(str(path))
    out.open(str(path), spec)
    out.write_image(np.zeros((2000, 3000, 4), np.float32))
    out.close()
    with pytest.raises(errors.RequestError) as info:
        frames.read_frame(path, Limits(max_frame_pixels=1000 * 1000))
    assert info.value.code == "too_large"


def test_exr_write_is_atomic_and_keeps_layout(tmp_path):
    src = tmp_path / "src.exr"
    spec = oiio.ImageSpec(16, 8, 4, oiio.HALF)
    spec.channelnames = ("R", "G", "B", "A")
    spec.attribute("PixelAspectRatio", 2.0)
    out = oiio.ImageOutput.create(str(src))
    out.open(str(src), spec)
    out.write_image(np.ones((8, 16, 4), np.float32))
    out.close()
    frame = frames.read_frame(src, Limits())
    assert frame.pixel_aspect == 2.0 and frame.pixel_type == "half"
    dst = tmp_path / "dst.exr"
    frames.write_exr_atomic(dst, frame, {"seed": 3, "prompt": "x"})
    again = frames.read_frame(dst, Limits())
    assert again.pixel_aspect == 2.0 and again.spec.get_int_attribute("bodydouble:seed") == 3
    assert [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob(".*"))
