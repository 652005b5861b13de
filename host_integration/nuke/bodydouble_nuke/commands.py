"""Menu entries and node buttons: the Nuke-side orchestration of a BodyDouble job.

Generate, in the GUI::

    main thread:   knobs -> hello -> render plate (+ mask) with a temporary Write -> submit
    worker thread: (bodydouble.background, one per job) nuke.ProgressTask <- progress; its Cancel -> cancel;
                   each live preview written as a PNG beside the rendered plate
    main thread:   (nuke.executeInMainThread) the job id into the node's 'bd_job' knob (saved with the script);
                   the node's '<node>_preview' Read pointed at each new preview; at the end the
                   Read + Keymix for the new take, or a message

Re-attach (the node's button, and every script Nuke opens): a node whose 'bd_job' names a job follows it by id
(``follow``): a finished job's take is loaded, a running one is followed as if it had just been sent. The jobs
panel (BodyDouble ▸ Jobs…) lists every job of the session and cancels one.

In terminal mode (``nuke -t``, farm) :func:`generate` runs the same steps on the calling
thread, returns the take and raises :class:`NukeJobError` instead of showing messages. What is not Nuke
(parameters -> request, following the job, advice, take records) is ``bodydouble.host``.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from bodydouble import errors, host
from bodydouble.background import BackgroundJob, Outcome

from . import flow, live
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
    colorspace_knob: str          # what the render's Write node said (the take's Read uses it)
    previews: str = ""            # folder of this job's live preview pictures
    shown: int = 0                # previews written so far (worker thread)


@dataclass
class Ended:
    """A job of this session that ended: what the jobs panel lists."""

    node: str
    job: str
    state: str                    # finished | failed | cancelled
    text: str                     # the take's label, or why it did not make one
    when: float = field(default_factory=time.time)


_running: dict[str, Running] = {}      # node full name -> its job in flight (main thread only)
_ended: list[Ended] = []               # newest last, the last HISTORY (main thread only)
HISTORY = 50


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


def refresh_adapters(group: api.Node, address: str, operation: str = "fill") -> None:
    """The node's pickers from the server (fill engines, then the adapters for the engine picked), and on its
    status line the adapters it leaves out and why (an enumeration knob cannot grey an entry out)."""
    caps: dict[str, Any] = {}
    adapters = host.fetch_adapters(address, client_name=CLIENT, server_info=caps)
    engine = bd_node.set_engines(group, caps, adapters) if operation == "fill" else ""
    bd_node.set_adapters(group, host.adapter_choices(adapters, operation, engine))
    if engine == "video":
        bd_node.set_key_adapters(group, host.adapter_choices(adapters, "fill", "image"),
                                 host.key_adapter_for(adapters, bd_node.read_params(group).adapter))
    withheld = host.withheld_adapters(adapters, operation, engine)
    bd_node.set_status(group, f"adapters from {address}" + ("; not offered: " + "; ".join(
        f"{name} ({why})" for name, why in sorted(withheld.items())) if withheld else ""))


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
        refresh_adapters(group, address, operation)
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
        if bd_node.is_bodydouble(candidate):       # each node's own operation and fill engine
            refresh_adapters(candidate, address, str(api.get(candidate, "operation")))
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


def key_from_take_button() -> None:
    group = api.this_node()
    shown = str(api.get(group, "take"))
    record = next((t for t in bd_node.takes(group) if t.label == shown), None)
    try:
        if record is None:
            raise ValueError("show a fill take first (show take): its first frame becomes the key frame")
        api.set(group, "key_frame", record.key_frame(int(api.get(group, "first"))))
    except ValueError as exc:
        api.message(f"BodyDouble: {exc}")


def refresh_button() -> None:
    group = api.this_node()
    address = settings.address()
    try:
        refresh_adapters(group, address, str(api.get(group, "operation")))
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
    if not api.is_gui():
        job = BackgroundJob(address, request, client_name=CLIENT)
        return _complete(Running(group, job, params, rendered.colorspace_knob), job.run())
    _follow(group, address, params, rendered.colorspace_knob, request=request)
    return None


def _follow(group: api.Group, address: str, params: host.Params, colorspace_knob: str, request: Any = None,
            job_id: Optional[str] = None) -> Running:
    """Main thread: follow a job on a worker thread, submitting ``request`` or re-attaching to ``job_id``."""
    title = f"BodyDouble {host.OPERATION_TITLES.get(params.operation, params.operation)} · {params.adapter}"
    previews = os.path.join(os.path.dirname(params.plate), "preview") if params.plate else ""
    job = BackgroundJob(address, request, client_name=CLIENT, sink=lambda: api.Progress(title), follow=job_id,
                        on_accepted=lambda jid: api.run_in_main_thread(_accepted_in_main_thread, running, jid),
                        on_preview=lambda progress: _write_preview(running, progress))
    running = Running(group, job, params, colorspace_knob, previews=previews)
    _running[api.node_name(group)] = running
    bd_node.set_status(group, f"{'re-attached to ' + job_id if job_id else 'sent'} on {address}…")
    job.start(on_finish=lambda outcome: api.run_in_main_thread(_finish_in_main_thread, running, outcome))
    return running


def _accepted_in_main_thread(running: Running, job_id: str) -> None:
    if running.job.outcome is None:          # not already ended (its finish step is queued behind this one)
        bd_node.set_pending(running.group, job_id, running.job.address, running.params, running.colorspace_knob)
        where = f"queued, {running.job.queue_position} ahead" if running.job.queue_position else "running"
        bd_node.set_status(running.group, f"{where} · job {job_id}")


def _write_preview(running: Running, progress: Any) -> None:
    """Worker thread: the picture to a file (no Nuke call here), then the Read to it on the main thread."""
    if not running.previews or progress.preview is None:
        return
    running.shown += 1
    try:
        path = live.write_preview(running.previews, progress.preview, running.shown)
    except OSError:
        return                              # a preview is never worth failing the job for
    api.run_in_main_thread(_show_preview_in_main_thread, running, path, progress.message)


def _show_preview_in_main_thread(running: Running, path: str, message: str) -> None:
    if running.job.outcome is None and api.is_attached(running.group):
        bd_node.show_preview(running.group, path)
        bd_node.set_status(running.group, message)


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


def reattach_button() -> None:
    reattach(api.this_node())


def reattach(group: api.Node) -> Optional[Running]:
    """Follow the job the node's 'bd_job' knob names (kept from a session that ended, or a lost connection):
    a finished job's take is loaded, a running one followed, one the server forgot reported. Main thread."""
    info = bd_node.pending(group)
    key = api.node_name(group)
    if info is None or key in _running or not bd_node.is_bodydouble(group):
        return None
    params = host.Params.from_dict(info.get("params") or {})
    if bd_node.has_take_of(group, info["job"]):        # loaded already (the script was saved after that)
        bd_node.clear_pending(group)
        return None
    return _follow(group, str(info.get("address") or settings.address()), params,
                   str(info.get("colorspace_knob") or ""), job_id=info["job"])


