"""The frame pipeline (#16): fill reads frame N+1 and writes frame N-1 while frame N generates, with bounded
memory, optional batching, per-frame provenance, and a torch resize with OpenImageIO's filters.

Properties only correct code has: each written frame is its own plate's fill (a frame handed to the wrong
slot, or a plate paired with another frame's model output, misses by far); the pipelined take is bit for bit
what the one-frame-at-a-time composition (prepare, generate, finish on one thread) makes; a batched take is bit for bit the
unbatched one with fewer pipeline calls; the reader never runs more than ``ahead`` frames ahead and the writer
never holds more than ``depth``; an unreadable plate mid-shot leaves exactly the frames before it.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
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
FRAMES = 5


def _read(path) -> np.ndarray:
    return np.asarray(oiio.ImageBuf(str(path)).get_pixels(oiio.FLOAT))


def _write(path: Path, pixels: np.ndarray, channels) -> None:
    spec = oiio.ImageSpec(pixels.shape[1], pixels.shape[0], pixels.shape[2], oiio.HALF)
    spec.channelnames = channels
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), spec)
    out.write_image(np.ascontiguousarray(pixels, np.float32))
    out.close()


@pytest.fixture(scope="module")
def shot(tmp_path_factory):
    """Five ACEScg plates that differ strongly frame to frame (a level per frame times a texture, moderately
    saturated as in test_colour_passthrough: ACES 2.0's gamut compression does not invert extreme ones), masks."""
    root = tmp_path_factory.mktemp("pipeline")
    plates = root / "plates"
    plates.mkdir()
    rng = np.random.default_rng(16)
    for frame in range(1, FRAMES + 1):
        pixels = np.ones((H, W, 4), np.float32)
        luminance = (0.2 * frame) * np.exp(rng.uniform(-1.0, 1.0, (H, W, 1)))
        pixels[..., :3] = luminance * (1.0 + 0.3 * rng.uniform(-1.0, 1.0, (H, W, 3)))   # colours the view inverts
        pixels[..., 3] = rng.uniform(0.1, 1.0, (H, W))
        _write(plates / f"plate.{frame}.exr", pixels, ("R", "G", "B", "A"))
    mask = np.zeros((H, W, 1), np.float32)
    mask[MASK] = 1.0
    for frame in range(1, FRAMES + 1):
        _write(plates / f"mask.{frame}.exr", mask, ("A",))
    return {"root": root, "plate": str(plates / "plate.#.exr"), "mask": str(plates / "mask.#.exr")}


def _config(shot, model: str = "test:passthrough", **extra):
    from bodydouble_server.config import ServerConfig

    root = shot["root"]
    # resolution 64: the 64x64 crop is generated at its own size, so a passthrough gives the plate back.
    return ServerConfig(port=0, model=model, video_model="none", roots=[str(root)], adapters=str(root / "adapters"),
                        output_root=str(root / "takes"), resolution=64, **extra)


def _request(studio, last: int = FRAMES, **fields) -> FillRequest:
    return FillRequest(frames=sequence_frames(studio["plate"], 1, last, studio["mask"]), steps=2, seed=5,
                       preview=None, **fields)


# -- resize: OpenImageIO's filters, in torch -----------------------------------------------------------------
@pytest.mark.parametrize("source, target", [((90, 120), (64, 48)), ((40, 30), (96, 80)), ((50, 200), (100, 64)),
                                            ((64, 100), (64, 50)), ((7, 5), (64, 3))])
def test_resize_matches_openimageio(source, target):
    from bodydouble_server.imaging import regions

    rng = np.random.default_rng(sum(source))
    pixels = rng.uniform(-0.5, 8.0, (*source, 3)).astype(np.float32)
    ours, oiio_ = regions.resize(pixels, *target), regions.resize_oiio(pixels, *target)
    assert ours.shape == oiio_.shape == (*target, 3)
    assert np.abs(ours - oiio_).max() <= 4e-6 * np.abs(oiio_).max()       # float32 rounding, nothing more
    mask = (rng.uniform(0.0, 1.0, source) > 0.5).astype(np.float32)        # (H, W): masks keep their shape
    assert np.abs(regions.resize(mask, *target) - regions.resize_oiio(mask, *target)).max() <= 4e-6
    # Half input: OpenImageIO resized it into a half buffer; ours stays float32 (within half's rounding of it).
    half = pixels.astype(np.float16)
    assert np.allclose(regions.resize(half, *target), regions.resize_oiio(half, *target), rtol=2**-10, atol=2**-14)


def test_resize_is_not_another_filter():
    """A bilinear or a box filter would pass a smooth-image test: an impulse shows the lanczos3 lobes."""
    from bodydouble_server.imaging import regions

    impulse = np.zeros((1, 64), np.float32)
    impulse[0, 32] = 1.0
    row = regions.resize(impulse, 1, 32)[0]
    assert row.min() < -0.01 and np.isclose(row.sum(), 0.5, atol=1e-5)     # negative lobes, energy / 2


# -- colour: the baked view for the model's context ----------------------------------------------------------
def _plate_like(rng, count: int) -> np.ndarray:
    luminance = np.exp(rng.normal(-1.5, 1.5, (count, 1)))           # deep shadows to overbrights (~100)
    values = (luminance * rng.uniform(0.3, 1.3, (count, 3))).astype(np.float32)
    values[: count // 100] -= 0.05                                  # ACEScg negatives
    return values


@pytest.mark.parametrize("space", ["ACEScg", "Linear Rec.709"])
def test_baked_view_matches_ocio_within_its_tolerance(space):
    from bodydouble_server.imaging import colour

    transform = colour.ColourTransform(space)
    values = _plate_like(np.random.default_rng(16), 100_000)
    values[:3] = [[1000.0, 2.0, 1.0], [-1.0, 0.5, 0.5], [np.nan, 0.5, np.inf]]    # outside the LUT; NaN/Inf
    error = np.abs(colour.baked_view(transform).view(values.copy()) - transform._view(values.copy()))
    tolerance = colour.LUT_TOLERANCE
    assert error[:2].max() == 0.0                                      # outside its range: OCIO's own values
    assert error.mean() <= tolerance["mean"] and np.quantile(error, 0.999) <= tolerance["p999"]
    assert error.max() <= tolerance["max"], float(error.max())


def test_only_the_context_goes_through_the_baked_view():
    from bodydouble_server.imaging import colour

    transform = colour.ColourTransform("ACEScg")
    crop = _plate_like(np.random.default_rng(3), 120 * 160).reshape(120, 160, 3).astype(np.float16)
    exact = np.zeros((120, 160), bool)
    exact[30:90, 40:120] = True
    plain, shown = transform.encode(crop, 16.0)
    mixed, hybrid = transform.encode(crop, 16.0, exact=exact)
    assert np.array_equal(hybrid[exact], mixed.to_model(crop[exact]))  # what can reach the take: OCIO's bits
    assert (mixed.ceiling, mixed.knee) == (plain.ceiling, plain.knee)  # the ceiling: every plate value
    assert 0 < np.abs(hybrid - shown).max() <= colour.LUT_TOLERANCE["max"]


# -- the pipeline through the real server ----------------------------------------------------------------------
def test_each_frame_is_its_own_plates_fill_and_equals_the_serial_path(shot):
    from bodydouble_server.imaging import frames as frame_io
    from bodydouble_server.imaging.colour import ColourTransform
    from bodydouble_server.operations import fill

    with server_thread(_config(shot)) as srv, Client(srv.bound_address, timeout=60) as client:
        result = client.submit(_request(shot)).wait(timeout=120)
        assert sorted(result.frames) == list(range(1, FRAMES + 1))
        engine = srv.engine
        pipe = engine.model_for("fill").pipeline("fill")
        for frame in range(1, FRAMES + 1):
            plate = _read(shot["plate"].replace("#", str(frame)))
            out = _read(result.frames[frame])
            inside = np.zeros((H, W), bool)
            inside[MASK] = True
            assert np.array_equal(out[~inside], plate[~inside])                      # outside: bit for bit
            error = np.abs(out[inside][:, :3] - plate[inside][:, :3])
            assert np.all(error <= 2e-3 * np.maximum(np.abs(plate[inside][:, :3]), 1.0)), (frame, float(error.max()))
            # The same frame made one step after another on this thread: the same bits.
            item = _request(shot).frames[frame - 1]
            serial = frame_io.read_frame(Path(item.plate.path), engine.config.limits)
            mask, _ = fill._mask_for(engine, item, serial, None)
            request = _request(shot)
            prepared = fill.prepare_frame(engine.model_for("fill"), request, ColourTransform("ACEScg"), serial, mask)
            fill.finish_frame(request, prepared, fill.generate(pipe, request, [prepared], lambda s, n: None)[0])
            written = frame_io.read_frame(Path(result.frames[frame]), engine.config.limits)
            for name in "RGBA":
                assert np.array_equal(written.part.channels[name], serial.part.channels[name]), (frame, name)


@pytest.mark.parametrize("model", ["test:passthrough", "test:standin"])
def test_batched_fill_is_the_unbatched_take_with_fewer_calls(shot, model, monkeypatch):
    from bodydouble_server.models import testing

    monkeypatch.setenv(testing.STEP_ENV, "0")
    takes = {}
    for batch in (1, 3):
        with server_thread(_config(shot, model=model, fill_batch=batch)) as srv, \
                Client(srv.bound_address, timeout=60) as client:
            pipe = srv.engine.model_for("fill").pipeline("fill")
            before = pipe.calls
            progress = []
            result = client.submit(_request(shot)).wait(timeout=120, on_progress=progress.append)
            takes[batch] = {f: _read(p) for f, p in result.frames.items()}
            # The first call takes one frame (the model starts on the first plate read), then batches:
            # 5 frames: 5 calls, or [1], [2, 3, 4], [5].
            assert pipe.calls - before == 1 + -(-(FRAMES - 1) // batch)
            # Progress covers every frame of a batch: it ends at 100 %, each call's steps name its first frame.
            fractions = [p.fraction for p in progress]
            assert fractions[-1] == pytest.approx(1.0) and fractions == sorted(fractions), fractions
            assert sorted({p.frame for p in progress}) == [1, *range(2, FRAMES + 1, batch)]
    assert sorted(takes[3]) == list(range(1, FRAMES + 1))
    for frame in takes[1]:
        assert np.array_equal(takes[1][frame], takes[3][frame]), frame


def test_a_batch_goes_to_the_writer_without_waiting_for_earlier_writes(shot, monkeypatch):
    """With writes held back after the first frame's, the call after a batch still starts: the worker hands a
    whole batch (3 frames) to the writer and goes on, as the model's time covers the writes (a writer shallower
    than the batch made the worker wait for earlier writes before each batch). Calls: [1], [2, 3, 4], [5]."""
    from bodydouble_server.models import testing
    from bodydouble_server.operations import common

    monkeypatch.setenv(testing.STEP_ENV, "0")
    release = threading.Event()
    original = common.TakeWriter._write

    def held(self, frame, *args):
        if frame != 1:
            release.wait(60)
        return original(self, frame, *args)

    monkeypatch.setattr(common.TakeWriter, "_write", held)
    with server_thread(_config(shot, model="test:standin", fill_batch=3)) as srv, \
            Client(srv.bound_address, timeout=60) as client:
        pipe = srv.engine.model_for("fill").pipeline("fill")
        before = pipe.calls
        job = client.submit(_request(shot))
        deadline = time.monotonic() + 30
        while pipe.calls - before < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        next_call_started = pipe.calls - before == 3
        release.set()
        result = job.wait(timeout=120)
    assert next_call_started, "the worker waited for the batch's writes"
    assert sorted(result.frames) == list(range(1, FRAMES + 1))


@pytest.mark.parametrize("batch", [1, 4])
def test_an_unreadable_plate_mid_shot_keeps_exactly_the_frames_before_it(shot, batch, monkeypatch):
    """Read in line or in a batch (a GPU's fill_batch): the frames before the broken plate are kept."""
    from bodydouble_server.models import testing

    monkeypatch.setenv(testing.STEP_ENV, "0")
    broken = shot["root"] / f"broken{batch}"
    broken.mkdir()
    for frame in range(1, 5):
        source = Path(shot["plate"].replace("#", str(frame)))
        (broken / f"plate.{frame}.exr").write_bytes(source.read_bytes() if frame != 3 else b"not an exr" * 100)
    request = FillRequest(frames=sequence_frames(str(broken / "plate.#.exr"), 1, 4, shot["mask"]), steps=1,
                          preview=None, shot=broken.name)
    with server_thread(_config(shot, model="test:standin", fill_batch=batch)) as srv, \
            Client(srv.bound_address, timeout=60) as client:
        with pytest.raises(errors.RequestError) as caught:
            client.submit(request).wait(timeout=120)
    assert caught.value.code == errors.UNREADABLE_FILE and "plate 3" in caught.value.message
    take_json = next((shot["root"] / "takes" / broken.name).glob("**/take.json"))
    take = json.loads(take_json.read_text())
    assert take["status"] == "failed" and sorted(int(f) for f in take["frames"]) == [1, 2]
    assert sorted(p.name.split(".")[-2] for p in take_json.parent.glob("*.exr")) == ["0001", "0002"]


def test_every_frame_is_sealed_as_it_is_written(shot, monkeypatch):
    from bodydouble_server.models import testing
    from bodydouble_server.policy import provenance

    monkeypatch.setenv(testing.STEP_ENV, "0")
    with server_thread(_config(shot, model="test:standin")) as srv, Client(srv.bound_address, timeout=60) as client:
        result = client.submit(_request(shot, last=3, shot="sealed")).wait(timeout=120)
    take = json.loads((Path(result.frames[1]).parent / "take.json").read_text())
    for frame, path in result.frames.items():
        assert provenance.sidecar_path(path).is_file()
        assert take["provenance"]["frames_sha256"][str(frame)] == hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- bounds ---------------------------------------------------------------------------------------------------
def test_the_reader_runs_at_most_one_frame_ahead():
    from bodydouble_server.operations.common import Prefetcher

    started, lock = [], threading.Lock()

    def prepare(item):
        with lock:
            started.append(item)
        return type("P", (), {"size": (8, 8), "item": item})()

    taken = []
    with Prefetcher(prepare, range(6), ahead=1) as reader:
        for _ in range(6):
            taken.extend(p.item for p in reader.next_batch(1))
            time.sleep(0.05)                         # a frame generating: the reader may read the next one
            with lock:
                assert len(started) <= len(taken) + 1
    assert taken == list(range(6))


def test_plates_too_large_to_overlap_are_read_in_line(shot, monkeypatch):
    """Past common.PIPELINE_BYTES a job holds one frame at a time: nothing read ahead, each write waited for."""
    from bodydouble_server.models import testing
    from bodydouble_server.operations import common

    assert [common.frames_in_flight(n << 20) for n in (18, 70, 300, 600, 2048)] == [4, 4, 3, 1, 1]
    started, taken = [], []

    def prepare(item):
        started.append(item)
        return type("P", (), {"size": (8, 8), "item": item})()

    with common.Prefetcher(prepare, range(4), fits=lambda prepared: 0) as reader:
        for _ in range(4):
            taken.extend(p.item for p in reader.next_batch(1))
            time.sleep(0.02)
            assert started == taken
    monkeypatch.setattr(common, "PIPELINE_BYTES", 1)
    monkeypatch.setenv(testing.STEP_ENV, "0")
    with server_thread(_config(shot)) as srv, Client(srv.bound_address, timeout=60) as client:
        result = client.submit(_request(shot, last=3, shot="inline")).wait(timeout=120)
    assert sorted(result.frames) == [1, 2, 3]


class _FakeTake:
    dir = Path("/nonexistent")

    def __init__(self, tmp: Path):
        self.tmp, self.frames, self.sealed = tmp, {}, {}

    def frame_path(self, frame):
        return self.tmp / f"f.{frame}.exr"

    def add(self, frame, path):
        self.frames[frame] = str(path)

    def seal_written(self, frame, path):
        return None


def test_the_writer_holds_at_most_depth_frames(tmp_path):
    from bodydouble_server.imaging import frames as frame_io
    from bodydouble_server.operations.common import TakeWriter

    gate = threading.Event()
    pixels = frame_io.frame_from_buffer(np.zeros((4, 4, 4), np.float16))

    def make():
        gate.wait(10)
        return pixels, {}, None

    take = _FakeTake(tmp_path)
    with TakeWriter(take, None, depth=2) as writer:
        writer.put(1, make)
        writer.put(2, make)                          # two waiting: the worker goes on
        third = threading.Thread(target=writer.put, args=(3, make))
        third.start()
        third.join(0.3)
        assert third.is_alive(), "a third frame must wait for the first to be written"
        gate.set()
        third.join(10)
    assert sorted(take.frames) == [1, 2, 3] and all(Path(p).is_file() for p in take.frames.values())


def test_a_pool_or_farm_worker_reads_ahead_and_writes_behind_and_never_renders_a_frame_twice(shot, tmp_path,
                                                                                              monkeypatch):
    """FrameWorker (pool replicas, farm workers) runs the same pieces as the server's fill, overlapped: frame N+1
    is read while frame N generates, frames are written off the generating thread, and a retried task reports
    the frames already published instead of rendering them again."""
    from bodydouble_server.models import testing
    from bodydouble_server.operations import fill
    from bodydouble_server.scale.worker import FrameWorker, TakeRef

    monkeypatch.setenv(testing.STEP_ENV, "0.05")
    events, lock = [], threading.Lock()

    def record(what, frame):
        with lock:
            events.append((what, frame, threading.current_thread().name, time.monotonic()))

    real_read, real_generate, real_composited = fill.read_inputs, fill.generate, fill.composited

    def read_inputs(engine, req, item):
        record("read", item.frame)
        return real_read(engine, req, item)

    def generate(pipe, req, group, on_step):
        record("generate", group[0].item.frame)
        out = real_generate(pipe, req, group, on_step)
        record("generated", group[0].item.frame)
        return out

    def composited(req, prepared, image, attributes):
        record("write", prepared.item.frame)
        return real_composited(req, prepared, image, attributes)

    monkeypatch.setattr(fill, "read_inputs", read_inputs)
    monkeypatch.setattr(fill, "generate", generate)
    monkeypatch.setattr(fill, "composited", composited)
    worker = FrameWorker(_config(shot, model="test:standin"), name="w1", video=False)
    take_dir = tmp_path / "take_001"
    take_dir.mkdir()
    take = TakeRef(dir=str(take_dir), number=1, shot="pool", label="base", job="job-w1")
    done = worker.fill(take, _request(shot, last=4))
    assert [d["frame"] for d in done] == [1, 2, 3, 4] and all(d["written"] for d in done)
    at = {(what, frame): (thread, t) for what, frame, thread, t in events}
    for frame in (1, 2, 3):     # the next frame was being read before this one finished generating
        assert at["read", frame + 1][1] < at["generated", frame][1], events
    generating = at["generate", 1][0]
    assert all(thread != generating for what, _, thread, _ in events if what in ("read", "write")), events
    for frame in range(1, 5):   # each frame is its own plate outside the mask, bit for bit
        plate, out = _read(shot["plate"].replace("#", str(frame))), _read(done[frame - 1]["path"])
        inside = np.zeros((H, W), bool)
        inside[MASK] = True
        assert np.array_equal(out[~inside], plate[~inside])
    before = [p.stat().st_mtime_ns for p in sorted(take_dir.glob("*.exr"))]
    events.clear()
    again = worker.fill(take, _request(shot, last=4))       # a retried task: nothing rendered, nothing replaced
    assert [d["written"] for d in again] == [False] * 4 and not events
    assert [p.stat().st_mtime_ns for p in sorted(take_dir.glob("*.exr"))] == before
    assert not [p for p in take_dir.iterdir() if p.name.startswith(".")]      # no temporaries left
