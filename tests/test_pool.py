"""The Ray Serve GPU pool behind the ZeroMQ front: one real local Ray cluster for this module (the only one in
the test session), two CPU replicas of the stand-in model, a real gateway server and client on loopback.

Every Ray test lives in this module so the cluster (about 10 s to start, 4 s to stop) starts once.
"""
from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from bodydouble import errors
from bodydouble.client import Client
from bodydouble.jobspec import AdapterRef, ExtendRequest, FillRequest, sequence_frames

from .support import server_thread

STEP_S = 0.05          # the replicas' stand-in seconds per step
pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")   # inside Ray


def _settings(root: Path) -> dict:
    # A 9-frame video window: an extend of 20 frames is 3 chunks (8 new frames, then 6 and 6 after 2 of overlap).
    return dict(model="test:standin", video_model="test:standin", video_window=9, adapters=str(root / "adapters"),
                roots=[str(root)], output_root=str(root / "takes"), resolution=64, audit_log=str(root / "audit.log"))


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray
    from ray import serve

    from bodydouble_server import samples
    from bodydouble_server.config import ServerConfig
    from bodydouble_server.models import testing
    from bodydouble_server.scale.serve_app import APP, build_app

    root = tmp_path_factory.mktemp("pool")
    identity = testing.identity_of("test:standin")
    for name, seed in (("hero", 1), ("villain", 2)):
        testing.test_adapter(root / "adapters" / name, identity, name.title(), seed)
    testing.test_adapter(root / "adapters" / "herov", testing.identity_of("test:standin", "video"), "Hero", 4, "video")
    plate, mask = samples.write_sequence(root / "plates", 1001, 1016, 96, 64)
    # A short path: Ray's socket names must fit in 107 bytes.
    # "local": a cluster of its own, never one a test or a studio started with `ray start` on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="bodydouble",
             _temp_dir=tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    try:
        serve.start(proxy_location="Disabled")          # no HTTP proxy: the gateway uses handles
        serve.run(build_app({"settings": _settings(root), "replicas": 2, "gpus": 0, "cpus": 0.5, "max_adapters": 1,
                             "env": {testing.STEP_ENV: STEP_S}}), name=APP, route_prefix=None)
        config = ServerConfig(port=0, pool=ray.get_runtime_context().gcs_address, **_settings(root))
        with server_thread(config) as gateway:
            yield {"root": root, "plate": plate, "mask": mask, "address": gateway.bound_address, "config": config,
                   "handle": serve.get_app_handle(APP)}
    finally:
        serve.shutdown()
        ray.shutdown()


def _fill(pool, first: int, last: int, adapter: str | None = "hero", **fields) -> FillRequest:
    return FillRequest(frames=sequence_frames(pool["plate"], first, last, pool["mask"]),
                       adapters=[AdapterRef(adapter)] if adapter else [], seed=3, **fields)


def _extend(pool, steps: int, **fields) -> ExtendRequest:
    """20 frames after the plate's last (1017-1036) in 3 chunks; ``steps`` x 0.05 s a chunk."""
    return ExtendRequest(frames=sequence_frames(pool["plate"], 1013, 1016), count=20, adapters=[AdapterRef("herov")],
                         steps=steps, seed=5, **fields)


def _frame_files(take_dir) -> list[str]:
    return sorted(p.name for p in Path(take_dir).iterdir() if p.suffix == ".exr")


