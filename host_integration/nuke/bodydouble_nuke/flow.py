"""Plain Python for a BodyDouble node's inputs as files the server can read: where they are rendered (a fresh
folder each time) and the OCIO name of what the Write node wrote. No ``nuke`` here (commands.py renders);
the rest of the job (the request, following it, the take) is ``bodydouble.host``.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Any, Optional

from bodydouble import errors, host


@dataclass
class Rendered:
    """The inputs as files the server can read."""

    plate: str                # '####' pattern
    mask: Optional[str]       # None: the plate's alpha is the mask
    colorspace: str           # OCIO name sent to the server
    colorspace_knob: str      # what the Write node's colorspace knob said


def render_folder(caps: dict[str, Any], params: host.Params, node: str, render_dir: str = "",
                  now: Optional[float] = None) -> str:
    """Where the temporary Write node renders this job's inputs: a new folder each time, under the node's
    'render folder' (``render_dir``), else under the server's output root."""
    base = render_dir
    if not base:
        root = caps.get("output_root") or next(iter(caps.get("roots") or []), None)
        if not root:
            raise errors.BodyDoubleError("The server reports no output root: set the node's 'render folder' to a "
                                         "folder the server can read.", code="no_render_dir")
        base = os.path.join(str(root), "_nuke_renders", host.safe_name(params.shot or "untitled"))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    millis = int((now or time.time()) * 1000) % 1000
    folder = os.path.join(base, f"{host.safe_name(node)}_{stamp}_{os.getpid()}_{millis:03d}")
    return os.path.abspath(folder)


def normalise_colorspace(knob_value: str) -> str:
    """A Nuke colorspace knob value -> an OCIO name: 'default (scene_linear)' -> 'scene_linear'."""
    value = knob_value.strip()
    match = re.fullmatch(r"default \((.*)\)", value)
    if match:
        value = match.group(1).strip()
    return value or "scene_linear"


# An OCIO role (or Nuke's "default") -> the root knob that holds the colour space Nuke uses for it.
_ROLE_KNOBS = {"scene_linear": "workingSpaceLUT", "compositing_linear": "workingSpaceLUT",
               "rendering": "workingSpaceLUT", "reference": "workingSpaceLUT", "default": "floatLut",
               "compositing_log": "logLut", "color_timing": "logLut", "matte_paint": "int8Lut",
               "texture_paint": "int8Lut", "color_picking": "int8Lut"}
# Nuke's built-in OCIO configs that OCIO also ships (ocio:// URIs), so the server can tell it runs the same one.
_BUILTIN_PREFIX = "fn-nuke_"


def resolve_colorspace(knob_value: str, root: dict[str, str]) -> str:
    """What a colorspace knob means in this script, as a name to send: 'default (linear)' -> 'linear',
    'default (scene_linear)' (a role) -> the root's working space, 'data' -> 'raw'. ``root``:
    :func:`nuke_api.root_colour`."""
    value = normalise_colorspace(knob_value)
    for _ in range(3):                    # a root knob may itself say 'default (role)'
        knob = _ROLE_KNOBS.get(value)
        held = normalise_colorspace(root.get(knob, "")) if knob and root.get(knob, "").strip() else ""
        if not held or held == value:
            break
        value = held
    return "raw" if value == "data" else value


def host_colour(root: dict[str, str]) -> host.HostColour:
    """The script's config as the server can compare it: 'nuke-default' (Nuke colour management), a custom
    config's path, or Nuke's built-in OCIO config as OCIO's own ocio:// name."""
    if root.get("colorManagement", "Nuke") != "OCIO":
        config = "nuke-default"
    elif root.get("OCIO_config") == "custom":
        config = root.get("customOCIOConfigPath", "")
    else:
        name = root.get("OCIO_config", "")
        config = f"ocio://{name[len(_BUILTIN_PREFIX):]}" if name.startswith(_BUILTIN_PREFIX) else name
    return host.HostColour(config=config, working=resolve_colorspace("scene_linear", root),
                           view=root.get("monitorLut", ""))
