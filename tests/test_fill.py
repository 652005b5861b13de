"""Fill end to end: client -> ZeroMQ -> server -> tiny inpaint pipeline with LoRA -> EXR take -> client."""
import json
import threading
import time
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest

from bodydouble import errors
from bodydouble.client import Client
from bodydouble.jobspec import AdapterRef, FillRequest, FrameInput, ImageRef, sequence_frames
from bodydouble_server import samples


def read(path):
    buf = oiio.ImageBuf(str(path))
    return np.asarray(buf.get_pixels(oiio.FLOAT)), buf.spec()


def fill(client, studio, first=1001, last=1002, **kw):
    request = FillRequest(frames=sequence_frames(studio["plate"], first, last, studio["mask"]),
                          **{"adapters": [AdapterRef("hero")], "prompt": "<hero> back of head", "seed": 5, "steps": 2, **kw})
    progress = []
    result = client.submit(request).wait(timeout=120, on_progress=progress.append)
    return result, progress


def test_fill_writes_a_complete_take_with_provenance(client, studio):
    result, progress = fill(client, studio, output_dir=str(studio["root"] / "shots" / "sh010"))
    take_dir = Path(result.take_dir)
    assert take_dir.parent == studio["root"] / "shots" / "sh010" / "bodydouble" / "hero"
    assert take_dir.name == f"take_{result.take:03d}"
    assert (result.first, result.last) == (1001, 1002)
    assert result.pattern.endswith(f"sh010_hero_take{result.take:03d}.####.exr")
    assert json.loads((take_dir / "take.json").read_text())["status"] == "complete"
    # progress per denoising step, in order, ending at 100 %
    assert [p.step for p in progress if p.frame == 1001] == [1, 2]
    assert progress[-1].fraction == pytest.approx(1.0)
    assert all(a.fraction <= b.fraction for a, b in zip(progress, progress[1:]))
    for frame in (1001, 1002):
        path = Path(result.frames[frame])
        assert path.name == f"sh010_hero_take{result.take:03d}.{frame}.exr"
        pixels, spec = read(path)
        assert spec.format == oiio.HALF and list(spec.channelnames) == ["R", "G", "B", "A"]
        attrs = {a.name: a.value for a in spec.extra_attribs if a.name.startswith("bodydouble:")}
        assert attrs["bodydouble:operation"] == "fill"
        assert attrs["bodydouble:adapter"] == "hero"
        assert attrs["bodydouble:seed"] == 5 and attrs["bodydouble:steps"] == 2
        assert len(attrs["bodydouble:adapter_sha256"]) == 64
        assert attrs["bodydouble:prompt"] == "<hero> back of head"
        assert attrs["bodydouble:source"].endswith(f"sh010_plate.{frame}.exr")
        assert "TEST MODEL" in attrs["bodydouble:base_model"] and attrs["bodydouble:test_model"] == 1
        assert attrs["bodydouble:tool_version"] and attrs["bodydouble:time"]


