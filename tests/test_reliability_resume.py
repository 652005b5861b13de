"""A training a killed server had accepted is checked again before it is taken up (#12).

The kill -9 itself is in test_reliability_process.py; here a resume entry as a killed server leaves it (a dead
pid) is put in place before a server starts, so the re-check at start-up runs through the real server.
"""
import json
import socket

import pytest

from bodydouble import atomic, codec, errors
from bodydouble.client import Client
from bodydouble.jobspec import TrainRequest

from .support import server_thread


def left_by_a_killed_server(output_root, job_id, request, user="ann"):
    folder = output_root / ".bodydouble" / "resume"
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_json(folder / f"{job_id}.json", {
        "job": job_id, "operation": "train", "request": codec.to_wire(request, [], []), "request_id": "r-7",
        "requester": {"name": user, "verified": False, "key": ""}, "instance": "dead0000", "pid": 2 ** 22 + 1,
        "host": socket.gethostname(), "created": 0.0})
    return folder


def training_studio(tmp_path, steps: int):
    """(studio root, a train request of ``steps`` steps on its reference frames, a server config on the embedded
    model): what the resume tests start their servers with."""
    from bodydouble_server.config import ServerConfig

    from .test_training import write_frames

    root = tmp_path / "studio"
    frames = write_frames(root / "refs")
    request = TrainRequest(frames=[str(frames)], character="Hero", name="hero", resolution=64, steps=steps,
                           checkpoint_every=2, preview_count=0, rights_holder="Studio", licence="test")
    config = ServerConfig(port=0, video_model="none", roots=[str(root)], adapters=str(root / "adapters"),
                          output_root=str(root / "takes"), device="cpu", audit_log=str(tmp_path / "audit.log"))
    return root, request, config


@pytest.mark.parametrize("case", ["consent", "path"])
def test_a_resume_refused_at_start_up_answers_under_its_job_id(tmp_path, case):
    from bodydouble_server.config import ServerConfig

    root = tmp_path / "studio"
    (root / "refs").mkdir(parents=True)
    frames = str(root / "refs") if case == "consent" else str(tmp_path / "elsewhere")
    request = TrainRequest(frames=[frames], character="Hero", name="hero", resolution=64, steps=4,
                           rights_holder="Studio", licence="test")
    takes = root / "takes"
    entries = left_by_a_killed_server(takes, "job-dead0000-3", request)
    audit = tmp_path / "audit.log"
    # No consent record and test models not exempt: the submit would be refused today, so the resume is.
    config = ServerConfig(port=0, model="test:standin", video_model="none", roots=[str(root)],
                          adapters=str(root / "adapters"), output_root=str(takes), consent_dir=str(tmp_path / "c"),
                          consent_exempt_test_models=case != "consent", audit_log=str(audit))
    with server_thread(config) as srv, Client(srv.bound_address, timeout=30) as client:
        status = client.status("job-dead0000-3")
        assert status["state"] == "failed" and status["resumed"] == {"from_instance": "dead0000"}, status
        code = "not_permitted" if case == "consent" else "path_not_allowed"
        assert status["final"]["body"]["code"] == code, status
        with pytest.raises(errors.RequestError) as info:
            client.follow("job-dead0000-3").wait(timeout=10)
        assert info.value.code == code
    assert not list(entries.glob("*.json"))                   # not tried again at the next start
    if case == "consent":       # audited like a refused submit, for the requester recorded at submit
        lines = [json.loads(line) for line in audit.read_text().splitlines()]
        assert any(line.get("user") == "ann" and line.get("request") == "r-7" and line.get("decision") == "refused"
                   and line.get("code") == "not_permitted" for line in lines), lines


def test_a_resume_whose_adapter_was_already_published_answers_from_it(tmp_path):
    """Killed between publishing and replying: the restarted server answers the job from the adapter on disk (the
    same training settings, every step done), not with 'already exists'; an adapter of other settings is not taken
    for it."""
    root, request, config = training_studio(tmp_path, steps=2)
    with server_thread(config) as srv, Client(srv.bound_address, timeout=60, heartbeat_interval=3.0) as client:
        published = client.submit(request).wait(timeout=300)
    manifest = (root / "adapters" / "hero" / "manifest.json").read_bytes()

    left_by_a_killed_server(root / "takes", "job-dead0000-1", request)
    other = TrainRequest(**{**request.__dict__, "steps": 3})
    left_by_a_killed_server(root / "takes", "job-dead0000-2", other)
    with server_thread(config) as srv, Client(srv.bound_address, timeout=60, heartbeat_interval=3.0) as client:
        result = client.follow("job-dead0000-1").wait(timeout=120)
        assert result.adapter == "hero" and result.info["published_before_restart"] is True
        assert result.info["steps_done"] == published.info["steps_done"] == 2
        with pytest.raises(errors.RequestError) as info:
            client.follow("job-dead0000-2").wait(timeout=120)
        assert "already exists" in str(info.value)
    assert (root / "adapters" / "hero" / "manifest.json").read_bytes() == manifest      # not retrained, not touched


def test_a_training_stopped_with_the_server_resumes_at_the_next_start(tmp_path):
    """A graceful stop (maintenance, a restart) is not the requester's cancel: the training's resume entry stays, and
    the next start takes it up from its checkpoint under the same job id."""
    root, request, config = training_studio(tmp_path, steps=8)
    with server_thread(config) as srv, Client(srv.bound_address, timeout=60, heartbeat_interval=3.0) as client:
        job = client.submit(request)
        for progress in job.events(timeout=300):
            if progress.raw.get("phase") == "train" and progress.step >= 3:
                break
    assert not (root / "adapters" / "hero").exists()
    assert [p.stem for p in (root / "takes" / ".bodydouble" / "resume").glob("*.json")] == [job.job_id]
    with server_thread(config) as srv, Client(srv.bound_address, timeout=60, heartbeat_interval=3.0) as client:
        assert client.status(job.job_id)["resumed"]["checkpoint_step"] >= 2
        result = client.follow(job.job_id).wait(timeout=300)
        assert result.adapter == "hero" and result.info["steps_done"] == 8
    assert not list((root / "takes" / ".bodydouble" / "resume").glob("*.json"))

    # The requester's own cancel ends it for good.
    request = TrainRequest(**{**request.__dict__, "name": "hero_cancelled"})
    with server_thread(config) as srv, Client(srv.bound_address, timeout=60, heartbeat_interval=3.0) as client:
        job = client.submit(request)
        for progress in job.events(timeout=300):
            if progress.raw.get("phase") == "train" and progress.step >= 1:
                break
        job.cancel()
        with pytest.raises(errors.BodyDoubleError):
            job.wait(timeout=120)
    assert not list((root / "takes" / ".bodydouble" / "resume").glob("*.json"))
