"""Farm jobs: `bodydouble farm submit` writes an Open Job Description bundle (validated with openjd-model) and an
OpenCue outline; the fill bundle runs for real here with openjd-sessions (the reference runtime), each step's
commands as real `bodydouble farm task ...` processes, on the stand-in model."""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from bodydouble import errors
from bodydouble.cli import main

BODYDOUBLE = str(Path(sys.executable).with_name("bodydouble"))


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    from bodydouble_server import samples
    from bodydouble_server.models import testing

    root = tmp_path_factory.mktemp("farm")
    testing.test_adapter(root / "adapters" / "hero", testing.identity_of("test:standin"), "Hero", 1)
    plate, mask = samples.write_sequence(root / "plates", 1001, 1006, 96, 64)
    config = root / "server.toml"
    config.write_text(f'model = "test:standin"\nvideo_model = "test:passthrough"\nadapters = "{root}/adapters"\n'
                      f'roots = ["{root}"]\noutput_root = "{root}/takes"\nresolution = 64\n'
                      f'audit_log = "{root}/audit.log"\n')
    return {"root": root, "plate": plate, "mask": mask, "config": str(config)}


def _submit(studio, operation: str, bundle: Path, *extra: str) -> int:
    return main(["farm", "submit", operation, "--config", studio["config"], "--bundle", str(bundle),
                 "--command", BODYDOUBLE, *extra])


def test_a_fill_bundle_runs_end_to_end_one_model_load_per_session(studio, monkeypatch, capsys):
    from openjd.model import decode_job_template

    from bodydouble import protocol
    from bodydouble_server.imaging import frames as frame_io
    from bodydouble_server.models import testing
    from bodydouble_server.scale import farm

    monkeypatch.setenv(testing.STEP_ENV, "0.02")      # the farm's task processes inherit it
    bundle = studio["root"] / "fill-bundle"
    assert _submit(studio, "fill", bundle, "--plate", studio["plate"], "--mask", studio["mask"], "--frames",
                   "1001-1006", "--adapter", "hero", "--steps", "2", "--chunk", "3", "--shot", "sh020") == 0
    template = json.loads((bundle / farm.TEMPLATE).read_text())
    decode_job_template(template=template, supported_extensions=["TASK_CHUNKING"])        # valid OpenJD
    assert [s["name"] for s in template["steps"]] == ["Prepare", "Render", "Assemble"]
    render = template["steps"][1]
    assert render["parameterSpace"]["taskParameterDefinitions"][0]["type"] == "CHUNK[INT]"
    assert render["stepEnvironments"][0]["script"]["actions"]["onEnter"]["args"][2] == "worker-start"
    spec = ET.fromstring((bundle / farm.OUTLINE).read_text())
    layers = {layer.get("name"): layer for layer in spec.iter("layer")}
    assert list(layers) == ["prepare", "render", "assemble"]
    assert layers["render"].findtext("range") == "1001-1006" and layers["render"].findtext("chunk") == "3"
    assert {(d.findtext("deplayer"), d.findtext("onlayer")) for d in spec.iter("depend")} == {
        ("render", "prepare"), ("assemble", "render")}

    farm.run_bundle(bundle)

    ref = json.loads((bundle / farm.TAKE_REF).read_text())
    take = json.loads((Path(ref["dir"]) / "take.json").read_text())
    assert take["status"] == "complete" and sorted(map(int, take["frames"])) == list(range(1001, 1007))
    assert take["farm"]["frames_written"] == 6
    from bodydouble_server.operations.fill import TAKE_SETTINGS
    assert set(take["request"]) == set(TAKE_SETTINGS)       # a farm take records what a served one does
    rendered = [json.loads(line) for line in (bundle / farm.RENDER_LOG).read_text().splitlines()]
    assert sorted(r["frame"] for r in rendered) == list(range(1001, 1007))
    assert len({r["pid"] for r in rendered}) == 1, "two chunks, one session: the model loaded once"
    assert len(take["farm"]["workers"]) == 1
    for frame, path in take["frames"].items():
        out = frame_io.read_frame(Path(path), protocol.Limits()).wire()
        plate = frame_io.read_frame(Path(studio["plate"].replace("####", frame)), protocol.Limits()).wire()
        mask = frame_io.read_frame(Path(studio["mask"].replace("####", frame)), protocol.Limits()).wire()[..., 0] > 0
        assert np.array_equal(out[~mask], plate[~mask]) and not np.array_equal(out[mask], plate[mask])

    # A render task run again (a farm retry) finds its frames there and writes nothing; progress per frame.
    before = {f: Path(p).read_bytes() for f, p in take["frames"].items()}
    capsys.readouterr()
    farm.task_render(bundle.resolve(), None, "1001-1002")
    again = [json.loads(line) for line in (bundle / farm.RENDER_LOG).read_text().splitlines()][-2:]
    assert [r["written"] for r in again] == [False, False]
    assert {f: Path(p).read_bytes() for f, p in take["frames"].items()} == before
    printed = capsys.readouterr().out
    assert "openjd_progress: 50.0" in printed and "openjd_progress: 100.0" in printed
    assert "frame 1001 done" in printed and "frames 1001-1002: 0 rendered, 2 already there" in printed

    # A session worker that dies under a chunk fails the task with its log named; it does not wait forever.
    for frame in (1005, 1006):
        Path(take["frames"][str(frame)]).unlink()
    monkeypatch.setenv(testing.STEP_ENV, "2.0")
    session = studio["root"] / "session"
    session.mkdir()
    farm.task_worker_start(bundle.resolve(), session)
    pid = json.loads((session / farm.WORKER_FILE).read_text())["pid"]
    threading.Timer(1.0, os.kill, (pid, signal.SIGKILL)).start()
    started = time.monotonic()
    with pytest.raises(errors.BodyDoubleError, match="worker .* died") as died:
        farm.task_render(bundle.resolve(), session, "1005-1006")
    assert died.value.code == errors.JOB_FAILED and time.monotonic() - started < 10


