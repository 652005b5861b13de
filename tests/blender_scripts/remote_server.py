"""A remote, encrypted server (CURVE): the certificates come from the add-on's preferences."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bd_harness as harness  # noqa: E402
import scene_setup  # noqa: E402

import bpy  # noqa: E402


def main(args):
    from bodydouble_blender import adapters, jobs

    out = {}
    prefs = bpy.context.preferences.addons[harness.MODULE].preferences
    prefs.connect_timeout = 2.0
    tree, plate, _ = scene_setup.compositor_with_plate(args["plate_first_file"], args["first"], args["last"])
    nodes_before = len(tree.nodes)

    # No certificate: an encrypted server never answers a plain client.
    out["plain"] = harness.call(bpy.ops.bodydouble.refresh_adapters)
    # A certificate path that does not exist: said at once, by the job, in words that name the setting.
    prefs.curve_server_cert = args["missing_cert"]
    out["missing"] = harness.call(bpy.ops.bodydouble.refresh_adapters)
    harness.clear_reports()
    from bodydouble.client import AdapterInfo

    adapters.set_cache([AdapterInfo(name="hero", character="Hero", trigger="", base_model="m", status="ready")])
    harness.call(bpy.ops.bodydouble.fill, "EXEC_DEFAULT", adapter="hero", seed=1)
    harness.pump_until_idle(30)
    out["missing_reports"] = harness.reports()

    # The server's public certificate and ours: listed, and a fill comes back as a take node.
    prefs.curve_server_cert = args["server_cert"]
    prefs.curve_client_cert = args["client_cert"]
    out["refresh"] = harness.call(bpy.ops.bodydouble.refresh_adapters)
    out["adapters"] = sorted(a.name for a in adapters.cached())
    harness.clear_reports()
    out["fill"] = harness.call(bpy.ops.bodydouble.fill, "EXEC_DEFAULT", adapter="hero", seed=3)
    harness.pump_until_idle(120)
    out["reports"] = harness.reports()
    out["nodes_added"] = len(tree.nodes) - nodes_before
    return out


if __name__ == "__main__":
    harness.run(main)