def test_a_fill_spreads_over_the_replicas_and_matches_a_single_server(pool):
    with Client(pool["address"], timeout=30) as client:
        info = client.wait_ready()
        assert info["model"]["pool"]["replicas"] == 2 and info["operations"] == ["extend", "fill"]
        job = client.submit(_fill(pool, 1001, 1008, steps=2, shot="spread"))
        done = [progress.raw["frames_done"] for progress in job.events(timeout=120) if "frames_done" in progress.raw]
        result = job.wait(timeout=120)
    stats = result.info["pool"]
    assert len(stats["by_replica"]) == 2 and sum(stats["by_replica"].values()) == 8, "both replicas worked"
    assert stats["frames_written"] == 8 and stats["retries"] == 0
    # Dealt in chunks (8 frames over 2 replicas: 2, 2, 1, 1, 1, 1 tasks), progress still per frame published.
    assert stats["tasks"] < 8 and done == sorted(done) and done[-1] == 8
    take = json.loads((Path(result.take_dir) / "take.json").read_text())
    assert take["status"] == "complete" and sorted(map(int, take["frames"])) == list(range(1001, 1009))
    assert len(_frame_files(result.take_dir)) == 8

    # The same request on one ordinary server (same stand-in, same adapter, same seed): the same pixels.
    from bodydouble_server.config import ServerConfig
    from bodydouble_server.imaging import frames as frame_io

    local = ServerConfig(port=0, **_settings(pool["root"]))
    with server_thread(local) as srv, Client(srv.bound_address, timeout=30) as client:
        single = client.submit(_fill(pool, 1001, 1008, steps=2, shot="single")).wait(timeout=120)
    for frame in range(1001, 1009):
        spread = frame_io.read_frame(Path(result.frames[frame]), local.limits).wire()
        alone = frame_io.read_frame(Path(single.frames[frame]), local.limits).wire()
        assert np.array_equal(spread, alone)


def test_a_shot_fill_is_refused_at_submit_not_run_frame_by_frame(pool):
    """The pool spreads frames over replicas: the video engine or coherence would silently become per-frame fill."""
    with Client(pool["address"], timeout=30) as client:
        for fields in ({"engine": "video"}, {"coherence": 0.5}):
            with pytest.raises(errors.RequestError) as refused:
                client.submit(_fill(pool, 1001, 1004, shot="shot-fill", **fields)).wait(timeout=30)
            assert refused.value.code == errors.NOT_SUPPORTED and "frame by frame" in str(refused.value)
    assert not list((pool["root"] / "takes").rglob("*shot-fill*"))


def test_requests_go_to_the_replica_holding_their_adapter(pool):
    """One adapter set resident per replica (max_adapters 1): alternating adapters only stay loaded if Serve
    routes each request to the replica that holds its adapter. Serve learns which replica holds which adapter
    asynchronously, so the first requests may each load theirs (in a full suite run the first four went to one
    replica); once each adapter sits on its own replica, no request may load anything."""
    seen = []

    def route(client, adapter):
        result = client.submit(_fill(pool, 1001, 1001, adapter, steps=1, shot="route")).wait(timeout=60)
        (replica, loads), = result.info["pool"]["loads"].items()
        seen.append((adapter, replica, loads))

    with Client(pool["address"], timeout=30) as client:
        for index in range(12):                    # warm-up: until the last hero and villain sit apart
            route(client, ("hero", "villain")[index % 2])
            if index >= 3 and seen[-1][1] != seen[-2][1] and seen[-3][1] == seen[-1][1] and seen[-4][1] == seen[-2][1]:
                break
        warm_from = len(seen)
        for index in range(6):
            route(client, ("hero", "villain")[index % 2])
    warm = seen[warm_from:]
    hero = {replica for adapter, replica, _ in warm if adapter == "hero"}
    villain = {replica for adapter, replica, _ in warm if adapter == "villain"}
    assert len(hero) == 1 and len(villain) == 1 and hero != villain, seen
    for replica in hero | villain:
        counts = [loads for _, r, loads in warm if r == replica]
        assert counts == [counts[0]] * len(counts), f"no loads once warm: {seen}"


def test_cancel_reaches_every_task(pool):
    with Client(pool["address"], timeout=30) as client:
        job = client.submit(_fill(pool, 1001, 1008, steps=40, shot="cancel"))       # 2 s a frame
        time.sleep(1.0)                  # both replicas are in the middle of their first frame
        job.cancel()
        with pytest.raises(Exception, match="cancel"):
            job.wait(timeout=30)
        take_dir = Path(client.status(job.job_id)["take_dir"])
        assert json.loads((take_dir / "take.json").read_text())["status"] == "cancelled"
        time.sleep(2.5)                  # a task that kept going would have published its frame by now
        assert _frame_files(take_dir) == []
        started = time.monotonic()       # and nothing is left queued in front of the next job
        client.submit(_fill(pool, 1001, 1001, steps=1, shot="after")).wait(timeout=60)
        assert time.monotonic() - started < 5.0


