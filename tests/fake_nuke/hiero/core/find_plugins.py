"""``hiero.core.find_plugins``: how Hiero / Nuke Studio load their start-up scripts, as Foundry's own module does it.

Mirrors Foundry's ``hiero/core/find_plugins.py`` (shipped with Nuke Studio): for every plug-in path, each
``*.py`` in ``<path>/Python/Startup`` (then ``StartupUI`` with a GUI) is loaded with
``imp.load_source(moduleName, path)``, the module named after the file's **stem**, so it becomes
``sys.modules[stem]`` (a start-up file named ``bodydouble.py`` replaces the thin client there); each folder with
an ``__init__.py`` is imported as a package; the folder itself is appended to ``sys.path``; files are taken in
sorted order, names starting with '.' skipped; a script that raises is logged and the next one runs; paths a
script adds with ``addPluginPath`` are scanned after the others. ``imp`` is gone from Python 3.12, so
``load_source`` is rebuilt on importlib with the same effect.
"""
from __future__ import annotations

import importlib.util
import os
import re
import sys
import traceback
import types

import hiero
import hiero.core

hiero.plugins = types.ModuleType("plugins")
_errors: list[str] = []        # what Hiero's log would show: 'Plugin <path> could not be loaded: <why>'


def _load_source(name: str, path: str) -> types.ModuleType:
    """``imp.load_source``: execute ``path`` as the module ``name``, put in ``sys.modules`` first (replacing any
    module of that name)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def loadPluginsFromFolder(path: str) -> None:
    if not os.path.isdir(path):
        return
    sys.path.append(path)
    test = re.compile(r".*\.py$", re.IGNORECASE)
    for f in sorted(os.listdir(path)):
        p = os.path.join(path, f)
        if f.startswith("."):
            continue
        if test.search(f):
            module_name = os.path.splitext(f)[0]
            try:
                setattr(hiero.plugins, module_name, _load_source(module_name, p))
            except Exception as detail:
                _errors.append(f"Plugin {p} could not be loaded: {detail}\n{traceback.format_exc()}")
        elif os.path.isdir(p) and os.path.exists(os.path.join(p, "__init__.py")):
            try:
                setattr(hiero.plugins, f, __import__(f))
            except Exception as detail:
                _errors.append(f"Plugin {p} could not be loaded: {detail}")


def loadPluginsFromPluginPath(suffix: str) -> None:
    paths = hiero.core.pluginPath()
    for path in paths:
        loadPluginsFromFolder(os.path.join(path, "Python", suffix))
    for path in [x for x in hiero.core.pluginPath() if x not in paths]:   # added by a plug-in just loaded
        loadPluginsFromFolder(os.path.join(path, "Python", suffix))


def findPlugins() -> None:
    loadPluginsFromPluginPath("Startup")
    if hiero.core.GUI:
        loadPluginsFromPluginPath("StartupUI")
