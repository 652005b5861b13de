"""Crash safety with real server processes (#12): kill -9 mid-fill and mid-train, a full disk, 64 MiB buffers.

``bodydouble serve`` runs as a subprocess so it can be killed, restarted on the same folders and measured.
"""
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bodydouble import atomic, errors
from bodydouble.client import Client
from bodydouble.jobspec import AdapterRef, FillRequest, FrameInput, ImageRef, TrainRequest, sequence_frames
from bodydouble_server import samples

from .support import free_port, start_server_process, stop_process

BEAT = 0.3          # the client's heartbeat interval here: a dead server is noticed within 3 beats


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if atomic.is_temp(p)]


def kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)         # reaped: its pid is gone, as after a real crash
    proc.stdout.close()


@pytest.fixture(scope="module")
def shot(tmp_path_factory):
    from bodydouble_server.models import embedded

    embedded.embedded_model_path()       # built once, before any server (or file-size limit) starts
    root = tmp_path_factory.mktemp("crash-studio")
    plate, mask = samples.write_sequence(root / "plates", 1001, 1006, 96, 64)
    (root / "adapters").mkdir()
    return {"root": root, "plate": plate, "mask": mask, "port": free_port()}


def serve(shot, extra=()):
    return start_server_process(shot["root"], shot["root"] / "adapters", port=shot["port"],
                                extra=["--resolution", "64", *extra])


def test_64_mib_buffers_refused_at_once_leave_no_memory_behind(shot):
    proc, address = serve(shot)
    try:
        buffer = np.zeros((2048, 2048, 4), np.float32)          # 64 MiB
        with Client(address, timeout=60) as client:
            def one_round():
                job = client.submit(FillRequest(frames=[FrameInput(1, ImageRef(pixels=buffer))],
                                                adapters=[AdapterRef("nobody")], steps=1))
                with pytest.raises(errors.RequestError):
                    job.wait(timeout=60)
            one_round()
            time.sleep(1)
            before = rss_mb(proc.pid)
            for _ in range(50):
                one_round()
            time.sleep(2)
            after = rss_mb(proc.pid)
            assert client.connect()["state"] == "ready"
        assert after - before < 200, (before, after)
    finally:
        stop_process(proc)


def test_kill_9_mid_fill_then_restart(shot):
    proc, address = serve(shot)
    client = Client(address, timeout=30, heartbeat_interval=BEAT)
    try:
        client.connect()
        done = client.submit(FillRequest(frames=sequence_frames(shot["plate"], 1001, 1002, shot["mask"]), steps=2,
                                         seed=5, shot="sh_done")).wait(timeout=120)
        finished = {p: Path(p).read_bytes() for p in [*done.frames.values(), str(Path(done.take_dir) / "take.json")]}

        job = client.submit(FillRequest(frames=sequence_frames(shot["plate"], 1001, 1006, shot["mask"]), steps=4,
                                        seed=5, shot="sh_killed"))
        for progress in job.events(timeout=120):
            if progress.raw.get("frame_index", 0) >= 1:     # the second frame under way
                break
        take_dir = Path(client.status(job.job_id)["take_dir"])
        # The first frame is written by the take's writer thread while the second generates: kill once it is.
        deadline = time.monotonic() + 30
        while "1001" not in json.loads((take_dir / "take.json").read_text()).get("frames", {}):
            assert time.monotonic() < deadline, "frame 1001 never reached take.json"
            time.sleep(0.02)
        kill9(proc)
        killed_at = time.monotonic()
        with pytest.raises(errors.ServerUnavailable) as info:
            job.wait(timeout=30)
        assert time.monotonic() - killed_at < BEAT * 3 + 1.5
        assert info.value.details["job"] == job.job_id
        # What a kill in the middle of a write leaves: a temporary beside the frame.
        stray = take_dir / f".sh_killed_base_take001.1002.exr.dead{atomic.TEMP_MARK}.exr"
        stray.write_bytes(b"")
        assert json.loads((take_dir / "take.json").read_text())["status"] == "running"

        proc, address = serve(shot)
        # The same client reconnected by itself; the new server knows nothing of the old job.
        with pytest.raises(errors.RequestError) as info:
            job.reattach().wait(timeout=30)
        assert info.value.code == "unknown_job"
        with pytest.raises(errors.RequestError):
            client.status(job.job_id)
        take = json.loads((take_dir / "take.json").read_text())
        assert take["status"] == "interrupted" and "1001" in take["frames"]
        assert temporaries(shot["root"]) == []
        assert all(Path(p).read_bytes() == data for p, data in finished.items())    # finished takes untouched
        assert json.loads((Path(done.take_dir) / "take.json").read_text())["status"] == "complete"
    finally:
        client.close()
        stop_process(proc)


