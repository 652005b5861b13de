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
