# BodyDouble for the Hiero / Nuke Studio timeline: right-click a shot ▸ BodyDouble ▸ Extend shot….
#
# Hiero and Nuke Studio run the scripts in <each HIERO_PLUGIN_PATH folder>/Python/Startup at start:
#     export HIERO_PLUGIN_PATH=/path/to/bodydouble/host_integration/nuke:$HIERO_PLUGIN_PATH
# (Nuke Studio also runs NUKE_PATH's menu.py, which installs the same menu; installing twice is a no-op.)
import os
import sys


def _bodydouble_install_timeline() -> None:
    plugin_dir = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for path in [plugin_dir] + os.environ.get("BODYDOUBLE_PYTHONPATH", "").split(os.pathsep):
        if path and os.path.isdir(path) and path not in sys.path:
            sys.path.append(path)
    from bodydouble_nuke import timeline

    timeline.install()


_bodydouble_install_timeline()
