"""Artist loop in real bpy: right-click an Image node in the compositor -> BodyDouble -> Fill -> take node.

Run by tests/test_blender_compositor.py with the bpy venv's Python; args come in BODYDOUBLE_TEST_ARGS.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bd_harness as harness  # noqa: E402
import scene_setup  # noqa: E402

import bpy  # noqa: E402


def node_info(node, tree):
    image = node.image
    composite = scene_setup.output_node(tree)
    return {
        "name": node.name, "label": node.label, "bl_idname": node.bl_idname,
        "filepath": bpy.path.abspath(image.filepath), "source": image.source, "colorspace": image.colorspace_settings.name,
        "frame_start": node.frame_start, "frame_offset": node.frame_offset, "frame_duration": node.frame_duration,
        "location": list(node.location), "selected": node.select, "active": tree.nodes.active == node,
        "props": node["bodydouble"].to_dict() if "bodydouble" in node else None,
        "feeds": sorted(l.to_node.name for o in node.outputs for l in o.links),
        "composite_from": composite.inputs["Image"].links[0].from_node.name if composite.inputs["Image"].links else None,
    }


def take_nodes(tree):
    return [n for n in tree.nodes if "bodydouble" in n]


def main(args):
    import bodydouble_blender as bd
    from bodydouble_blender import jobs, menus

    out = {}
    first, last = args["first"], args["last"]
    tree, plate, matte = scene_setup.compositor_with_plate(args["plate_first_file"], first, last, args["matte_first_file"])
    scene = bpy.context.scene

    # Right-click menus: BodyDouble only in the compositor's node editor, and in the sequencer.
    comp_ctx = scene_setup.node_editor_context(scene, "CompositorNodeTree", tree)
    shader_ctx = scene_setup.node_editor_context(scene, "ShaderNodeTree", None)
    out["menu_compositor"] = scene_setup.draw_menu(menus.draw_node_context_menu, comp_ctx)
    out["menu_shader"] = scene_setup.draw_menu(menus.draw_node_context_menu, shader_ctx)
    out["menu_sequencer"] = scene_setup.draw_menu(menus.draw_sequencer_context_menu, scene_setup.sequencer_context(scene))
    out["submenu_plate"] = scene_setup.draw_menu(menus.NODE_MT_bodydouble.draw, comp_ctx)
    out["appended"] = {
        name: func in getattr(bpy.types, name).draw._draw_funcs
        for name, func in (("NODE_MT_context_menu", menus.draw_node_context_menu),
                           ("SEQUENCER_MT_context_menu", menus.draw_sequencer_context_menu))
    }

    # The adapter picker is filled from the server (what invoke does when the dialog opens).
    out["refresh"] = harness.call(bpy.ops.bodydouble.refresh_adapters)
    out["adapter_items"] = [list(i[:2]) for i in bd.adapters.fill_items()]

    # Fill from the selected plate node (EXEC: the dialog's OK).
    out["fill"] = harness.call(bpy.ops.bodydouble.fill, "EXEC_DEFAULT", adapter="hero", prompt="a face, side view",
                               seed=7, strength=1.0, steps=2)
    out["jobs_after_submit"] = len(jobs.running())
    progress, status = [], []
    deadline = time.monotonic() + 60
    while jobs.running() and time.monotonic() < deadline:
        for job in jobs.running():
            progress.append(job.fraction)
            status.append(jobs.status_line())
        out.setdefault("status_menu_while_running", scene_setup.draw_menu(menus.draw_status, comp_ctx))
        jobs.pump()
        time.sleep(0.02)
    out["progress"] = progress[:1] + [b for a, b in zip(progress, progress[1:]) if b != a]
    out["status_seen"] = sorted(set(s for s in status if s))
    out["reports_fill"] = harness.reports()
    takes = take_nodes(tree)
    out["take1"] = node_info(takes[0], tree) if takes else None
    out["plate_after"] = node_info(plate, tree)
    out["submenu_take"] = scene_setup.draw_menu(menus.NODE_MT_bodydouble.draw, comp_ctx)

    # Pixels read back through Blender: render the comp (plate node now replaced by the take node).
    out["renders_take1"] = scene_setup.render_frames(os.path.join(args["out"], "take1"), range(first, last + 1))

    # Regenerate (same seed) and New seed from the take node's context menu: new takes, the old untouched.
    take1_name = takes[0].name
    take1_files = sorted(os.path.join(r, f) for r, _, fs in os.walk(out["take1"]["props"]["take_dir"]) for f in fs)
    out["take1_files_before"] = {p: [os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in take1_files}
    out["regenerate"] = harness.call(bpy.ops.bodydouble.regenerate, node=take1_name)
    harness.pump_until_idle()
    take2 = [n for n in take_nodes(tree) if n.name != take1_name]
    out["take2"] = node_info(take2[0], tree) if take2 else None
    out["newseed"] = harness.call(bpy.ops.bodydouble.regenerate, node=take2[0].name, new_seed=True)
    harness.pump_until_idle()
    take3 = [n for n in take_nodes(tree) if n.name not in (take1_name, take2[0].name)]
    out["take3"] = node_info(take3[0], tree) if take3 else None
    out["take1_after"] = node_info(tree.nodes[take1_name], tree)
    out["take1_files_after"] = {p: [os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in take1_files}

    # Mask from a second selected Image node.
    for node in tree.nodes:
        node.select = False
    plate.select = matte.select = True
    tree.nodes.active = plate
    out["fill_matte"] = harness.call(bpy.ops.bodydouble.fill, "EXEC_DEFAULT", adapter="hero", seed=3,
                                     mask_source="NODE", use_node_range=False, frame_start=first + 1, frame_end=first + 1)
    harness.pump_until_idle()
    known = {take1_name, take2[0].name, take3[0].name}
    take4 = [n for n in take_nodes(tree) if n.name not in known]
    out["take4"] = node_info(take4[0], tree) if take4 else None
    out["reports"] = harness.reports()
    return out


if __name__ == "__main__":
    harness.run(main)
