"""The BodyDouble node: a Group with the job's knobs, wired plate (input 0) and mask (input 1),
and inside it every take it ever made (a Read over the plate: a Keymix through the mask for fill, a
Merge for extend), picked with its 'take' knob. Everything lives in the .nk script; nothing is ever
overwritten.

Inside the group::

    plate (Input 0) ─┬──────────────► takes (Switch, which = parent.take) ─► Output
    mask  (Input 1)  │  take001 (Read) ─► take001_keymix (B=plate, A=Read, mask) ─┘
                     │  take002 (Read, before: black) ─► take002_after_plate (Merge over, B=plate) ─┘

An extend take's Read is black before its first frame, so the node plays the plate and then the
new frames (which are opaque) as one continuous shot.
"""
from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # typing.TypeGuard needs Python 3.10; Nuke 14 runs 3.9
    from typing_extensions import TypeGuard

from bodydouble import host
from bodydouble.client import AdapterInfo
from bodydouble.jobspec import FILL_ENGINES, FillRequest

from . import nuke_api as api
from .nuke_api import KnobSpec

MARKER = "bodydouble_version"
VERSION = "1"
NO_ADAPTERS = "(no adapters: press Refresh)"
PLATE_CHOICE = "plate (no take)"
SERVER_PICKS = "auto (press Refresh)"       # the engine knob before the server said which it offers
NO_KEY = "none"                             # the key adapter knob: no key (or before a Refresh)
FEATHER = FillRequest.feather               # the feather knob's default, and a node saved before it existed

_CMD = "import bodydouble_nuke.commands as bd; bd.{}()"

KNOBS = [
    KnobSpec("bodydouble", "tab", "BodyDouble"),
    KnobSpec(MARKER, "string", "version", default=VERSION, hidden=True),
    KnobSpec("operation", "enum", "operation", values=host.OPERATIONS,
             tooltip="fill: paint what the plate never showed, inside the mask. extend: new frames after the plate."),
    KnobSpec("engine", "enum", "fill engine", values=[SERVER_PICKS],
             tooltip="fill: 'video' fills the range as one shot through the server's video model (its video "
                     "adapters; the default for more than one frame where the server has one), 'image' frame by "
                     "frame. Press Refresh adapters after changing it."),
    KnobSpec("coherence", "float", "coherence", default=0.0, range=(0.0, 1.0),
             tooltip="fill on the image engine: 0 each frame on its own; higher carries the previous frame's fill "
                     "along the plate's motion (1: the first frame's fill through the shot)."),
    KnobSpec("key_frame", "string", "key frame",
             tooltip="fill on the video engine: the range's first frame already filled (say a take's EXR from the "
                     "image engine, at the plate's size; a path the server reads): the video model carries it "
                     "through the shot. Empty: every frame from noise."),
    KnobSpec("key_from_take", "button", "Key from take", command=_CMD.format("key_from_take_button"), newline=False,
             tooltip="Set the key frame to the shown take's frame at the start of the range (fill a frame on the "
                     "image engine, pick the take you like, press this, then Generate on the video engine)."),
    KnobSpec("key_adapter", "enum", "key adapter", values=[NO_KEY],
             tooltip="fill on the video engine with no key frame: the server first fills the range's first frame "
                     "with this image adapter (as the image engine would) and keys the shot with it. Refresh "
                     "picks the video adapter's character's; 'none': every frame from noise."),
    KnobSpec("feather", "int", "feather", default=FEATHER,
             tooltip="fill: the soft edge inside the mask, in plate pixels; the plate still shows across a ramp "
                     "twice as wide, so lower it on a small mask (outside the mask the plate is untouched)."),
    KnobSpec("adapter", "enum", "adapter", values=[NO_ADAPTERS],
             tooltip="Character adapters on the server: character (adapter) · base model."),
    KnobSpec("refresh", "button", "Refresh adapters", command=_CMD.format("refresh_button"), newline=False),
    KnobSpec("prompt", "text", "prompt", default=""),
    KnobSpec("negative", "text", "negative", default=""),
    KnobSpec("seed", "int", "seed", default=0),
    KnobSpec("new_seed", "button", "New seed", command=_CMD.format("new_seed_button"), newline=False),
    KnobSpec("strength", "float", "strength", default=1.0, range=(0.01, 1.0)),
    KnobSpec("steps", "int", "steps", default=20),
    KnobSpec("first", "int", "frame range", tooltip="Defaults to the plate's range."),
    KnobSpec("last", "int", "", newline=False),
    KnobSpec("count", "int", "extend by", default=24, tooltip="extend: how many frames to add after the range."),
    KnobSpec("shot", "string", "shot", tooltip="Takes go to <server output root>/<shot>/bodydouble/<adapter>/take_NNN."),
    KnobSpec("render_dir", "string", "render folder",
             tooltip="Where the plate and mask are rendered for the server (it must be able to read it). "
                     "Empty: <server output root>/_nuke_renders/<shot>."),
    KnobSpec("colorspace", "string", "colour space",
             tooltip="OCIO name of the rendered plate's pixels. Empty: what the render's Write node used."),
    KnobSpec("generate", "button", "Generate", command=_CMD.format("generate_button")),
    KnobSpec("cancel", "button", "Cancel", command=_CMD.format("cancel_button"), newline=False),
    KnobSpec("reattach", "button", "Re-attach", command=_CMD.format("reattach_button"), newline=False,
             tooltip="Ask the server about this node's job (after reopening the script or a lost connection): "
                     "load its take when it finished, follow it when it still runs."),
    KnobSpec("status", "label", "", default="idle"),
    KnobSpec("take", "enum", "show take", values=[PLATE_CHOICE],
             tooltip="Every take stays in the node; pick which one flows out."),
    KnobSpec("history", "label", "takes", default="(none yet)"),
    KnobSpec("bd_adapters", "string", "adapters", default="{}", hidden=True),
    KnobSpec("bd_key_adapters", "string", "key adapters", default="{}", hidden=True),
    KnobSpec("bd_takes", "string", "takes", default="[]", hidden=True),
    # The job in flight (JSON: job id, server, parameters, render colour space): saved with the script, so a
    # reopened script can re-attach to it. '' when none.
    KnobSpec("bd_job", "string", "job", default="", hidden=True),
]


