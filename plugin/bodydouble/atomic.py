"""The one way BodyDouble writes a file or publishes a folder: readers and crashes never see half of one.

A file is written to a temporary name in the same folder (same file system, so the rename is atomic),
flushed and fsync'd, then renamed over the target; the folder is fsync'd so the rename survives a power
cut. On *any* failure (a full disk, an exception, a cancel) the temporary is removed and the original
error propagates. Temporaries are hidden and carry ``TEMP_MARK`` so a restarted server can sweep what a
kill -9 left (:func:`sweep`).

Pure standard library: the thin client, the installer and the server all use it.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

TEMP_MARK = ".bdtmp"      # in every temporary's name: ``.<name>.<random>.bdtmp[suffix]``
ASIDE_MARK = ".bdold"     # a published folder moved aside while its replacement is renamed in


def _temp_name(target: Path, suffix: str) -> str:
    return f".{target.name}.{os.urandom(4).hex()}{TEMP_MARK}{suffix}"


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``target`` for a writer that wants a file name (OpenImageIO, safetensors).

    ``suffix`` keeps the extension writers pick their format by (``".exr"``). When the block ends the file
    is fsync'd and renamed onto ``target``; if the block raises (or the rename fails) the temporary is gone.
    """
    target = Path(target)
    tmp = target.with_name(_temp_name(target, suffix))
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    target = Path(target)
    with atomic_path(target) as tmp:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()


def write_text(target: str | os.PathLike, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | os.PathLike, data, indent: int | None = 2, sort_keys: bool = True) -> None:
    # Encoded first: a value JSON cannot hold fails before any file exists.
    write_text(target, json.dumps(data, indent=indent, sort_keys=sort_keys, allow_nan=False) + "\n")


@contextlib.contextmanager
def staged_dir(target: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """A hidden sibling folder to fill; published as ``target`` by rename when the block ends.

    ``replace=False``: an existing ``target`` is an error (FileExistsError), never overwritten.
    ``replace=True``: no moment without a ``target``: the old one is renamed aside, the new one renamed in,
    and only then is the old one deleted (:func:`recover_aside` undoes a crash between the two renames).
    The staging folder is removed on every failure.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=TEMP_MARK, dir=target.parent))
    try:
        yield staging
        for root, _dirs, files in os.walk(staging):
            for name in files:
                fsync_file(Path(root) / name)
        if not target.exists():
            os.rename(staging, target)
        elif not replace:
            raise FileExistsError(f"{target} already exists")
        else:
            aside = target.with_name(f".{target.name}.{os.urandom(4).hex()}{ASIDE_MARK}")
            os.rename(target, aside)
            os.rename(staging, target)
            shutil.rmtree(aside, ignore_errors=True)
        fsync_dir(target.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def recover_aside(target: str | os.PathLike) -> None:
    """After a crash inside ``staged_dir(replace=True)``: put the old folder back if the new one never arrived."""
    target = Path(target)
    asides = sorted(target.parent.glob(f".{target.name}.*{ASIDE_MARK}"))
    for aside in asides:
        if not target.exists():
            with contextlib.suppress(OSError):
                os.rename(aside, target)
                continue
        shutil.rmtree(aside, ignore_errors=True)


def is_temp(path: str | os.PathLike) -> bool:
    name = Path(path).name
    return name.startswith(".") and TEMP_MARK in name


def sweep(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries (files and staging folders) a killed writer left directly in ``folder``."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not is_temp(entry):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed
