"""Errors an artist can act on, as Blender reports: server down, protocol mismatch, unknown adapter."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bd_harness as harness  # noqa: E402
import scene_setup  # noqa: E402

import bpy  # noqa: E402


def fill_report(prefs, address, adapter):
    """Point the add-on at ``address``, fill with ``adapter``, return (operator call, reports, seconds)."""
    from bodydouble_blender import jobs

    prefs.server_address = address
    harness.clear_reports()
    t0 = time.monotonic()
    call = harness.call(bpy.ops.bodydouble.fill, "EXEC_DEFAULT", adapter=adapter, seed=1)
    harness.pump_until_idle(60)
    return {"call": call, "reports": harness.reports(), "seconds": time.monotonic() - t0}


def main(args):
    from bodydouble.client import AdapterInfo
    from bodydouble_blender import adapters

    out = {}
    prefs = bpy.context.preferences.addons[harness.MODULE].preferences
    tree, plate, _ = scene_setup.compositor_with_plate(args["plate_first_file"], args["first"], args["last"])
    nodes_before = len(tree.nodes)

    # Server down: the dialog (refresh) says so at once, and so does a job sent to it.
    prefs.server_address = args["down_address"]
    t0 = time.monotonic()
    out["refresh_down"] = harness.call(bpy.ops.bodydouble.refresh_adapters)
    out["refresh_down_seconds"] = time.monotonic() - t0
    out["invoke_down"] = harness.call(bpy.ops.bodydouble.fill, "INVOKE_DEFAULT")
    # An adapter list fetched earlier (the server died since): the job reports it.
    adapters.set_cache([AdapterInfo(name="hero", character="Hero", trigger="", base_model="m", status="ready"),
                        AdapterInfo(name="nobody", character="Nobody", trigger="", base_model="m", status="ready")])
    out["fill_down"] = fill_report(prefs, args["down_address"], "hero")

    # A server of another protocol version.
    out["fill_mismatch"] = fill_report(prefs, args["mismatch_address"], "hero")

    # An adapter the server does not have.
    out["fill_unknown"] = fill_report(prefs, args["address"], "nobody")

    out["nodes_added"] = len(tree.nodes) - nodes_before
    # Blender still works: render a frame, and a real job still goes through.
    out["render"] = scene_setup.render_frames(args["out"], [args["first"]])
    out["fill_ok"] = fill_report(prefs, args["address"], "hero")
    out["nodes_added_after_ok"] = len(tree.nodes) - nodes_before
    return out


if __name__ == "__main__":
    harness.run(main)
