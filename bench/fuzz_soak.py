"""Soak a real ``bodydouble serve`` process with malformed and mutated messages (#12).

Prints replies by code, messages that got no reply (goal 0), the server's RSS growth over the soak (goal
at most 10 MB; measured after a warm-up of the same messages) and whether a fresh ``hello`` is answered at
the end (and how fast). Messages go in windows of ``--window`` so the sender never runs far ahead.

    .venv/bin/python bench/fuzz_soak.py --messages 100000
"""
from __future__ import annotations

import argparse
import collections
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def soak(address: str, messages, window: int, counts: collections.Counter) -> int:
    """Send in windows, read every reply; returns how many got none (within 10 s of the window's end)."""
    import zmq

    from bodydouble import errors, protocol

    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    missing = 0
    batch = []
    try:
        for frames in messages:
            batch.append(frames)
            if len(batch) == window:
                missing += _round(sock, batch, counts, errors, protocol)
                batch = []
        if batch:
            missing += _round(sock, batch, counts, errors, protocol)
    finally:
        sock.close()
    return missing


def _round(sock, batch, counts, errors, protocol) -> int:
    for frames in batch:
        sock.send_multipart(frames)
    got = 0
    while got < len(batch) and sock.poll(10_000):
        frames = sock.recv_multipart()
        try:
            msg = protocol.decode(frames, expect=protocol.REPLY_TYPES)
            counts[msg.body.get("code", "?") if msg.type == "error" else msg.type] += 1
        except errors.BodyDoubleError as exc:
            counts[f"undecodable reply ({exc.code})"] += 1
        got += 1
    return len(batch) - got


def drain_output(proc) -> None:
    """Read the server's log so a full pipe never blocks it (the benchmark measures the server, not the pipe)."""
    import threading

    threading.Thread(target=lambda: collections.deque(proc.stdout, maxlen=0), daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--warmup", type=int, default=5_000)
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()

    from bodydouble.client import Client
    from tests.fuzzing import mutations
    from tests.support import start_server_process, stop_process

    root = Path(tempfile.mkdtemp(prefix="bd-fuzz-"))
    (root / "adapters").mkdir()
    proc, address = start_server_process(root, root / "adapters", extra=["--resolution", "64"])
    drain_output(proc)
    try:
        rng = random.Random(args.seed)
        warm = collections.Counter()
        soak(address, mutations(rng, args.warmup), args.window, warm)
        time.sleep(1)
        before = rss_mb(proc.pid)
        counts = collections.Counter()
        start = time.perf_counter()
        missing = soak(address, mutations(rng, args.messages), args.window, counts)
        elapsed = time.perf_counter() - start
        time.sleep(1)
        after = rss_mb(proc.pid)
        t0 = time.perf_counter()
        with Client(address, timeout=5) as client:
            hello = client.connect()["state"]
        hello_ms = (time.perf_counter() - t0) * 1000
        alive = proc.poll() is None
    finally:
        stop_process(proc)

    print(f"fuzz soak: {args.messages} messages (after {args.warmup} warm-up) in {elapsed:.1f} s "
          f"({args.messages / elapsed:.0f} msg/s)")
    print(f"{'reply':<24} {'count':>8}")
    for code, n in counts.most_common():
        print(f"{code:<24} {n:>8}")
    print(f"messages without a reply: {missing}  (goal 0)")
    print(f"server RSS: {before:.1f} MB -> {after:.1f} MB, growth {after - before:+.1f} MB  (goal <= 10 MB)")
    print(f"hello at the end: {hello} in {hello_ms:.1f} ms; server process alive: {alive}")


if __name__ == "__main__":
    main()
