"""Sequencer: right-click an image strip -> BodyDouble -> Extend shot…, a real extend on the server's video model."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bd_harness as harness  # noqa: E402
import scene_setup  # noqa: E402

import bpy  # noqa: E402


def main(args):
    from bodydouble_blender import adapters, jobs, menus, strips

    out = {}
    scene = bpy.context.scene
    sed = scene.sequence_editor_create()
    folder, name = os.path.split(args["plate_first_file"])
    strip = sed.strips.new_image(name="Plate", filepath=args["plate_first_file"], channel=2, frame_start=args["first"])
    for frame in range(args["first"] + 1, args["last"] + 1):
        strip.elements.append(name.replace(f"{args['first']}", f"{frame}"))
    sed.active_strip = strip
    ctx = scene_setup.sequencer_context(scene)
    out["menu"] = scene_setup.draw_menu(menus.draw_sequencer_context_menu, ctx)
    out["submenu"] = scene_setup.draw_menu(menus.SEQUENCER_MT_bodydouble.draw, ctx)
    out["frame_inputs"] = [[f.frame, f.plate.path] for f in strips.frame_inputs(strip)]
    harness.call(bpy.ops.bodydouble.refresh_adapters)
    # Each dialog's picker offers only the adapters trained for the model that runs its operation.
    out["extend_items"] = [i[0] for i in adapters.extend_items()]
    out["fill_items"] = [i[0] for i in adapters.fill_items()]
    try:
        bpy.ops.bodydouble.extend("EXEC_DEFAULT", adapter="hero", count=4)
        out["image_adapter_for_extend"] = "accepted"
    except TypeError as exc:
        out["image_adapter_for_extend"] = str(exc)

    strips_before = sorted(s.name for s in sed.strips_all)
    out["extend"] = harness.call(bpy.ops.bodydouble.extend, "EXEC_DEFAULT", adapter="hero_video", count=4, seed=5,
                                 prompt="<hero_video> turns away")
    out["running"] = len(jobs.running())
    out["seconds"] = harness.pump_until_idle(180)
    out["reports"] = harness.reports()
    new = [s for s in sed.strips_all if s.name not in strips_before]
    out["new_strip"] = [{"name": s.name, "type": s.type, "channel": s.channel, "frame_start": s.frame_final_start,
                         "frame_end": s.frame_final_end, "directory": bpy.path.abspath(s.directory),
                         "files": [e.filename for e in s.elements], "props": s["bodydouble"].to_dict()} for s in new]
    from bodydouble_blender import panels

    layout = scene_setup.FakeLayout()
    panels.draw_jobs(layout, panels.sequencer_takes(ctx))
    out["panel"] = layout.log
    out["source_strip"] = {"channel": strip.channel, "frame_start": strip.frame_final_start,
                           "frame_end": strip.frame_final_end}
    return out


if __name__ == "__main__":
    harness.run(main)
