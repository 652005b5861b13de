"""The train job over real ZeroMQ against a real server: progress, publish + fill, cancel + resume, report, bad input."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bodydouble import errors
from bodydouble.client import Client, TrainResult
from bodydouble.jobspec import AdapterRef, FillRequest, TrainRequest, sequence_frames
from bodydouble_server import samples

from .support import make_adapters
from .test_training import VIEWS, write_frames

SIZE = 64


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-studio")
    make_adapters(root / "adapters", {"villain": 11})
    plate, mask = samples.write_sequence(root / "plates", 1001, 1001, SIZE, SIZE)
    return {"root": root, "adapters": root / "adapters", "frames": write_frames(root / "frames"),
            "few": write_frames(root / "few", views=["front"], per_view=3), "plate": plate, "mask": mask}


@pytest.fixture(scope="module")
def address(studio):
    from bodydouble_server.cli import start_in_thread
    from bodydouble_server.config import ServerConfig

    config = ServerConfig(port=0, roots=[str(studio["root"])], adapters=str(studio["adapters"]),
                          output_root=str(studio["root"] / "takes"), resolution=SIZE, device="cpu")
    srv, thread = start_in_thread(config)
    with Client(srv.bound_address, timeout=60) as client:
        client.wait_ready()
    yield srv.bound_address
    srv.stop()
    thread.join(10)


@pytest.fixture
def client(address):
    with Client(address, timeout=30) as c:
        yield c


def train_request(studio, **kw) -> TrainRequest:
    return TrainRequest(**{"frames": [str(studio["frames"])], "character": "Hero", "name": studio.get("name", ""),
                           "resolution": SIZE, "steps": 4,
                           "checkpoint_every": 2, "learning_rate": 1e-2, "preview_steps": 2, "preview_count": 1,
                           "rights_holder": "Studio test data", "licence": "test frames, consent n/a", **kw})


def fill(client, studio, adapters):
    request = FillRequest(frames=sequence_frames(studio["plate"], 1001, 1001, studio["mask"]), adapters=adapters,
                          prompt="<hero> back of head", seed=3, steps=2, return_pixels=True)
    return client.submit(request).wait(timeout=120).pixels[1001]


def test_train_job_streams_progress_publishes_a_listed_adapter_that_fills(client, studio):
    assert "train" in client.connect()["operations"]     # hello says this server can train
    villain_before = fill(client, studio, [AdapterRef("villain")])
    progress = []
    result = client.submit(train_request(studio)).wait(timeout=300, on_progress=progress.append)

    steps = [p for p in progress if p.raw.get("phase") == "train"]
    assert [p.step for p in steps] == [1, 2, 3, 4] and steps[-1].fraction == pytest.approx(1.0)
    for p in steps:
        assert p.raw["loss"] > 0 and p.raw["images_per_s"] > 0 and p.raw["eta_s"] >= 0
        assert (p.raw["heldout"] is not None) == (p.step % 2 == 0)   # held-out score at each checkpoint
        assert p.message.startswith(f"step {p.step}/4  loss ")
    assert isinstance(result, TrainResult)
    assert result.adapter == "hero" and result.info["adapter_status"] == "ready"
    assert Path(result.adapter_dir) == studio["adapters"] / "hero"
    assert [m["step"] for m in result.metrics] == [2, 4] and result.report["frame_count"] == 12
    assert result.info["previews"] and "ready to train" in result.summary
    assert (Path(result.adapter_dir) / "contact_sheet.png").is_file()
    manifest = json.loads((Path(result.adapter_dir) / "manifest.json").read_text())
    assert manifest["rights_holder"] == "Studio test data" and len(manifest["training"]["frames"]) == 12

    listed = {a.name: a for a in client.list_adapters()}          # no rescan asked for: the job did it
    assert listed["hero"].status == "ready" and listed["hero"].trigger == "<hero>"
    assert not np.array_equal(fill(client, studio, [AdapterRef("hero")]), fill(client, studio, []))
    # Training built its own UNet: the adapters the server was already serving are untouched.
    assert np.array_equal(fill(client, studio, [AdapterRef("villain")]), villain_before)


def test_cancel_keeps_a_checkpoint_and_the_same_request_resumes(client, studio):
    request = train_request(studio, name="hero_cancel", steps=12, checkpoint_every=4, preview_count=0)
    job = client.submit(request)
    with pytest.raises(errors.JobCancelled) as caught:
        job.wait(timeout=300, on_progress=lambda p: p.step == 2 and job.cancel())
    stopped = caught.value.details["step"]
    assert 2 <= stopped < 12 and "Submit the same request again to resume" in str(caught.value)
    assert Path(caught.value.details["checkpoint"]).name == f"step_{stopped:07d}"
    assert client.status(job.job_id)["state"] == "cancelled"
    assert "hero_cancel" not in {a.name for a in client.list_adapters()}

    steps = []
    result = client.submit(request).wait(timeout=300, on_progress=lambda p: steps.append(p.step))
    trained = [s for s in steps if s is not None]   # report and publish phases carry no step
    assert trained[0] == stopped + 1 and trained[-1] == 12
    assert result.adapter == "hero_cancel" and result.info["steps_done"] == 12
    assert "hero_cancel" in {a.name for a in client.list_adapters() if a.status == "ready"}

    # Picking an earlier checkpoint: set the adapter aside, ask for its step; nothing is trained again.
    shutil.move(result.adapter_dir, studio["root"] / "hero_cancel_step12")
    steps.clear()
    earlier = client.submit(train_request(studio, name="hero_cancel", steps=8, checkpoint_every=4, preview_count=0)) \
        .wait(timeout=300, on_progress=lambda p: steps.append(p.step))
    assert earlier.info["steps_done"] == 8 and [m["step"] for m in earlier.metrics][-1] == 8
    assert not [s for s in steps if s is not None]


def test_reading_a_large_set_reports_progress_and_cancels_between_frames(client, studio):
    """Thousands of reference frames take minutes to read: progress per frame, and cancel stops the reading."""
    import os

    big = studio["root"] / "big" / "front"
    big.mkdir(parents=True)
    samples.write_exr(big / "ref_0000.exr", np.tile(samples.plate_pixels(256, 256, 1), (4, 4, 1)), ("R", "G", "B", "A"))
    for i in range(1, 400):   # the same 1024² frame under 400 names (hard links: no disk cost; each one is read)
        os.link(big / "ref_0000.exr", big / f"ref_{i:04d}.exr")
    reading = []

    def on_progress(p):
        if p.raw.get("frames"):
            reading.append(p.raw["frames_read"])
            if len(reading) == 2:
                job.cancel()

    job = client.submit(train_request(studio, frames=[str(big.parent)], name="big", report_only=True))
    with pytest.raises(errors.JobCancelled) as caught:
        job.wait(timeout=300, on_progress=on_progress)
    assert "the data report cancelled while reading frame" in str(caught.value)
    assert caught.value.details["frames"] == 400 and caught.value.details["frames_read"] < 400
    assert reading == sorted(reading) and reading[0] == 0
    assert client.connect()["state"] == "ready"


def test_report_only_answers_with_the_report_and_writes_the_contact_sheet(client, studio):
    sheet = studio["root"] / "report" / "sheet.png"
    sheet.parent.mkdir(exist_ok=True)
    result = client.submit(TrainRequest(frames=[str(studio["few"])], character="Extra", resolution=SIZE,
                                        report_only=True, contact_sheet=str(sheet))).wait(timeout=120)
    assert result.adapter is None and not result.ok_to_train
    assert result.report["frame_count"] == 3 and result.report["views"]["counts"]["front"] == 3
    assert "GAP: no `back` frames" in result.summary and sheet.stat().st_size > 0
    assert not (studio["adapters"] / "extra").exists()


def _bad(studio, case):
    outside = str(Path(studio["root"]).parent)
    studio = {**studio, "name": "bad"}
    return {
        "outside_roots": (train_request(studio, frames=[outside]), errors.PATH_NOT_ALLOWED, "outside the folders"),
        "unknown_colourspace": (train_request(studio, colorspace="NotACameraSpace"), errors.UNKNOWN_COLORSPACE,
                                "unknown colour space 'NotACameraSpace'"),
        "below_threshold": (train_request(studio, frames=[str(studio["few"])], name="few"), errors.INVALID_REQUEST,
                            "3 distinct frame(s); training needs at least 8"),
        "no_rights": (train_request(studio, rights_holder="", name="norights"), errors.INVALID_REQUEST, "rights holder"),
        "bad_field": (train_request(studio, steps=0), errors.INVALID_REQUEST, "steps must be in 1..100000"),
        "bad_name": (train_request(studio, name="../escape"), errors.INVALID_REQUEST, "adapter name"),
    }[case]


@pytest.mark.parametrize("case", ["outside_roots", "unknown_colourspace", "below_threshold", "no_rights", "bad_field",
                                  "bad_name"])
def test_bad_input_is_a_clear_error_and_the_server_keeps_running(client, studio, case):
    request, code, text = _bad(studio, case)
    with pytest.raises(errors.RequestError) as caught:
        client.submit(request).wait(timeout=120)
    assert caught.value.code == code and text in caught.value.message, caught.value.message
    if case == "below_threshold":
        assert "force" in caught.value.message and "no `back` frames" in caught.value.message
        assert caught.value.details["refusals"]
    assert client.heartbeat()["state"] == "ready"
    assert not (studio["adapters"] / "bad").exists()


def test_cli_train_on_a_server_prints_the_report(address, studio, capsys):
    from bodydouble.cli import main

    code = main(["train", str(studio["few"]), "--character", "Extra", "--server", address, "--report-only", "--json",
                 "--resolution", str(SIZE), "--min-frames", "2", "--require-view", "front", "--quiet"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["views"]["counts"]["front"] == 3
