"""The fake `nuke` used by the Nuke tests stays faithful to Nuke's API (the types-nuke stubs),
and the plain-Python half of the glue behaves."""
from __future__ import annotations

import ast
import inspect
import sys
from importlib.metadata import distribution

import pytest

from bodydouble import errors

from .support import REPO

FAKE_DIR = REPO / "tests" / "fake_nuke"
NUKE_DIR = REPO / "host_integration" / "nuke"
for _path in (str(FAKE_DIR), str(NUKE_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)


def _stubs() -> tuple[dict[str, list[ast.FunctionDef]], dict[str, ast.ClassDef], set[str]]:
    folder = distribution("types-nuke").locate_file("nuke-stubs")
    functions: dict[str, list[ast.FunctionDef]] = {}
    classes: dict[str, ast.ClassDef] = {}
    names: set[str] = set()
    for pyi in sorted(folder.glob("*.pyi")):
        for node in ast.parse(pyi.read_text()).body:
            if isinstance(node, ast.FunctionDef):
                functions.setdefault(node.name, []).append(node)  # overloads: all of them
            elif isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, node)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
    return functions, classes, names


def _methods(classes: dict[str, ast.ClassDef], name: str) -> dict[str, list[ast.FunctionDef]]:
    found: dict[str, list[ast.FunctionDef]] = {}
    cls = classes.get(name)
    if cls is None:
        return found
    for base in cls.bases:
        if isinstance(base, ast.Name):
            found.update(_methods(classes, base.id))
    own: dict[str, list[ast.FunctionDef]] = {}
    for n in cls.body:
        if isinstance(n, ast.FunctionDef):
            own.setdefault(n.name, []).append(n)
    found.update(own)
    return found


def _param_mismatch(fake, stubs: list[ast.FunctionDef], where: str) -> list[str]:
    fake_names = [p for p in inspect.signature(fake).parameters if p not in ("self", "cls")]
    options = []
    for stub in stubs:
        if stub.args.vararg or stub.args.kwarg:
            return []  # the stub does not say: (*args, **kwargs)
        options.append([a.arg for a in stub.args.posonlyargs + stub.args.args if a.arg not in ("self", "cls")])
    return [] if fake_names in options else [f"{where}: fake takes {fake_names}, Nuke takes one of {options}"]


def test_every_public_name_of_the_fake_exists_in_nuke_with_the_same_parameters():
    import nuke

    functions, classes, names = _stubs()
    problems: list[str] = []
    for name, value in vars(nuke).items():
        if name.startswith("_") or inspect.ismodule(value) or name == "annotations":
            continue
        if getattr(value, "__module__", "nuke") != "nuke":
            continue  # imported helpers (numpy, typing)
        if inspect.isclass(value):
            if name not in classes:
                problems.append(f"class nuke.{name} is not in Nuke's API")
                continue
            stub_methods = _methods(classes, name)
            for method_name, method in vars(value).items():
                if method_name.startswith("_") or not callable(method):
                    continue
                if method_name not in stub_methods:
                    problems.append(f"nuke.{name}.{method_name} is not in Nuke's API")
                else:
                    problems += _param_mismatch(method, stub_methods[method_name], f"nuke.{name}.{method_name}")
        elif inspect.isfunction(value):
            if name not in functions:
                problems.append(f"nuke.{name}() is not in Nuke's API")
            else:
                problems += _param_mismatch(value, functions[name], f"nuke.{name}")
        elif name not in names:
            problems.append(f"nuke.{name} is not in Nuke's API")
    assert not problems, "\n".join(problems)