def test_an_adapter_published_while_the_pool_runs_is_served_without_a_restart(pool):
    from bodydouble_server.models import testing

    testing.test_adapter(pool["root"] / "adapters" / "sidekick", testing.identity_of("test:standin"), "Sidekick", 3)
    with Client(pool["address"], timeout=30) as client:
        assert "sidekick" in {a.name for a in client.rescan()}        # the gateway's listing and checks
        result = client.submit(_fill(pool, 1001, 1002, "sidekick", steps=1, shot="new")).wait(timeout=60)
    assert result.info["adapter"] == "sidekick" and len(result.frames) == 2


def test_the_gateway_runs_several_jobs_at_once(pool):
    """A second artist's job uses an idle replica at once instead of waiting behind the first job."""
    with Client(pool["address"], timeout=30) as first_artist, Client(pool["address"], timeout=30) as second_artist:
        long = first_artist.submit(_fill(pool, 1001, 1001, steps=60, shot="long"))       # 3 s on one replica
        time.sleep(0.5)
        short = second_artist.submit(_fill(pool, 1002, 1002, "villain", steps=1, shot="short"))
        assert short.wait(timeout=60).frames
        assert not long.done, "the second job ended while the first was still rendering"
        assert long.wait(timeout=60).frames


def _replica_pids(pool) -> dict[str, int]:
    pids = {}
    while len(pids) < 2:                 # each replica's process
        info = pool["handle"].describe.remote().result(timeout_s=60)
        pids[info["replica"]] = info["pid"]
    return pids


def test_a_replica_killed_mid_job_costs_a_retry_not_a_frame(pool):
    pids = _replica_pids(pool)
    with Client(pool["address"], timeout=30) as client:
        killed = False
        job = client.submit(_fill(pool, 1001, 1012, steps=20, shot="kill"))     # 1 s a frame
        for progress in job.events(timeout=120):
            if "replica" in progress.raw and not killed:
                # The replica that just ended a chunk was sent the next one before this event: kill it mid-frame.
                # (Killed between chunks, Serve's router would quietly route around it: no retry to count.)
                time.sleep(0.4)
                os.kill(pids[progress.raw["replica"]], signal.SIGKILL)
                killed = True
        result = job.wait(timeout=120)
    stats = result.info["pool"]
    assert killed and stats["retries"] >= 1
    assert stats["frames_written"] == 12, "every frame published exactly once"
    take = json.loads((Path(result.take_dir) / "take.json").read_text())
    assert take["status"] == "complete" and sorted(map(int, take["frames"])) == list(range(1001, 1013))
    files = sorted(p.name for p in Path(result.take_dir).iterdir())
    assert len(_frame_files(result.take_dir)) == 12 and not [f for f in files if ".bdtmp" in f]


def _take(take_dir) -> dict:
    return json.loads((Path(take_dir) / "take.json").read_text())


