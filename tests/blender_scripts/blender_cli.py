"""A `blender` command for tests: `--version` and `--command extension ...`, run by Blender's own CLI handler.

Blender is not installable here, bpy 4.5 is: this hands the arguments to bl_pkg's `cli_extension`, the function
`blender --command extension` calls, so install-file/remove are Blender's real code paths.
"""
import os
import sys

import bpy
import addon_utils


def main(argv):
    if argv[:1] == ["--version"]:
        print(f"Blender {bpy.app.version_string}")
        return 0
    if argv[:2] != ["--command", "extension"]:
        print(f"test blender: only --version and --command extension are supported, got {argv}", file=sys.stderr)
        return 2
    import bl_pkg

    return bl_pkg.cli_extension(argv[2:]) or 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    for addon in list(bpy.context.preferences.addons):   # a registered class left at exit hangs bpy
        if "bodydouble" in addon.module:
            addon_utils.disable(addon.module)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
