"""Light requests from 8 clients while a fill runs on a real ``bodydouble serve`` process (#12).

Each client is a raw DEALER socket, sending ``hello`` and ``status`` one at a time and checking every reply is
its own (same id, the job it asked about). Prints ``hello`` latency p50/p99 with the worker idle and with a fill
running (goal: p99 at most 5 ms on loopback), and the crossed or lost replies (goal 0), for the clients as
processes of their own (as hosts are) and as sockets of one process, with the load average it started at and the
fill's denoising steps per second meanwhile. On a box with fewer cores than client processes the first layout
measures the OS scheduler's queue as much as the server; the second keeps the harness to one process. The
server's own share of a ``hello`` is about 0.2 ms (capabilities 0.12 ms + encoding 0.06 ms, profiled).

    .venv/bin/python bench/load.py --seconds 10
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def light_clients(address: str, job_id: str, seconds: float, first: int, count: int, out) -> None:
    """``count`` clients, each a raw DEALER socket with one request in flight at a time, driven by one poller."""
    import zmq

    from bodydouble import protocol

    ctx = zmq.Context()
    socks = []
    for _ in range(count):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(address)
        socks.append(sock)
    poller = zmq.Poller()
    for sock in socks:
        poller.register(sock, zmq.POLLIN)
    latencies, crossed, lost, sent = [], 0, 0, 0
    pending: dict = {}                       # socket -> (request id, asked for status, sent at)

    def send(sock, index) -> None:
        nonlocal sent
        sent += 1
        rid = f"c{index}-{sent}"
        ask_status = bool(job_id) and sent % 5 == 0
        msg = protocol.Message(type="status", id=rid, body={"job": job_id}) if ask_status else \
            protocol.Message(type="hello", id=rid, body={"client": f"load-{index}"})
        pending[sock] = (rid, ask_status, time.perf_counter())
        sock.send_multipart(protocol.encode(msg))

    for index, sock in enumerate(socks, first):
        send(sock, index)
    end = time.monotonic() + seconds
    while pending:
        events = dict(poller.poll(5000))
        if not events:                       # nothing came back for 5 s: every request in flight is lost
            lost += len(pending)
            break
        for sock in events:
            reply = protocol.decode(sock.recv_multipart(), expect=protocol.REPLY_TYPES)
            if reply.type == "heartbeat":    # not ours to count
                continue
            rid, ask_status, t0 = pending.pop(sock)
            elapsed = time.perf_counter() - t0
            mine = reply.id == rid and reply.type == "result" and (
                reply.body.get("job") == job_id if ask_status else reply.body.get("server") == "bodydouble")
            crossed += not mine
            if not ask_status:
                latencies.append(elapsed)
            if time.monotonic() < end:
                send(sock, first + socks.index(sock))
    for sock in socks:
        sock.close()
    out.put((latencies, crossed, lost, sent))


def run_clients(address: str, job_id: str, seconds: float, clients: int, processes: int) -> tuple[list[float], int, int, int]:
    """``clients`` spread over ``processes`` client processes (one each, or all in one)."""
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    shares = [clients // processes + (k < clients % processes) for k in range(processes)]
    starts = [sum(shares[:k]) for k in range(processes)]
    procs = [ctx.Process(target=light_clients, args=(address, job_id, seconds, start, share, out))
             for start, share in zip(starts, shares)]
    for p in procs:
        p.start()
    results = [out.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join(10)
    latencies = sorted(x for r in results for x in r[0])
    return latencies, sum(r[1] for r in results), sum(r[2] for r in results), sum(r[3] for r in results)


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")


def steps_done(status: dict) -> int:
    progress = status.get("progress") or {}
    return progress.get("frame_index", 0) * progress.get("steps", 0) + progress.get("step", 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--size", default="512x288", help="plate WIDTHxHEIGHT of the fill that runs meanwhile")
    args = parser.parse_args()

    from bench.fuzz_soak import drain_output
    from bodydouble.client import Client
    from bodydouble.jobspec import FillRequest, sequence_frames
    from bodydouble_server import samples
    from tests.support import start_server_process, stop_process

    width, height = (int(v) for v in args.size.split("x"))
    root = Path(tempfile.mkdtemp(prefix="bd-load-"))
    (root / "adapters").mkdir()
    plate, mask = samples.write_sequence(root / "plates", 1, 200, width, height)
    load = os.getloadavg()[0]
    proc, address = start_server_process(root, root / "adapters", extra=["--resolution", "256"])
    drain_output(proc)
    layouts = {"processes": args.clients, "one process": 1}
    idle, busy = {}, {}
    try:
        for layout, processes in layouts.items():
            idle[layout] = run_clients(address, "", args.seconds / 2, args.clients, processes)
        with Client(address, timeout=30) as client:
            job = client.submit(FillRequest(frames=sequence_frames(plate, 1, 200, mask), steps=50, seed=1))
            job_id = job.accepted(timeout=60)
            while not (client.status(job_id).get("progress") or {}).get("step"):
                time.sleep(0.1)
            first, t0 = steps_done(client.status(job_id)), time.monotonic()
            for layout, processes in layouts.items():
                busy[layout] = run_clients(address, job_id, args.seconds / len(layouts), args.clients, processes)
            status = client.status(job_id)
            running, rate = status["state"], (steps_done(status) - first) / (time.monotonic() - t0)
            job.cancel()
    finally:
        stop_process(proc)

    print(f"{args.clients} clients, hello + status one at a time; fill {width}x{height} running: {running} "
          f"({rate:.2f} steps/s meanwhile); load average at start {load:.2f} on {os.cpu_count()} cores")
    print(f"{'clients as':<12} {'worker':<13} {'requests':>9} {'hello p50 ms':>13} {'hello p99 ms':>13} "
          f"{'crossed':>8} {'lost':>5}")
    for layout in layouts:
        for label, (lat, crossed, lost, sent) in (("idle", idle[layout]), ("running fill", busy[layout])):
            print(f"{layout:<12} {label:<13} {sent:>9} {pct(lat, 0.5):>13.2f} {pct(lat, 0.99):>13.2f} "
                  f"{crossed:>8} {lost:>5}")
    for layout in layouts:
        print(f"{layout}: p99 during the fill / idle: {pct(busy[layout][0], 0.99) / pct(idle[layout][0], 0.99):.2f}")
    print("goal: p99 <= 5 ms during the fill; crossed and lost 0")

if __name__ == "__main__":
    main()
