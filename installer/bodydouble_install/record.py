"""The install manifest: every file, folder and text block the installer added, so --uninstall removes exactly that.

A re-run loads the manifest and adds to it, so a folder created by the first run stays recorded as ours.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bodydouble import atomic


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Record:
    path: Path                                            # the manifest file itself
    files: dict[str, str] = field(default_factory=dict)   # file -> sha256 of what we wrote
    trees: list[str] = field(default_factory=list)        # folders wholly ours (venv, plugin copy): removed whole
    dirs: list[str] = field(default_factory=list)         # folders we created that may fill up: removed if empty
    blocks: dict[str, dict] = field(default_factory=dict)  # text file -> how our fenced block was added
    actions: dict[str, dict] = field(default_factory=dict)  # undo steps run by other tools (Blender, systemctl)
    info: dict = field(default_factory=dict)              # what doctor reads: prefix, server python, zip, ...

    @classmethod
    def load(cls, path: Path) -> "Record":
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path=path)
        except ValueError as exc:
            raise SystemExit(f"{path} is not valid JSON ({exc}); fix or delete it") from None
        return cls(path=path, **{k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "path"})

    def save(self) -> None:
        self.mkdir(self.path.parent)
        data = {k: v for k, v in asdict(self).items() if k != "path"}
        atomic.write_json(self.path, data)

    # -- recording what we add --------------------------------------------------------------------
    def mkdir(self, folder: Path) -> Path:
        """Create ``folder`` and its missing parents, recording each one this run created."""
        missing = []
        for p in [folder, *folder.parents]:
            if p.exists():
                break
            missing.append(p)
        folder.mkdir(parents=True, exist_ok=True)
        for p in missing:
            if str(p) not in self.dirs:
                self.dirs.append(str(p))
        return folder

    def own_tree(self, folder: Path) -> Path:
        self.mkdir(folder.parent)
        if str(folder) not in self.trees:
            self.trees.append(str(folder))
        return folder

    def write(self, path: Path, text: str) -> Path:
        self.mkdir(path.parent)
        data = text.encode()
        path.write_bytes(data)
        self.files[str(path)] = sha256(data)
        return path

    def ours_unchanged(self, path: Path) -> bool:
        """``path`` was written by us and nobody edited it since (so a re-run may replace it)."""
        want = self.files.get(str(path))
        return want is not None and path.is_file() and sha256(path.read_bytes()) == want

    def add_block(self, path: Path, lines: list[str], begin: str, end: str) -> None:
        """Append ``lines`` fenced by ``begin``/``end`` to a text file once; a re-run replaces the block in place."""
        existed = path.exists()
        text = path.read_text() if existed else ""
        text, had = strip_block(text, begin, end)
        added_newline = bool(text) and not text.endswith("\n")
        block = "\n".join([begin, *lines, end]) + "\n"
        self.mkdir(path.parent)
        path.write_text(text + ("\n" if added_newline else "") + block)
        entry = self.blocks.setdefault(str(path), {"created_file": not existed, "added_newline": added_newline})
        if not had:   # a block someone removed by hand: describe the file as it was just before this add
            entry.update(created_file=not existed, added_newline=added_newline)
        entry.update(begin=begin, end=end)

    # -- removing it ------------------------------------------------------------------------------
    def uninstall(self, say=print) -> list[str]:
        """Undo everything recorded; returns what was kept (edited by someone since) for the caller to report."""
        kept: list[str] = []
        for path, entry in self.blocks.items():
            remove_block(Path(path), entry, say)
        for path, digest in self.files.items():
            p = Path(path)
            if not p.exists():
                continue
            if sha256(p.read_bytes()) != digest:
                kept.append(path)
                say(f"kept {path}: edited since the installer wrote it")
                continue
            p.unlink()
        for tree in self.trees:
            shutil.rmtree(tree, ignore_errors=True)
        if self.path.exists():
            self.path.unlink()
        for folder in sorted(self.dirs, key=lambda d: d.count(os.sep), reverse=True):
            try:
                os.rmdir(folder)
            except FileNotFoundError:
                pass
            except OSError:
                kept.append(folder)
                say(f"kept {folder}: not empty (holds files the installer did not write)")
        return kept


def strip_block(text: str, begin: str, end: str) -> tuple[str, bool]:
    """``text`` without the fenced block (and its own line ending); whether there was one."""
    start = text.find(begin + "\n")
    if start < 0 or (start > 0 and text[start - 1] != "\n"):
        return text, False
    stop = text.find("\n" + end, start)
    if stop < 0:
        raise SystemExit(f"found '{begin}' without its closing '{end}': fix the file by hand")
    stop += len(end) + 1
    if text[stop:stop + 1] == "\n":
        stop += 1
    return text[:start] + text[stop:], True


def remove_block(path: Path, entry: dict, say=print) -> None:
    if not path.exists():
        return
    text, had = strip_block(path.read_text(), entry["begin"], entry["end"])
    if not had:
        return
    if entry.get("added_newline") and text.endswith("\n"):
        text = text[:-1]
    if entry.get("created_file") and not text.strip():
        path.unlink()
    else:
        path.write_text(text)
        say(f"removed the BodyDouble block from {path}")
