# BodyDouble for Nuke: runs in every mode (GUI, `nuke -t`, farm). No UI calls here.
#
# Install: add this folder to NUKE_PATH, or in ~/.nuke/init.py:
#     nuke.pluginAddPath("/path/to/bodydouble/host_integration/nuke")
# The thin client (`bodydouble`, with pyzmq and numpy built for Nuke's Python) must be importable:
# install it into Nuke's Python, or `pip install --target DIR` and set BODYDOUBLE_PYTHONPATH=DIR.
import os
import sys


def _bodydouble_add_client_path() -> None:
    for path in os.environ.get("BODYDOUBLE_PYTHONPATH", "").split(os.pathsep):
        if path and os.path.isdir(path) and path not in sys.path:
            sys.path.append(path)


_bodydouble_add_client_path()
