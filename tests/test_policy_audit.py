"""The audit log: a hash chain that names the first line changed, removed or reordered; rotation that keeps
the chain; appends from threads and processes; and concurrent audited requests through real sockets.

The 4-client test sends 400 requests (one in ten runs a fill, the rest are refused by consent: one audit line
each); ``bench/audit_cost.py`` sends 10,000 the same way and measures the cost per request.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import threading
from pathlib import Path

import pytest

from bodydouble import errors
from bodydouble.cli import main
from bodydouble_server.policy import audit


def _write(path: Path, count: int, **extra) -> audit.AuditLog:
    log = audit.AuditLog(path, **extra)
    for i in range(count):
        log.append("submit", job=f"job-{i + 1}", user="alice", prompt=f"take {i + 1}", frames={"1001": "ab" * 32})
    return log


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _verify_cli(path: Path, capsys, *extra) -> tuple[int, str]:
    status = main(["audit", "verify", "--audit-log", str(path), *extra])
    out = capsys.readouterr()
    return status, out.out + out.err


def test_chain_verifies_and_names_the_line_edited_removed_or_swapped(tmp_path, capsys):
    path = tmp_path / "audit.log"
    _write(path, 12).close()
    status, text = _verify_cli(path, capsys)
    assert status == 0 and "OK: 12 lines" in text
    original = _lines(path)

    edited = list(original)
    edited[4] = edited[4].replace(b'"take 5"', b'"take 6"')            # line 5: the prompt changed
    path.write_bytes(b"".join(edited))
    result = audit.verify(path)
    assert (result.problem.line, result.problem.kind, result.problem.seq) == (5, "changed", 5)
    status, text = _verify_cli(path, capsys)
    assert status == 1 and f"{path}:5: changed" in text

    path.write_bytes(b"".join(original[:6] + original[7:]))            # line 7 removed
    result = audit.verify(path)
    assert (result.problem.line, result.problem.kind) == (7, "removed") and "seq 7 removed" in result.problem.message
    assert _verify_cli(path, capsys)[0] == 1

    path.write_bytes(b"".join(original[:8] + [original[9], original[8]] + original[10:]))   # lines 9 and 10 swapped
    result = audit.verify(path)
    assert (result.problem.line, result.problem.kind) == (9, "reordered") and f"{path}:10" in result.problem.message

    # Line 3 changed *and* its own hash recomputed: line 4 still names the original, so line 3 is named.
    record = json.loads(original[2])
    record.pop("hash")
    record["user"] = "mallory"
    forged, _ = audit.seal_line(record)
    path.write_bytes(b"".join(original[:2] + [forged + b"\n"] + original[3:]))
    result = audit.verify(path)
    assert (result.problem.line, result.problem.kind, result.problem.seq) == (3, "changed", 3)

    path.write_bytes(b"".join(original[:11]))                         # the last line cut: only an outside head tells
    assert audit.verify(path).ok
    head = f"12:{json.loads(original[-1])['hash']}"
    status, text = _verify_cli(path, capsys, "--head", head)
    assert status == 1 and "head" in text and "cut from the end" in text
    path.write_bytes(b"".join(original))
    assert _verify_cli(path, capsys, "--head", head)[0] == 0


def test_rotation_keeps_the_chain_across_files(tmp_path, capsys):
    path = tmp_path / "audit.log"
    _write(path, 40, rotate_bytes=2000).close()
    files = audit.segments(path)
    assert len(files) > 3 and files[-1] == path and files[0].name == "audit.log.000001"
    result = audit.verify(path)
    rotations = sum(1 for line in audit.read_lines(path) if line.record["event"] == "rotated")
    assert result.ok and result.lines == 40 + rotations and result.head_seq == result.lines
    first_of_second = json.loads(_lines(files[1])[0])
    assert first_of_second["event"] == "rotated" and first_of_second["previous_file"] == files[0].name
    assert first_of_second["prev"] == json.loads(_lines(files[0])[-1])["hash"]
    # Lines appended later (a new writer, as after a restart) continue the same chain.
    _write(path, 3, rotate_bytes=2000).close()
    assert audit.verify(path).ok
    # A whole segment deleted: the next file's first line names the gap.
    missing = files[1]
    missing.unlink()
    result = audit.verify(path)
    assert result.problem.kind == "removed" and result.problem.file == files[2] and result.problem.line == 1
    status, text = _verify_cli(path, capsys)
    assert status == 1 and f"{files[2]}:1: removed" in text


def test_a_line_cut_short_by_a_crash_is_set_aside_and_recorded(tmp_path):
    path = tmp_path / "audit.log"
    _write(path, 3).close()
    partial = b'{"event":"submit","job":"job-4","pre'
    with open(path, "ab") as f:
        f.write(partial)                                              # the crash: no newline, no hash
    log = _write(path, 2)
    log.close()
    records = [line.record for line in audit.read_lines(path)]
    recovered = records[3]
    assert recovered["event"] == "recovered" and recovered["partial_bytes"] == len(partial)
    assert (tmp_path / recovered["partial_file"]).read_bytes() == partial
    assert audit.verify(path).ok and [r["seq"] for r in records] == [1, 2, 3, 4, 5, 6]


def _append_from_process(path: str, name: str, count: int) -> None:
    log = audit.AuditLog(path)
    for i in range(count):
        log.append("submit", user=name, job=f"{name}-{i}")
    log.close()


def test_threads_and_processes_append_to_one_chain(tmp_path):
    path = tmp_path / "audit.log"
    shared = audit.AuditLog(path, rotate_bytes=4000)
    threads = [threading.Thread(target=lambda n=n: [shared.append("submit", user=f"t{n}", job=f"t{n}-{i}")
                                                    for i in range(40)]) for n in range(3)]
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_append_from_process, args=(str(path), f"p{n}", 40)) for n in range(2)]
    for worker in threads + procs:
        worker.start()
    for worker in threads + procs:
        worker.join(60)
    assert all(p.exitcode == 0 for p in procs)
    shared.close()
    result = audit.verify(path)
    assert result.ok, result.problem
    jobs = [line.record["job"] for line in audit.read_lines(path) if line.record["event"] == "submit"]
    assert sorted(jobs) == sorted(f"{who}-{i}" for who in ("t0", "t1", "t2", "p0", "p1") for i in range(40))


def test_concurrent_audited_requests_leave_a_verifying_chain(tmp_path, monkeypatch):
    """4 clients x 100 requests; every 10th is a fill that runs (submit + outcome lines), the rest are refused
    by consent (one line each). Every request is in the log exactly once, each outcome after its submit."""
    from bodydouble.client import Client
    from bodydouble.jobspec import AdapterRef, FillRequest, sequence_frames
    from bodydouble_server import samples
    from bodydouble_server.config import ServerConfig
    from bodydouble_server.engine import Engine
    from bodydouble_server.models import testing

    from .support import server_thread
    from .test_policy_consent import write_record

    monkeypatch.setenv(testing.STEP_ENV, "0")
    plate, mask = samples.write_sequence(tmp_path / "plates", 1001, 1001, 32, 24)
    consent = tmp_path / "consent"
    consent.mkdir()
    write_record(consent, "hero", "Hero", "Show", ["fill"], ["ok_*"], "2099-12-31")
    config = ServerConfig(port=0, model="test:standin", video_model="none", roots=[str(tmp_path)],
                          adapters=str(tmp_path / "adapters"), output_root=str(tmp_path / "takes"), resolution=64,
                          consent_dir=str(consent), consent_exempt_test_models=False,
                          audit_log=str(tmp_path / "state" / "audit.log"), audit_rotate_mb=0.05)
    engine = Engine(config)
    engine.load()
    testing.test_adapter(tmp_path / "adapters" / "hero", engine.identity, "Hero", 1)
    per_client, clients = 100, 4
    jobs: dict[str, str] = {}
    with server_thread(config) as srv:
        def work(n: int) -> None:
            with Client(srv.bound_address, timeout=60, user=f"client{n}") as client:
                for i in range(per_client):
                    shot = f"{'ok' if i % 10 == 0 else 'no'}_{n}_{i}"
                    request = FillRequest(frames=sequence_frames(plate, 1001, 1001, mask), steps=1, shot=shot,
                                          adapters=[AdapterRef("hero")])
                    try:
                        jobs[shot] = client.submit(request).wait(timeout=60).job
                    except errors.RequestError as exc:
                        assert exc.code == errors.NOT_PERMITTED and not shot.startswith("ok")

        threads = [threading.Thread(target=work, args=(n,)) for n in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    log = Path(config.audit_log)
    assert len(audit.segments(log)) > 1, "the test should cross a rotation"
    result = audit.verify(log)
    assert result.ok, result.problem
    records = [line.record for line in audit.read_lines(log)]
    submits = [r for r in records if r["event"] == "submit"]
    assert sorted(r["shot"] for r in submits) == sorted(f"{'ok' if i % 10 == 0 else 'no'}_{n}_{i}"
                                                       for n in range(clients) for i in range(per_client))
    assert all(r["user"] == f"client{r['shot'].split('_')[1]}" for r in submits)
    assert len(jobs) == clients * per_client // 10
    position = {(r["event"], r.get("job")): index for index, r in enumerate(records)}
    for job in jobs.values():
        assert position[("outcome", job)] > position[("submit", job)]
    assert sum(r["event"] == "outcome" for r in records) == len(jobs)
    assert len(records) == len(submits) + len(jobs) + sum(r["event"] == "rotated" for r in records)


def test_doctor_prints_where_the_audit_log_is(tmp_path):
    from bodydouble_server.workstation.doctor import diagnose

    path = tmp_path / "state" / "audit.log"
    config = tmp_path / "server.toml"
    config.write_text(f'port = 1\naudit_log = "{path}"\nroots = ["{tmp_path}"]\n')
    line = next(c for c in diagnose(config, "tcp://127.0.0.1:1", 0.2) if c.what == "audit log")
    assert line.status == "WARN" and f"{path}: not written yet" in line.detail
    _write(path, 2).close()
    line = next(c for c in diagnose(config, "tcp://127.0.0.1:1", 0.2) if c.what == "audit log")
    assert line.status == "OK" and str(path) in line.detail


def test_show_filters_by_character_shot_user_and_date(tmp_path, capsys):
    path = tmp_path / "audit.log"
    log = audit.AuditLog(path)
    rows = [("job-1", "Hero", "sh010", "alice", "2026-11-30T10:00:00.000+00:00"),
            ("job-2", "Villain", "sh010", "bob", "2026-12-01T10:00:00.000+00:00"),
            ("job-3", "Hero", "sh020", "bob", "2026-12-02T10:00:00.000+00:00")]
    for job, character, shot, user, when in rows:
        log.append("submit", job=job, user=user, shot=shot, time=when, decision="accepted",
                   adapters=[{"name": character.lower(), "character": character}])
    for job, *_ in rows:
        log.append("outcome", job=job, outcome="complete", take_dir=f"/takes/{job}", frames_sha256={})
    log.close()

    def shown(*flags) -> list[tuple[str, str]]:
        assert main(["audit", "show", "--audit-log", str(path), "--json", *flags]) == 0
        return [(e["event"], e["job"]) for e in map(json.loads, capsys.readouterr().out.splitlines())]

    assert shown("--character", "hero") == [("submit", "job-1"), ("submit", "job-3"), ("outcome", "job-1"),
                                           ("outcome", "job-3")]
    assert shown("--shot", "sh010", "--user", "b*") == [("submit", "job-2"), ("outcome", "job-2")]
    assert shown("--since", "2026-12-01", "--until", "2026-12-01") == [("submit", "job-2"), ("outcome", "job-2")]
    assert main(["audit", "show", "--audit-log", str(path), "--adapter", "villain"]) == 0
    text = capsys.readouterr().out
    assert "job-2" in text and "villain(Villain)" in text and "complete 0 frame(s) /takes/job-2" in text


def test_lines_of_a_batch_share_one_fsync(tmp_path, monkeypatch):
    """Submit lines are written at once and fsynced together by sync(), which the socket loop calls before it
    sends the batch's replies; other lines are fsynced one by one."""
    calls = []
    real = os.fsync
    monkeypatch.setattr(audit.os, "fsync", lambda fd: calls.append(fd) or real(fd))
    log = audit.AuditLog(tmp_path / "audit.log")
    log.append("outcome", job="job-0")
    assert len(calls) == 1
    for i in range(3):
        log.append("submit", sync=False, job=f"job-{i + 1}")
    assert len(calls) == 1 and len(list(audit.read_lines(tmp_path / "audit.log"))) == 4
    log.sync()
    log.sync()
    assert len(calls) == 2
    log.append("submit", sync=False, job="job-4")
    log.close()                                       # closing never leaves a written line unsynced
    assert len(calls) == 3 and audit.verify(tmp_path / "audit.log").ok


