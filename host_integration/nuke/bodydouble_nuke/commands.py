"""Menu entries and node buttons: the Nuke-side orchestration of a BodyDouble job.

Generate, in the GUI::

    main thread:   knobs -> hello -> render plate (+ mask) with a temporary Write -> submit
    worker thread: (bodydouble.background, one per job) nuke.ProgressTask <- progress; its Cancel -> cancel
    main thread:   (nuke.executeInMainThread) Read + Keymix for the new take, or a message

In terminal mode (``nuke -t``, farm) :func:`generate` runs the same steps on the calling
thread, returns the take and raises :class:`NukeJobError` instead of showing messages. What is not Nuke
(parameters -> request, following the job, advice, take records) is ``bodydouble.host``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Optional

from bodydouble import errors, host
from bodydouble.background import BackgroundJob, Outcome

from . import flow
from . import node as bd_node
from . import nuke_api as api
from . import settings

CLIENT = "bodydouble-nuke"
WORDS = host.HostWords(
    host="Nuke", connect="point Nuke at it with BodyDouble ▸ Connect to server…",
    refresh="Press 'Refresh adapters' on the node and pick one again.", retry="press Generate again",
    paths_fix="Set the node's 'render folder' to a folder under one of the server's allowed roots.",
    colour_fix="Set the node's 'colour space' knob to a name the server knows (e.g. ACEScg).")


class NukeJobError(RuntimeError):
    """Raised in terminal mode; ``cause`` is the BodyDouble error behind it."""

    def __init__(self, text: str, cause: BaseException):
        super().__init__(text)
        self.cause = cause


@dataclass
class Running:
    group: api.Group
    job: BackgroundJob
    params: host.Params
    rendered: flow.Rendered


_running: dict[str, Running] = {}      # node full name -> its job in flight (main thread only)


def describe(exc: BaseException, address: str, params: Optional[host.Params] = None) -> str:
    return host.advice(exc, address, WORDS, params).text


def report(exc: BaseException, address: str, params: Optional[host.Params] = None, words: host.HostWords = WORDS) -> None:
    """Tell the user: a dialog in the GUI, an exception in terminal mode."""
    text = host.advice(exc, address, words, params).text
    if api.is_gui():
        api.message(text)
    else:
        raise NukeJobError(text, exc) from exc


def hello(address: str) -> dict[str, Any]:
    return host.hello(address, client_name=CLIENT)


def list_adapters(address: str, operation: str = "fill") -> dict[str, str]:
    return host.list_adapters(address, operation=operation, client_name=CLIENT)


# -- menu entries ----------------------------------------------------------------------------
def fill_command() -> Optional[api.Group]:
    return create_from_selection("fill")


def extend_command() -> Optional[api.Group]:
    return create_from_selection("extend")


def connect_command() -> Optional[dict[str, Any]]:
    current = settings.address()
    answer = api.ask_string("BodyDouble server address (tcp://host:port)", current)
    if answer is None or not answer.strip():
        return None
    address = answer.strip()
    try:
        caps = hello(address)
    except errors.BodyDoubleError as exc:
        report(exc, address)
        return None
    settings.set_address(address)
    adapters = _refresh_all(address)
    model = (caps.get("model") or {}).get("name", "?") if isinstance(caps.get("model"), dict) else caps.get("model")
    note = host.colour_note(caps, flow.host_colour(api.root_colour()))
    api.message(f"BodyDouble: connected to {address}\nserver {caps.get('version')} · protocol {caps.get('protocol')} · "
                f"state {caps.get('state')} · model {model}\n{len(adapters)} adapter(s) ready." + (f"\n\n{note}" if note else ""))
    return caps


def create_from_selection(operation: str) -> Optional[api.Group]:
    """Right-click ▸ BodyDouble: a node on the selected plate (and mask, when two are selected).

    With two nodes selected, the one selected last (the one Nuke shows in its properties) is
    the plate and the other is the mask. A selected BodyDouble node is opened instead."""
    address = settings.address()
    selected = api.selected_nodes()
    current = api.current_node()
    if current is not None and bd_node.is_bodydouble(current):
        api.set(current, "operation", operation)
        api.show_panel(current)
        return current
    if not selected:
        api.message("BodyDouble: select the plate (and optionally a mask) in the Node Graph first.")
        return None
    if len(selected) > 2:
        api.message("BodyDouble: select one plate, or a plate and a mask (two nodes).")
        return None
    plate = current if current is not None and current in selected else selected[0]
    others = [n for n in selected if n is not plate and api.node_name(n) != api.node_name(plate)]
    mask = others[0] if others else None
    group = bd_node.create(plate, mask, operation, shot=_shot_for(plate))
    api.select_only(group)
    try:
        bd_node.set_adapters(group, list_adapters(address, operation=operation))
    except errors.BodyDoubleError as exc:
        bd_node.set_status(group, "server not reachable: press Refresh adapters once it runs")
        report(exc, address)
    if api.is_gui():
        api.show_panel(group)
    return group


def _shot_for(plate: api.Node) -> str:
    """The shot name: from the plate's file if it is a Read, else the script's name."""
    if api.node_class(plate) == "Read" and api.has_knob(plate, "file"):
        shot = host.shot_from_path(str(api.get(plate, "file")))
        if shot:
            return shot
    script = api.script_name()
    return host.safe_name(os.path.splitext(os.path.basename(script))[0]) if script else ""


def _refresh_all(address: str) -> dict[str, str]:
    choices = list_adapters(address)
    for candidate in api.selected_nodes():
        if bd_node.is_bodydouble(candidate):
            bd_node.set_adapters(candidate, choices)
    return choices


# -- node buttons (run with nuke.thisNode() = the BodyDouble group) ---------------------------
def generate_button() -> None:
    node = api.this_node()
    if not bd_node.is_bodydouble(node):
        raise TypeError(f"{api.node_name(node)} is not a BodyDouble node")
    generate(node)


def cancel_button() -> None:
    cancel(api.this_node())


def new_seed_button() -> None:
    bd_node.new_seed(api.this_node())


def refresh_button() -> None:
    group = api.this_node()
    address = settings.address()
    try:
        bd_node.set_adapters(group, list_adapters(address, operation=str(api.get(group, "operation"))))
        bd_node.set_status(group, f"adapters from {address}")
    except errors.BodyDoubleError as exc:
        report(exc, address)


# -- generate --------------------------------------------------------------------------------
def generate(group: api.Group, address: Optional[str] = None) -> Optional[host.TakeRecord]:
    """Start a job for ``group``. GUI: returns None at once (the take arrives later);
    terminal mode: blocks and returns the take."""
    address = address or settings.address()
    key = api.node_name(group)
    if key in _running:
        report(errors.BodyDoubleError("this node is already generating; press Cancel first.", code="busy"), address)
        return None
    params = bd_node.read_params(group)
    try:
        caps = hello(address)
        host.check_ready(caps, params)
        rendered = render_inputs(group, params, caps)
        params = replace(params, plate=rendered.plate, mask=rendered.mask or "",
                         colorspace=params.colorspace or rendered.colorspace)
        request = params.request()
    except errors.BodyDoubleError as exc:
        report(exc, address, params)
        return None
    except (OSError, RuntimeError, ValueError) as exc:  # Nuke's render errors are RuntimeError
        report(errors.BodyDoubleError(f"rendering the inputs failed: {exc}", code="render_failed"), address, params)
        return None
    title = f"BodyDouble {host.OPERATION_TITLES.get(params.operation, params.operation)} · {params.adapter}"
    job = BackgroundJob(address, request, client_name=CLIENT, sink=lambda: api.Progress(title))
    running = Running(group, job, params, rendered)
    if not api.is_gui():
        return _complete(running, job.run())
    _running[key] = running
    bd_node.set_status(group, f"running on {address}…")
    job.start(on_finish=lambda outcome: api.run_in_main_thread(_finish_in_main_thread, running, outcome))
    return None


def render_inputs(group: api.Group, params: host.Params, caps: dict[str, Any]) -> flow.Rendered:
    """Plate (and mask) as half-float EXRs in a fresh folder the server can read."""
    plate = api.input_of(group, 0)
    if plate is None:
        raise errors.BodyDoubleError("Connect a plate to the BodyDouble node's input 0.", code="no_plate")
    mask = api.input_of(group, 1) if params.operation == "fill" else None
    folder = flow.render_folder(caps, params, api.node_name(group), bd_node.render_dir(group)).replace("\\", "/")
    os.makedirs(folder, exist_ok=True)                                          # Nuke wants '/'
    plate_pattern = f"{folder}/plate.####.exr"
    knob = api.render(plate, plate_pattern, params.first, params.last, "rgba")
    mask_pattern = None
    if mask is not None:
        mask_pattern = f"{folder}/mask.####.exr"
        api.render(mask, mask_pattern, params.first, params.last, "alpha")
    return flow.Rendered(plate=plate_pattern, mask=mask_pattern,
                         colorspace=flow.resolve_colorspace(knob, api.root_colour()), colorspace_knob=knob)


def cancel(group: api.Node) -> bool:
    running = _running.get(api.node_name(group))
    if running is None:
        return False
    running.job.cancel()
    bd_node.set_status(group, "cancelling…")
    return True


def _finish_in_main_thread(running: Running, outcome: Outcome) -> None:
    for key in [k for k, v in _running.items() if v is running]:
        del _running[key]
    try:
        _complete(running, outcome)
    except NukeJobError:
        pass  # GUI: already shown


def _complete(running: Running, outcome: Outcome) -> Optional[host.TakeRecord]:
    address = running.job.address
    group = running.group
    if outcome.error is not None or outcome.result is None:
        bd_node.set_status(group, "cancelled" if isinstance(outcome.error, errors.JobCancelled) else "failed")
        report(outcome.error or errors.BodyDoubleError("no result"), address, running.params)
        return None
    record = host.TakeRecord.of(outcome.result, running.params, running.rendered.colorspace_knob)
    if not api.is_attached(group):
        report(errors.BodyDoubleError(f"the BodyDouble node was deleted while it ran; take {record.take} is at "
                                      f"{record.pattern}"), address, running.params)
        return record
    bd_node.add_take(group, record)
    bd_node.set_status(group, f"{record.label} ready")
    return record
