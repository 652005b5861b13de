"""The append-only, hash-chained audit log: one JSON line per event, on disk (fsynced) before the reply.

Each line is canonical JSON (sorted keys, no spaces) of ``{seq, prev, time, event, ...}`` followed by a last
key ``"hash"``: the sha256 of the line's bytes without that key. ``prev`` is the hash of the line before
(``GENESIS`` for the first), ``seq`` counts lines from 1 across every file of the log. So a changed line fails
its own hash, a removed line leaves a gap in ``seq``, two swapped lines show ``seq`` out of order, and a changed
line whose hash was recomputed no longer matches the next line's ``prev``.

Rotation: when the live file passes ``rotate_bytes`` it is renamed ``<name>.000001`` (then ``.000002``...,
never renamed again) and the new live file opens with a ``rotated`` line that continues the chain.

One writer at a time, across threads (a lock) and processes (a lock file: the server and
``bodydouble adapters retire`` may both append). A line cut short by a crash is moved aside to
``<name>.partial-<time>`` when the log is next opened, and a ``recovered`` line records its hash.

The chain proves order and integrity of what is there; whoever can write the file can also rewrite it from
some line to the end with fresh hashes. Keep the head (``bodydouble audit verify`` prints it) somewhere that
person cannot reach, and compare (``--head``): see docs/guardrails.md.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from filelock import FileLock

from bodydouble import atomic

log = logging.getLogger("bodydouble.audit")

GENESIS = "0" * 64
_HASH_SUFFIX = re.compile(rb',"hash":"([0-9a-f]{64})"\}$')
_SEGMENT = re.compile(r"^(?P<stem>.+)\.(?P<index>\d{6})$")
DEFAULT_ROTATE_BYTES = 64 << 20


def canonical(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def seal_line(record: dict) -> tuple[bytes, str]:
    """The line's bytes (without newline) and its hash."""
    body = canonical(record)
    digest = hashlib.sha256(body).hexdigest()
    return body[:-1] + b',"hash":"' + digest.encode() + b'"}', digest


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def segments(path: Path) -> list[Path]:
    """The log's files in chain order: rotated segments by index, then the live file."""
    path = Path(path)
    rotated = []
    if path.parent.is_dir():
        for p in path.parent.iterdir():
            m = _SEGMENT.match(p.name)
            if m and m.group("stem") == path.name:
                rotated.append((int(m.group("index")), p))
    files = [p for _, p in sorted(rotated)]
    if path.exists():
        files.append(path)
    return files


