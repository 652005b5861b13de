"""Install the built extension zip into Blender (a throwaway user folder) the way an artist would, enable it;
without a zip, load the user preferences of an earlier install and report what is registered.

Runs with BLENDER_USER_RESOURCES set to a temporary folder by the pytest side.
"""
import json
import os
import sys
import traceback

import bpy
import addon_utils


def main(args):
    out = {"repos": {r.module: r.directory for r in bpy.context.preferences.extensions.repos}}
    if args.get("zip"):
        out["install"] = sorted(bpy.ops.extensions.package_install_files(
            filepath=args["zip"], repo="user_default", enable_on_install=True))
    else:   # installed before (`blender --command extension install-file`): start as Blender does, from the prefs
        out["install"] = sorted(bpy.ops.wm.read_userpref())
    out["addons"] = [a.module for a in bpy.context.preferences.addons if "bodydouble" in a.module]
    out["operators"] = sorted(name for name in dir(bpy.ops.bodydouble) if not name.startswith("_"))
    prefs = bpy.context.preferences.addons["bl_ext.user_default.bodydouble"].preferences
    out["prefs"] = {k: getattr(prefs, k) for k in ("server_address", "connect_timeout", "output_root",
                                                   "default_steps", "default_strength")}
    import bodydouble
    import zmq

    out["thin_client_file"] = bodydouble.__file__
    out["zmq_file"] = zmq.__file__
    out["menus"] = {name: any(getattr(f, "__module__", "").startswith("bl_ext.user_default.bodydouble")
                              for f in getattr(bpy.types, name).draw._draw_funcs)
                    for name in ("NODE_MT_context_menu", "SEQUENCER_MT_context_menu")}
    out["heavy_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "diffusers", "OpenImageIO"))
    return out


if __name__ == "__main__":
    code = 0
    try:
        print("BODYDOUBLE_RESULT " + json.dumps(main(json.loads(os.environ["BODYDOUBLE_TEST_ARGS"]))), flush=True)
    except BaseException:
        traceback.print_exc()
        code = 1
    for addon in list(bpy.context.preferences.addons):
        if "bodydouble" in addon.module:
            addon_utils.disable(addon.module)
    sys.stdout.flush()
    os._exit(code)