def reattach_all() -> None:
    """Every BodyDouble node of the script that waits for a job: re-attach (run after a script opens)."""
    for candidate in api.top_level_nodes():
        if bd_node.is_bodydouble(candidate) and bd_node.pending(candidate) is not None:
            reattach(candidate)


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
    name = api.node_name(group) if api.is_attached(group) else "(deleted node)"
    job_id = outcome.job_id or running.job.follow or ""
    if isinstance(outcome.error, errors.ServerUnavailable) and job_id and api.is_attached(group):
        # The job may well finish on the server meanwhile: keep it in the script, to re-attach to later.
        bd_node.set_status(group, f"server not answering: press Re-attach once it runs again (job {job_id})")
        remember(Ended(name, job_id, "not followed", "the server stopped answering"))
        report(outcome.error, address, running.params)
        return None
    if getattr(outcome.error, "code", "") == errors.UNKNOWN_JOB and running.job.follow:
        found = take_left_on_disk(address, running.params, running.job.follow)
        if found is not None:        # the server restarted after finishing it: the take is on disk, complete
            outcome = Outcome(result=found, job_id=running.job.follow)
    bd_node.clear_pending(group)
    if outcome.error is not None or outcome.result is None:
        cancelled = isinstance(outcome.error, errors.JobCancelled)
        state = "cancelled" if cancelled else "failed"
        remember(Ended(name, job_id, state, str(outcome.error or "no result").splitlines()[0][:200]))
        bd_node.set_status(group, state)
        report(outcome.error or errors.BodyDoubleError("no result"), address, running.params)
        return None
    record = host.TakeRecord.of(outcome.result, running.params, running.colorspace_knob)
    remember(Ended(name, job_id, "finished", record.label))
    if not api.is_attached(group):
        report(errors.BodyDoubleError(f"the BodyDouble node was deleted while it ran; take {record.take} is at "
                                      f"{record.pattern}"), address, running.params)
        return record
    if not bd_node.has_take_of(group, record.job):
        bd_node.add_take(group, record)
    bd_node.set_status(group, f"{record.label} ready")
    return record