def test_outside_the_mask_every_pixel_is_bit_identical(client, studio, monkeypatch):
    from bodydouble_server.imaging import regions
    from bodydouble_server.operations import fill as fill_op

    made = []
    generate = fill_op.generate

    def spy(pipe, req, group, on_step):        # the model's own pictures, and where fill put them
        images = generate(pipe, req, group, on_step)
        made.extend((p.box, p.crop_mask, p.encoding, image) for p, image in zip(group, images))
        return images
    monkeypatch.setattr(fill_op, "generate", spy)
    result, _ = fill(client, studio, first=1001, last=1001)
    out, _ = read(result.frames[1001])
    plate, _ = read(studio["plate"].replace("####", "1001"))
    mask, _ = read(studio["mask"].replace("####", "1001"))
    outside = mask[:, :, 0] == 0
    assert outside.any() and (~outside).any()
    assert np.array_equal(out[outside].view(np.uint32), plate[outside].view(np.uint32))  # bits, not closeness
    assert plate.max() > 1.0 and out.max() == plate.max()  # overbrights survive
    assert np.array_equal(out[:, :, 3], plate[:, :, 3])     # alpha untouched
    # Inside the mask the take is the model's own picture (resized to the crop, through the crop's encoding back
    # to scene-linear) over the plate by the feathered (soft) mask, in the crop's place; half storage: 2^-11.
    ((box, crop_mask, encoding, image),) = made
    weight = regions.feathered(crop_mask, 4)
    reached = weight > 0
    assert reached.sum() > 100 and weight.max() > 0.5
    generated = encoding.from_model(regions.resize(image, box.height, box.width))
    want = regions.composite(plate[box.slices()][:, :, :3], generated, weight)[reached]
    got = out[box.slices()][:, :, :3][reached]
    assert np.allclose(got, want, rtol=2e-3, atol=1e-4), float(np.abs(got - want).max())


def test_takes_never_overwrite_and_seed_reproduces(client, studio):
    first, _ = fill(client, studio, first=1001, last=1001)
    before = Path(first.frames[1001]).read_bytes()
    second, _ = fill(client, studio, first=1001, last=1001)
    assert second.take == first.take + 1 and second.take_dir != first.take_dir
    assert Path(first.frames[1001]).read_bytes() == before
    a, _ = read(first.frames[1001])
    b, _ = read(second.frames[1001])
    assert np.array_equal(a, b)  # same seed, same adapter, same pixels
    third, _ = fill(client, studio, first=1001, last=1001, seed=6)
    c, _ = read(third.frames[1001])
    assert not np.array_equal(a, c)


def test_adapters_switch_blend_and_disable(client, studio):
    def pixels(adapters):
        result, _ = fill(client, studio, first=1001, last=1001, adapters=adapters, return_pixels=True)
        return result.pixels[1001].astype(np.float32)

    hero = pixels([AdapterRef("hero")])
    villain = pixels([AdapterRef("villain")])
    base = pixels([])
    blend = pixels([AdapterRef("hero", 0.5), AdapterRef("villain", 0.5)])
    hero_alone = pixels([AdapterRef("hero", 1.0), AdapterRef("villain", 0.0)])
    hero_off = pixels([AdapterRef("hero", 0.0)])
    hero_again = pixels([AdapterRef("hero")])
    # The weights reach the model: a blend's weight-0 member adds nothing, a weight-0 adapter is the base model
    # (exactly: a LoRA's contribution is scaled by its weight), and a 50/50 blend is neither adapter alone.
    # (The two adapters and the base model give different pictures, so these are not true by accident.)
    assert not np.array_equal(hero, villain) and not np.array_equal(hero, base)
    assert np.array_equal(hero_alone, hero) and np.array_equal(hero_off, base)
    assert not np.array_equal(blend, hero) and not np.array_equal(blend, villain)
    assert np.array_equal(hero, hero_again)  # switching back is exact: adapters stay resident, nothing leaks


def test_pixel_buffers_in_and_out(client, studio):
    plate = samples.plate_pixels(80, 48, 3).astype(np.float16)
    mask = samples.mask_pixels(80, 48, 3)
    job = client.submit(FillRequest(frames=[FrameInput(7, ImageRef(pixels=plate), ImageRef(pixels=mask))],
                                    adapters=[AdapterRef("hero")], steps=2, shot="buffers", return_pixels=True))
    result = job.wait(timeout=120)
    assert Path(result.take_dir).parent.parent.parent == studio["root"] / "takes" / "buffers"
    got = result.pixels[7]
    assert got.dtype == np.float16 and got.shape == (48, 80, 4)
    on_disk, _ = read(result.frames[7])
    assert np.array_equal(on_disk.astype(np.float16), got)
    outside = mask == 0
    assert np.array_equal(got[outside].view(np.uint16), plate[outside].view(np.uint16))


