"""Peak resident memory above idle for fill and extend, by plate size and frame count, from one run.

Each case runs in a fresh process: a real server on a thread (the test-only stand-in models, no sleeping: the
model's own memory is not what is measured) and a client; plates on disk (one file per size, the frames are
links to it). The process's RSS is sampled every 5 ms; "idle" is its RSS after the server is ready and one
small warm-up job has run; the peak is the highest sample during the job. Extend conditions on 1 plate frame
(K=1) with the stand-in video model's default window (81 frames); fill runs every frame with a 25 % mask.

Goals (issue #22): extend at 1K and 2K: peak at 48 frames within 1.3x of 8 frames; fill of the 8192x8192
16-channel half plate: peak at most 2.5x its decoded size (2 GiB).

    python bench/memory.py                       # every case (8K extend: 8 frames only, see --big-counts)
    python bench/memory.py --sizes 1K 2K --ops extend
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SIZES = {"1K": (1024, 540, 4), "2K": (2048, 1080, 4), "4K": (4096, 2160, 4), "8K16": (8192, 8192, 16)}


def write_plate(folder: Path, size: str) -> tuple[Path, Path]:
    """One plate (half RGBA + extra half channels, textured RGB) and its mask for ``size``; cached per folder."""
    import numpy as np
    import OpenEXR

    width, height, channels = SIZES[size]
    plate, mask = folder / f"plate_{size}.exr", folder / f"mask_{size}.exr"
    if not plate.exists():
        rng = np.random.default_rng(1)
        tile = rng.uniform(0.02, 4.0, (64, 64)).astype(np.float16)
        texture = np.tile(tile, (height // 64 + 1, width // 64 + 1))[:height, :width]
        names = ["R", "G", "B", "A"] + [f"aov.C{i}" for i in range(channels - 4)]
        data = {n: (texture if n in "RGB" else np.ones((height, width), np.float16) if n == "A"
                    else np.zeros((height, width), np.float16)) for n in names}
        header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
        OpenEXR.File(header, data).write(str(plate))
        values = np.zeros((height, width), np.float16)
        values[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 1.0
        OpenEXR.File(dict(header), {"A": values}).write(str(mask))
    return plate, mask


def run_case(op: str, size: str, frames: int, folder: Path) -> dict:
    """In this process: serve, warm up, then measure one job. Returns MB above idle and seconds."""
    import psutil

    from bodydouble.jobspec import ExtendRequest, FillRequest, FrameInput, ImageRef
    from bodydouble_server.config import ServerConfig
    from bodydouble_server.models import testing

    os.environ[testing.STEP_ENV] = "0"
    plate, mask = write_plate(folder, size)
    small_plate, small_mask = write_plate(folder, "1K")
    seq = folder / f"seq_{size}_{op}_{frames}"
    seq.mkdir(exist_ok=True)
    for frame in range(1, frames + 1):
        for src, name in ((plate, "plate"), (mask, "mask")):
            link = seq / f"{name}.{frame:04d}.exr"
            if not link.exists():
                os.symlink(src, link)
    config = ServerConfig(port=0, model="test:standin", video_model="test:standin", roots=[str(folder)],
                          adapters=str(folder / "adapters"), output_root=str(folder / "takes"))

    def request(kind: str, count: int, plates, masks):
        """``plates(frame)`` / ``masks(frame)``: paths; extend conditions on frame 1 and makes ``count``."""
        if kind == "fill":
            return FillRequest(frames=[FrameInput(f, ImageRef(path=str(plates(f))), ImageRef(path=str(masks(f))))
                                       for f in range(1, count + 1)], steps=1)
        return ExtendRequest(frames=[FrameInput(1, ImageRef(path=str(plates(1))))], count=count, steps=1)

    proc = psutil.Process()
    # A long heartbeat: sealing an 8K take's C2PA proxy holds the GIL for tens of seconds (notes: #17), and the
    # memory is what is measured here, not liveness.
    with _served(config, heartbeat_interval=30.0) as client:
        # Warm-up: imports, OCIO config, model slots.
        client.submit(request(op, 2, lambda f: small_plate, lambda f: small_mask)).wait(timeout=600)
        import gc

        gc.collect()
        time.sleep(0.5)
        idle = proc.memory_info().rss
        peak = [idle]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss)
                time.sleep(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        job = request(op, frames, lambda f: seq / f"plate.{f:04d}.exr", lambda f: seq / f"mask.{f:04d}.exr")
        client.submit(job).wait(timeout=3600)
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    width, height, channels = SIZES[size]
    decoded = width * height * channels * 2
    return {"op": op, "size": size, "frames": frames, "idle_mb": idle / 2**20, "peak_above_idle_mb": (peak[0] - idle) / 2**20,
            "decoded_mb": decoded / 2**20, "seconds": seconds}


@contextlib.contextmanager
def _served(config, heartbeat_interval: float):
    from bodydouble.client import Client
    from bodydouble_server.cli import start_in_thread

    server, thread = start_in_thread(config)
    try:
        client = Client(server.bound_address, timeout=600, heartbeat_interval=heartbeat_interval)
    except TypeError:     # a checkout from before client heartbeats (a before/after comparison, PYTHONPATH=...)
        client = Client(server.bound_address, timeout=600)
    try:
        client.wait_ready()
        yield client
    finally:
        client.close()
        server.stop()
        thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", nargs="+", default=["fill", "extend"], choices=["fill", "extend"])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--counts", nargs="+", type=int, default=[8, 48])
    parser.add_argument("--big-counts", nargs="+", type=int, default=[8],
                        help="frame counts for the 8K 16-channel plate (each frame writes 2 GiB of channels)")
    parser.add_argument("--folder", help="work folder (default: a new temp folder)")
    parser.add_argument("--case", help=argparse.SUPPRESS)      # internal: op,size,frames in a child process
    args = parser.parse_args()
    folder = Path(args.folder or tempfile.mkdtemp(prefix="bd-bench-memory-"))
    if args.case:
        op, size, frames = args.case.split(",")
        print(json.dumps(run_case(op, size, int(frames), folder)))
        return
    rows = []
    for size in args.sizes:
        for op in args.ops:
            for frames in (args.big_counts if size == "8K16" else args.counts):
                run = subprocess.run([sys.executable, __file__, "--case", f"{op},{size},{frames}", "--folder", str(folder)],
                                     capture_output=True, text=True)
                if run.returncode != 0:
                    print(f"{op} {size} x{frames}: failed\n{run.stderr[-2000:]}", file=sys.stderr)
                    continue
                rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
                row = rows[-1]
                print(f"{op:6s} {size:5s} x{frames:<3d} peak above idle {row['peak_above_idle_mb']:8.0f} MB "
                      f"({row['peak_above_idle_mb'] / row['decoded_mb']:.2f}x one decoded plate of "
                      f"{row['decoded_mb']:.0f} MB)  {row['seconds']:.1f} s", flush=True)
    print("\n| op | plate | frames | peak above idle (MB) | x decoded plate | seconds |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['op']} | {row['size']} | {row['frames']} | {row['peak_above_idle_mb']:.0f} | "
              f"{row['peak_above_idle_mb'] / row['decoded_mb']:.2f} | {row['seconds']:.1f} |")
    by = {(r["op"], r["size"], r["frames"]): r["peak_above_idle_mb"] for r in rows}
    for size in ("1K", "2K", "4K"):
        if ("extend", size, 48) in by and ("extend", size, 8) in by:
            print(f"extend {size}: 48 frames / 8 frames = {by[('extend', size, 48)] / max(by[('extend', size, 8)], 1):.2f}"
                  " (goal <= 1.3)")
    if ("fill", "8K16", 8) in by or ("fill", "8K16", 1) in by:
        row = next(r for r in rows if r["op"] == "fill" and r["size"] == "8K16")
        print(f"fill 8K 16-channel: peak / decoded plate = {row['peak_above_idle_mb'] / row['decoded_mb']:.2f} (goal <= 2.5)")


if __name__ == "__main__":
    main()
