"""The audit log's cost per request, as a ratio to the same request without it, and N audited requests from
4 concurrent clients leaving a chain that verifies.

Light requests, so the audit's share is as large as it gets:
  refused  a fill that consent refuses at submit: one audit line, no other work
  fill     a 1-frame 32x24 fill on the test stand-in model with no sleep per step: two lines (submit, outcome),
           a take and its C2PA manifests
Each is timed with the real log (each line written and fsynced before the reply) and with a log that writes
nothing, alternately in one run (medians); the ratio is with / without. A real GPU fill takes seconds per
frame, against which the audit's milliseconds vanish. Then ``--requests`` requests (default 10,000; one in
ten a fill) from 4 clients at once, the chain verified, every request found once.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["BODYDOUBLE_STANDIN_STEP_S"] = "0"


class NullAudit:
    """A log that keeps nothing: the 'without' side."""

    def append(self, event: str, sync: bool = True, **fields) -> dict:
        return {**fields, "event": event, "seq": 0, "hash": ""}

    def sync(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000, help="requests in the concurrent run")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds of the per-request timing")
    parser.add_argument("--per-round", type=int, default=20, help="requests of each kind per round and side")
    args = parser.parse_args()

    from bodydouble import errors
    from bodydouble.client import Client
    from bodydouble.jobspec import AdapterRef, FillRequest, sequence_frames
    from bodydouble_server import samples
    from bodydouble_server.config import ServerConfig
    from bodydouble_server.engine import Engine
    from bodydouble_server.models import testing
    from bodydouble_server.policy import audit

    from benchlib import served

    root = Path(tempfile.mkdtemp(prefix="bd-audit-"))
    plate, mask = samples.write_sequence(root / "plates", 1001, 1001, 32, 24)
    (root / "consent").mkdir()
    (root / "consent" / "hero.toml").write_text(      # fills on shots ok_* are permitted, every other shot refused
        'character = "Hero"\nproduction = "Bench"\noperations = ["fill"]\nshots = ["ok_*"]\nexpires = 2099-12-31\n'
        f'document = "consent-hero.pdf"\ndocument_sha256 = "{"0" * 64}"\n')
    config = ServerConfig(port=0, model="test:standin", video_model="none", roots=[str(root)],
                          adapters=str(root / "adapters"), output_root=str(root / "takes"), resolution=64,
                          consent_dir=str(root / "consent"), consent_exempt_test_models=False,
                          audit_log=str(root / "state" / "audit.log"))
    engine = Engine(config)
    engine.load()
    testing.test_adapter(root / "adapters" / "hero", engine.identity, "Hero", 1)
    del engine

    def request(shot: str) -> FillRequest:
        return FillRequest(frames=sequence_frames(plate, 1001, 1001, mask), steps=1, shot=shot,
                           adapters=[AdapterRef("hero")])

    def send(client, shot: str) -> bool:
        try:
            client.submit(request(shot)).wait(timeout=60)
            return True
        except errors.RequestError as exc:
            if exc.code != errors.NOT_PERMITTED:
                raise
            return False

    counter = iter(range(10**9))
    with served(config) as (server, client):
        policy = server.engine.policy
        real = policy.audit
        sides = {"with audit": real, "without": NullAudit()}
        times: dict[tuple[str, str], list[float]] = {(k, s): [] for k in ("refused", "fill") for s in sides}
        for kind in ("refused", "fill"):                       # warm-up: colour, C2PA, first take
            send(client, f"{'ok' if kind == 'fill' else 'no'}_warm_{next(counter)}")
        for _ in range(args.repeats):
            for side, log in sides.items():
                policy.audit = log
                for kind in ("refused", "fill"):
                    start = time.perf_counter()
                    for _ in range(args.per_round):
                        send(client, f"{'ok' if kind == 'fill' else 'no'}_{next(counter)}")
                    times[(kind, side)].append((time.perf_counter() - start) / args.per_round)
        policy.audit = real

        print(f"audit cost per request (median of {args.repeats} rounds x {args.per_round} requests, "
              f"one client, {os.cpu_count()} CPUs)")
        print(f"{'request':<10}{'lines':>6}{'with audit ms':>15}{'without ms':>12}{'ratio':>8}{'audit ms':>10}")
        for kind, lines in (("refused", 1), ("fill", 2)):
            with_, without = (statistics.median(times[(kind, s)]) for s in sides)
            print(f"{kind:<10}{lines:>6}{with_ * 1e3:>15.2f}{without * 1e3:>12.2f}{with_ / without:>8.2f}"
                  f"{(with_ - without) * 1e3:>10.2f}")

        log = audit.AuditLog(root / "micro" / "audit.log")
        start = time.perf_counter()
        for i in range(200):
            log.append("submit", job=f"job-{i}", user="alice", prompt="x" * 200)
        print(f"one audit line alone (write + fsync): {(time.perf_counter() - start) / 200 * 1e3:.2f} ms")
        log.close()

        per_client = args.requests // args.clients
        accepted: list[str] = []

        def work(n: int) -> None:
            with Client(server.bound_address, timeout=60, user=f"client{n}") as mine:
                for i in range(per_client):
                    if send(mine, f"{'ok' if i % 10 == 0 else 'no'}_c{n}_{i}"):
                        accepted.append(f"c{n}_{i}")

        before = audit.verify(config.audit_log).lines
        start = time.perf_counter()
        threads = [threading.Thread(target=work, args=(n,)) for n in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start

    start = time.perf_counter()
    result = audit.verify(config.audit_log)
    verify_s = time.perf_counter() - start
    shots = [line.record.get("shot", "") for line in audit.read_lines(Path(config.audit_log))
             if line.record["event"] == "submit"]
    sent = {f"{'ok' if i % 10 == 0 else 'no'}_c{n}_{i}" for n in range(args.clients) for i in range(per_client)}
    found = [s for s in shots if s in sent]
    print(f"\n{per_client * args.clients} requests from {args.clients} clients at once ({len(accepted)} fills, "
          f"the rest refused): {wall:.1f} s, {wall / (per_client * args.clients) * 1e3:.2f} ms per request")
    print(f"chain: {'verifies' if result.ok else 'BROKEN: ' + str(result.problem)}; {result.lines} lines "
          f"({result.lines - before} from this run) in {len(result.files)} file(s), verified in {verify_s:.2f} s; "
          f"every request once: {sorted(found) == sorted(sent)}")


if __name__ == "__main__":
    main()
