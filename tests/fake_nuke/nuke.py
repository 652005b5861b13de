"""A faithful fake of the parts of Nuke's Python API that BodyDouble's glue calls. Tests only.

Faithful means: the same names and signatures as Nuke's (checked against the ``types-nuke``
stubs by tests/test_nuke_fake.py), and Nuke's rules enforced where breaking them would break
a real Nuke session:

- ``executeInMainThread`` from the main thread raises (in Nuke it hangs); calls from other
  threads go on a real queue that only the main thread runs (:func:`_process_events`).
- ``execute`` runs on the main thread only, needs an existing folder, writes real EXRs
  (OpenImageIO) from the pixels upstream: Read nodes' files, through Group/Input/Output, Dot,
  Switch and Keymix.
- a Write node's ``datatype`` knob exists once ``file_type`` is exr; unknown knobs raise
  NameError; enumeration values must be one of the items; deleted nodes raise ValueError.
- a PyScript_Knob button runs with ``thisNode()`` = its node, inside that node if a Group.

Helpers whose names start with ``_`` drive the fake from tests (reset, select, press menu
items, cancel a progress bar, pump the main-thread queue).
"""
from __future__ import annotations

import queue
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

GUI = True
INVISIBLE = 1 << 10
STARTLINE = 1 << 12
READ_ONLY = 1 << 28
env: dict[str, Any] = {"gui": True, "studio": False}   # 'studio': Nuke Studio, not plain Nuke (hiero imports in both)

# -- state (reset per test) --------------------------------------------------------------------
_main_thread: threading.Thread = threading.main_thread()
_main_queue: "queue.SimpleQueue[tuple[Callable[..., Any], tuple, dict, Optional[list]]]" = queue.SimpleQueue()
_messages: list[str] = []
_answers: list[Optional[str]] = []
_form_answers: list[Optional[dict[str, str]]] = []
_forms: list["Panel"] = []
_progress_tasks: list["ProgressTask"] = []
_executed: list[tuple[str, int, int]] = []
_panels: list[str] = []
_menus: dict[str, "Menu"] = {}
_context: list["Group"] = []
_this_node: list["Node"] = []
_last_selected: list["Node"] = []
_script_name = ""
_root: "Root"


def _reset(gui: bool = True, script: str = "", studio: bool = False) -> None:
    """A fresh, empty session (``studio``: Nuke Studio); the calling thread becomes Nuke's main thread."""
    global GUI, _main_thread, _main_queue, _root, _script_name
    GUI = gui
    env["gui"] = gui
    env["studio"] = studio
    _main_thread = threading.current_thread()
    _main_queue = queue.SimpleQueue()
    for store in (_messages, _answers, _form_answers, _forms, _progress_tasks, _executed, _panels, _context, _this_node,
                  _last_selected, _on_script_load):
        store.clear()
    _menus.clear()
    _script_name = script
    _root = Root()
    _root._name = "root"
    _root._knobs["colorManagement"]._index = 1          # OCIO, Nuke's built-in ACES cg config
    _root_colour_defaults(_root)


def _colour_management(mode: str, config: str = "") -> None:
    """Set the script's colour management as an artist would: 'Nuke', or 'OCIO' (``config``: one of Nuke's
    built-in config names, or a path to a custom one)."""
    _root["colorManagement"].setValue(mode)
    if mode == "OCIO" and config:
        if config in _BUILTIN_CONFIGS:
            _root["OCIO_config"].setValue(config)
        else:
            _root["OCIO_config"].setValue("custom")
            _root["customOCIOConfigPath"].setValue(config)
            _root_colour_defaults(_root)       # Nuke re-reads the roles of the new config


def _on_main_thread() -> bool:
    return threading.current_thread() is _main_thread


def _require_main(what: str) -> None:
    if not _on_main_thread():
        raise RuntimeError(f"{what} called from a worker thread: Nuke allows it on the main thread only")


def _process_events(until: Optional[Callable[[], bool]] = None, timeout: float = 60.0) -> None:
    """Run what worker threads queued for the main thread, until ``until()`` (or the queue is empty)."""
    _require_main("_process_events")
    deadline = time.monotonic() + timeout
    while True:
        try:
            call, args, kwargs, box = _main_queue.get(timeout=0.02)
        except queue.Empty:
            if until is None:
                return
            if until():
                return
            if time.monotonic() > deadline:
                raise TimeoutError("main-thread queue: condition not met in time")
            continue
        try:
            result = call(*args, **kwargs)
            if box is not None:
                box.append(("ok", result))
        except BaseException as exc:
            if box is None:
                raise
            box.append(("error", exc))
        if until is not None and until():
            return


def _select(*nodes: "Node") -> None:
    for n in _current()._nodes:
        n._selected = False
    _last_selected.clear()
    for n in nodes:
        n.setSelected(True)


