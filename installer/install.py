#!/usr/bin/env python3
"""One command from a fresh clone to a working BodyDouble: ``python3 installer/install.py [--help]``.

Needs Python 3.11+ with venv and pip. See docs/install.md.
"""
import sys
from pathlib import Path

if sys.version_info < (3, 11):
    sys.exit(f"installer/install.py needs Python 3.11+ (this is {sys.version.split()[0]})")

HERE = Path(__file__).resolve().parent
# The installer's own package, and the standard-library-only workstation helpers it shares with `bodydouble doctor`
# (bodydouble_server.workstation: paths, GPU probe), which import the thin client's version.
sys.path[:0] = [str(HERE), str(HERE.parent / "plugin"), str(HERE.parent / "server")]

from bodydouble_install.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
