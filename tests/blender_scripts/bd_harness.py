"""Shared set-up for the Blender test scripts (runs inside the bpy venv, never under pytest).

Usage from a script: ``args = harness.start()`` ... ``harness.finish(result_dict)``.
The script's result is one stdout line ``BODYDOUBLE_RESULT {json}``; the pytest side parses it.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "host_integration", "blender"))

import bpy  # noqa: E402  (first: it puts Blender's own modules on sys.path)
import addon_utils  # noqa: E402

MODULE = "bodydouble_blender"


def start() -> dict:
    args = json.loads(os.environ.get("BODYDOUBLE_TEST_ARGS", "{}"))
    mod = addon_utils.enable(MODULE, default_set=True, handle_error=_raise)
    if mod is None:
        raise RuntimeError("the BodyDouble add-on did not enable")
    prefs = bpy.context.preferences.addons[MODULE].preferences
    if "address" in args:
        prefs.server_address = args["address"]
    if "output_root" in args:
        prefs.output_root = args["output_root"]
    prefs.connect_timeout = float(args.get("timeout", 5.0))
    prefs.default_steps = int(args.get("steps", 2))
    return args


def _raise(exc):
    raise exc


def run(main) -> None:
    """Run ``main(args) -> dict``; print its result; always leave without hanging (os._exit)."""
    code = 0
    try:
        result = main(start())
        print("BODYDOUBLE_RESULT " + json.dumps(result), flush=True)
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        code = 1
    try:
        addon_utils.disable(MODULE, default_set=True)
    except BaseException:
        traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def call(op, *args, **kwargs) -> dict:
    """Call an operator; returns {"result": set, "error": message or None} instead of raising."""
    try:
        return {"result": sorted(op(*args, **kwargs)), "error": None}
    except RuntimeError as exc:
        return {"result": ["CANCELLED"], "error": str(exc)}


def pump_until_idle(timeout: float = 60.0) -> float:
    from bodydouble_blender import jobs

    t0 = time.monotonic()
    jobs.wait(timeout)
    return time.monotonic() - t0


def reports() -> list:
    """What the add-on told the artist, oldest first: [(level, text)]."""
    from bodydouble_blender import messages

    return [(m.level, m.text) for m in messages.LOG]


def clear_reports() -> None:
    from bodydouble_blender import messages

    del messages.LOG[:]