def _answer(value: Optional[str]) -> None:
    """The next ``getInput`` dialog's answer (None: the user pressed Cancel)."""
    _answers.append(value)


def _answer_form(values: Optional[dict[str, str]]) -> None:
    """The next ``Panel.show()``: press OK after typing ``values`` (label -> text), or Cancel (None)."""
    _form_answers.append(values)


# -- knobs -----------------------------------------------------------------------------------
class Knob:
    _default: Any = ""

    def __init__(self, name: str, label: Optional[str] = None, *args: Any) -> None:
        self._name = name
        self._label = name if label is None else label
        self._value: Any = self._default
        self._flags = STARTLINE
        self._tooltip = ""
        self._expression: Optional[str] = None
        self._node: Optional[Node] = None
        self._visible = True

    def name(self) -> str:
        return self._name

    def label(self) -> str:
        return self._label

    def Class(self) -> str:
        return type(self).__name__

    def node(self) -> "Node":
        assert self._node is not None
        return self._node

    def setFlag(self, flag: int) -> None:
        self._flags |= flag

    def clearFlag(self, flag: int) -> None:
        self._flags &= ~flag

    def getFlag(self, flag: int) -> bool:
        return bool(self._flags & flag)

    def setTooltip(self, tooltip: str) -> None:
        self._tooltip = tooltip

    def tooltip(self) -> str:
        return self._tooltip

    def setVisible(self, visible: bool) -> None:
        self._visible = visible

    def _convert(self, value: Any) -> Any:
        return value

    def setValue(self, val: Any, chan: int = -1) -> bool:
        _require_main("knob.setValue")
        if self._node is not None:
            self._node._check()
        self._value = self._convert(val)
        return True

    def value(self, index: int = 0) -> Any:
        if self._expression is not None:
            return self._convert(_evaluate(self._expression, self))
        return self._value

    def getValue(self, channel: int = 0) -> Any:
        return self.value()

    def setExpression(self, expression: str, index: int = -1, view: Optional[str] = None) -> bool:
        self._expression = expression
        return True

    def hasExpression(self, index: int = -1) -> bool:
        return self._expression is not None


def _evaluate(expression: str, knob: Knob) -> Any:
    """The one expression shape the glue uses: ``parent.<knob>`` (an enumeration gives its index)."""
    match = re.fullmatch(r"parent\.(\w+)", expression.strip())
    if not match or knob._node is None:
        raise ValueError(f"fake nuke cannot evaluate expression {expression!r}")
    group = knob._node._parent
    other = group[match.group(1)]
    return other.getValue()


class Tab_Knob(Knob):
    pass


class Text_Knob(Knob):
    def __init__(self, name: str, label: Optional[str] = None, text: str = "") -> None:
        super().__init__(name, label)
        self._value = text


