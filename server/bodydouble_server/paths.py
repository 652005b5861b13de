"""The folders the server may read plates from and write takes to. Everything else is refused.

Paths are resolved with realpath first, so ``../`` tricks and symlinks pointing out of a root
are judged by where they really lead.
"""
from __future__ import annotations

import os
from pathlib import Path

from bodydouble import errors


class AllowedRoots:
    def __init__(self, roots: list[str | Path]):
        self.roots = [Path(os.path.realpath(os.path.expanduser(str(r)))) for r in roots]

    def __repr__(self) -> str:
        return f"AllowedRoots({[str(r) for r in self.roots]})"

    def _inside(self, real: Path) -> bool:
        return any(real == root or root in real.parents for root in self.roots)

    def check(self, path: str | Path, what: str = "path") -> Path:
        """The real path of ``path`` if it lies inside a root; RequestError otherwise."""
        raw = str(path)
        if not os.path.isabs(raw):
            raise errors.RequestError(
                f"{what} {raw!r} is relative; send absolute paths (the server's working folder is not yours)",
                code=errors.PATH_NOT_ALLOWED,
            )
        real = Path(os.path.realpath(raw))
        if not self._inside(real):
            roots = ", ".join(str(r) for r in self.roots) or "(none configured)"
            raise errors.RequestError(
                f"{what} {raw} is outside the folders this server may use ({roots}). "
                "Ask your pipeline team to add its root to the server's 'roots' setting.",
                code=errors.PATH_NOT_ALLOWED,
            )
        return real

    def readable_file(self, path: str | Path, what: str = "file") -> Path:
        real = self.check(path, what)
        if not real.is_file():
            raise errors.RequestError(f"{what} {path} does not exist or is not a file", code=errors.UNREADABLE_FILE)
        if not os.access(real, os.R_OK):
            raise errors.RequestError(f"{what} {path} is not readable by the server", code=errors.UNREADABLE_FILE)
        return real

    def make_dirs(self, path: str | Path, what: str = "output folder") -> Path:
        """Create ``path`` and its missing parents inside a root; returns its real path.

        Judged at the moment of use, one component at a time: the deepest existing folder is resolved (links
        followed) and checked, each new folder is made inside that real path and checked again, so a link
        anywhere on the way (``<output_dir>/bodydouble`` pointing elsewhere) cannot carry a write out of the
        roots. A folder the server may not write is ``path_unwritable`` with the OS's reason.
        """
        raw = Path(path)
        missing = []
        existing = raw
        while not os.path.lexists(existing):
            missing.append(existing.name)
            existing = existing.parent
        real = self.check(existing, what)
        for name in reversed(missing):
            try:
                os.mkdir(real / name)
            except FileExistsError:
                pass
            except OSError as exc:
                raise unwritable(real / name, exc, what) from None
            real = self.check(real / name, what)
        if not real.is_dir():
            raise errors.RequestError(f"{what} {raw} is not a folder", code=errors.PATH_UNWRITABLE,
                                      details={"path": str(raw), "reason": "not a folder"})
        return real

    def writable_dir(self, path: str | Path, what: str = "output folder") -> Path:
        """Cheap submit-time check (nothing is created): inside a root, and its deepest existing folder is
        writable by the server."""
        raw = Path(path)
        existing = raw
        while not os.path.lexists(existing) and existing != existing.parent:
            existing = existing.parent
        self.check(raw, what)
        real = self.check(existing, what)
        if not real.is_dir():
            raise errors.RequestError(f"{what} {raw}: {real} is not a folder", code=errors.PATH_UNWRITABLE,
                                      details={"path": str(real), "reason": "not a folder"})
        if not os.access(real, os.W_OK | os.X_OK):
            raise unwritable(real, PermissionError(13, "Permission denied"), what)
        return real


def unwritable(path: Path, exc: OSError, what: str = "output folder") -> errors.RequestError:
    reason = exc.strerror or str(exc)
    return errors.RequestError(f"{what}: cannot write in {path}: {reason}", code=errors.PATH_UNWRITABLE,
                               details={"path": str(path), "reason": reason})
