"""Fill a shot (#18) in real bpy: the fill dialog's engine picker and a video-engine fill from the compositor.

Run by tests/test_shot_fill.py with the bpy venv's Python; args come in BODYDOUBLE_TEST_ARGS.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bd_harness as harness  # noqa: E402
import scene_setup  # noqa: E402

import bpy  # noqa: E402


class _Dialog:
    """What the adapter picker's item callback reads of the operator: its engine."""

    def __init__(self, engine):
        self.engine = engine


def main(args):
    import bodydouble_blender as bd
    from bodydouble import host

    out = {}
    first, last = args["first"], args["last"]
    tree, plate, _matte = scene_setup.compositor_with_plate(args["plate_first_file"], first, last)
    out["refresh"] = harness.call(bpy.ops.bodydouble.refresh_adapters)
    out["engines"] = [e[0] for e in bd.adapters.engine_items()]
    out["default_engine"] = host.default_engine(bd.adapters.server_info(), first, last, bd.adapters.cached())
    out["adapters_image"] = [i[0] for i in bd.adapters.fill_items(_Dialog("image"))]
    out["adapters_video"] = [i[0] for i in bd.adapters.fill_items(_Dialog("video"))]
    # The dialog's OK with the video engine (properties are applied in the operator's order: engine first).
    out["fill"] = harness.call(bpy.ops.bodydouble.fill, "EXEC_DEFAULT", engine="video", adapter="hero_video",
                               seed=5, steps=1, feather=2, key_frame=args["key_frame"])
    harness.pump_until_idle()
    takes = [n for n in tree.nodes if "bodydouble" in n]
    props = takes[0]["bodydouble"].to_dict() if takes else {}
    out["take_props"] = {k: props.get(k) for k in ("engine", "adapter", "coherence")}
    take_json = os.path.join(props.get("take_dir", ""), "take.json")
    out["take"] = json.load(open(take_json)) if os.path.isfile(take_json) else None
    # An image-engine take, then Carry Through Shot on it: the video engine with its first frame as the key.
    out["image_fill"] = harness.call(bpy.ops.bodydouble.fill, "EXEC_DEFAULT", engine="image", adapter="hero",
                                     seed=6, steps=1)
    harness.pump_until_idle()
    image_take = tree.nodes.active
    out["image_take_pattern"] = image_take["bodydouble"].to_dict().get("pattern")
    out["carry"] = harness.call(bpy.ops.bodydouble.carry_take, "EXEC_DEFAULT", node=image_take.name,
                                adapter="hero_video")
    harness.pump_until_idle()
    carried = tree.nodes.active["bodydouble"].to_dict()
    carried_json = os.path.join(carried.get("take_dir", ""), "take.json")
    out["carried_take"] = json.load(open(carried_json)) if os.path.isfile(carried_json) else None
    out["carried_from"] = carried.get("carried_from") == image_take.name
    # No key frame, a key adapter: the server fills the first frame with it and keys the shot.
    out["key_items"] = [i[0] for i in bd.adapters.key_items()]
    out["key_for"] = bd.adapters.key_for("hero_video")
    out["keyed"] = harness.call(bpy.ops.bodydouble.fill, "EXEC_DEFAULT", engine="video", adapter="hero_video",
                                key_adapter="hero", seed=7, steps=1)
    harness.pump_until_idle()
    keyed = tree.nodes.active["bodydouble"].to_dict()
    keyed_json = os.path.join(keyed.get("take_dir", ""), "take.json")
    out["keyed_take"] = json.load(open(keyed_json)) if os.path.isfile(keyed_json) else None
    out["reports"] = harness.reports()
    # Last (it replaces the cache): video adapters trained for fill alone come first in the video engine's picker.
    from bodydouble.client import AdapterInfo

    bd.adapters.set_cache([AdapterInfo(name=n, character="Hero", trigger="", base_model="wan", status="ready",
                                       raw={"model_kind": "video", "trained_for": job})
                           for n, job in (("walk", "extend"), ("stills", ""), ("turn", "fill"))])
    out["video_order"] = [i[0] for i in bd.adapters.fill_items(_Dialog("video"))]
    out["video_first"] = bd.adapters.first_ready("fill", "video")
    return out


if __name__ == "__main__":
    harness.run(main)
