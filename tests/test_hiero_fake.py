"""The fake `hiero` stays faithful to the Hiero calls the glue makes, as Foundry documents them
(the list in bodydouble_nuke/hiero_api.py), and the glue makes no Hiero call outside that list.
No public Hiero stubs exist to check against (as types-nuke does for the Nuke side)."""
from __future__ import annotations

import ast
import inspect
import sys
import threading

import pytest

from .support import REPO

FAKE_DIR = REPO / "tests" / "fake_nuke"
NUKE_DIR = REPO / "host_integration" / "nuke"
PACKAGE = NUKE_DIR / "bodydouble_nuke"
for _path in (str(FAKE_DIR), str(NUKE_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

# Names hiero_api calls that are not Hiero's: Python builtins and the Qt calls listed in QT_CALLS.
NOT_HIERO = {"list", "isinstance", "hasattr", "next", "str", "int", "float", "dataclass", "Placement", "ItemMedia",
             "items", "addMenu", "addAction", "setEnabled", "connect", "command", "build", "_tag",
             "call", "kept_job", "forget_job", "len", "startswith", "ProjectColour", "project_colour"}


def _resolve(dotted: str):
    import hiero

    target = hiero
    for part in dotted.split("."):
        target = getattr(target, part)
    return target


def _documented_params(spec: str) -> list[str]:
    return [p.strip() for p in spec.strip("()").split(",") if p.strip()]


def _fake_params(call) -> list[str]:
    fn = call.__init__ if inspect.isclass(call) else call
    out = []
    for p in inspect.signature(fn).parameters.values():
        if p.name in ("self", "cls"):
            continue
        out.append({p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name)
    return out


def test_the_fake_has_every_documented_call_with_its_documented_parameters():
    from bodydouble_nuke import hiero_api

    problems = []
    for dotted, spec in hiero_api.DOCUMENTED.items():
        try:
            call = _resolve(dotted)
        except AttributeError:
            problems.append(f"fake hiero has no {dotted}")
            continue
        documented, fake = _documented_params(spec), _fake_params(call)
        # the fake may add optional parameters Hiero also has (e.g. Tag's icon), never rename or drop one
        if fake[: len(documented)] != documented:
            problems.append(f"hiero.{dotted}: documented {documented}, fake takes {fake}")
    assert not problems, "\n".join(problems)


def test_the_glue_calls_only_documented_hiero_methods():
    from bodydouble_nuke import hiero_api

    documented = {key.split(".")[-1] for key in hiero_api.DOCUMENTED} | {"TrackItem", "MediaType", "kVideo"}
    qt = {key.split(".")[-1] for key in hiero_api.QT_CALLS} | {"addMenu", "addAction", "setEnabled"}
    tree = ast.parse((PACKAGE / "hiero_api.py").read_text())
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
    unknown = called - documented - qt - NOT_HIERO - {""}
    assert not unknown, f"hiero_api calls {sorted(unknown)}: add each to DOCUMENTED with Foundry's signature"
    assert {"sourceIn", "addTrackItem", "registerInterest", "executeInMainThread"} <= called


def test_only_hiero_api_imports_hiero():
    importers = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] == "hiero" for n in names):
                importers.append(path.name)
    assert importers == ["hiero_api.py"]


def test_fake_refuses_what_hiero_refuses():
    import hiero
    import nuke

    nuke._reset()
    hiero._reset()
    core = hiero.core
    track = core.VideoTrack("V")
    with pytest.raises(RuntimeError, match="in a Sequence"):
        track.addTrackItem(core.Clip("/nowhere/x.####.exr", 1, 2), 0)
    tag = core.Tag("t")
    core.Sequence("s").addTag(tag)
    with pytest.raises(RuntimeError, match="one Tag per item"):
        core.Sequence("s2").addTag(tag)
    clip = core.Clip("/nowhere/x.####.exr", 1, 2)
    with pytest.raises(RuntimeError, match="in a bin"):
        clip.setSourceMediaColourTransform("ACEScg")
    with pytest.raises(TypeError, match="BinItem"):
        core.Bin("b").addItem(clip)
    # A colour transform is one of the project's config: its colour spaces, its roles as 'role (colour space)',
    # the file type's default. Another config's names are refused.
    project = core.Project("p")
    project.clipsBin().addItem(core.BinItem(clip))
    assert clip.sourceMediaColourTransform() == "default (ACEScg)"        # the built-in ACES cg config
    available = clip.getAvailableOcioColourTransforms()
    assert {"ACEScg", "scene_linear (ACEScg)", "compositing_log (ACEScct)", "default (ACEScg)"} <= set(available)
    for name in ("linear", "Filmic Log", "scene_linear", "default (linear)"):
        with pytest.raises(ValueError, match="not a colour transform"):
            clip.setSourceMediaColourTransform(name)
    clip.setSourceMediaColourTransform("scene_linear (ACEScg)")
    project._colour_management("nuke-default")
    assert (project.ocioConfigName(), project.lutSettingFloat(), project.lutSettingLog()) == ("nuke-default", "linear",
                                                                                             "Cineon")
    with pytest.raises(ValueError, match="not a colour transform"):
        clip.setSourceMediaColourTransform("ACEScg")
    clip.setSourceMediaColourTransform("default (linear)")
    custom = str(FAKE_DIR / "nuke-default" / "config.ocio")
    project._colour_management(custom)
    assert (project.ocioConfigName(), project.ocioConfigPath(), project.lutSettingFloat()) == (
        "", custom, "role_scene_linear")                 # a custom config has no name; roles as the .hrox keeps them
    with pytest.raises(RuntimeError, match="OCIO config"):
        project._colour_management("/studio/missing.ocio")
    refused = []
    worker = threading.Thread(target=lambda: refused.append(_raises(lambda: core.executeInMainThread(print, 1, 2))))
    worker.start()
    worker.join()
    assert isinstance(refused[0], TypeError) and "must be a dict" in str(refused[0])
    errors_seen = []
    worker = threading.Thread(target=lambda: errors_seen.append(_raises(lambda: core.Bin("b"))))
    worker.start()
    worker.join()
    assert isinstance(errors_seen[0], RuntimeError), "editing the project off the main thread must fail"


def _raises(call) -> BaseException:
    try:
        call()
    except BaseException as exc:  # handed back to the test's thread
        return exc
    raise AssertionError("did not raise")


def test_execute_in_main_thread_takes_one_item_or_one_tuple_then_a_dict():
    """Foundry's docstring: executeInMainThread(f, 'a'), (f, ('a', 'b')), (f, 'a', {'k': 1})."""
    import hiero
    import nuke

    nuke._reset()
    seen = []
    record = lambda *args, **kwargs: seen.append((args, kwargs))  # noqa: E731
    worker = threading.Thread(target=lambda: (hiero.core.executeInMainThread(record, "a"),
                                              hiero.core.executeInMainThread(record, ("a", "b")),
                                              hiero.core.executeInMainThread(record, "a", {"k": 1})))
    worker.start()
    worker.join()
    nuke._process_events()
    assert seen == [(("a",), {}), (("a", "b"), {}), (("a",), {"k": 1})]