def test_an_extend_runs_on_one_replica_chunk_by_chunk_as_on_a_single_server(pool):
    with Client(pool["address"], timeout=30) as client:
        job = client.submit(_extend(pool, steps=2, shot="extend"))
        events = [progress.raw for progress in job.events(timeout=120)]
        result = job.wait(timeout=120)
    steps = [e for e in events if "chunk" in e]
    assert {e["chunk"] for e in steps} == {1, 2, 3} and {e["chunks"] for e in steps} == {3}, "per-chunk progress"
    assert len({e["replica"] for e in steps}) == 1, "one replica runs the whole extend"
    fractions = [e["fraction"] for e in steps]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert result.info["pool"]["replica"] == steps[0]["replica"] and result.info["pool"]["retries"] == 0
    assert _take(result.take_dir)["status"] == "complete"
    assert sorted(result.frames) == list(range(1017, 1037)) and len(_frame_files(result.take_dir)) == 20

    # The same request on one ordinary server: the same chunks, seams and pixels.
    from bodydouble_server.config import ServerConfig
    from bodydouble_server.imaging import frames as frame_io

    local = ServerConfig(port=0, **_settings(pool["root"]))
    with server_thread(local) as srv, Client(srv.bound_address, timeout=30) as client:
        single = client.submit(_extend(pool, steps=2, shot="extend-single")).wait(timeout=120)
    assert result.info["chunks"] == single.info["chunks"] and result.info["seam"] == single.info["seam"]
    for frame in (1017, 1025, 1036):
        assert np.array_equal(frame_io.read_frame(Path(result.frames[frame]), local.limits).wire(),
                              frame_io.read_frame(Path(single.frames[frame]), local.limits).wire())


def test_cancel_stops_an_extend_on_its_replica(pool):
    with Client(pool["address"], timeout=30) as client:
        job = client.submit(_extend(pool, steps=40, shot="extend-cancel"))      # 2 s a chunk
        for progress in job.events(timeout=60):
            if progress.raw.get("chunk") == 1 and progress.raw.get("step", 0) >= 2:
                job.cancel()
                break
        with pytest.raises(Exception, match="cancel"):
            job.wait(timeout=30)
        take_dir = client.status(job.job_id)["take_dir"]
        assert _take(take_dir)["status"] == "cancelled", "the reply comes after the replica marked the take"
        time.sleep(2.5)                  # an extend that kept going would have written its first chunk by now
        assert _frame_files(take_dir) == []


def test_a_replica_killed_mid_extend_leaves_an_interrupted_take_and_the_extend_runs_again(pool):
    pids = _replica_pids(pool)
    with Client(pool["address"], timeout=30) as client:
        killed, first_take = None, None
        job = client.submit(_extend(pool, steps=40, shot="extend-kill"))       # 2 s a chunk
        for progress in job.events(timeout=120):
            if progress.raw.get("chunk") == 2 and killed is None:              # chunk 1 is on disk
                first_take = client.status(job.job_id)["take_dir"]
                killed = progress.raw["replica"]
                os.kill(pids[killed], signal.SIGKILL)
        result = job.wait(timeout=120)
    assert killed and result.info["pool"]["retries"] == 1 and result.info["pool"]["replica"] != killed, result.info
    interrupted = _take(first_take)
    assert interrupted["status"] == "interrupted" and "replica" in interrupted["error"]
    # Whole chunks only (chunk 1: 1017-1024; on a slow machine chunk 2 may have ended before the kill: 1017-1030).
    assert sorted(map(int, interrupted["frames"])) in (list(range(1017, 1025)), list(range(1017, 1031)))
    assert result.info["pool"]["interrupted_takes"] == [first_take] and result.take_dir != first_take
    assert _take(result.take_dir)["status"] == "complete" and len(_frame_files(result.take_dir)) == 20


def test_a_pool_that_is_down_is_a_clear_error(tmp_path):
    from bodydouble import errors
    from bodydouble_server.cli import start_in_thread
    from bodydouble_server.config import ServerConfig

    config = ServerConfig(port=0, pool="127.0.0.1:9", **_settings(tmp_path))     # nothing listens on port 9

    srv, thread = start_in_thread(config)
    try:
        with Client(srv.bound_address, timeout=10) as client:
            deadline = time.monotonic() + 20
            while (info := client.hello())["state"] == "loading" and time.monotonic() < deadline:
                time.sleep(0.1)
            assert info["state"] == "failed" and "GPU pool at 127.0.0.1:9 is unavailable" in info["load_error"]
            with pytest.raises(errors.BodyDoubleError) as refused:
                client.submit(FillRequest(frames=sequence_frames(str(tmp_path / "p.####.exr"), 1, 1))).wait(10)
            assert refused.value.code == errors.MODEL_UNAVAILABLE
    finally:
        srv.stop()
        thread.join(10)
