"""Cancel a fill mid-job from Blender: no take node appears, the artist is told, Blender stays usable."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bd_harness as harness  # noqa: E402
import scene_setup  # noqa: E402

import bpy  # noqa: E402


def main(args):
    from bodydouble_blender import jobs

    out = {}
    tree, plate, _ = scene_setup.compositor_with_plate(args["plate_first_file"], args["first"], args["last"])
    nodes_before = sorted(n.name for n in tree.nodes)
    images_before = sorted(i.name for i in bpy.data.images)
    harness.call(bpy.ops.bodydouble.refresh_adapters)
    out["cancel_poll_idle"] = bpy.ops.bodydouble.cancel.poll()
    out["fill"] = harness.call(bpy.ops.bodydouble.fill, "EXEC_DEFAULT", adapter="hero", seed=1, steps=args["steps_long"])
    # Wait until the job is really running on the server (first progress), then cancel like the artist would.
    deadline = time.monotonic() + 60
    while jobs.running() and jobs.running()[0].fraction <= 0 and time.monotonic() < deadline:
        jobs.pump()
        time.sleep(0.02)
    out["fraction_at_cancel"] = jobs.running()[0].fraction if jobs.running() else None
    out["cancel_poll_running"] = bpy.ops.bodydouble.cancel.poll()
    out["cancel"] = harness.call(bpy.ops.bodydouble.cancel)
    t0 = time.monotonic()
    harness.pump_until_idle(60)
    out["seconds_to_stop"] = time.monotonic() - t0
    out["nodes_added"] = sorted(set(n.name for n in tree.nodes) - set(nodes_before))
    # (the live preview image is not a take)
    out["images_added"] = sorted(set(i.name for i in bpy.data.images) - set(images_before) - {"BodyDouble Preview"})
    out["composite_from"] = scene_setup.output_node(tree).inputs[0].links[0].from_node.name
    out["reports"] = harness.reports()
    out["status_line"] = jobs.status_line()
    # Still usable: the comp renders.
    out["render"] = scene_setup.render_frames(args["out"], [args["first"]])
    return out


if __name__ == "__main__":
    harness.run(main)
