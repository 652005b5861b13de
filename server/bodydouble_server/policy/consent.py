"""Consent records: what a performer agreed to, per character and production, checked before any work.

One TOML file per record in the server's consent folder (``consent_dir``), kept by the studio's legal or
production office, not inside the adapters folder that TDs write::

    # <consent_dir>/hero-showa.toml
    character = "Hero"                      # the adapter manifest's character (case-insensitive)
    adapters = ["hero*"]                    # optional: which adapter folders of that character (globs)
    production = "Show A"
    operations = ["fill", "extend"]         # of fill, extend, train
    shots = ["SHA_0*", "/shows/showa/*"]    # shot names, or plate / output paths (globs); ["*"]: any shot
    valid_from = 2026-01-01                 # optional
    expires = 2026-12-31                    # last day of consent, inclusive
    max_extend_frames = 48                  # most new frames one extend may add; 0: extend adds none
    users = ["alice", "bob"]                # optional; none and no groups: anyone who reaches the server
    groups = ["comp"]                       # optional: OS groups of the user, on the server machine
    document = "/studio/legal/consent/hero-2026.pdf"
    document_sha256 = "9f2c..."

A request passes when one record of the adapter's character permits all of it. A record whose document is
readable on the server and no longer matches ``document_sha256`` is invalid (the consent changed).
"""
from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

OPERATIONS = ("fill", "extend", "train")
_KEYS = {"character", "adapters", "production", "operations", "shots", "valid_from", "expires",
         "max_extend_frames", "users", "groups", "document", "document_sha256", "notes"}
_REQUIRED = ("character", "production", "operations", "shots", "expires", "document", "document_sha256")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Requester:
    """Who asks. ``verified``: a CURVE client key the server authenticated; else a self-asserted name."""

    name: str
    verified: bool = False
    key: str = ""                  # the client's CURVE public key (z85), when there is one

    def to_dict(self) -> dict:
        return {"user": self.name, "user_verified": self.verified, **({"user_key": self.key} if self.key else {})}


@dataclass
class ConsentRecord:
    id: str                        # the file's stem
    path: Path
    sha256: str                    # of the record file as read
    character: str = ""
    production: str = ""
    adapters: tuple[str, ...] = ("*",)
    operations: tuple[str, ...] = ()
    shots: tuple[str, ...] = ()
    valid_from: dt.date | None = None
    expires: dt.date | None = None
    max_extend_frames: int | None = None
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    document: str = ""
    document_sha256: str = ""
    notes: str = ""
    error: str = ""                # non-empty: the record is invalid and permits nothing

    def covers(self, adapter_name: str, character: str) -> bool:
        return (self.character.casefold() == character.casefold()
                and any(fnmatch.fnmatchcase(adapter_name, pattern) for pattern in self.adapters))

    def scope(self) -> dict:
        """What hosts and listings show."""
        if self.error:
            return {"record": self.id, "sha256": self.sha256, "error": self.error}
        return {"record": self.id, "sha256": self.sha256, "production": self.production,
                "operations": list(self.operations), "shots": list(self.shots),
                "valid_from": self.valid_from.isoformat() if self.valid_from else None,
                "expires": self.expires.isoformat() if self.expires else None,
                "max_extend_frames": self.max_extend_frames, "users": list(self.users), "groups": list(self.groups),
                "document": self.document, "document_sha256": self.document_sha256}

    def refusal(self, *, operation: str, shot: str | None, paths: list[str], extend_frames: int,
                requester: Requester, today: dt.date) -> tuple[str, str] | None:
        """(rule, why) for the first rule this request breaks, or None when the record permits it."""
        if self.error:
            return "record_invalid", f"the record is invalid: {self.error}"
        if operation not in self.operations:
            return "operation", f"{operation} is not an allowed operation (allowed: {', '.join(self.operations) or 'none'})"
        if self.valid_from and today < self.valid_from:
            return "not_yet_valid", f"consent starts on {self.valid_from.isoformat()}"
        if self.expires and today > self.expires:
            return "expired", f"consent expired on {self.expires.isoformat()}"
        if operation != "train" and not self._shot_allowed(shot, paths):
            return "shot", (f"shot {shot!r} (plates {_short(paths)}) matches none of the allowed shot patterns "
                            f"{list(self.shots)}")
        if operation == "extend" and self.max_extend_frames is not None and extend_frames > self.max_extend_frames:
            return "extend_length", (f"extend adds {extend_frames} frames; at most {self.max_extend_frames} "
                                     "new frames are allowed per extend")
        if (self.users or self.groups) and not self._user_allowed(requester):
            how = "verified client key" if requester.verified else "self-asserted user name"
            return "user", (f"user {requester.name!r} ({how}) is not among the allowed users {list(self.users)} "
                            f"or groups {list(self.groups)}")
        return None

    def _shot_allowed(self, shot: str | None, paths: list[str]) -> bool:
        for pattern in self.shots:
            if "/" in pattern:
                if paths and all(fnmatch.fnmatchcase(p, pattern) for p in paths):
                    return True
            elif shot is not None and fnmatch.fnmatchcase(shot, pattern):
                return True
        return False

    def _user_allowed(self, requester: Requester) -> bool:
        if requester.name in self.users or (requester.key and f"key:{requester.key}" in self.users):
            return True
        return bool(self.groups) and bool(set(self.groups) & set(os_groups(requester.name)))