def test_serve_audit_log_flag_and_lines_written_before_replies_survive_kill(tmp_path):
    """``bodydouble serve --audit-log PATH --consent-dir DIR``: every request that got its reply is in the log
    when the server is killed (-9) right after the last reply, and the chain verifies."""
    import signal

    from bodydouble.client import Client
    from bodydouble.jobspec import AdapterRef, FillRequest, sequence_frames
    from bodydouble_server import samples
    from bodydouble_server.config import ServerConfig
    from bodydouble_server.engine import Engine
    from bodydouble_server.models import testing

    from .support import start_server_process
    from .test_policy_consent import write_record

    plate, mask = samples.write_sequence(tmp_path / "plates", 1001, 1001, 32, 24)
    consent = tmp_path / "consent"
    consent.mkdir()
    write_record(consent, "hero", "Hero", "Show", ["fill"], ["ok"], "2099-12-31")
    engine = Engine(ServerConfig(port=0, model="test:standin", video_model="none", adapters=str(tmp_path / "none")))
    engine.load()
    testing.test_adapter(tmp_path / "adapters" / "hero", engine.identity, "Hero", 1)
    log = tmp_path / "elsewhere" / "audit.log"
    proc, address = start_server_process(tmp_path, tmp_path / "adapters", extra=[
        "--model", "test:standin", "--video-model", "none", "--audit-log", str(log), "--consent-dir", str(consent)])
    codes, jobs = [], []
    try:
        with Client(address, timeout=30, user="alice") as client:
            for shot in ("no1", "no2", "ok", "no3"):
                request = FillRequest(frames=sequence_frames(plate, 1001, 1001, mask), steps=1, shot=shot,
                                      adapters=[AdapterRef("hero")])
                try:
                    jobs.append(client.submit(request).wait(timeout=60).job)
                except errors.RequestError as exc:
                    codes.append(exc.code)
            proc.send_signal(signal.SIGKILL)     # at once after the last reply
    finally:
        proc.kill()
        proc.wait(10)
    assert codes == [errors.NOT_PERMITTED] * 3 and len(jobs) == 1
    assert audit.verify(log).ok
    records = [line.record for line in audit.read_lines(log)]
    assert [(r["event"], r.get("shot"), r.get("decision")) for r in records] == [
        ("submit", "no1", "refused"), ("submit", "no2", "refused"), ("submit", "ok", "accepted"),
        ("outcome", None, None), ("submit", "no3", "refused")]
    assert records[3]["job"] == jobs[0] and records[3]["outcome"] == "complete"