def test_an_extend_bundle_runs_and_a_train_bundle_validates(studio):
    from bodydouble_server.scale import farm

    bundle = studio["root"] / "extend-bundle"
    assert _submit(studio, "extend", bundle, "--plate", studio["plate"], "--frames", "1001-1006", "--count", "4",
                   "--steps", "2", "--shot", "sh030") == 0
    template = json.loads((bundle / farm.TEMPLATE).read_text())
    assert [s["name"] for s in template["steps"]] == ["Extend"]
    farm.run_bundle(bundle)
    result = json.loads((bundle / "result.json").read_text())
    take = json.loads((Path(result["take_dir"]) / "take.json").read_text())
    assert take["status"] == "complete" and sorted(map(int, take["frames"])) == [1007, 1008, 1009, 1010]
    outcomes = [json.loads(line) for line in (studio["root"] / "audit.log").read_text().splitlines()]
    assert [o for o in outcomes if o["event"] == "outcome" and o["job"] == "farm-extend-bundle"][-1]["outcome"] \
        == "complete"

    bundle = studio["root"] / "train-bundle"
    assert _submit(studio, "train", bundle, str(studio["root"] / "plates"), "--character", "Hero",
                   "--rights-holder", "Studio", "--licence", "test") == 0
    template = json.loads((bundle / farm.TEMPLATE).read_text())
    farm.decode(template)
    assert [s["name"] for s in template["steps"]] == ["Train"]
    layers = ET.fromstring((bundle / farm.OUTLINE).read_text()).iter("layer")
    assert [layer.get("name") for layer in layers] == ["train"]


def test_submit_refuses_what_a_server_would(studio, tmp_path, capsys):
    outside = str(tmp_path / "p.####.exr")
    assert _submit(studio, "fill", tmp_path / "outside", "--plate", outside, "--frames", "1-2") == 1
    assert "plate 1" in capsys.readouterr().err and not (tmp_path / "outside").exists()
    bundle = studio["root"] / "used-bundle"
    bundle.mkdir()
    (bundle / "something").write_text("x")
    assert _submit(studio, "fill", bundle, "--plate", studio["plate"], "--frames", "1001-1002") == 1
    assert "not empty" in capsys.readouterr().err


def test_farm_jobs_are_consent_checked_at_submit_and_again_when_they_start(studio, tmp_path, capsys):
    """A farm job follows the rules a server applies: no record, no bundle (refused, audited); a record that
    is withdrawn while the job queues stops its first task; every decision and outcome is in the audit log."""
    from bodydouble_server.policy import audit as audit_log
    from bodydouble_server.scale import farm

    from .test_policy_consent import write_record

    root = studio["root"]
    consent, audit = tmp_path / "consent", tmp_path / "audit.log"
    consent.mkdir()
    config = tmp_path / "guarded.toml"
    config.write_text(Path(studio["config"]).read_text().replace(f'audit_log = "{root}/audit.log"', "")
                      + f'audit_log = "{audit}"\nconsent_dir = "{consent}"\nconsent_exempt_test_models = false\n')

    def submit(bundle: Path) -> int:
        return main(["farm", "submit", "fill", "--config", str(config), "--bundle", str(bundle), "--command",
                     BODYDOUBLE, "--plate", studio["plate"], "--mask", studio["mask"], "--frames", "1001-1002",
                     "--adapter", "hero", "--steps", "1", "--shot", "sh010"])

    assert submit(tmp_path / "refused") == 1
    assert "no consent record" in capsys.readouterr().err and not (tmp_path / "refused").exists()

    record = write_record(consent, "hero-farm", "Hero", "Show A", ["fill"], ["sh010"], "2099-12-31")
    bundle = tmp_path / "queued"
    assert submit(bundle) == 0
    record.unlink()                                    # withdrawn while the job waits for a farm slot
    with pytest.raises(Exception) as refused:
        farm.task_prepare(bundle)
    assert "no consent record" in str(refused.value) and not (bundle / farm.TAKE_REF).exists()

    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(line.get("decision"), line.get("job")) for line in lines if line["event"] == "submit"] == [
        ("refused", None), ("accepted", "farm-queued"), ("refused", None)]
    assert audit_log.verify(audit).ok


def test_a_shot_fill_is_refused_by_the_farm_not_run_frame_by_frame(studio, tmp_path, capsys):
    """Farm tasks fill chunks on separate nodes: the video engine or coherence would silently become per-frame fill."""
    for extra in (("--engine", "video"), ("--coherence", "0.5")):
        bundle = tmp_path / f"shot{extra[0]}"
        assert _submit(studio, "fill", bundle, "--plate", studio["plate"], "--frames", "1001-1004", *extra) == 1
        assert "whole shot on one server" in capsys.readouterr().err and not bundle.exists()
