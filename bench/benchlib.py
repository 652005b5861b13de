"""What the overhead benchmarks share: a real server on a thread with a client, and interleaved timing."""
from __future__ import annotations

import contextlib
import statistics
import time


@contextlib.contextmanager
def served(config):
    """A real server (ROUTER socket, worker, model) on a background thread and a connected client."""
    from bodydouble.client import Client
    from bodydouble_server.cli import start_in_thread

    server, thread = start_in_thread(config)
    client = Client(server.bound_address, timeout=60)
    try:
        client.wait_ready()
        yield server, client
    finally:
        client.close()
        server.stop()
        thread.join(10)


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def interleaved(bare, through_server, repeats: int) -> tuple[float, float]:
    """Median seconds of each, run alternately so machine noise falls on both alike (after one warm-up each)."""
    timed(bare), timed(through_server)
    times = [(timed(bare), timed(through_server)) for _ in range(repeats)]
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def world_options(parser, quick: str) -> None:
    """The options every miniature-world bench takes (likeness, shot_fill, extend_likeness)."""
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--characters", type=int, help="held-out characters (whole look-alike groups of 3 first)")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--keep", help="work in this folder and keep it (plates, adapters, takes)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared 2-core CPU two threads run several times slower)")
    parser.add_argument("--train-steps", type=int, help="each adapter's training steps")
    parser.add_argument("--footage", type=int, help="references as clips of this many frames, the head turning "
                                                     "(4k+1: video adapters train on the clips), not stills")
    parser.add_argument("--footage-turn", type=float,
                        help="with --footage: degrees the head turns a frame (default 3; 0 holds each still as a clip)")
    parser.add_argument("--device", default="cpu",
                        help="the server's device: cpu (the committed tables), cuda (float16, as a studio runs it)")
    parser.add_argument("--dtype", default="auto", help="the server's precision: auto (CPU float32, CUDA float16), "
                                                        "float32, float16, bfloat16")


def server_options(args) -> dict:
    """The world server's settings from world_options' flags."""
    return {"device": args.device, "dtype": args.dtype}


def world_run(args, run) -> dict:
    """``run(root, log)`` in --keep's folder (kept) or a temporary one, torch on --threads threads (set before
    torch loads, here and in the server's training process, which inherits the environment); --json written."""
    import json
    import os
    import sys
    import tempfile
    from pathlib import Path

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    from bodydouble_server.engine import quiet_libraries

    torch.set_num_threads(args.threads)
    quiet_libraries()

    def log(message: str) -> None:
        print(time.strftime("%H:%M:%S"), message, file=sys.stderr, flush=True)

    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        results = run(Path(args.keep), log)
    else:
        with tempfile.TemporaryDirectory(prefix="bodydouble-world-") as work:
            results = run(Path(work), log)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return results