def _short(paths: list[str]) -> str:
    if not paths:
        return "none by path"
    return paths[0] if len(paths) == 1 else f"{paths[0]} ... ({len(paths)} files)"


def os_groups(user: str) -> list[str]:
    """The user's groups on this machine (empty where unknown, or on Windows)."""
    try:
        import grp
        import pwd

        entry = pwd.getpwnam(user)
        return [grp.getgrgid(g).gr_name for g in os.getgrouplist(user, entry.pw_gid)]
    except (ImportError, KeyError, OSError):
        return []


def load_record(path: Path, hash_cache: dict | None = None) -> ConsentRecord:
    data = path.read_bytes()
    record = ConsentRecord(id=path.stem, path=path, sha256=hashlib.sha256(data).hexdigest())
    try:
        values = tomllib.loads(data.decode("utf-8"))
        _fill(record, values, hash_cache if hash_cache is not None else {})
    except (ValueError, TypeError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        record.error = f"{path.name}: {exc}"
    return record


def _fill(record: ConsentRecord, values: dict, hash_cache: dict) -> None:
    unknown = set(values) - _KEYS
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} (known: {sorted(_KEYS)})")
    missing = [k for k in _REQUIRED if values.get(k) in (None, "", [])]
    if missing:
        raise ValueError(f"lacks {', '.join(missing)}")
    for key in ("character", "production", "document", "document_sha256", "notes"):
        if key in values and not isinstance(values[key], str):
            raise ValueError(f"{key} must be text")
        setattr(record, key, values.get(key, ""))
    for key in ("adapters", "operations", "shots", "users", "groups"):
        if key in values:
            items = values[key]
            if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
                raise ValueError(f"{key} must be a list of non-empty text")
            setattr(record, key, tuple(items))
    bad = [op for op in record.operations if op not in OPERATIONS]
    if bad:
        raise ValueError(f"operations {bad} unknown (known: {list(OPERATIONS)})")
    for key in ("valid_from", "expires"):
        value = values.get(key)
        if value is not None:
            if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
                raise ValueError(f"{key} must be a date (YYYY-MM-DD, unquoted)")
            setattr(record, key, value)
    cap = values.get("max_extend_frames")
    if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 0):
        raise ValueError("max_extend_frames must be a whole number >= 0")
    record.max_extend_frames = cap
    if not _SHA256.match(record.document_sha256):
        raise ValueError("document_sha256 must be 64 lowercase hex digits")
    document = Path(record.document)
    if document.is_absolute() and document.is_file():
        actual = _file_sha256(document, hash_cache)
        if actual != record.document_sha256:
            raise ValueError(f"the consent document {document} no longer matches document_sha256 "
                             f"(it is {actual[:12]}...): the consent changed; the record needs a new sign-off")


def _file_sha256(path: Path, cache: dict) -> str:
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in cache:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        cache[key] = digest.hexdigest()
    return cache[key]


@dataclass
class ConsentBook:
    """The consent folder, reread when a record or its consent document changes (a stat per file per look-up)."""

    folder: Path
    _records: list[ConsentRecord] = field(default_factory=list)
    _files: tuple | None = None       # the record files as last read
    _documents: tuple = ()            # their consent documents as last checked
    _hashes: dict = field(default_factory=dict)

    def records(self) -> list[ConsentRecord]:
        files = self._scan_stamp()
        if files != self._files or _document_stamp(self._records) != self._documents:
            self._records = [load_record(self.folder / name, self._hashes) for name, *_ in files]
            self._files, self._documents = files, _document_stamp(self._records)
        return self._records

    def for_adapter(self, name: str, character: str) -> list[ConsentRecord]:
        return [r for r in self.records() if r.covers(name, character)]

    def for_character(self, character: str) -> list[ConsentRecord]:
        return [r for r in self.records() if r.character.casefold() == character.casefold()]

    def _scan_stamp(self) -> tuple:
        """(name, mtime, size) of each record file."""
        try:
            entries = sorted(os.scandir(self.folder), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return ()
        stamp = []
        for entry in entries:
            if entry.name.endswith(".toml") and not entry.name.startswith(".") and entry.is_file():
                st = entry.stat()
                stamp.append((entry.name, st.st_mtime_ns, st.st_size))
        return tuple(stamp)


def _document_stamp(records: list[ConsentRecord]) -> tuple:
    """(path, mtime, size) of each record's consent document readable here."""
    stamp = []
    for record in records:
        document = Path(record.document)
        try:
            st = document.stat() if document.is_absolute() else None
        except OSError:
            st = None
        stamp.append((record.document, st.st_mtime_ns if st else None, st.st_size if st else None))
    return tuple(stamp)
