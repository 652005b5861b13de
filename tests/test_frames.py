"""Frame sequences (bodydouble.frames, on fileseq): every padding syntax hosts write, frame numbers in file names
whatever separates them, one rule for negative frames, frame ranges, sequence names."""
import pytest

from bodydouble import frames


@pytest.mark.parametrize("pattern, frame, path", [
    ("/s/p.####.exr", 1001, "/s/p.1001.exr"), ("/s/p.%04d.exr", 7, "/s/p.0007.exr"),
    ("/s/p.$F3.exr", 7, "/s/p.007.exr"), ("/s/p.@@@@.exr", 12, "/s/p.0012.exr"), ("/s/p_#.png", 12345, "/s/p_12345.png"),
    ("/s/p.####.exr", -2, "/s/p.-0002.exr"), ("/s#1/p.####.exr", 5, "/s#1/p.0005.exr"), ("/s/still.exr", 3, "/s/still.exr"),
    ("/s/x-1-2-%03d.exr", 3, "/s/x-1-2-003.exr"), ("/s/v2%04d.exr", 5, "/s/v20005.exr"),   # digits before the token
])
def test_patterns_expand(pattern, frame, path):
    assert frames.expand_pattern(pattern, frame) == path


@pytest.mark.parametrize("path, pattern, frame", [
    ("/s/sh010_plate_v3.1001.exr", "/s/sh010_plate_v3.####.exr", 1001), ("/s/b_0002.png", "/s/b_####.png", 2),
    ("/s/plate1001.exr", "/s/plate####.exr", 1001), ("/s/p.-0002.exr", "/s/p.####.exr", -2),
    ("/s/sh010-0005.exr", "/s/sh010-####.exr", 5),          # '-' after a letter separates, it is no sign
    ("/s/plate.exr", "/s/plate.exr", None), ("/s/clip.mp4", "/s/clip.mp4", None), ("/v1001/plate.exr", "/v1001/plate.exr", None),
])
def test_frame_numbers_in_file_names(path, pattern, frame):
    assert frames.split_frame(path) == (pattern, frame)
    if frame is not None:
        assert frames.expand_pattern(pattern, frame) == path          # read back the way it was written


def test_ranges_stems_and_hash_patterns():
    assert [frames.parse_range(t) for t in ("1001-1010", "1001", "-5--1", "-3-2", " 7 - 9 ")] == [
        (1001, 1010), (1001, 1001), (-5, -1), (-3, 2), (7, 9)]
    for bad, words in (("10-1", "ends before it starts"), ("1001-x", "not FIRST-LAST"), ("1,3", "not FIRST-LAST"),
                       ("1-20000000", "not FIRST-LAST")):
        with pytest.raises(ValueError, match=words):
            frames.parse_range(bad)
    assert [frames.stem(p) for p in ("/x/sh010_plate.####.exr", "/x/sh020_bg.%04d.exr", "/x/sh030 v2.$F4.exr",
                                     "/x/sh040_plate_0001.exr", "/x/0001.exr")] == [
        "sh010_plate", "sh020_bg", "sh030 v2", "sh040_plate", ""]
    assert [frames.hash_pattern(p) for p in ("/x/a.%04d.exr", "/x/a.1001.exr", "/x/a.$F2.exr", "/x/still.exr")] == [
        "/x/a.####.exr", "/x/a.####.exr", "/x/a.##.exr", "/x/still.exr"]