def _last_line(path: Path) -> bytes | None:
    """The last complete line of a file (None if it has none)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        block, data = 65536, b""
        while end > 0:
            start = max(0, end - block)
            f.seek(start)
            data = f.read(end - start) + data
            end = start
            lines = data.rstrip(b"\n").split(b"\n")
            if len(lines) > 1 or start == 0:
                return lines[-1] or None
    return None


class AuditError(Exception):
    """The log cannot be appended to (nothing may run unaudited)."""


class AuditLog:
    """Appends events; thread-safe and safe across processes sharing the file."""

    def __init__(self, path: str | Path, rotate_bytes: int = DEFAULT_ROTATE_BYTES):
        """Opens nothing yet: the folder and file are made on the first line."""
        self.path = Path(path).expanduser()
        self.rotate_bytes = rotate_bytes
        self._lock = threading.Lock()
        self._file_lock = FileLock(str(self.path) + ".lock")
        self._fd: int | None = None
        self._head: tuple[int, str] | None = None        # (seq, hash) of the last line we know of
        self._seen: tuple[int, int] | None = None        # (inode, size) of the live file after our last write
        self._dirty = False                              # lines written with sync=False, not yet fsynced

    # -- writing -------------------------------------------------------------------------
    def append(self, event: str, sync: bool = True, **fields) -> dict:
        """Write one line and fsync it; returns the record as written (with seq, prev, hash).

        ``sync=False``: written and chained now, fsynced by the next :meth:`sync` (one fsync for a batch of
        lines; the caller must call it before any reply the lines precede goes out)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, self._file_lock:
            self._sync_head()
            seq, prev = self._head
            record = {**fields, "event": event, "seq": seq + 1, "prev": prev, "time": fields.get("time") or now_iso()}
            line, digest = seal_line(record)
            self._write(line + b"\n", sync)
            self._head = (seq + 1, digest)
            if self._seen[1] >= self.rotate_bytes:
                self._rotate()
            return {**record, "hash": digest}

    def sync(self) -> None:
        """fsync the lines written with ``sync=False`` (nothing to do, and cheap, when there are none)."""
        with self._lock:
            if self._dirty and self._fd is not None:
                try:
                    os.fsync(self._fd)
                    self._dirty = False
                except OSError as exc:      # a failing disk: say so loudly, keep serving, retry next time
                    log.error("audit log %s could not be fsynced: %s", self.path, exc)

    def close(self) -> None:
        with self._lock:
            self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            if self._dirty:
                os.fsync(self._fd)
                self._dirty = False
            os.close(self._fd)
            self._fd = None

    def head(self) -> tuple[int, str]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, self._file_lock:
            self._sync_head()
            return self._head

    def _write(self, data: bytes, sync: bool = True) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        if sync:
            os.fsync(self._fd)
        self._dirty = not sync
        st = os.fstat(self._fd)
        self._seen = (st.st_ino, st.st_size)

    def _sync_head(self) -> None:
        """Open the live file and learn the chain's head, again if another process wrote or rotated since."""
        try:
            st = os.stat(self.path)
            current = (st.st_ino, st.st_size)
        except FileNotFoundError:
            current = None
        if self._fd is not None and current == self._seen:
            return
        self._close_fd()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._recover_partial()
        self._head = self._read_head()
        st = os.fstat(self._fd)
        self._seen = (st.st_ino, st.st_size)

    def _read_head(self) -> tuple[int, str]:
        for path in reversed(segments(self.path)):
            line = _last_line(path)
            if line:
                record = _parse(path, 0, line).record
                if record is None:
                    raise AuditError(f"cannot continue the audit chain: the last line of {path} is not an audit "
                                     "line; run `bodydouble audit verify` and have the log examined")
                return int(record["seq"]), record["hash"]
        return 0, GENESIS

    def _recover_partial(self) -> None:
        """A crash mid-write leaves a last line without its newline: move it aside, note it in the chain."""
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        with open(self.path, "rb") as f:
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            f.seek(0)
            data = f.read()
        cut = data.rfind(b"\n") + 1
        partial = data[cut:]
        aside = self.path.with_name(f"{self.path.name}.partial-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        aside.write_bytes(partial)
        os.truncate(self.path, cut)
        self._head = self._read_head()
        seq, prev = self._head
        line, digest = seal_line({"event": "recovered", "seq": seq + 1, "prev": prev, "time": now_iso(),
                                  "partial_file": aside.name, "partial_bytes": len(partial),
                                  "partial_sha256": hashlib.sha256(partial).hexdigest()})
        self._write(line + b"\n")

    def _rotate(self) -> None:
        index = 1 + max((int(_SEGMENT.match(p.name).group("index")) for p in segments(self.path)[:-1]), default=0)
        closed = self.path.with_name(f"{self.path.name}.{index:06d}")
        self._close_fd()
        os.rename(self.path, closed)
        atomic.fsync_dir(self.path.parent)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        seq, prev = self._head
        line, digest = seal_line({"event": "rotated", "seq": seq + 1, "prev": prev, "time": now_iso(),
                                  "previous_file": closed.name, "previous_last_seq": seq})
        self._write(line + b"\n")
        atomic.fsync_dir(self.path.parent)
        self._head = (seq + 1, digest)


# -- reading -------------------------------------------------------------------------------
@dataclass
class Line:
    file: Path
    number: int                 # 1-based within its file
    raw: bytes
    record: dict | None = None  # None: not a valid audit line
    own_hash_ok: bool = False


@dataclass
class Problem:
    file: Path
    line: int
    seq: int | None
    kind: str                   # changed | removed | reordered | corrupt | head
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.kind}: {self.message}"


@dataclass
class Verification:
    files: list[Path] = field(default_factory=list)
    lines: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def read_lines(path: Path) -> Iterator[Line]:
    for file in segments(path):
        with open(file, "rb") as f:
            for number, raw in enumerate(f, start=1):
                yield _parse(file, number, raw.rstrip(b"\n"))


def _parse(file: Path, number: int, raw: bytes) -> Line:
    line = Line(file=file, number=number, raw=raw)
    match = _HASH_SUFFIX.search(raw)
    if not match:
        return line
    body = raw[:match.start()] + b"}"
    try:
        record = json.loads(body)
    except ValueError:
        return line
    if not isinstance(record, dict) or not isinstance(record.get("seq"), int) or not isinstance(record.get("prev"), str):
        return line
    record["hash"] = match.group(1).decode()
    line.record = record
    line.own_hash_ok = hashlib.sha256(body).hexdigest() == record["hash"]
    return line


