"""Blender's default colour space end to end (#14): an EXR plate in the compositor keeps Blender's default
"Linear Rec.709"; Fill sends it; the take comes back. Run by tests/test_colour_hosts.py in the bpy venv."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bd_harness as harness  # noqa: E402
import scene_setup  # noqa: E402

import bpy  # noqa: E402


def main(args):
    from bodydouble_blender import jobs

    first = last = args["frame"]
    tree, plate, matte = scene_setup.compositor_with_plate(args["plate_first_file"], first, last,
                                                           args["matte_first_file"])
    scene = bpy.context.scene
    out = {"image_colorspace": plate.image.colorspace_settings.name,
           "display": scene.display_settings.display_device, "view": scene.view_settings.view_transform}
    out["refresh"] = harness.call(bpy.ops.bodydouble.refresh_adapters)
    out["fill"] = harness.call(bpy.ops.bodydouble.fill, "EXEC_DEFAULT", adapter="hero", seed=3, steps=1,
                               use_node_range=True, mask_source="NODE", mask_node=matte.name, wire=False)
    deadline = time.monotonic() + 60
    while jobs.running() and time.monotonic() < deadline:
        jobs.pump()
        time.sleep(0.02)
    out["reports"] = harness.reports()
    takes = [n for n in tree.nodes if "bodydouble" in n]
    out["take"] = takes[0]["bodydouble"].to_dict() if takes else None
    return out


harness.run(main)