def is_bodydouble(node: api.Node) -> TypeGuard[api.Group]:
    return api.is_group(node) and api.has_knob(node, MARKER)


def create(plate: api.Node, mask: Optional[api.Node], operation: str, shot: str = "") -> api.Group:
    """A BodyDouble node below ``plate``, wired, frame range from the plate."""
    parent = api.parent_of(plate)
    with api.inside(parent):
        group = api.create_group("BodyDouble")
    for spec in KNOBS:
        api.add_knob(group, spec)
    with api.inside(group):
        plate_in = api.create("Input", name="plate")
        mask_in = api.create("Input", name="mask")
        switch = api.create("Switch", name="takes")
        output = api.create("Output", name="Output1")
        api.set_input(switch, 0, plate_in)
        api.set_input(output, 0, switch)
        api.set_expression(switch, "which", "parent.take")
        api.place(plate_in, 0, 0)
        api.place(mask_in, 200, 0)
        api.place(switch, 0, 300)
        api.place(output, 0, 400)
    api.set_input(group, 0, plate)
    if mask is not None:
        api.set_input(group, 1, mask)
    x, y = api.position(plate)
    api.place(group, x, y + 120)
    first, last = api.frame_range(plate)
    api.set(group, "first", first)
    api.set(group, "last", last)
    api.set(group, "operation", operation)
    api.set(group, "shot", shot)
    return group


# -- parameters ------------------------------------------------------------------------------
def read_params(group: api.Node) -> host.Params:
    label = str(api.get(group, "adapter"))
    return host.Params(
        operation=str(api.get(group, "operation")),
        adapter=adapter_names(group).get(label, ""),
        prompt=str(api.get(group, "prompt")), negative_prompt=str(api.get(group, "negative")),
        seed=int(api.get(group, "seed")), strength=float(api.get(group, "strength")),
        steps=int(api.get(group, "steps")), first=int(api.get(group, "first")), last=int(api.get(group, "last")),
        count=int(api.get(group, "count")), shot=str(api.get(group, "shot")).strip(),
        colorspace=str(api.get(group, "colorspace")).strip(),
        # Nodes saved before fill engines existed have neither knob: the server picks, no coherence.
        engine=_engine(group),
        coherence=float(api.get(group, "coherence")) if api.has_knob(group, "coherence") else 0.0,
        feather=int(api.get(group, "feather")) if api.has_knob(group, "feather") else FEATHER,
        key_frame=str(api.get(group, "key_frame")).strip() if api.has_knob(group, "key_frame") else "",
        key_adapter=_names(group, "bd_key_adapters").get(str(api.get(group, "key_adapter")), "")
        if api.has_knob(group, "key_adapter") else "",
    )


