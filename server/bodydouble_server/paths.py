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
