"""The GPU pool on a cluster made the way a studio makes one: ``ray start --head`` (its own processes, two
declared GPUs, Ray Client's server on), the application deployed with ``serve run ... config=server.toml``, and a
gateway that connects with ``ray://``. The embedded tiny model (trainable), one replica with ``num_gpus=1``.

No GPU here: Ray schedules declared GPUs all the same and sets CUDA_VISIBLE_DEVICES; torch sees no CUDA device,
so the work runs on the CPU (and says so). The last test kills the cluster: it must stay last in this module.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bodydouble import errors
from bodydouble.client import Client
from bodydouble.jobspec import AdapterRef, FillRequest, sequence_frames

from bodydouble_server.adapters import MANIFEST_FILE

from .support import server_thread
from .test_train_job import SIZE, train_request
from .test_training import write_frames

pytestmark = [
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20"),    # inside Ray
    # Ray 2.60's Ray Client: when its connection closes (shutdown, or the cluster killed) its data thread fails
    # every pending future, and raises on the ones Serve's router cancelled itself (queue-length probes that timed
    # out): an InvalidStateError in thread ray_client_streaming_rpc, Ray's own thread, not ours.
    pytest.mark.filterwarnings(
        "ignore:Exception in thread ray_client_streaming_rpc:pytest.PytestUnhandledThreadExceptionWarning"),
]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from bodydouble_server import samples

    root = tmp_path_factory.mktemp("cluster")
    plate, mask = samples.write_sequence(root / "plates", 1001, 1012, SIZE, SIZE)
    settings = {"video_model": "none", "adapters": str(root / "adapters"), "roots": [str(root)],
                "output_root": str(root / "takes"), "resolution": SIZE, "device": "auto",
                "audit_log": str(root / "audit.log")}
    (root / "adapters").mkdir()
    toml = root / "server.toml"
    toml.write_text("".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in settings.items()))
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")          # Ray's socket names must fit in 107 bytes
    gcs, client = _free_port(), _free_port()
    # Token authentication off for this throwaway loopback cluster (docs/scale-out.md: how a studio's gateway
    # sends its token).
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}", f"--ray-client-server-port={client}",
         "--node-ip-address=127.0.0.1", f"--dashboard-port={_free_port()}",
         f"--dashboard-agent-listen-port={_free_port()}", "--num-cpus=2", "--num-gpus=2", f"--temp-dir={temp}"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The documented deployment: the server TOML, one replica with one GPU (half a CPU: two cores here).
        subprocess.run([str(BIN / "serve"), "run", "--address", f"127.0.0.1:{gcs}", "--non-blocking",
                        "--name", "bodydouble", "bodydouble_server.scale.serve_app:build_app", f"config={toml}", "replicas=1", "gpus=1",
                        "cpus=0.5"], env=env, check=True, timeout=300, capture_output=True)
        yield {"root": root, "plate": plate, "mask": mask, "toml": toml, "settings": settings, "head": head,
               "address": f"ray://127.0.0.1:{client}", "temp": Path(temp)}
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()                   # the gateway's Ray Client connection
        try:
            os.killpg(head.pid, signal.SIGTERM)
            head.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _gateway(cluster, **settings):
    from bodydouble_server.config import ServerConfig

    return server_thread(ServerConfig.load(cluster["toml"], port=0, pool=cluster["address"], **settings))


@pytest.fixture(scope="module")
def gateway(cluster):
    with _gateway(cluster) as srv:
        yield srv.bound_address


def _fill(cluster, first: int, last: int, steps: int, **fields) -> FillRequest:
    return FillRequest(frames=sequence_frames(cluster["plate"], first, last, cluster["mask"]), seed=3, steps=steps,
                       **fields)


def test_a_replica_with_a_gpu_is_placed_on_it_and_runs_where_torch_can(cluster, gateway):
    import torch
    from ray import serve

    from bodydouble_server.scale.serve_app import APP

    with Client(gateway, timeout=60) as client:
        info = client.wait_ready(timeout=120)
    assert info["model"]["pool"]["replicas"] == 1 and {"fill", "train"} <= set(info["operations"])
    placed = serve.get_app_handle(APP).describe.remote().result(timeout_s=60)      # over the gateway's ray://
    assert placed["resources"]["GPU"] == 1.0 and len(placed["gpu_ids"]) == 1
    assert placed["cuda_visible_devices"] == placed["gpu_ids"][0], "Ray gave the replica its GPU"
    assert placed["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():       # said in the replica's log, not silently ignored
        logs = "".join(p.read_text(errors="replace") for p in cluster["temp"].glob("session_*/logs/worker-*.err"))
        assert "torch sees no CUDA device: the model runs on the CPU" in logs


def test_a_gateway_over_ray_client_fills_and_trains_on_the_pool(cluster, gateway):
    studio = {"frames": write_frames(cluster["root"] / "frames")}
    with Client(gateway, timeout=60) as client:
        result = client.submit(_fill(cluster, 1001, 1002, steps=2, shot="client")).wait(timeout=120)
        assert sorted(result.frames) == [1001, 1002] and result.info["pool"]["frames_written"] == 2

        progress = []
        trained = client.submit(train_request(studio, name="hero_pool")).wait(timeout=300,
                                                                               on_progress=progress.append)
        assert trained.adapter == "hero_pool" and trained.info["adapter_status"] == "ready"
        start = next(p.raw for p in progress if p.raw.get("phase") == "start")
        assert start["resources"]["GPU"] == 1.0 and len(start["gpu_ids"]) == 1, "a trainer gets a GPU of its own"
        assert [p.step for p in progress if p.raw.get("phase") == "train"] == [1, 2, 3, 4]
        assert (cluster["root"] / "adapters" / "hero_pool" / MANIFEST_FILE).is_file(), "published where replicas look"
        assert {a.name: a.status for a in client.list_adapters()}["hero_pool"] == "ready"     # no rescan asked
        served = client.submit(_fill(cluster, 1003, 1003, steps=2, adapters=[AdapterRef("hero_pool")],
                                     shot="trained")).wait(timeout=120)
        assert served.info["adapter"] == "hero_pool"


def test_cancel_stops_a_training_on_the_pool_at_a_checkpoint(cluster, gateway):
    studio = {"frames": write_frames(cluster["root"] / "frames-cancel")}
    with Client(gateway, timeout=60) as client:
        job = client.submit(train_request(studio, name="hero_cancel", steps=400, checkpoint_every=1))
        for progress in job.events(timeout=300):
            if progress.raw.get("phase") == "train" and progress.raw.get("step", 0) >= 2:
                job.cancel()
                break
        with pytest.raises(errors.BodyDoubleError) as stopped:
            job.wait(timeout=120)
    assert stopped.value.code == errors.CANCELLED and stopped.value.details["step"] < 400
    assert stopped.value.details["checkpoint"], "kept for the same request to resume"
    assert not (cluster["root"] / "adapters" / "hero_cancel").exists(), "nothing published"


def test_a_cluster_that_dies_mid_job_ends_it_with_a_coded_error_and_an_interrupted_take(cluster):
    """Kills the cluster: keep this test last in the module."""
    import json

    with _gateway(cluster, pool_stall_timeout=4.0) as srv, Client(srv.bound_address, timeout=60) as client:
        client.wait_ready(timeout=120)
        job = client.submit(_fill(cluster, 1001, 1012, steps=60, shot="stall"))
        for progress in job.events(timeout=120):
            if progress.raw.get("frames_done", 0) >= 1:
                break
        os.killpg(cluster["head"].pid, signal.SIGKILL)       # every process of the cluster, at once
        killed = time.monotonic()
        with pytest.raises(errors.BodyDoubleError) as lost:
            job.wait(timeout=120)
        waited = time.monotonic() - killed
        assert lost.value.code == errors.MODEL_UNAVAILABLE and lost.value.details["stalled_s"] >= 4.0
        assert waited < 30, f"the job ended {waited:.0f} s after the cluster died (stall timeout 4 s)"
        take = json.loads((Path(client.status(job.job_id)["take_dir"]) / "take.json").read_text())
        assert take["status"] == "interrupted" and "stopped answering" in take["error"]
        started = time.monotonic()
        assert client.hello()["state"] == "ready" and time.monotonic() - started < 5, "the server keeps answering"