class String_Knob(Knob):
    def __init__(self, name: str, label: Optional[str] = None, text: str = "") -> None:
        super().__init__(name, label)
        self._value = text

    def _convert(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise TypeError(f"{self._name}: a string knob takes str, got {type(value).__name__}")
        return value


class EvalString_Knob(String_Knob):
    pass


class File_Knob(EvalString_Knob):
    pass


class Multiline_Eval_String_Knob(EvalString_Knob):
    pass


class Script_Knob(String_Knob):
    def __init__(self, name: str, label: Optional[str] = None, command: str = "") -> None:
        super().__init__(name, label, command)

    def command(self) -> str:
        return str(self._value)

    def execute(self) -> None:
        """What pressing the button does in Nuke."""
        _require_main("a button press")
        node = self.node()
        _this_node.append(node)
        if isinstance(node, Group):
            _context.append(node)
        try:
            exec(compile(self.command(), f"<{node.fullName()}.{self._name}>", "exec"), {"nuke": _module()})
        finally:
            _this_node.pop()
            if isinstance(node, Group):
                _context.pop()


class PyScript_Knob(Script_Knob):
    pass


class Array_Knob(Knob):
    def setRange(self, *args: Any) -> None:
        self._range = args


class Int_Knob(Array_Knob):
    _default = 0

    def _convert(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{self._name}: an Int_Knob takes a number, got {value!r}")
        return int(value)


class Double_Knob(Array_Knob):
    _default = 0.0

    def _convert(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{self._name}: a Double_Knob takes a number, got {value!r}")
        return float(value)


class Boolean_Knob(Array_Knob):
    _default = False

    def _convert(self, value: Any) -> Any:
        return bool(value)


class Enumeration_Knob(Knob):
    def __init__(self, name: str, label: Optional[str] = None, values: Optional[list[str]] = None) -> None:
        super().__init__(name, label)
        self._values = [str(v) for v in (values or [])]
        self._index = 0

    def values(self) -> list[str]:
        return list(self._values)

    def numValues(self) -> int:
        return len(self._values)

    def enumName(self, n: int) -> str:
        return self._values[n]

    def setValues(self, items: list[str]) -> None:
        current = self.value() if self._values else None
        self._values = [str(v) for v in items]
        self._index = self._values.index(current) if current in self._values else 0

    def setValue(self, val: Any, chan: int = -1) -> bool:
        _require_main("knob.setValue")
        if self._node is not None:
            self._node._check()
        if isinstance(val, int) and not isinstance(val, bool):
            if not 0 <= val < len(self._values):
                raise ValueError(f"{self._name}: index {val} out of range")
            self._index = val
        elif val in self._values:
            self._index = self._values.index(val)
        else:
            raise ValueError(f"{self._name}: {val!r} is not one of {self._values}")
        return True

    def value(self) -> Any:
        return self._values[self._index] if self._values else ""

    def getValue(self, channel: int = 0) -> Any:
        return float(self._index)


# -- colour management -------------------------------------------------------------------------
# Nuke colour management ("Nuke") uses nuke-default (here: the same colour spaces as a real OCIO config beside this
# file); OCIO mode uses the root's OCIO_config: Nuke's built-in ones are OCIO's own ocio:// configs, "custom" the
# file in customOCIOConfigPath. A colorspace knob accepts only that config's names (and aliases and roles, and
# "default (<one of them>)"), as Nuke's do.
_NUKE_DEFAULT_CONFIG = str(Path(__file__).with_name("nuke-default") / "config.ocio")
_BUILTIN_CONFIGS = ("fn-nuke_cg-config-v1.0.0_aces-v1.3_ocio-v2.1", "fn-nuke_studio-config-v1.0.0_aces-v1.3_ocio-v2.1")
_ROOT_DEFAULTS = {
    "Nuke": {"workingSpaceLUT": "linear", "floatLut": "linear", "logLut": "Cineon", "int8Lut": "sRGB",
             "int16Lut": "sRGB", "monitorLut": "sRGB"},
    "OCIO": {"workingSpaceLUT": "ACEScg", "floatLut": "scene_linear", "logLut": "compositing_log",
             "int8Lut": "matte_paint", "int16Lut": "texture_paint", "monitorLut": "ACES 1.0 - SDR Video (sRGB - Display)"},
}
_config_names: dict[str, frozenset] = {}


def _active_config() -> str:
    knobs = _root._knobs
    if knobs["colorManagement"].value() != "OCIO":
        return _NUKE_DEFAULT_CONFIG
    chosen = knobs["OCIO_config"].value()
    return str(knobs["customOCIOConfigPath"].value()) if chosen == "custom" else "ocio://" + chosen[len("fn-nuke_"):]


def _colourspaces(config: str) -> frozenset:
    """Every name a colorspace knob accepts under ``config``: colour spaces, their aliases, roles."""
    if config not in _config_names:
        import OpenImageIO as oiio

        cfg = oiio.ColorConfig(config)
        if cfg.geterror():
            raise RuntimeError(f"OCIO config {config}: {cfg.geterror()}")
        names = set(cfg.getColorSpaceNames()) | set(cfg.getRoles())
        for name in cfg.getColorSpaceNames():
            names |= set(cfg.getAliases(name))
        _config_names[config] = frozenset(names)
    return _config_names[config]


class _ColourspaceKnob(String_Knob):
    """A colour-space knob: a name of the active config, or 'default (<name>)'."""

    def Class(self) -> str:
        return "String_Knob"

    def _convert(self, value: Any) -> Any:
        value = super()._convert(value)
        match = re.fullmatch(r"default \((.*)\)", value.strip())
        name = match.group(1) if match else value
        config = _active_config()
        if name not in _colourspaces(config):
            raise ValueError(f"{self._name}: {value!r} is not a colour space of the OCIO config {config}")
        return value


class _ColourManagementKnob(Enumeration_Knob):
    """Root colorManagement / OCIO_config: changing them resets the root's default colour spaces, as Nuke does."""

    def Class(self) -> str:
        return "Enumeration_Knob"

    def setValue(self, val: Any, chan: int = -1) -> bool:
        done = super().setValue(val, chan)
        if self._node is not None and "monitorLut" in self._node._knobs:
            _root_colour_defaults(self._node)
        return done


def _root_colour_defaults(root: "Node") -> None:
    mode = root._knobs["colorManagement"].value()
    for name, value in _ROOT_DEFAULTS[mode].items():
        root._knobs[name]._value = value
    if mode == "OCIO":            # the working space: the config's scene_linear colour space
        import OpenImageIO as oiio

        root._knobs["workingSpaceLUT"]._value = oiio.ColorConfig(_active_config()).getColorSpaceNameByRole("scene_linear")


def _default_colourspace() -> str:
    """A new Read/Write's colorspace: 'default (<the root's float default>)'."""
    return f"default ({_root._knobs['floatLut'].value()})"


class _FileTypeKnob(Enumeration_Knob):
    """A Write's file_type: Nuke adds the format's options (exr: ``datatype``) when it is set."""

    def Class(self) -> str:
        return "Enumeration_Knob"

    def setValue(self, val: Any, chan: int = -1) -> bool:
        done = super().setValue(val, chan)
        node = self._node
        if node is not None and self.value() == "exr" and "datatype" not in node._knobs:
            node._attach(Enumeration_Knob("datatype", "datatype", ["16 bit half", "32 bit float"]))
        return done


# -- nodes -----------------------------------------------------------------------------------
def _knob_table(cls: str) -> list[Knob]:
    common: list[Knob] = [String_Knob("label", "label"), Boolean_Knob("disable", "disable")]
    if cls == "Read":
        return common + [File_Knob("file", "file"), Int_Knob("first", "frame range"), Int_Knob("last", ""),
                         Int_Knob("origfirst", "original range"), Int_Knob("origlast", ""),
                         _ColourspaceKnob("colorspace", "colorspace", _default_colourspace()),
                         Enumeration_Knob("on_error", "missing frames", ["error", "black", "checkerboard", "nearest frame"]),
                         Enumeration_Knob("before", "before", ["hold", "loop", "bounce", "black"]),
                         Enumeration_Knob("after", "after", ["hold", "loop", "bounce", "black"]),
                         Boolean_Knob("raw", "raw data")]
    if cls == "Write":
        return common + [File_Knob("file", "file"),
                         _FileTypeKnob("file_type", "file type", [" ", "exr", "dpx", "jpeg", "png", "tiff", "mov"]),
                         Enumeration_Knob("channels", "channels", ["rgb", "rgba", "alpha", "all"]),
                         _ColourspaceKnob("colorspace", "colorspace", _default_colourspace()),
                         Boolean_Knob("create_directories", "create directories"), Boolean_Knob("raw", "raw data")]
    if cls == "Keymix":
        return common + [Enumeration_Knob("maskChannel", "maskChannel", ["rgba.alpha", "rgba.red", "none"]),
                         Boolean_Knob("invertMask", "invert"), Double_Knob("mix", "mix")]
    if cls == "Switch":
        return common + [Int_Knob("which", "which")]
    if cls == "Merge2":
        return common + [Enumeration_Knob("operation", "operation", ["over", "plus", "multiply", "copy"]),
                         Double_Knob("mix", "mix")]
    if cls == "Input":
        return common + [Int_Knob("number", "number")]
    if cls == "Root":
        return common + [_ColourManagementKnob("colorManagement", "color management", ["Nuke", "OCIO"]),
                         _ColourManagementKnob("OCIO_config", "OCIO config", [*_BUILTIN_CONFIGS, "custom"]),
                         File_Knob("customOCIOConfigPath", "custom OCIO config"),
                         *(_ColourspaceKnob(name, name) for name in _ROOT_DEFAULTS["Nuke"] if name != "monitorLut"),
                         String_Knob("monitorLut", "monitor")]
    if cls in ("Output", "Dot", "Group"):
        return common
    raise RuntimeError(f"fake nuke: unknown node class {cls!r}")


_MAX_INPUTS = {"Read": 0, "Write": 1, "Keymix": 3, "Merge2": 3, "Switch": 1000, "Input": 0, "Output": 1, "Dot": 1}


class Node:
    def __init__(self, cls: str = "", parent: Optional["Group"] = None) -> None:
        self._class = cls or type(self).__name__
        self._knobs: dict[str, Knob] = {}
        for knob in _knob_table(self._class):
            self._attach(knob)
        self._inputs: list[Optional[Node]] = []
        self._parent: Group = parent if parent is not None else (_current() if self._class != "Root" else None)  # type: ignore[assignment]
        self._selected = False
        self._deleted = False
        self._x = self._y = 0
        self._name = ""
        if self._parent is not None:
            self._name = self._parent._unique(self._class)
            self._parent._nodes.append(self)
            if self._class == "Input":
                self._knobs["number"]._value = sum(1 for n in self._parent._nodes if n._class == "Input") - 1

    def _attach(self, knob: Knob) -> None:
        knob._node = self
        self._knobs[knob.name()] = knob

    def _check(self) -> None:
        if self._deleted:
            raise ValueError("A PythonObject is not attached to a node")

    def Class(self) -> str:
        self._check()
        return self._class

    def name(self) -> str:
        self._check()
        return self._name

    def fullName(self) -> str:
        self._check()
        if self._parent is None or isinstance(self._parent, Root):
            return self._name
        return f"{self._parent.fullName()}.{self._name}"

    def setName(self, name: str, uncollide: bool = False, updateExpressions: bool = False) -> None:
        self._check()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"invalid node name {name!r}")
        taken = {n._name for n in self._parent._nodes if n is not self}
        if name in taken:
            if not uncollide:
                raise ValueError(f"a node called {name!r} already exists")
            stem = name.rstrip("0123456789")
            number = 1
            while f"{stem}{number}" in taken:
                number += 1
            name = f"{stem}{number}"
        self._name = name

    def knob(self, p: Any, follow_link: bool = False) -> Optional[Knob]:
        self._check()
        if isinstance(p, int):
            return list(self._knobs.values())[p]
        return self._knobs.get(p)

    def knobs(self) -> dict[str, Knob]:
        self._check()
        return dict(self._knobs)

    def __getitem__(self, name: str) -> Knob:
        self._check()
        if name not in self._knobs:
            raise NameError(f"knob {name} does not exist")
        return self._knobs[name]

    def addKnob(self, knob: Knob) -> None:
        _require_main("node.addKnob")
        self._check()
        if knob.name() in self._knobs:
            raise ValueError(f"knob {knob.name()} already exists")
        self._attach(knob)

    def maxInputs(self) -> int:
        return _MAX_INPUTS.get(self._class, 1)

    def inputs(self) -> int:
        self._check()
        return len(self._inputs)

    def input(self, index: int) -> Optional["Node"]:
        self._check()
        node = self._inputs[index] if index < len(self._inputs) else None
        return None if node is None or node._deleted else node

    def setInput(self, i: int, node: Optional["Node"]) -> bool:
        _require_main("node.setInput")
        self._check()
        if i >= self.maxInputs():
            return False
        if node is not None and (node._deleted or node._parent is not self._parent):
            return False  # Nuke does not connect across groups
        while len(self._inputs) <= i:
            self._inputs.append(None)
        self._inputs[i] = node
        return True

    def firstFrame(self) -> int:
        return self._range()[0]

    def lastFrame(self) -> int:
        return self._range()[1]

    def _range(self) -> tuple[int, int]:
        self._check()
        if self._class == "Read":
            return int(self["first"].value()), int(self["last"].value())
        if self._class == "Input" and self._parent is not None and not isinstance(self._parent, Root):
            source = self._parent.input(int(self["number"].value()))
            if source is not None:
                return source._range()
        source = self.input(0)
        return source._range() if source is not None else (1, 100)

    def setXYpos(self, x: int, y: int) -> None:
        self._check()
        self._x, self._y = int(x), int(y)

    def xpos(self) -> int:
        return self._x

    def ypos(self) -> int:
        return self._y

    def setSelected(self, selected: bool) -> None:
        self._check()
        self._selected = bool(selected)
        if selected:
            _last_selected.append(self)

    def isSelected(self) -> bool:
        return self._selected

    def selectOnly(self) -> None:
        self._check()
        _select(self)

    def showControlPanel(self, forceFloat: bool = False) -> None:
        self._check()
        _panels.append(self.fullName())

    def parent(self) -> "Group":
        self._check()
        return self._parent

    def __repr__(self) -> str:
        return f"<fake {self._class} {self._name}{' (deleted)' if self._deleted else ''}>"


class Group(Node):
    def __init__(self, cls: str = "Group", parent: Optional["Group"] = None) -> None:
        self._nodes: list[Node] = []
        super().__init__(cls, parent)

    def _unique(self, cls: str) -> str:
        taken = {n._name for n in self._nodes}
        number = 1
        while f"{cls}{number}" in taken:
            number += 1
        return f"{cls}{number}"

    def maxInputs(self) -> int:
        return sum(1 for n in self._nodes if n._class == "Input" and not n._deleted)

    def node(self, s: str) -> Optional[Node]:
        self._check()
        return next((n for n in self._nodes if n._name == s and not n._deleted), None)

    def nodes(self) -> list[Node]:
        self._check()
        return [n for n in self._nodes if not n._deleted]

    def begin(self) -> "Group":
        self._check()
        _context.append(self)
        return self

    def end(self) -> None:
        if not _context or _context[-1] is not self:
            raise RuntimeError("end() without a matching begin()")
        _context.pop()

    def __enter__(self) -> "Group":
        return self.begin()

    def __exit__(self, type: Any, value: Any, traceback: Any) -> Any:
        self.end()
        return None


class Root(Group):
    def __init__(self) -> None:
        Group.__init__(self, "Root", parent=None)

    def _unique(self, cls: str) -> str:
        return Group._unique(self, cls)


def _current() -> Group:
    return _context[-1] if _context else _root


def _module() -> Any:
    import sys

    return sys.modules[__name__]


class _Nodes:
    """``nuke.nodes.Read(file=..., first=...)``: a node in the current group, knobs set."""

    def __getattr__(self, item: str) -> Callable[..., Node]:
        def construct(**knobs: Any) -> Node:
            _require_main(f"nuke.nodes.{item}")
            node: Node = Group() if item == "Group" else Node(item)
            for key, value in knobs.items():
                if key == "name":
                    node.setName(value)
                else:
                    node[key].setValue(value)
            return node
        return construct


nodes = _Nodes()


def root() -> Root:
    return _root


def thisNode() -> Node:
    if not _this_node:
        raise RuntimeError("thisNode() outside a knob callback")
    return _this_node[-1]


def toNode(s: str) -> Optional[Node]:
    group: Group = _root
    parts = s.split(".")
    for part in parts[:-1]:
        found = group.node(part)
        if not isinstance(found, Group):
            return None
        group = found
    return group.node(parts[-1])


def allNodes(filter: Optional[str] = None, group: Optional[Group] = None) -> list[Node]:
    nodes_ = (group or _current()).nodes()
    return [n for n in nodes_ if filter is None or n._class == filter]


def selectedNodes(filter: Optional[str] = None) -> list[Node]:  # noqa: A002 - Nuke's name
    found = [n for n in _current().nodes() if n._selected]
    # Nuke lists the last-selected node first
    found.sort(key=lambda n: -max((i for i, m in enumerate(_last_selected) if m is n), default=-1))
    return [n for n in found if filter is None or n._class == filter]


def selectedNode() -> Node:
    for node in reversed(_last_selected):
        if node._selected and not node._deleted:
            return node
    raise ValueError("no node selected")


def delete(n: Optional[Node]) -> None:
    _require_main("nuke.delete")
    if n is None:
        return
    n._check()
    n._deleted = True
    for other in n._parent._nodes:
        other._inputs = [None if m is n else m for m in other._inputs]


def scriptName() -> str:
    if not _script_name:
        raise RuntimeError("no script name")
    return _script_name


def message(prompt: str) -> None:
    _require_main("nuke.message")
    _messages.append(prompt)


def getInput(prompt: str, default: str = "") -> Optional[str]:
    _require_main("nuke.getInput")
    if not _answers:
        raise AssertionError(f"test gave no answer for the dialog {prompt!r}")
    return _answers.pop(0)


class Panel:
    """``nuke.Panel``: a modal form. Pulldown items are one space-separated string, as in Nuke. With buttons
    (``addButton``) ``show()`` returns the index of the one pressed: a test's answer names it as ``"_button"``;
    closing the panel (answer None) is 0."""

    def __init__(self, title: str = "", width: int = 0) -> None:
        self.title = title
        self.fields: dict[str, tuple[str, str, list[str]]] = {}   # label -> (kind, value, items)
        self.buttons: list[str] = []

    def addSingleLineInput(self, name: str, value: str = "") -> bool:
        self.fields[name] = ("text", str(value), [])
        return True

    def addEnumerationPulldown(self, name: str, value: str) -> bool:
        items = value.split()
        self.fields[name] = ("enum", items[0] if items else "", items)
        return True

    def addNotepad(self, name: str, value: str = "") -> bool:
        self.fields[name] = ("notepad", str(value), [])
        return True

    def addButton(self, name: str) -> bool:
        self.buttons.append(name)
        return True

    def show(self) -> int:
        _require_main("nuke.Panel.show")
        _forms.append(self)
        if not _form_answers:
            raise AssertionError(f"test gave no answer for the form {self.title!r}")
        answer = _form_answers.pop(0)
        if answer is None:
            return 0
        answer = dict(answer)
        button = answer.pop("_button", None)
        if button is not None and button not in self.buttons:
            raise AssertionError(f"the form {self.title!r} has no button {button!r}: {self.buttons}")
        for name, text in answer.items():
            if name not in self.fields:
                raise AssertionError(f"the form {self.title!r} has no field {name!r}: {list(self.fields)}")
            kind, _, items = self.fields[name]
            if kind == "enum" and text not in items:
                raise AssertionError(f"{text!r} is not an item of {name!r}: {items}")
            self.fields[name] = (kind, text, items)
        return self.buttons.index(button) if button is not None else 1

    def value(self, name: str) -> Optional[str]:
        field = self.fields.get(name)
        return None if field is None else field[1]


# -- menus -----------------------------------------------------------------------------------
class MenuItem:
    def __init__(self, name: str, command: Any = None, tooltip: str = "") -> None:
        self._name = name
        self._command = command
        self._tooltip = tooltip

    def name(self) -> str:
        return self._name

    def invoke(self) -> None:
        _require_main("a menu command")
        if callable(self._command):
            self._command()
        elif isinstance(self._command, str):
            exec(self._command, {"nuke": _module()})


class Menu(MenuItem):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._items: dict[str, MenuItem] = {}

    def addMenu(self, name: str, icon: str = "", tooltip: str = "", index: int = -1, readonly: bool = False) -> "Menu":
        head, _, rest = name.partition("/")
        menu = self._items.get(head)
        if not isinstance(menu, Menu):
            menu = self._items[head] = Menu(head)
        return menu.addMenu(rest) if rest else menu

    def addCommand(self, name: str, command: Any = None, shortcut: str = "", icon: str = "", tooltip: str = "",
                   index: int = -1, readonly: bool = False, shortcutContext: int = 0, tag: int = 0,
                   tagTarget: int = 0) -> MenuItem:
        folder, _, leaf = name.rpartition("/")
        menu = self.addMenu(folder) if folder else self
        item = menu._items[leaf] = MenuItem(leaf, command, tooltip)
        return item

    def findItem(self, name: str) -> Optional[MenuItem]:
        head, _, rest = name.partition("/")
        item = self._items.get(head)
        if rest:
            return item.findItem(rest) if isinstance(item, Menu) else None
        return item

    def items(self) -> list[MenuItem]:
        return list(self._items.values())


def menu(name: str) -> Menu:
    _require_main("nuke.menu")
    if not GUI:
        raise RuntimeError("nuke.menu() has no menus in terminal mode")
    if name not in ("Nuke", "Node Graph", "Nodes", "Viewer", "Pane", "Animation", "Properties", "Axis"):
        raise RuntimeError(f"no menu called {name!r}")
    if name not in _menus:
        _menus[name] = Menu(name)
    return _menus[name]


# -- callbacks ---------------------------------------------------------------------------------
_on_script_load: list[tuple[Callable[..., Any], tuple, dict]] = []


def addOnScriptLoad(call: Callable[..., Any], args: Any = (), kwargs: Optional[dict] = None,
                    nodeClass: str = "Root") -> None:
    _on_script_load.append((call, args if isinstance(args, tuple) else (args,), kwargs or {}))


def _script_loaded() -> None:
    """What Nuke does once a script has opened: run the script-load callbacks on the main thread."""
    _require_main("a script load")
    for call, args, kwargs in list(_on_script_load):
        call(*args, **kwargs)


# -- threads and progress ----------------------------------------------------------------------
def executeInMainThread(call: Callable[..., Any], args: Any = (), kwargs: Optional[dict] = None) -> None:
    if _on_main_thread():
        raise RuntimeError("executeInMainThread called on the main thread: this hangs a real Nuke")
    _main_queue.put((call, args if isinstance(args, tuple) else (args,), kwargs or {}, None))


def executeInMainThreadWithResult(call: Callable[..., Any], args: Any = (), kwargs: Optional[dict] = None) -> Any:
    if _on_main_thread():
        raise RuntimeError("executeInMainThreadWithResult called on the main thread: this hangs a real Nuke")
    box: list = []
    _main_queue.put((call, args if isinstance(args, tuple) else (args,), kwargs or {}, box))
    while not box:
        time.sleep(0.005)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


class ProgressTask:
    def __init__(self, title: str = "") -> None:
        if not GUI:
            raise RuntimeError("ProgressTask needs the GUI")
        self.title = title
        self.messages: list[str] = []
        self.progress: list[int] = []
        self._cancel = threading.Event()
        _progress_tasks.append(self)

    def setMessage(self, message: str) -> None:
        self.messages.append(message)

    def setProgress(self, progress: int) -> None:
        if not isinstance(progress, int) or not 0 <= progress <= 100:
            raise ValueError(f"setProgress takes an int 0..100, got {progress!r}")
        self.progress.append(progress)

    def isCancelled(self) -> bool:
        return self._cancel.is_set()

    def _press_cancel(self) -> None:
        self._cancel.set()


# -- rendering -------------------------------------------------------------------------------
_SHORT = {"R": "rgba.red", "G": "rgba.green", "B": "rgba.blue", "A": "rgba.alpha"}
_WRITE_CHANNELS = {"rgb": ["R", "G", "B"], "rgba": ["R", "G", "B", "A"], "alpha": ["A"]}


def _frame_path(pattern: str, frame: int) -> str:
    pattern = re.sub(r"#+", lambda m: f"{frame:0{len(m.group())}d}", pattern)
    return re.sub(r"%0?(\d*)d", lambda m: f"{frame:0{m.group(1) or 1}d}", pattern)


def _pixels(node: Optional[Node], frame: int) -> dict[str, np.ndarray]:
    """The image ``node`` outputs at ``frame``: channel name -> 2-D float32 array ({} is black)."""
    if node is None or node._deleted or node["disable"].value():
        return {} if node is None or node._deleted or node._class == "Read" else _pixels(node.input(0), frame)
    cls = node._class
    if cls == "Read":
        import OpenImageIO as oiio

        first, last = node._range()
        if (frame < first and node["before"].value() == "black") or (frame > last and node["after"].value() == "black"):
            return {}                                    # black, alpha 0, outside the clip
        path = _frame_path(str(node["file"].value()), min(max(frame, first), last))   # else hold
        buf = oiio.ImageBuf(path)
        if buf.has_error:
            if node["on_error"].value() == "black":
                return {}
            raise RuntimeError(f"Read {node.name()}: {buf.geterror()}")
        data = np.asarray(buf.get_pixels(oiio.FLOAT), dtype=np.float32)
        data = data.reshape(buf.spec().height, buf.spec().width, -1)
        return {_SHORT.get(c, c): data[:, :, i] for i, c in enumerate(buf.spec().channelnames)}
    if cls == "Input":
        group = node._parent
        return _pixels(group.input(int(node["number"].value())) if not isinstance(group, Root) else None, frame)
    if cls in ("Dot", "Output", "Write"):
        return _pixels(node.input(0), frame)
    if isinstance(node, Group):
        output = next((n for n in node.nodes() if n._class == "Output"), None)
        return _pixels(output, frame)
    if cls == "Switch":
        return _pixels(node.input(int(node["which"].value())), frame)
    if cls == "Keymix":
        b, a = _pixels(node.input(0), frame), _pixels(node.input(1), frame)
        shape = next(iter((b or a).values())).shape if (b or a) else None
        if shape is None:
            return {}
        mask_in = node.input(2)
        if mask_in is None:
            m = np.ones(shape, np.float32)
        else:
            m = _pixels(mask_in, frame).get(str(node["maskChannel"].value()), np.zeros(shape, np.float32))
        if node["invertMask"].value():
            m = 1.0 - m
        zero = np.zeros(shape, np.float32)
        return {c: b.get(c, zero) * (1.0 - m) + a.get(c, zero) * m for c in sorted(set(a) | set(b))}
    if cls == "Merge2":
        if node["operation"].value() != "over":
            raise RuntimeError(f"fake nuke renders Merge2 'over' only, not {node['operation'].value()!r}")
        b, a = _pixels(node.input(0), frame), _pixels(node.input(1), frame)
        shape = next(iter((b or a).values())).shape if (b or a) else None
        if shape is None:
            return {}
        zero = np.zeros(shape, np.float32)
        keep = 1.0 - a.get("rgba.alpha", zero)            # A over B: B shows where A is transparent
        return {c: a.get(c, zero) + b.get(c, zero) * keep for c in sorted(set(a) | set(b))}
    raise RuntimeError(f"fake nuke cannot render a {cls} node")


def execute(nameOrNode: Any, start: int, end: int, incr: int = 1, views: Optional[list] = None,
            continueOnError: bool = False) -> None:
    """Render a Write node for ``start..end`` (real EXR files)."""
    import OpenImageIO as oiio

    _require_main("nuke.execute")
    write = toNode(nameOrNode) if isinstance(nameOrNode, str) else nameOrNode
    if write is None or write._class != "Write":
        raise ValueError(f"{nameOrNode!r} is not a Write node")
    if write["file_type"].value() != "exr":
        raise RuntimeError("fake nuke writes exr only")
    datatype = write["datatype"].value()
    pixel_type = oiio.HALF if datatype == "16 bit half" else oiio.FLOAT
    names = _WRITE_CHANNELS[str(write["channels"].value())]
    for frame in range(start, end + 1, incr):
        path = Path(_frame_path(str(write["file"].value()), frame))
        if not path.parent.is_dir():
            if not write["create_directories"].value():
                raise RuntimeError(f"Write {write.name()}: Can't write {path}: No such file or directory")
            path.parent.mkdir(parents=True)
        image = _pixels(write.input(0), frame)
        if not image:
            raise RuntimeError(f"Write {write.name()}: nothing upstream to render at frame {frame}")
        shape = next(iter(image.values())).shape
        planes = [image.get(_SHORT[c], np.zeros(shape, np.float32)) for c in names]
        pixels = np.stack(planes, axis=-1).astype(np.float32)
        spec = oiio.ImageSpec(shape[1], shape[0], len(names), pixel_type)
        spec.channelnames = tuple(names)
        spec.attribute("compression", "zip")
        spec.attribute("nuke/colorspace", str(write["colorspace"].value()))
        out = oiio.ImageOutput.create(str(path))
        if out is None or not out.open(str(path), spec):
            raise RuntimeError(f"Write {write.name()}: cannot write {path}: {oiio.geterror()}")
        out.write_image(pixels)
        out.close()
    _executed.append((write.fullName(), start, end))


Nodes = _Nodes
_reset()
