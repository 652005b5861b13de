"""Jobs as the artist sees them, in real bpy: the jobs panel (queue, running, cancel one of two, finished,
failed), messages in the panel and the status bar from a timer-like (windowless) pump, the live preview image,
the take's own undo step, File > Open during a job (load_pre) and re-attach after reopening the saved .blend.

Every pump here runs with no window in the context, as ``bpy.app.timers`` calls it.
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bd_harness as harness  # noqa: E402
import scene_setup  # noqa: E402

import bpy  # noqa: E402


def pump():
    from bodydouble_blender import jobs

    with bpy.context.temp_override(window=None):
        return jobs.pump()


def pump_until(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"still waiting after {timeout} s")
        pump()
        time.sleep(0.02)


def job_by_title(title):
    from bodydouble_blender import jobs

    return next((j for j in jobs.running() if j.title == title), None)


def panel(context):
    from bodydouble_blender import panels

    layout = scene_setup.FakeLayout()
    panels.draw_jobs(layout, panels.compositor_takes(context))
    return layout.log


def status_bar(context):
    from bodydouble_blender import menus

    return scene_setup.draw_menu(menus.draw_status, context)


def fill(adapter, seed, steps, frame=None):
    extra = dict(use_node_range=False, frame_start=frame, frame_end=frame) if frame else {}
    return harness.call(bpy.ops.bodydouble.fill, "EXEC_DEFAULT", plate_node="Plate", adapter=adapter, seed=seed,
                        steps=steps, **extra)


def comp():
    """The compositor tree and a node-editor context on it (looked up again: undo and file loads replace them)."""
    from bodydouble_blender import compositor

    tree = compositor.scene_tree(bpy.context.scene)
    return tree, scene_setup.node_editor_context(bpy.context.scene, "CompositorNodeTree", tree)


def take_names(tree):
    return sorted(n.name for n in tree.nodes if "bodydouble" in n) if tree is not None else []


def server_state(address, job_id):
    from bodydouble.client import Client

    with Client(address, timeout=10) as client:
        return client.status(job_id)["state"]


def main(args):
    from bodydouble.client import AdapterInfo
    from bodydouble_blender import adapters, jobs, messages, panels, previews

    out = {}
    first = args["first"]
    other_blend = os.path.join(args["out"], "other.blend")
    shot_blend = os.path.join(args["out"], "shot.blend")
    bpy.ops.wm.save_as_mainfile(filepath=other_blend, copy=True)     # a file without BodyDouble, for File > Open
    scene_setup.compositor_with_plate(args["plate_first_file"], first, args["last"])
    harness.call(bpy.ops.bodydouble.refresh_adapters)
    bpy.ops.ed.undo_push(message="artist: set up the comp")

    # -- a constructed preview lands right side up (rows run bottom-up in Blender) ------------------------
    picture = np.zeros((4, 6, 3), np.uint8)
    picture[0] = (255, 0, 0)            # top row red
    picture[-1] = (0, 0, 255)           # bottom row blue
    image = previews.show_live("constructed", picture)
    pixels = np.empty(len(image.pixels), np.float32)
    image.pixels.foreach_get(pixels)
    pixels = pixels.reshape(4, 6, 4)
    out["constructed"] = {"size": list(image.size), "bottom": pixels[0, 0, :3].tolist(),
                          "top": pixels[-1, 0, :3].tolist(), "colorspace": image.colorspace_settings.name}
    previews.clear_live()

    # -- two jobs: one runs, one waits; cancel the waiting one only -------------------------------------
    out["fill_a"] = fill("hero", 1, 40, first)
    a = job_by_title(f"Fill hero {first}-{first}")
    pump_until(lambda: a.job_id is not None)      # each job has its own connection: keep the order certain
    out["fill_b"] = fill("hero", 2, 2)
    b = job_by_title(f"Fill hero {first}-{args['last']}")
    pump_until(lambda: a.state == "running" and b.job_id is not None)
    pump()
    out["states"] = {"a": a.state, "b": b.state, "b_ahead": b.background.queue_position}
    tree, ctx = comp()
    out["panel_two_jobs"] = panel(ctx)
    out["keys"] = {"a": a.key, "b": b.key}
    out["records_two"] = sorted(jobs.records(bpy.context.scene))
    out["job_ids"] = {"a": a.job_id, "b": b.job_id}
    out["cancel_b"] = harness.call(bpy.ops.bodydouble.cancel, job=b.key)
    pump_until(lambda: b not in jobs.running())
    out["a_after_cancel_b"] = a.state if a in jobs.running() else "ended"
    out["history_after_cancel"] = [(e.title, e.state) for e in jobs.history]
    out["records_after_cancel"] = sorted(jobs.records(bpy.context.scene))

    # -- the live preview from the server's progress events ---------------------------------------------
    pump_until(lambda: a.shown_progress is not None or a not in jobs.running())
    live = a.shown_progress
    if live is not None:
        image = bpy.data.images[previews.IMAGE_NAME]
        pixels = np.empty(len(image.pixels), np.float32)
        image.pixels.foreach_get(pixels)
        h, w = live.preview.shape[:2]
        shown = np.round(pixels.reshape(h, w, 4)[::-1, :, :3] * 255).astype(np.uint8)
        out["live"] = {"shape": list(live.preview.shape), "image_size": list(image.size),
                       "equal": bool((shown == live.preview).all()), "title": previews.live_title,
                       "icon_size": list(previews._collection[previews.LIVE].image_size)}
        out["panel_preview"] = panel(ctx)

    # -- A finishes (loaded from a windowless pump): messages, status bar, its own undo step ------------
    pump_until(lambda: a not in jobs.running(), 90)
    tree, ctx = comp()
    out["takes_after_a"] = take_names(tree)
    out["messages_after_a"] = harness.reports()
    out["status_after_a"] = status_bar(ctx)
    out["panel_after_a"] = panel(ctx)
    out["records_after_a"] = sorted(jobs.records(bpy.context.scene))
    tree.nodes["Plate"].label = "artist: after the take"
    bpy.ops.ed.undo_push(message="artist: relabel the plate")
    bpy.ops.ed.undo()
    tree, ctx = comp()
    out["after_undo"] = {"takes": take_names(tree), "plate_label": tree.nodes["Plate"].label}
    takes = out["after_undo"]["takes"]
    thumb = previews.thumbnail(panels.take_first_file(tree.nodes[takes[0]]["bodydouble"])) if takes else None
    if thumb is not None:
        px = np.empty(len(thumb.image_pixels_float), np.float32)
        thumb.image_pixels_float.foreach_get(px)
        out["thumbnail"] = {"size": list(thumb.image_size), "mean": float(px.mean()) if px.size else 0.0}

    # -- a failed job: an error the artist sees --------------------------------------------------------
    adapters.set_cache([*adapters.cached(), AdapterInfo(name="nobody", character="Nobody", trigger="",
                                                        base_model="m", status="ready")])
    out["fill_unknown"] = fill("nobody", 1, 2)
    pump_until(lambda: not jobs.running())
    out["status_after_failure"] = status_bar(ctx)
    out["history_after_failure"] = [(e.title, e.state) for e in jobs.history]
    out["last_message"] = [messages.LOG[-1].level, messages.LOG[-1].text]

    # -- File > Open while a job runs: nothing lands in the opened file; reopening follows it again -----
    out["fill_c"] = fill("hero", 3, 30, first + 1)
    c = jobs.running()[0]
    pump_until(lambda: c.recorded)
    c_id = c.job_id
    bpy.ops.wm.save_as_mainfile(filepath=shot_blend)
    bpy.ops.wm.open_mainfile(filepath=other_blend)
    out["running_after_open"] = len(jobs.running())
    out["open_message"] = [messages.LOG[-1].level, messages.LOG[-1].text]
    deadline = time.monotonic() + 60
    while server_state(args["address"], c_id) in ("queued", "running") and time.monotonic() < deadline:
        pump()
        time.sleep(0.1)
    for _ in range(10):
        pump()
    out["c_server_state"] = server_state(args["address"], c_id)
    out["other_file"] = {"takes": [t.name for t in jobs.all_takes()], "records": jobs.unfollowed(),
                         "images": sorted(i.name for i in bpy.data.images if i.name != previews.IMAGE_NAME)}

    bpy.ops.wm.open_mainfile(filepath=shot_blend)        # load_post: follow C again; it ended: load its take
    out["reattached"] = [j.job_id for j in jobs.running()]
    pump_until(lambda: not jobs.running())
    tree, ctx = comp()
    out["shot_takes"] = [(n.name, n["bodydouble"]["job"]) for n in tree.nodes if "bodydouble" in n]
    out["shot_records"] = sorted(jobs.records(bpy.context.scene))

    # A job still running when its file is reopened: followed again, its take loaded once.
    out["fill_d"] = fill("hero", 4, 60, first + 2)
    d = jobs.running()[0]
    pump_until(lambda: d.recorded and d.state == "running")
    d_id, d_fraction = d.job_id, d.fraction
    bpy.ops.wm.save_as_mainfile(filepath=shot_blend)
    bpy.ops.wm.open_mainfile(filepath=other_blend)
    bpy.ops.wm.open_mainfile(filepath=shot_blend)
    [d2] = jobs.running()
    fractions = []
    while d2 in jobs.running():
        fractions.append(d2.fraction)
        pump()
        time.sleep(0.02)
    tree, ctx = comp()
    out["d"] = {"id": d_id, "followed_id": d2.job_id, "fraction_at_detach": d_fraction,
                "max_fraction_followed": max(fractions or [0]),
                "takes": [n["bodydouble"]["job"] for n in tree.nodes if "bodydouble" in n].count(d_id)}
    # Following an already loaded job again loads nothing twice.
    jobs.follow(d_id, {"kind": "fill", "title": "again", "address": args["address"],
                       "load": {"tree": ["group", "x"], "source": "Plate", "params": {}, "wire": False}},
                bpy.context.scene.name)
    pump_until(lambda: not jobs.running())
    out["again"] = [messages.LOG[-1].level, messages.LOG[-1].text]
    tree, ctx = comp()
    out["d_takes_after_again"] = [n["bodydouble"]["job"] for n in tree.nodes if "bodydouble" in n].count(d_id)
    out["panel_end"] = panel(ctx)

    # A job whose server does not answer: "lost", kept in the file, offered for Re-attach.
    prefs = bpy.context.preferences.addons[harness.MODULE].preferences
    prefs.connect_timeout = 1.0
    scene = bpy.context.scene
    scene[jobs.RECORDS] = {"job-gone-1": {"kind": "fill", "title": "Fill far away", "address": args["down_address"],
                                          "load": {"tree": ["group", "x"], "source": "Plate", "params": {},
                                                   "wire": False}}}
    out["reattach_down"] = harness.call(bpy.ops.bodydouble.reattach)
    pump_until(lambda: not jobs.running(), 30)
    out["lost"] = {"history": [e.state for e in jobs.history][-1], "records": sorted(jobs.records(scene)),
                   "message": [messages.LOG[-1].level, messages.LOG[-1].text], "panel": panel(ctx)}
    return out


if __name__ == "__main__":
    harness.run(main)