def test_kill_9_mid_train_resumes_by_itself_from_the_last_checkpoint(shot):
    """Nobody submits again: the restarted server takes the training up from its checkpoint under the same job id."""
    from .test_training import write_frames

    frames = write_frames(shot["root"] / "refs")
    request = TrainRequest(frames=[str(frames)], character="Hero", name="hero_crash", resolution=64, steps=12,
                           checkpoint_every=4, learning_rate=1e-2, preview_steps=2, preview_count=0,
                           rights_holder="Studio test data", licence="test frames, consent n/a")
    proc, address = serve(shot)
    try:
        with Client(address, timeout=30, heartbeat_interval=BEAT) as client:
            job = client.submit(request)
            for progress in job.events(timeout=300):
                if progress.raw.get("phase") == "train" and progress.step >= 6:
                    break
            kill9(proc)
            with pytest.raises(errors.ServerUnavailable):
                job.wait(timeout=30)
        work = shot["root"] / "adapters" / ".training" / "hero_crash" / "checkpoints"
        assert (work / "step_0000004").is_dir()
        staging = work / f".step_0000012.dead{atomic.TEMP_MARK}"     # a save cut short by the kill
        staging.mkdir()
        (staging / "lora.safetensors").write_bytes(b"half")
        proc, address = serve(shot)
        with Client(address, timeout=30) as client:
            resumed = client.status(job.job_id)
            steps = []
            result = client.follow(job.job_id).wait(timeout=300, on_progress=lambda p: steps.append(p.step)
                                                    if p.raw.get("phase") == "train" else None)
        # Taken up at the last checkpoint (4, or 8 if the server ran ahead of the client), not from zero.
        checkpoint = resumed["resumed"]["checkpoint_step"]
        assert checkpoint in (4, 8) and resumed["state"] in ("queued", "running"), resumed
        assert steps and min(steps) > checkpoint and steps[-1] == 12, steps
        assert result.job == job.job_id and result.info["steps_done"] == 12
        assert result.adapter == "hero_crash" and result.info["adapter_status"] == "ready"
        assert not staging.exists() and temporaries(shot["root"] / "adapters") == []
        assert not list((shot["root"] / "takes" / ".bodydouble" / "resume").glob("*.json"))   # ended: not again
    finally:
        stop_process(proc)


def test_a_full_disk_gives_the_real_error_and_leaves_no_temporary(shot):
    """Stand-in for a full disk: a file-size limit on the server process (every file past 48 KB fails to grow,
    with the OS's own error), so take.json still fits and a 2K-ish frame does not."""
    big_plate, big_mask = samples.write_sequence(shot["root"] / "big", 1, 1, 512, 384)
    port = free_port()

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)          # the write fails with EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (48 * 1024, 48 * 1024))

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bodydouble", "serve", "--port", str(port), "--root", str(shot["root"]),
         "--adapters", str(shot["root"] / "adapters"), "--output-root", str(shot["root"] / "takes"),
         "--resolution", "64", "--audit-log", str(shot["root"] / "full" / "audit.jsonl")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=limit)
    try:
        address = f"tcp://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with Client(address, timeout=2) as probe:
                    probe.wait_ready(timeout=120)
                break
            except errors.BodyDoubleError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.3)
        with Client(address, timeout=30) as client:
            job = client.submit(FillRequest(frames=sequence_frames(big_plate, 1, 1, big_mask), steps=1, shot="sh_full"))
            with pytest.raises(errors.RequestError) as info:
                job.wait(timeout=120)
            assert info.value.code == "write_failed", info.value
            assert "too large" in info.value.message.lower(), info.value.message   # EFBIG: the OS's reason
            assert info.value.details["path"].endswith(".exr")
            take_dir = Path(client.status(job.job_id)["take_dir"])
            take = json.loads((take_dir / "take.json").read_text())
            assert take["status"] == "failed" and "too large" in take["error"].lower()
            assert temporaries(take_dir) == [] and not any(take_dir.glob("*.exr"))
            assert client.connect()["state"] == "ready"
    finally:
        stop_process(proc)
