"""A 48-frame fill through the real gateway on a Ray Serve pool of K = 1, 2, 4 stand-in replicas.

    python bench/pool_scaling.py [--frames 48] [--steps 8] [--step-s 0.1] [--replicas 1,2,4]

Client -> ZeroMQ gateway (bodydouble serve --pool) -> Serve -> K CPU replicas of test:standin, which sleeps
``--step-s`` per step like a GPU without holding the CPU, so K replicas can overlap on a 2-core machine the way
K GPUs would. Prints, for each K, the job's wall time, speed-up over K = 1 (goal: at least 0.8 K) and the adapter
routing hit rate (requests that found their adapter resident): the 48-frame job itself, then 24 single-frame
jobs cycling 3 adapters with 2 resident per replica. Also Ray's own costs: ray.init, serve.start, each
deployment, shutdown, and the summed memory (RSS) of Ray's processes. All ratios come from this one run.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import served  # noqa: E402


def ray_rss_mb() -> float:
    """Summed RSS of this machine's Ray processes (GCS, raylet, workers, replicas), not counting this driver."""
    import psutil

    total = 0
    for proc in psutil.process_iter(["name", "cmdline", "memory_info"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if proc.pid != os.getpid() and ("ray" in (proc.info["name"] or "") or "ray/" in cmd or "ray::" in cmd):
            total += proc.info["memory_info"].rss if proc.info["memory_info"] else 0
    return total / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--step-s", type=float, default=0.1)
    parser.add_argument("--replicas", default="1,2,4")
    parser.add_argument("--size", default="256x144", help="plate WIDTHxHEIGHT")
    args = parser.parse_args()
    counts = [int(k) for k in args.replicas.split(",")]

    import ray
    from ray import serve

    from bodydouble.jobspec import AdapterRef, FillRequest, sequence_frames
    from bodydouble_server import samples
    from bodydouble_server.config import ServerConfig
    from bodydouble_server.models import testing
    from bodydouble_server.scale.serve_app import APP, build_app

    root = Path(tempfile.mkdtemp(prefix="bodydouble-pool-bench-"))
    os.environ.setdefault("BODYDOUBLE_CACHE", str(root / "cache"))
    identity = testing.identity_of("test:standin")
    names = ["hero", "villain", "sidekick"]
    for seed, name in enumerate(names):
        testing.test_adapter(root / "adapters" / name, identity, name.title(), seed)
    width, height = (int(v) for v in args.size.split("x"))
    plate, mask = samples.write_sequence(root / "plates", 1001, 1000 + args.frames, width, height)
    settings = dict(model="test:standin", video_model="none", adapters=str(root / "adapters"), roots=[str(root)],
                    output_root=str(root / "takes"), resolution=64, audit_log=str(root / "audit.log"))

    def fill(first: int, last: int, adapter: str) -> FillRequest:
        return FillRequest(frames=sequence_frames(plate, first, last, mask), adapters=[AdapterRef(adapter)],
                           steps=args.steps, seed=1, shot="bench")

    costs = {}
    start = time.perf_counter()
    # "local": a cluster of its own, never one a test or a studio started with `ray start` on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="bodydouble",
             _temp_dir=tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    costs["ray.init"] = time.perf_counter() - start
    start = time.perf_counter()
    serve.start(proxy_location="Disabled")
    costs["serve.start"] = time.perf_counter() - start
    rows = []
    try:
        for k in counts:
            start = time.perf_counter()
            serve.run(build_app({"settings": settings, "replicas": k, "gpus": 0, "cpus": 2 / max(counts),
                                 "max_adapters": 2, "env": {testing.STEP_ENV: args.step_s}}),
                      name=APP, route_prefix=None)
            costs[f"deploy K={k}"] = time.perf_counter() - start
            memory = ray_rss_mb()
            config = ServerConfig(port=0, pool=ray.get_runtime_context().gcs_address, **settings)
            with served(config) as (_, client):
                warm = client.submit(fill(1001, 1000 + min(k, args.frames), "hero")).wait(timeout=600)
                start = time.perf_counter()
                result = client.submit(fill(1001, 1000 + args.frames, "hero")).wait(timeout=1800)
                wall = time.perf_counter() - start
                stats = result.info["pool"]
                after = dict(stats["loads"])
                for index in range(24):
                    one = client.submit(fill(1001, 1001, names[index % 3])).wait(timeout=600)
                    after.update(one.info["pool"]["loads"])
            # A miss is a load: each replica's load counter, before and after.
            job_misses = sum(n - warm.info["pool"]["loads"].get(r, 0) for r, n in stats["loads"].items())
            cycle_misses = sum(n - stats["loads"].get(r, 0) for r, n in after.items())
            rows.append((k, wall, stats, job_misses, cycle_misses, memory))
            serve.delete(APP)
    finally:
        start = time.perf_counter()
        serve.shutdown()
        ray.shutdown()
        costs["shutdown"] = time.perf_counter() - start

    frame_s = args.steps * args.step_s
    print(f"pool scaling: {args.frames} frames of {args.size}, stand-in {args.steps} steps x {args.step_s} s "
          f"= {frame_s:.2f} s a frame (ideal K=1 job: {args.frames * frame_s:.1f} s)")
    print(f"{'K':>3} {'wall s':>8} {'speed-up':>9} {'goal':>6} {'GPU busy':>8} {'tasks':>5} {'frames by replica':<24} "
          f"{'hit (job)':>9} {'hit (3 adapters)':>16} {'Ray RSS MB':>10}")
    base = rows[0][1]
    for k, wall, stats, job_misses, cycle_misses, memory in rows:
        spread = ",".join(str(v) for v in sorted(stats["by_replica"].values(), reverse=True))
        busy = args.frames * frame_s / (k * wall)       # the stand-in's sleeping share of K replicas' time
        print(f"{k:>3} {wall:>8.2f} {base / wall:>9.2f} {0.8 * k:>6.1f} {busy:>8.0%} {stats['tasks']:>5} {spread:<24} "
              f"{1 - job_misses / stats['tasks']:>9.2%} {1 - cycle_misses / 24:>16.2%} {memory:>10.0f}")
    print("Ray's own costs: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in costs.items()))
    print("GPU busy: the stand-in's sleep (the GPU's work) over K replicas' wall time. tasks: chunks the gateway "
          "sent. hit: tasks that found their adapter resident (a miss is a load). job: the 48 frames after a K-frame "
          "warm-up; 3 adapters: 24 single-frame jobs cycling 3 adapters, 2 resident per replica")
    return 0


if __name__ == "__main__":
    sys.exit(main())