def take_left_on_disk(address: str, params: host.Params, job_id: str) -> Optional[host.JobResult]:
    """The complete take of a job the server forgot, where the server writes the node's takes (output_dir, else
    <output root>/<shot>); None when it is not there or this machine cannot see it."""
    shot_dir = params.output_dir
    if not shot_dir and params.shot:
        try:
            root = hello(address).get("output_root") or ""
        except errors.BodyDoubleError:
            return None
        shot_dir = os.path.join(str(root), host.safe_name(params.shot)) if root else ""
    return host.take_left_on_disk(shot_dir, job_id) if shot_dir else None


def remember(ended: Ended) -> None:
    _ended.append(ended)
    del _ended[:-HISTORY]


# -- the jobs panel ----------------------------------------------------------------------------
JOBS_CLOSE, JOBS_CANCEL, JOBS_REATTACH = "Close", "Cancel job", "Re-attach all"
PICK = "job"


def jobs_lines() -> list[str]:
    """What the jobs panel shows: jobs running or queued, jobs of saved scripts not followed, jobs that ended in
    this session, and each BodyDouble node's takes."""
    lines = ["Running / queued:"]
    for key, job in _live_jobs().items():
        where = (f"queued, {job.queue_position} ahead" if job.state == "queued" and job.queue_position
                 else job.state)
        lines.append(f"  {key} · {job.job_id or 'sending'} · {where} · {int(100 * job.fraction)}% · {job.message}")
    nodes = [n for n in api.top_level_nodes() if bd_node.is_bodydouble(n)]
    waiting = [(api.node_name(n), bd_node.pending(n)) for n in nodes if api.node_name(n) not in _running]
    lines += [f"  {key} · {info['job']} · not followed: press Re-attach all" for key, info in waiting if info]
    lines.append("Ended in this session:")
    lines += [f"  {e.node} · {e.job} · {e.state} · {e.text}" for e in reversed(_ended)] or ["  (none)"]
    lines.append("Takes:")
    for n in nodes:
        history = bd_node.takes(n)
        lines.append(f"  {api.node_name(n)}: " + (", ".join(t.label for t in history) if history else "(none yet)"))
    return lines


TIMELINE = "timeline/"   # the jobs panel's prefix for Nuke Studio timeline jobs (keyed by shot)


def _live_jobs() -> dict[str, BackgroundJob]:
    """Every job this session follows: BodyDouble nodes' by node name, Nuke Studio timeline shots' by
    ``timeline/<shot>`` (only when the timeline is loaded: plain Nuke never imports hiero)."""
    jobs = {key: run.job for key, run in _running.items()}
    timeline = sys.modules.get(f"{__package__}.timeline")
    if timeline is not None:
        jobs.update({f"{TIMELINE}{shot}": run.job for shot, run in getattr(timeline, "_running").items()})
    return jobs


def jobs_command() -> Optional[str]:
    """BodyDouble ▸ Jobs…: the session's jobs; cancel one, or re-attach every node that waits for one."""
    picks = [f"{key}:{job.job_id}" if job.job_id else key for key, job in _live_jobs().items()]
    pressed, picked = api.ask_buttons("BodyDouble jobs", "\n".join(jobs_lines()), (PICK, picks),
                                      [JOBS_CLOSE, JOBS_CANCEL, JOBS_REATTACH])
    if pressed == JOBS_CANCEL and picked:
        key = picked.rsplit(":", 1)[0] if ":" in picked else picked
        running = _running.get(key)
        if running is not None:
            cancel(running.group)
        elif key in _live_jobs():                # a timeline job: its progress bar shows the cancel
            _live_jobs()[key].cancel()
    elif pressed == JOBS_REATTACH:
        reattach_all()
        timeline = sys.modules.get(f"{__package__}.timeline")
        if timeline is not None:             # Nuke Studio: the timeline's shots too
            getattr(timeline, "reattach_all")()
    return pressed