def test_float32_plates_stay_float32_and_exact(client, studio):
    folder = studio["root"] / "shots" / "sh020"
    folder.mkdir(parents=True, exist_ok=True)
    plate = samples.plate_pixels(64, 40, 1)
    plate[..., 0] += np.float32(1e-4)  # not representable in half
    samples.write_exr(folder / "f32.0001.exr", plate, ("R", "G", "B", "A"), oiio.FLOAT)
    result = client.submit(FillRequest(frames=[FrameInput(1, ImageRef(path=str(folder / "f32.0001.exr")))],
                                       steps=2)).wait(timeout=120)  # mask = the plate's alpha
    out, spec = read(result.frames[1])
    assert spec.format == oiio.FLOAT
    outside = plate[:, :, 3] == 0
    assert np.array_equal(out[outside], plate[outside])


def test_cancel_stops_at_the_next_step_and_the_take_is_not_complete(client, studio):
    job = client.submit(FillRequest(frames=sequence_frames(studio["plate"], 1001, 1003, studio["mask"]),
                                    adapters=[AdapterRef("hero")], steps=400, seed=1))
    first = next(job.events(timeout=60))
    assert first.step == 1
    job.cancel()
    with pytest.raises(errors.JobCancelled):
        job.wait(timeout=60)
    assert job.progress.step < 50  # stopped within a few steps, not at the end
    status = client.status(job.job_id)
    assert status["state"] == "cancelled"
    take = json.loads((Path(status["take_dir"]) / "take.json").read_text())
    assert take["status"] == "cancelled"


def test_queued_job_can_be_cancelled_and_several_clients_share_the_server(server, studio):
    results, failures = {}, []

    def work(name):
        try:
            with Client(server.bound_address, timeout=30) as c:
                results[name] = c.submit(FillRequest(frames=sequence_frames(studio["plate"], 1001, 1001, studio["mask"]),
                                                     adapters=[AdapterRef(name)], steps=2)).wait(timeout=120)
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)

    with Client(server.bound_address, timeout=30) as blocker:
        slow = blocker.submit(FillRequest(frames=sequence_frames(studio["plate"], 1001, 1001, studio["mask"]), steps=60))
        queued = blocker.submit(FillRequest(frames=sequence_frames(studio["plate"], 1001, 1001, studio["mask"]), steps=2))
        next(slow.events(timeout=60))
        threads = [threading.Thread(target=work, args=(n,)) for n in ("hero", "villain")]
        for t in threads:
            t.start()
        assert queued.accepted(timeout=30).startswith("job-")
        assert queued.queue_position >= 1
        queued.cancel()
        with pytest.raises(errors.JobCancelled):
            queued.wait(timeout=30)
        slow.wait(timeout=120)
        for t in threads:
            t.join(120)
    assert not failures and set(results) == {"hero", "villain"}
    assert results["hero"].take_dir != results["villain"].take_dir


def test_client_disconnecting_mid_job_leaves_a_complete_take(server, studio):
    c = Client(server.bound_address, timeout=30)
    c.connect()
    job = c.submit(FillRequest(frames=sequence_frames(studio["plate"], 1001, 1002, studio["mask"]),
                               adapters=[AdapterRef("villain")], steps=30, shot="gone"))
    next(job.events(timeout=60))
    job_id = job.job_id
    c.close()  # the artist closed Nuke
    with Client(server.bound_address, timeout=30) as other:
        deadline = time.monotonic() + 120
        while (status := other.status(job_id))["state"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert status["state"] == "complete"
        take = Path(status["take_dir"])
        record = json.loads((take / "take.json").read_text())
        assert record["status"] == "complete" and len(record["frames"]) == 2
        for path in record["frames"].values():
            read(path)  # complete, readable EXRs
        assert not list(take.glob(".*tmp*"))  # no temp files left behind
        assert other.connect()["state"] == "ready"