def verify(path: str | Path, expect_head: str | None = None) -> Verification:
    """Walk the chain; stop at the first line that was changed, removed or reordered and name it.

    Streams the files (memory does not grow with the log); only a line out of place reads on to find where
    the missing one went."""
    path = Path(path).expanduser()
    result = Verification(files=segments(path))
    expected_seq, prev_hash = 1, GENESIS
    before: Line | None = None
    for index, line in enumerate(read_lines(path)):
        record = line.record
        if record is None:
            result.problem = Problem(line.file, line.number, None, "corrupt",
                                     "not a complete audit line (edited by hand, or cut short)")
            return result
        seq = record["seq"]
        if seq != expected_seq:
            result.problem = _out_of_place(line, itertools.islice(read_lines(path), index + 1, None), expected_seq)
            return result
        if not line.own_hash_ok:
            result.problem = Problem(line.file, line.number, seq, "changed",
                                     f"line (seq {seq}) was changed: its content no longer matches its hash")
            return result
        if record["prev"] != prev_hash:
            where = f"{before.file}:{before.number}" if before else "the start of the log"
            result.problem = Problem(before.file if before else line.file, before.number if before else line.number,
                                     seq - 1, "changed",
                                     f"line (seq {seq - 1}, at {where}) was changed and its hash recomputed: "
                                     f"the next line (seq {seq}) names a different predecessor")
            return result
        expected_seq, prev_hash, before = seq + 1, record["hash"], line
        result.lines += 1
    result.head_seq, result.head_hash = expected_seq - 1, prev_hash
    if expect_head and expect_head not in (prev_hash, f"{expected_seq - 1}:{prev_hash}"):
        result.problem = Problem(before.file if before else path, before.number if before else 0, expected_seq - 1,
                                 "head", f"the log ends at seq {expected_seq - 1} ({prev_hash[:16]}...), not at the "
                                 f"head recorded elsewhere ({expect_head}): lines were cut from the end or rewritten")
    return result


def _out_of_place(line: Line, rest: Iterator[Line], expected: int) -> Problem:
    seq = line.record["seq"]
    later = next((other for other in rest if other.record and other.record.get("seq") == expected), None)
    if later is not None:
        return Problem(line.file, line.number, seq, "reordered",
                       f"seq {expected} belongs here but this line holds seq {seq}; seq {expected} is at "
                       f"{later.file}:{later.number}: lines were reordered")
    if seq > expected:
        missing = f"seq {expected}" if seq == expected + 1 else f"seqs {expected}..{seq - 1}"
        return Problem(line.file, line.number, seq, "removed",
                       f"{missing} removed before this line (it holds seq {seq})")
    return Problem(line.file, line.number, seq, "reordered",
                   f"seq {seq} appears again or too late (seq {expected} expected here): lines were reordered or copied")


# -- querying ------------------------------------------------------------------------------
def show(path: str | Path, character: str | None = None, shot: str | None = None, user: str | None = None,
         since: str | None = None, until: str | None = None, adapter: str | None = None) -> list[dict]:
    """Events matching every given filter (case-insensitive globs for names; ISO dates or times for the window).

    A job's later lines (its outcome) follow its submit line into the result."""
    from fnmatch import fnmatch

    def like(value, pattern) -> bool:
        return pattern is None or any(fnmatch(str(v).lower(), pattern.lower()) for v in _as_list(value))

    jobs: set[str] = set()
    found = []
    for line in read_lines(Path(path).expanduser()):
        record = line.record
        if record is None:
            continue
        job = record.get("job")
        if job and job in jobs and record.get("event") != "submit":
            found.append(record)
            continue
        when = record.get("time", "")
        if (since and when < since) or (until and when[:len(until)] > until):
            continue
        adapters = record.get("adapters") or []
        characters = [a.get("character", "") for a in adapters] + [record.get("character", "")]
        names = [a.get("name", "") for a in adapters] + [record.get("adapter", "")]
        if (like([c for c in characters if c], character) and like(record.get("shot", ""), shot)
                and like(record.get("user", ""), user) and like([n for n in names if n], adapter)):
            found.append(record)
            if job:
                jobs.add(job)
    return found


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]