def _engine(group: api.Node) -> str:
    """The picked fill engine; '' (the server picks) before a Refresh, or on a node saved without the knob."""
    value = str(api.get(group, "engine")) if api.has_knob(group, "engine") else ""
    return value if value in FILL_ENGINES else ""


def set_engines(group: api.Node, caps: dict[str, Any], adapters: list[AdapterInfo]) -> str:
    """The fill engines the server offers (its hello). A node that never had them gets the default for its
    range (the video engine for more than one frame where the server has one and video adapters); later the
    artist's pick stays while the server offers it. Returns the engine now picked ('' without the knob)."""
    if not api.has_knob(group, "engine"):
        return ""
    offered, current = host.fill_engines(caps), _engine(group)
    api.set_choices(group, "engine", offered)
    picked = current if current in offered else \
        host.default_engine(caps, int(api.get(group, "first")), int(api.get(group, "last")), adapters)
    api.set(group, "engine", picked)
    return picked


def render_dir(group: api.Node) -> str:
    """The node's 'render folder' knob ('' = under the server's output root)."""
    return str(api.get(group, "render_dir")).strip()


def adapter_names(group: api.Node) -> dict[str, str]:
    return _names(group, "bd_adapters")


def _names(group: api.Node, knob: str) -> dict[str, str]:
    """A picker's label -> adapter name, as the hidden ``knob`` keeps it."""
    try:
        data = json.loads(str(api.get(group, knob)) or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def set_key_adapters(group: api.Node, choices: dict[str, str], default: str) -> None:
    """Fill the key adapter picker (image adapters, and 'none'); keeps the current pick when the server still has
    it, else picks ``default`` (host.key_adapter_for: the picked video adapter's character's)."""
    if not api.has_knob(group, "key_adapter"):
        return
    current = _names(group, "bd_key_adapters").get(str(api.get(group, "key_adapter")), "")
    api.set_choices(group, "key_adapter", [NO_KEY] + list(choices))
    api.set(group, "bd_key_adapters", json.dumps(choices))
    wanted = current if current in choices.values() else default
    api.set(group, "key_adapter", next((label for label, name in choices.items() if name == wanted), NO_KEY))


def set_adapters(group: api.Node, choices: dict[str, str]) -> None:
    """Fill the adapter picker; keeps the current pick when the server still has it."""
    current = adapter_names(group).get(str(api.get(group, "adapter")), "")
    labels = list(choices) or [NO_ADAPTERS]
    api.set_choices(group, "adapter", labels)
    api.set(group, "bd_adapters", json.dumps(choices))
    keep = next((label for label, name in choices.items() if name == current), labels[0])
    api.set(group, "adapter", keep)


def pick_adapter(group: api.Node, name: str) -> None:
    for label, adapter in adapter_names(group).items():
        if adapter == name:
            api.set(group, "adapter", label)
            return
    raise KeyError(f"adapter {name!r} is not in the node's list; press Refresh adapters")


def new_seed(group: api.Node) -> int:
    seed = random.randrange(0, 2**31 - 1)
    api.set(group, "seed", seed)
    return seed


def set_status(group: api.Node, text: str) -> None:
    if api.is_attached(group):
        api.set(group, "status", text)


# -- takes -----------------------------------------------------------------------------------
def takes(group: api.Node) -> list[host.TakeRecord]:
    try:
        data: Any = json.loads(str(api.get(group, "bd_takes")) or "[]")
    except ValueError:
        return []
    return [host.TakeRecord.from_dict(d) for d in data if isinstance(d, dict)]


def add_take(group: api.Group, record: host.TakeRecord) -> api.Node:
    """Wire a new take into the group and show it; earlier takes stay as they are."""
    history = takes(group)
    index = len(history) + 1                      # Switch input 0 is the plate
    has_mask = api.input_of(group, 1) is not None
    label = record.label
    stem = f"{host.safe_name(record.adapter)}_take{record.take:03d}"
    with api.inside(group):
        plate_in = api.child(group, "plate")
        mask_in = api.child(group, "mask")
        switch = api.child(group, "takes")
        assert plate_in is not None and mask_in is not None and switch is not None, "BodyDouble group was edited"
        read_knobs: dict[str, Any] = {"file": record.pattern, "first": record.first, "last": record.last,
                                      "origfirst": record.first, "origlast": record.last, "on_error": "black"}
        read = api.create("Read", name=stem, label=label, **read_knobs)
        if record.colorspace and not record.colorspace.startswith("default"):
            api.set(read, "colorspace", record.colorspace)
        api.place(read, 200 + 150 * index, 100)
        shown = read
        if record.operation == "fill":
            keymix = api.create("Keymix", name=f"{stem}_keymix", label=label)
            api.set_input(keymix, 0, plate_in)                          # B: the plate
            api.set_input(keymix, 1, read)                              # A: the take
            api.set_input(keymix, 2, mask_in if has_mask else plate_in)  # mask: the mask input, else plate alpha
            api.place(keymix, 200 + 150 * index, 200)
            shown = keymix
        elif record.operation == "extend":
            api.set(read, "before", "black")                            # the plate plays until the take starts
            merge = api.create("Merge2", name=f"{stem}_after_plate", label=label, operation="over")
            api.set_input(merge, 0, plate_in)                           # B: the plate
            api.set_input(merge, 1, read)                               # A: the new frames
            api.place(merge, 200 + 150 * index, 200)
            shown = merge
        api.set_input(switch, index, shown)
    record.node = api.node_name(shown).split(".")[-1]
    history.append(record)
    api.set(group, "bd_takes", json.dumps([t.to_dict() for t in history]))
    labels = [PLATE_CHOICE] + [t.label for t in history]
    api.set_choices(group, "take", labels)
    api.set(group, "take", label)
    api.set(group, "history", "\n".join(
        f"{t.label} · {t.operation} · {t.first}-{t.last} · {t.pattern}" for t in reversed(history)))
    return read


# -- the job in flight, kept in the script ------------------------------------------------------
def set_pending(group: api.Node, job: str, address: str, params: host.Params, colorspace_knob: str) -> None:
    """Remember the job this node waits for (saved with the script: re-attach reads it)."""
    if api.is_attached(group) and api.has_knob(group, "bd_job"):
        api.set(group, "bd_job", json.dumps({"job": job, "address": address, "params": params.to_dict(),
                                             "colorspace_knob": colorspace_knob}))


def pending(group: api.Node) -> Optional[dict[str, Any]]:
    """The job this node waits for, as :func:`set_pending` kept it; None when none (or unreadable)."""
    if not api.has_knob(group, "bd_job"):
        return None                           # a node from before re-attach existed
    try:
        data = json.loads(str(api.get(group, "bd_job")) or "null")
    except ValueError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("job"), str) else None


def clear_pending(group: api.Node) -> None:
    if api.is_attached(group) and api.has_knob(group, "bd_job"):
        api.set(group, "bd_job", "")


def has_take_of(group: api.Node, job: str) -> bool:
    return any(t.job == job for t in takes(group))


# -- the live preview -----------------------------------------------------------------------------
def show_preview(group: api.Node, path: str) -> api.Node:
    """Point the node's live-preview Read (``<node>_preview``, beside it in the Node Graph, where its thumbnail
    shows) at ``path``; made the first time."""
    name = api.node_name(group).split(".")[-1] + "_preview"
    parent = api.parent_of(group)
    read = api.child(parent, name)
    if read is None:
        with api.inside(parent):
            read = api.create("Read", name=name, label="BodyDouble live preview", file=path, first=1, last=1,
                              on_error="black")
        x, y = api.position(group)
        api.place(read, x + 150, y)
    else:
        api.set(read, "file", path)
    return read
