"""Every call BodyDouble makes into Nuke, in one place.

The rest of ``bodydouble_nuke`` is plain Python: it handles nodes as opaque handles and asks
this module to create, wire, read and write them. Keep it small; mypy checks it against the
public ``types-nuke`` stubs (see ``mypy.ini``), so a call that does not exist in Nuke's API,
or has the wrong arguments, fails CI.

Threading (Foundry's rules): every function here except :class:`Progress` and
:func:`run_in_main_thread` must be called on Nuke's main thread; :func:`run_in_main_thread`
must be called from a worker thread only (called on the main thread it would hang Nuke).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

if TYPE_CHECKING:  # typing.TypeGuard needs Python 3.10; Nuke 14 runs 3.9
    from typing_extensions import TypeGuard

import nuke

Node = nuke.Node
Group = nuke.Group


# -- session -----------------------------------------------------------------------------------
def is_gui() -> bool:
    """True in the interactive app; False in ``nuke -t`` and on the farm (no dialogs, no event loop)."""
    return bool(nuke.GUI)


def is_studio() -> bool:
    """True in Nuke Studio (and Hiero Player's Nuke), False in plain Nuke: ``hiero`` imports in both, so only
    ``nuke.env['studio']`` tells them apart."""
    return bool(nuke.env.get("studio", False))


def message(text: str) -> None:
    nuke.message(text)


def ask_string(prompt: str, default: str) -> Optional[str]:
    """A one-line text dialog; None when the user cancels."""
    answer: Optional[str] = nuke.getInput(prompt, default)
    return answer


def ask_form(title: str, fields: Sequence[tuple[str, str, Sequence[str]]]) -> Optional[dict[str, str]]:
    """A modal form (``nuke.Panel``): ``(label, default, choices)`` per row, a pulldown when
    ``choices`` is given (items must not contain spaces: Nuke splits them on spaces), a one-line
    text field otherwise. Returns label -> text, or None when the user cancels."""
    panel = nuke.Panel(title)
    for label, default, options in fields:
        if options:
            panel.addEnumerationPulldown(label, " ".join(options))
        else:
            panel.addSingleLineInput(label, default)
    if not panel.show():
        return None
    return {label: str(panel.value(label)) for label, _, _ in fields}


def ask_buttons(title: str, text: str, pick: tuple[str, Sequence[str]], buttons: Sequence[str]) -> tuple[str, str]:
    """A modal panel showing ``text`` (read-only notes), one pulldown ``pick`` = (label, items without spaces) and
    a row of ``buttons``; returns (the button pressed, the item picked). Closing the panel is ``buttons[0]``."""
    panel = nuke.Panel(title)
    panel.addNotepad("", text)
    label, items = pick
    if items:
        panel.addEnumerationPulldown(label, " ".join(items))
    for button in buttons:
        panel.addButton(button)
    pressed = panel.show()
    index = pressed if isinstance(pressed, int) and 0 <= pressed < len(buttons) else 0
    return buttons[index], str(panel.value(label) or "") if items else ""


def on_script_load(call: Callable[[], None]) -> None:
    """``call()`` after every script Nuke opens (File > Open, a recent file, ``nuke script.nk``)."""
    nuke.addOnScriptLoad(call, nodeClass="Root")


def top_level_nodes() -> list[Node]:
    return list(nuke.allNodes())


def add_command(menu_name: str, path: str, command: Callable[[], None], tooltip: str = "") -> None:
    """``menu_name``: 'Nuke' (menu bar), 'Node Graph' (right-click), 'Nodes' (toolbar)."""
    nuke.menu(menu_name).addCommand(path, command, tooltip=tooltip)


def script_name() -> str:
    """The open script's path, or '' for an untitled script."""
    try:
        return nuke.scriptName()
    except RuntimeError:  # untitled
        return ""


# -- selection and lookup ---------------------------------------------------------------------
def selected_nodes() -> list[Node]:
    return list(nuke.selectedNodes())


def current_node() -> Optional[Node]:
    """The node Nuke considers selected last (the one its properties panel shows)."""
    try:
        return nuke.selectedNode()
    except ValueError:
        return None


def this_node() -> Node:
    """The node whose knob is running a script (a button press)."""
    return nuke.thisNode()


def is_group(node: Node) -> TypeGuard[Group]:
    return isinstance(node, nuke.Group)


def node_class(node: Node) -> str:
    return node.Class()


def node_name(node: Node) -> str:
    return node.fullName()


def is_attached(node: Node) -> bool:
    """False once the node was deleted from the script."""
    try:
        node.fullName()
        return True
    except ValueError:
        return False


def frame_range(node: Node) -> tuple[int, int]:
    return node.firstFrame(), node.lastFrame()


def input_of(node: Node, index: int) -> Optional[Node]:
    return node.input(index)


def set_input(node: Node, index: int, source: Optional[Node]) -> None:
    node.setInput(index, source)


def child(group: Group, name: str) -> Optional[Node]:
    return group.node(name)


def select_only(node: Node) -> None:
    node.selectOnly()


def show_panel(node: Node) -> None:
    node.showControlPanel()


def place(node: Node, x: int, y: int) -> None:
    node.setXYpos(x, y)


def position(node: Node) -> tuple[int, int]:
    return node.xpos(), node.ypos()


def parent_of(node: Node) -> Group:
    return node.parent()


def delete(node: Node) -> None:
    nuke.delete(node)


# -- knobs -----------------------------------------------------------------------------------
@dataclass
class KnobSpec:
    """A knob to add to a node; ``kind`` picks the Nuke knob class."""

    name: str
    kind: str                  # tab | enum | string | text | int | float | bool | button | label
    label: str = ""
    default: Any = None
    values: Sequence[str] = ()
    command: str = ""          # button: Python run on press, with nuke.thisNode() the node
    tooltip: str = ""
    hidden: bool = False
    newline: bool = True
    range: tuple[float, float] | None = None
    flags: list[int] = field(default_factory=list)


def add_knob(node: Node, spec: KnobSpec) -> None:
    knob: nuke.Knob
    if spec.kind == "tab":
        knob = nuke.Tab_Knob(spec.name, spec.label)
    elif spec.kind == "enum":
        knob = nuke.Enumeration_Knob(spec.name, spec.label, list(spec.values))
    elif spec.kind == "string":
        knob = nuke.String_Knob(spec.name, spec.label)
    elif spec.kind == "text":
        knob = nuke.Multiline_Eval_String_Knob(spec.name, spec.label)
    elif spec.kind == "int":
        knob = nuke.Int_Knob(spec.name, spec.label)
    elif spec.kind == "float":
        double = nuke.Double_Knob(spec.name, spec.label)
        if spec.range:
            double.setRange(spec.range[0], spec.range[1])
        knob = double
    elif spec.kind == "bool":
        knob = nuke.Boolean_Knob(spec.name, spec.label)
    elif spec.kind == "button":
        knob = nuke.PyScript_Knob(spec.name, spec.label, spec.command)
    elif spec.kind == "label":
        knob = nuke.Text_Knob(spec.name, spec.label, str(spec.default or ""))
    else:
        raise ValueError(f"unknown knob kind {spec.kind!r}")
    if spec.tooltip:
        knob.setTooltip(spec.tooltip)
    if spec.hidden:
        knob.setFlag(nuke.INVISIBLE)
    if not spec.newline:
        knob.clearFlag(nuke.STARTLINE)
    node.addKnob(knob)
    if spec.default is not None and spec.kind not in ("label", "tab", "button"):
        knob.setValue(spec.default)


def has_knob(node: Node, name: str) -> bool:
    return node.knob(name) is not None


def get(node: Node, name: str) -> Any:
    """A knob's value: str for text and enumerations (the item's name), int, float or bool."""
    return node[name].value()


def set(node: Node, name: str, value: Any) -> None:  # noqa: A001 - mirrors knob.setValue
    node[name].setValue(value)


def set_choices(node: Node, name: str, values: Sequence[str]) -> None:
    """Replace an Enumeration knob's items."""
    knob = node[name]
    assert isinstance(knob, nuke.Enumeration_Knob), f"{name} is not an Enumeration knob"
    knob.setValues(list(values))


def choices(node: Node, name: str) -> list[str]:
    knob = node[name]
    assert isinstance(knob, nuke.Enumeration_Knob), f"{name} is not an Enumeration knob"
    return [str(v) for v in knob.values()]


def set_expression(node: Node, name: str, expression: str) -> None:
    node[name].setExpression(expression)


# -- node creation ---------------------------------------------------------------------------
@contextlib.contextmanager
def inside(group: Group) -> Iterator[None]:
    """Create nodes inside ``group`` (Nuke's ``with group:``)."""
    with group:
        yield


def create(node_class_name: str, name: str = "", label: str = "", **knobs: Any) -> Node:
    """A node of ``node_class_name`` in the current group, knobs set in the order given.

    Never ``nuke.createNode``: that one connects to the selection and opens panels."""
    node = _construct(node_class_name)
    for key, value in knobs.items():
        node[key].setValue(value)
    if label:
        node["label"].setValue(label)
    if name:
        node.setName(name, uncollide=True)
    return node


def _construct(node_class_name: str) -> Node:
    # spelled out (no getattr) so mypy sees each constructor
    if node_class_name == "Read":
        return nuke.nodes.Read()
    if node_class_name == "Keymix":
        return nuke.nodes.Keymix()
    if node_class_name == "Merge2":
        return nuke.nodes.Merge2()
    if node_class_name == "Switch":
        return nuke.nodes.Switch()
    if node_class_name == "Input":
        return nuke.nodes.Input()
    if node_class_name == "Output":
        return nuke.nodes.Output()
    raise ValueError(f"BodyDouble does not create {node_class_name!r} nodes")


def create_group(name: str) -> Group:
    group = nuke.nodes.Group()
    group.setName(name, uncollide=True)
    return group


def render(source: Node, path_pattern: str, first: int, last: int, channels: str) -> str:
    """Render ``source`` for ``first..last`` to half-float EXRs through a temporary Write node.

    Runs on the main thread (``nuke.execute`` blocks, with Nuke's own progress bar). Returns the
    Write node's colour space knob, i.e. the colour space of the pixels written."""
    with parent_of(source):
        write = nuke.nodes.Write()
        try:
            write.setInput(0, source)
            write["file_type"].setValue("exr")
            write["file"].setValue(path_pattern)
            write["channels"].setValue(channels)
            write["datatype"].setValue("16 bit half")
            colorspace = str(write["colorspace"].value())
            nuke.execute(write, first, last, 1)
        finally:
            nuke.delete(write)
    return colorspace


# The root's colour-management knobs BodyDouble reads (absent ones read as '').
ROOT_COLOUR_KNOBS = ("colorManagement", "OCIO_config", "customOCIOConfigPath", "workingSpaceLUT", "floatLut",
                     "logLut", "int8Lut", "int16Lut", "monitorLut")


def root_colour() -> dict[str, str]:
    """The script's colour management: 'Nuke' or 'OCIO', the config, and its default colour spaces by role."""
    root = nuke.root()
    return {name: str(root[name].value()) if name in root.knobs() else "" for name in ROOT_COLOUR_KNOBS}


# -- threads ---------------------------------------------------------------------------------
def run_in_main_thread(call: Callable[..., None], *args: Any) -> None:
    """From a worker thread: queue ``call(*args)`` for Nuke's main thread and return at once."""
    nuke.executeInMainThread(call, args=args)


class Progress:
    """Nuke's progress bar with a Cancel button; create and use it from a worker thread.

    Outside the GUI (``nuke -t``) it only remembers the state."""

    def __init__(self, title: str):
        self._task: Optional[nuke.ProgressTask] = nuke.ProgressTask(title) if is_gui() else None
        self._cancelled = False

    def update(self, percent: int, text: str) -> None:
        if self._task is not None:
            self._task.setMessage(text)
            self._task.setProgress(max(0, min(100, int(percent))))

    def cancelled(self) -> bool:
        if self._task is not None and self._task.isCancelled():
            self._cancelled = True
        return self._cancelled

    def close(self) -> None:
        """Nuke removes the bar when the task object goes away."""
        self._task = None