def test_fake_refuses_what_nuke_refuses():
    import threading

    import nuke

    nuke._reset()
    with pytest.raises(RuntimeError, match="hangs"):
        nuke.executeInMainThread(print)
    errors_seen = []
    worker = threading.Thread(target=lambda: errors_seen.append(_raises(lambda: nuke.nodes.Read())))
    worker.start()
    worker.join()
    assert errors_seen == [True], "creating nodes off the main thread must fail"
    read = nuke.nodes.Read()
    with pytest.raises(NameError):
        read["no_such_knob"]
    write = nuke.nodes.Write()
    assert write.knob("datatype") is None
    write["file_type"].setValue("exr")
    assert write["datatype"].value() == "16 bit half"
    with pytest.raises(ValueError):
        write["channels"].setValue("rgbz")
    nuke.delete(read)
    with pytest.raises(ValueError, match="not attached"):
        read.name()
    group = nuke.nodes.Group()
    with group:
        inner = nuke.nodes.Dot()
    assert inner.fullName() == f"{group.name()}.Dot1"
    assert write.setInput(0, inner) is False, "no connections across groups"


def _raises(call) -> bool:
    try:
        call()
    except RuntimeError:
        return True
    return False


@pytest.mark.parametrize("knob, name", [
    ("default (scene_linear)", "scene_linear"),
    ("default (ACES - ACEScg)", "ACES - ACEScg"),
    ("ACEScg", "ACEScg"),
    ("  ", "scene_linear"),
])
def test_colorspace_knob_to_ocio_name(knob, name):
    from bodydouble_nuke import flow

    assert flow.normalise_colorspace(knob) == name


@pytest.mark.parametrize("path, shot", [
    ("/shows/x/sh010/plates/sh010_plate.####.exr", "sh010_plate"),
    ("/shows/x/sh020_bg.%04d.exr", "sh020_bg"),
    ("/shows/x/sh030 comp_v2.$F4.exr", "sh030_comp_v2"),
    ("", ""),
])
def test_shot_from_plate_path(path, shot):
    from bodydouble import host

    assert host.shot_from_path(path) == shot


def test_messages_say_what_to_do():
    from bodydouble import host
    from bodydouble_nuke import commands

    params = host.Params(operation="fill", adapter="hero")
    address = "tcp://gpu01:5555"
    cases = {
        errors.ServerNotRunning("nothing there"): ["not running at tcp://gpu01:5555", "Connect to server"],
        errors.ProtocolMismatch("v1 vs v2"): ["different protocol versions", "same BodyDouble version"],
        errors.UnknownAdapter("no hero"): ["no adapter 'hero'", "Refresh adapters"],
        errors.JobFailed("CUDA out of memory", code="job_failed"): ["failed on the server", "CUDA out of memory"],
        errors.JobCancelled("stop"): ["cancelled", "No take was added"],
        errors.ServerLost("gone"): ["stopped answering", "Generate again"],
        errors.RequestError("no", code="path_not_allowed"): ["render folder", "allowed roots"],
        errors.RequestError("no", code="unknown_colorspace"): ["colour space"],
    }
    for exc, needles in cases.items():
        text = commands.describe(exc, address, params)
        for needle in needles:
            assert needle in text, (type(exc).__name__, needle, text)
    extend = commands.describe(errors.RequestError("no", code="not_supported"), address,
                               host.Params(operation="extend", adapter="hero"))
    assert "'Extend shot' is not available on this server yet" in extend


def test_render_folder_is_fresh_and_under_the_output_root(tmp_path):
    from bodydouble import host
    from bodydouble_nuke import flow

    caps = {"output_root": str(tmp_path / "takes"), "roots": [str(tmp_path)]}
    params = host.Params(operation="fill", adapter="hero", shot="sh010")
    one = flow.render_folder(caps, params, "BodyDouble1", now=1000.0)
    two = flow.render_folder(caps, params, "BodyDouble1", now=1000.5)
    assert one.startswith(str(tmp_path / "takes" / "_nuke_renders" / "sh010" / "BodyDouble1_")) and one != two
    mine = str(tmp_path / "mine")                 # the node's 'render folder' knob
    assert flow.render_folder(caps, params, "Group1.BodyDouble1", mine).startswith(str(tmp_path / "mine" / "Group1.BodyDouble1_"))
    with pytest.raises(errors.BodyDoubleError, match="render folder"):
        flow.render_folder({}, host.Params(operation="fill", adapter="hero"), "n")
