"""BodyDouble thin client: the wire protocol and a client hosts import (pyzmq + numpy only).

Never imports torch or OpenImageIO: this package installs into Nuke's and Blender's Python.
"""
__version__ = "0.1.0"

from .errors import BodyDoubleError  # noqa: E402,F401
