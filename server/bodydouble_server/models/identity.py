"""What a base model *is*: a content hash adapters are checked against.

Hashing a multi-GB checkpoint takes tens of seconds, so per-file digests are cached by
(path, size, mtime) in the user cache; a changed file is hashed again.
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from bodydouble import atomic

from .embedded import cache_root

_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".ckpt", ".pt", ".pth"}
_lock = threading.Lock()


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    family: str
    sha256: str
    path: str
    test_model: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def file_sha256(path: Path) -> str:
    path = Path(path)
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    cache_file = cache_root() / "sha256-cache.json"
    with _lock:
        cache = _load(cache_file)
        if key in cache:
            return cache[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    with _lock:
        cache = _load(cache_file)
        cache[key] = value
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(cache_file, cache, indent=None)
    return value


def _load(cache_file: Path) -> dict:
    try:
        return json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}


def model_sha256(path: Path) -> str:
    """A single checkpoint's sha256, or for a diffusers folder a hash over its weight files' hashes."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES):
        digest.update(f"{file.relative_to(path).as_posix()}:{file_sha256(file)}\n".encode())
    return digest.hexdigest()
