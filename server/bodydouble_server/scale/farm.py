"""Render-farm jobs: ``bodydouble farm submit fill|extend|train`` writes an Open Job Description job bundle (the
format of AWS Deadline Cloud, runnable by any OpenJD runtime) and an OpenCue job outline of the same job.

A bundle folder (on shared storage; its path is the job's ``Bundle`` parameter)::

    template.json           the OpenJD job template (validated with openjd-model when written)
    parameter_values.json   the job's parameter values
    request.json            the operation and its request (plates by path), and the server config to use
    opencue_outline.xml     the same job as an OpenCue job spec (pyoutline); submitted only with --cuebot
    take.ref.json           written by the job's Prepare step: the take its tasks render into

Fill: ``Prepare`` opens the take (one new take folder, as a server would) -> ``Render`` chunks the frames
(``CHUNK[INT]`` task parameter, TASK_CHUNKING); a step environment starts one worker process per session, which
loads the model once and renders every chunk the session gets (``farm task render`` talks to it over a local
ZeroMQ socket) -> ``Assemble`` checks every frame is there, once, and marks the take complete. Extend and train
are one task each (an extension's chunks condition on each other; training is one loop): the server's own
operation runs in the task's process, with the model loaded once.

``bodydouble farm run BUNDLE`` runs a bundle here with openjd-sessions, the reference runtime (what the tests
do). Nothing here submits to a farm unless asked: ``--cuebot HOST`` submits the outline to an OpenCue Cuebot.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from bodydouble import atomic, errors

log = logging.getLogger("bodydouble.farm")

TEMPLATE, PARAMETERS, REQUEST, OUTLINE, TAKE_REF = ("template.json", "parameter_values.json", "request.json",
                                                    "opencue_outline.xml", "take.ref.json")
RENDER_LOG = "render.jsonl"          # one line per frame a Render task finished: frame, worker pid, session
WORKER_FILE = "bodydouble-worker.json"   # in the session's working folder: the worker's address and pid
EXTENSIONS = ["TASK_CHUNKING"]
WORKER_START_TIMEOUT = 1800.0        # seconds a session waits for its worker to load the model
WORKER_IDLE_EXIT = 1800.0            # a worker whose session never said stop exits after this long idle
PROGRESS_EVERY = 0.5                 # seconds between looks for published frames while a chunk renders


# -- the bundle -------------------------------------------------------------------------------------------
def _action(*args: str) -> dict:
    return {"command": "{{Param.BodyDouble}}", "args": ["farm", "task", *args]}


def template_for(operation: str, name: str) -> dict:
    """The OpenJD job template of a fill (three steps, frames chunked) or an extend/train (one task)."""
    bundle = "{{Param.Bundle}}"
    params = [
        {"name": "BodyDouble", "type": "STRING", "default": "bodydouble",
         "description": "the bodydouble command on the farm's nodes (server install with the scale extra)"},
        {"name": "Bundle", "type": "PATH", "objectType": "DIRECTORY", "dataFlow": "INOUT",
         "description": "this bundle's folder, on storage every node sees"},
    ]
    if operation != "fill":
        steps = [{"name": operation.title(),
                  "script": {"actions": {"onRun": _action("operation", "--bundle", bundle)}}}]
    else:
        params += [{"name": "Frames", "type": "STRING", "description": "the frames to fill, e.g. 1001-1048"},
                   {"name": "ChunkSize", "type": "INT", "default": 8, "minValue": 1,
                    "description": "frames per task"}]
        session = "{{Session.WorkingDirectory}}"
        steps = [
            {"name": "Prepare", "script": {"actions": {"onRun": _action("prepare", "--bundle", bundle)}}},
            {"name": "Render", "dependencies": [{"dependsOn": "Prepare"}],
             "parameterSpace": {"taskParameterDefinitions": [{
                 "name": "Frame", "type": "CHUNK[INT]", "range": "{{Param.Frames}}",
                 "chunks": {"defaultTaskCount": "{{Param.ChunkSize}}", "rangeConstraint": "CONTIGUOUS"}}]},
             "stepEnvironments": [{"name": "BodyDoubleWorker", "description": "the model, loaded once per session",
                                   "script": {"actions": {
                                       "onEnter": _action("worker-start", "--bundle", bundle, "--session", session),
                                       "onExit": _action("worker-stop", "--session", session)}}}],
             "script": {"actions": {"onRun": _action("render", "--bundle", bundle, "--session", session,
                                                     "--frames", "{{Task.Param.Frame}}")}}},
            {"name": "Assemble", "dependencies": [{"dependsOn": "Render"}],
             "script": {"actions": {"onRun": _action("assemble", "--bundle", bundle)}}},
        ]
    return {"specificationVersion": "jobtemplate-2023-09", "extensions": EXTENSIONS, "name": name,
            "parameterDefinitions": params, "steps": steps}


def decode(template: dict):
    from openjd.model import decode_job_template

    return decode_job_template(template=template, supported_extensions=EXTENSIONS)


def job_parameters(bundle: Path, template, values: dict[str, str]):
    from openjd.model import preprocess_job_parameters

    return preprocess_job_parameters(job_template=template, job_parameter_values=values, job_template_dir=bundle,
                                     current_working_dir=bundle)


def write_bundle(folder: Path, operation: str, request, config: str | None, name: str, chunk: int = 8,
                 command: str = "bodydouble") -> Path:
    """Validate ``request`` against the config's roots and write the bundle (OpenJD + OpenCue) into ``folder``."""
    from openjd.model import create_job

    from bodydouble import codec

    buffers: list = []
    body = codec.to_wire(request, buffers, [])
    if buffers:
        raise errors.RequestError("a farm job reads its plates from files: give paths, not pixels",
                                  code=errors.INVALID_REQUEST)
    settings = _config(str(Path(config).resolve()) if config else None)
    _check_paths(settings, operation, request)
    folder = Path(folder).resolve()
    if folder.is_dir() and any(folder.iterdir()):
        raise errors.RequestError(f"bundle folder {folder} is not empty: a bundle is written once",
                                  code=errors.INVALID_REQUEST)
    from ..policy import Policy

    # Consent as a server checks it at submit (refused: not_permitted, audited, nothing written) ...
    admission = Policy(settings).admit_offline(operation, request, _job_id(folder))
    folder.mkdir(parents=True, exist_ok=True)
    template = template_for(operation, name)
    values = {"BodyDouble": command, "Bundle": str(folder)}
    if operation == "fill":
        frames = [f.frame for f in request.frames]
        values.update(Frames=_range_text(frames), ChunkSize=str(chunk))
    create_job(job_template=decode(template), job_parameter_values=job_parameters(folder, decode(template), values))
    atomic.write_json(folder / REQUEST, {"operation": operation, "request": body, "user": admission.requester.name,
                                         "config": str(Path(config).resolve()) if config else None})
    atomic.write_json(folder / TEMPLATE, template)
    atomic.write_json(folder / PARAMETERS, {"parameterValues": [{"name": k, "value": v} for k, v in values.items()]})
    atomic.write_text(folder / OUTLINE, opencue_spec(outline_for(folder, operation, name, values)))
    return folder


def _range_text(frames: list[int]) -> str:
    """OpenJD's range expression of sorted frame numbers, e.g. "1001-1010,1020"."""
    frames, parts, start = sorted(frames), [], None
    for index, frame in enumerate(frames):
        start = frame if start is None else start
        if index + 1 == len(frames) or frames[index + 1] != frame + 1:
            parts.append(str(start) if start == frame else f"{start}-{frame}")
            start = None
    return ",".join(parts)


def _config(path: str | None):
    from ..config import ServerConfig

    return ServerConfig.load(path)


def _check_paths(settings, operation: str, request) -> None:
    """Plates and reference frames under the config's roots, readable now (as a server checks at submit)."""
    from ..paths import AllowedRoots

    roots = AllowedRoots(settings.roots)
    if operation == "train":
        for path in request.frames:
            roots.check(path, "reference frames")
        return
    for item in request.frames:
        roots.readable_file(item.plate.path, f"plate {item.frame}")
        if item.mask is not None:
            roots.readable_file(item.mask.path, f"mask {item.frame}")


def _job_id(bundle: Path) -> str:
    return f"farm-{Path(bundle).name}"


def _admission(bundle: Path, operation: str, req, config, check: bool = True):
    """... and again when the job starts on the farm (a record can expire or be withdrawn while it queues):
    the submitter's consent, its refusal audited. ``check=False``: only to write the outcome line."""
    from ..policy.consent import Requester
    from ..policy.rules import Admission, Policy

    requester = Requester(name=json.loads((bundle / REQUEST).read_text()).get("user") or "unknown", verified=False)
    policy = Policy(config)
    if not check:
        return Admission(policy, operation, None, _job_id(bundle), requester, [], _job_id(bundle))
    try:
        return policy.admit_as(operation, req, _job_id(bundle), requester, job_id=_job_id(bundle))
    finally:
        policy.audit.sync()


def load_bundle(folder: Path):
    """(operation, request, server config) of a bundle."""
    from bodydouble import codec
    from bodydouble.jobspec import OPERATIONS

    data = json.loads((Path(folder) / REQUEST).read_text())
    request = codec.from_wire(OPERATIONS[data["operation"]], data["request"], [])
    return data["operation"], request, _config(data["config"])


# -- OpenCue ----------------------------------------------------------------------------------------------------
def outline_for(folder: Path, operation: str, name: str, values: dict):
    """The same job as an OpenCue outline: a shell layer per step, the render layer chunked, layers chained."""
    from outline import Outline
    from outline.modules.shell import Shell

    command = values["BodyDouble"].split()
    ol = Outline(name.replace(" ", "_"), shot=os.environ.get("SHOT", "bodydouble"),
                 show=os.environ.get("SHOW", "bodydouble"), user=os.environ.get("USER", "bodydouble"))
    bundle = str(folder)
    if operation != "fill":
        ol.add_layer(Shell(operation, command=[*command, "farm", "task", "operation", "--bundle", bundle]))
        return ol
    # In OpenCue the frame range is the layer's and RQD puts a chunk's first and last frame into the command
    # (#FRAME_START#, #FRAME_END#). OpenCue frames share no session, so each task loads the model for its chunk.
    prepare = Shell("prepare", command=[*command, "farm", "task", "prepare", "--bundle", bundle])
    render = Shell("render", command=[*command, "farm", "task", "render", "--bundle", bundle, "--frames",
                                       "#FRAME_START#-#FRAME_END#"],
                   range=values["Frames"], chunk=int(values["ChunkSize"]))
    assemble = Shell("assemble", command=[*command, "farm", "task", "assemble", "--bundle", bundle])
    for layer in (prepare, render, assemble):
        ol.add_layer(layer)
    render.depend_all(prepare)
    assemble.depend_all(render)
    return ol


def opencue_spec(ol) -> str:
    from outline.cuerun import OutlineLauncher

    return OutlineLauncher(ol).serialize(use_pycuerun=False)


def submit_to_cuebot(folder: Path, cuebot: str) -> str:
    """Launch the bundle's outline on an OpenCue farm (never run in this project's tests: no Cuebot here)."""
    os.environ["CUEBOT_HOSTS"] = cuebot
    from outline import cuerun

    operation, _, _ = load_bundle(folder)
    values = {v["name"]: v["value"] for v in json.loads((folder / PARAMETERS).read_text())["parameterValues"]}
    jobs = cuerun.launch(outline_for(folder, operation, json.loads((folder / TEMPLATE).read_text())["name"], values),
                         use_pycuerun=False)
    return ", ".join(str(job.name()) for job in jobs)


# -- what the job's steps run ------------------------------------------------------------------------------------
class ConsoleJob:
    """A job outside a server (a farm task, a training process): what the operations call on a job, with
    progress as OpenJD's ``openjd_progress``/``openjd_status`` lines on stdout, cancel on SIGTERM/SIGINT."""

    def __init__(self, job_id: str, on_report=None):
        import threading

        self.id = self.request_id = job_id
        self.cancel_event = threading.Event()
        self.take_dir: str | None = None
        self.on_report = on_report

    def check_cancelled(self) -> None:
        from ..jobs import Cancelled

        if self.cancel_event.is_set():
            raise Cancelled()

    def report(self, fraction: float, message: str = "", **extra) -> None:
        if self.on_report is not None:
            self.on_report({"fraction": fraction, "message": message, **extra})
        else:
            print(f"openjd_progress: {100 * min(max(fraction, 0.0), 1.0):.1f}\nopenjd_status: {message}", flush=True)

    def opened_take(self, take) -> None:
        self.take_dir = str(take.dir)


def task_prepare(bundle: Path) -> None:
    """Open the take (a new numbered folder under the shot, as a server does) and record it for the tasks."""
    from .. import takes
    from ..operations import common, fill
    from ..paths import AllowedRoots
    from .worker import TakeRef

    if (bundle / TAKE_REF).exists():      # a retried Prepare keeps the take it opened
        return
    operation, req, config = load_bundle(bundle)
    _admission(bundle, operation, req, config)
    shot = common.shot_name(req.shot, req.output_dir, req.frames[0].plate)
    shot_dir = Path(req.output_dir) if req.output_dir else Path(config.output_root) / shot
    label = takes.safe_label("+".join(a.name for a in req.adapters) or "base")
    job_id = _job_id(bundle)
    take = takes.allocate(shot_dir, shot, label, {
        "job": job_id, "operation": operation, "farm": {"bundle": str(bundle)},
        "request": {k: getattr(req, k) for k in fill.TAKE_SETTINGS}},
        roots=AllowedRoots(config.roots))
    atomic.write_json(bundle / TAKE_REF, TakeRef.of(take, job_id).__dict__)


def _take_ref(bundle: Path):
    from .worker import TakeRef

    return TakeRef(**json.loads((bundle / TAKE_REF).read_text()))


def task_assemble(bundle: Path) -> None:
    """Every frame there once -> the take says complete (signed, like a server's); a missing frame fails it."""
    from ..policy import Policy
    from .worker import check_frames

    operation, req, config = load_bundle(bundle)
    outcome = _admission(bundle, operation, req, config, check=False)
    take = _take_ref(bundle).take()
    take.info = json.loads((take.dir / "take.json").read_text())
    for key in ("status", "take", "pattern", "frames", "updated", "tool_version"):
        take.info.pop(key, None)
    take.seal = Policy(config).seal_take
    frames = [f.frame for f in req.frames]
    try:
        check_frames(take, frames)
    except errors.BodyDoubleError as exc:
        take.finish("failed", error=str(exc))
        outcome.ended("failed", str(take.dir), error=str(exc))
        raise
    rendered = [json.loads(line) for line in (bundle / RENDER_LOG).read_text().splitlines() if line.strip()]
    take.info["farm"]["workers"] = sorted({f"{r['host']}:{r['pid']}" for r in rendered})
    take.info["farm"]["frames_written"] = sum(r["written"] for r in rendered)
    take.finish("complete")
    outcome.ended("complete", str(take.dir))


def task_operation(bundle: Path) -> None:
    """An extend or a train job: the server's own operation, in this process (the model loaded once)."""
    from ..engine import Engine
    from ..jobs import Cancelled
    from ..operations import extend, train

    operation, req, config = load_bundle(bundle)
    admission = _admission(bundle, operation, req, config)
    engine = Engine(config)
    engine.load()
    job = ConsoleJob(_job_id(bundle))
    _stop_on_signals(job)
    try:
        result = {"extend": extend.run_extend, "train": train.run_train}[operation](engine, job, req)
    except BaseException as exc:
        admission.ended("cancelled" if isinstance(exc, Cancelled) else "failed", job.take_dir,
                        error=str(exc) or type(exc).__name__)
        raise
    atomic.write_json(bundle / "result.json", result.body)
    admission.ended("complete", result.body.get("take_dir") or job.take_dir, adapter_dir=result.body.get("adapter_dir"))


def _stop_on_signals(job: ConsoleJob) -> None:
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: job.cancel_event.set())


# -- the session's worker: the model loaded once, chunks rendered on request --------------------------------------
def task_worker_start(bundle: Path, session: Path) -> None:
    """Start this session's worker process and wait until it has loaded the model."""
    info = session / WORKER_FILE
    logfile = open(session / "bodydouble-worker.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "bodydouble_server.scale.farm", "session-worker", str(bundle),
                             str(session)], stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + WORKER_START_TIMEOUT
    while not info.exists():
        if proc.poll() is not None:
            raise errors.RequestError(f"the session's worker exited ({proc.returncode}) before it was ready; see "
                                      f"{session / 'bodydouble-worker.log'}", code=errors.MODEL_UNAVAILABLE)
        if time.monotonic() > deadline:
            proc.kill()
            raise errors.RequestError("the session's worker did not load its model in time",
                                      code=errors.MODEL_UNAVAILABLE)
        time.sleep(0.1)
    print(f"openjd_status: worker {json.loads(info.read_text())['pid']} ready", flush=True)


def _ask(session: Path, message: dict, timeout: float | None = None, waiting=lambda: None) -> dict:
    """The session worker's reply to ``message``; ``waiting()`` runs every PROGRESS_EVERY s until it comes. A
    worker that died under the request is an error, not a wait without end."""
    import zmq

    worker = json.loads((session / WORKER_FILE).read_text())
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        sock.connect(worker["address"])
        sock.send_json(message)
        while not sock.poll(int(PROGRESS_EVERY * 1000)):
            if not _alive(worker["pid"]):
                raise errors.JobFailed(f"the session's worker (pid {worker['pid']}) died; see "
                                       f"{session / 'bodydouble-worker.log'}")
            if deadline is not None and time.monotonic() > deadline:
                raise errors.RequestError(f"the session's worker did not answer in {timeout:g} s",
                                          code=errors.MODEL_UNAVAILABLE)
            waiting()
        return sock.recv_json()
    finally:
        sock.close()


def _alive(pid: int) -> bool:
    """The process runs (a zombie that died unreaped, as a test's own child can be, does not)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def task_render(bundle: Path, session: Path | None, frames: str) -> None:
    """Render a chunk in one call, so the worker reads and writes neighbours while a frame generates
    (worker.FrameWorker.fill): through the session's worker (OpenJD), or in this process (OpenCue: no sessions).
    Progress is per frame, from the files the worker publishes while the call runs."""
    import concurrent.futures
    import socket

    from bodydouble.jobspec import parse_frame_range

    from .worker import published, raise_if_error

    first, last = parse_frame_range(frames)
    wanted = list(range(first, last + 1))
    take, reported = _take_ref(bundle).take(), set()

    def report(published: list[int]) -> None:
        for frame in published:
            reported.add(frame)
            print(f"openjd_progress: {100 * len(reported) / len(wanted):.1f}\nopenjd_status: frame {frame} done",
                  flush=True)

    def waiting() -> None:
        report(published(take, [f for f in wanted if f not in reported]))

    message = {"frames": wanted}
    if session is not None:
        out = _ask(session, message, waiting=waiting)
    else:
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bodydouble-render") as call:
            reply = call.submit(_SessionWorker(bundle).handle, message)
            while not reply.done():
                concurrent.futures.wait([reply], timeout=PROGRESS_EVERY)
                waiting()
            out = reply.result()
    out = raise_if_error(out)
    report([f for f in wanted if f not in reported])
    with open(bundle / RENDER_LOG, "a") as handle:       # one short line per write: appends do not interleave
        for entry in out["frames"]:
            handle.write(json.dumps({"frame": entry["frame"], "written": entry["written"], "pid": out["pid"],
                                     "host": socket.gethostname()}) + "\n")
    rendered = sum(entry["written"] for entry in out["frames"])
    print(f"openjd_status: frames {frames}: {rendered} rendered, {len(wanted) - rendered} already there", flush=True)


def task_worker_stop(session: Path) -> None:
    if (session / WORKER_FILE).exists():
        _ask(session, {"stop": True}, timeout=60)


class _SessionWorker:
    """The model (a FrameWorker) and the bundle's request, rendering the frames each request names."""

    def __init__(self, bundle: Path):
        from .worker import FrameWorker

        _, self.request, config = load_bundle(bundle)
        self.take = _take_ref(bundle)
        self.frames = {f.frame: f for f in self.request.frames}
        self.worker = FrameWorker(config, video=False)     # renders fill chunks only

    def handle(self, message: dict) -> dict:
        import dataclasses

        from .worker import error_reply

        try:
            asked = message.get("frames")
            if not isinstance(asked, list) or not asked:
                raise errors.RequestError("a render request names its frames: {\"frames\": [N, ...]}",
                                          code=errors.INVALID_REQUEST)
            unknown = [f for f in asked if not isinstance(f, int) or f not in self.frames]
            if unknown:
                raise errors.RequestError(f"frames {unknown} are not in this job", code=errors.INVALID_REQUEST)
            done = self.worker.fill(self.take, dataclasses.replace(self.request, frames=[self.frames[f] for f in asked]))
        except errors.BodyDoubleError as exc:
            return error_reply(exc)
        return {"frames": done, "pid": os.getpid(), "loads": self.worker.loads}


def session_worker(bundle: Path, session: Path) -> None:
    """The worker process of one OpenJD session: answers ``{"frames": [N, ...]}`` and ``{"stop": true}`` on
    loopback."""
    import zmq

    worker = _SessionWorker(bundle)
    sock = zmq.Context.instance().socket(zmq.REP)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    atomic.write_json(session / WORKER_FILE, {"address": f"tcp://127.0.0.1:{port}", "pid": os.getpid()})
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < WORKER_IDLE_EXIT:
        if not sock.poll(1000):
            continue
        message = sock.recv_json()
        if message.get("stop"):
            sock.send_json({"stopped": True})
            break
        sock.send_json(worker.handle(message))
        idle_since = time.monotonic()
    sock.close(linger=1000)


# -- running a bundle here (openjd-sessions) --------------------------------------------------------------------
def run_bundle(folder: Path, environment: dict[str, str] | None = None) -> None:
    """Run every step of a bundle on this machine with openjd-sessions, as one farm node would: each step in one
    session (its environments entered once, its tasks in order). Raises with the action's log on a failure."""
    from openjd.model import (RevisionExtensions, SpecificationRevision, StepParameterSpaceIterator, create_job)
    from openjd.sessions import LOG, ActionState, Session, SessionState

    folder = Path(folder).resolve()
    template = decode(json.loads((folder / TEMPLATE).read_text()))
    values = {v["name"]: v["value"] for v in json.loads((folder / PARAMETERS).read_text())["parameterValues"]}
    parameters = job_parameters(folder, template, values)
    job = create_job(job_template=template, job_parameter_values=parameters)
    lines: list[str] = []
    handler = _ListHandler(lines)
    LOG.addHandler(handler)
    try:
        for step in job.steps:       # a template's steps are written in dependency order
            session = Session(session_id=f"{folder.name}-{step.name}", job_parameter_values=parameters,
                              os_env_vars=environment,
                              revision_extensions=RevisionExtensions(spec_rev=SpecificationRevision.v2023_09,
                                                                     supported_extensions=EXTENSIONS))

            def wait(what: str) -> None:
                while session.state == SessionState.RUNNING:
                    time.sleep(0.02)
                status = session.action_status
                if status is None or status.state != ActionState.SUCCESS:
                    state = status.state if status else "no status"
                    raise errors.RequestError(f"OpenJD step {step.name}: {what} failed ({state}):\n"
                                              + "\n".join(lines[-40:]), code=errors.JOB_FAILED)

            entered = []
            try:
                for env in step.stepEnvironments or []:
                    entered.append(session.enter_environment(environment=env))
                    wait(f"entering {env.name}")
                tasks = StepParameterSpaceIterator(space=step.parameterSpace) if step.parameterSpace else [{}]
                for task in tasks:
                    session.run_task(step_script=step.script, task_parameter_values=task)
                    wait(f"task {dict((k, v.value) for k, v in task.items())}")
            finally:
                for identifier in reversed(entered):
                    session.exit_environment(identifier=identifier)
                    while session.state == SessionState.RUNNING:
                        time.sleep(0.02)
                session.cleanup()
    finally:
        LOG.removeHandler(handler)


class _ListHandler(logging.Handler):
    def __init__(self, lines: list[str]):
        super().__init__()
        self.lines = lines

    def emit(self, record) -> None:
        self.lines.append(record.getMessage())


# -- command line ---------------------------------------------------------------------------------------------
def register(commands) -> None:
    """``bodydouble farm submit fill|extend|train``, ``farm run BUNDLE`` and the steps' ``farm task ...``."""
    from bodydouble.cli import GENERATION_FLAGS, TRAIN_FLAGS
    from bodydouble.cliflags import add_fields
    from bodydouble.jobspec import ExtendRequest, FillRequest, TrainRequest

    from ..cli import needs_server

    commands.add("farm", "render-farm jobs: Open Job Description bundles and OpenCue outlines (docs/scale-out.md)",
                 lambda args: _usage(args, "farm"))
    farm = commands.group("farm")
    farm.add("submit", "write a farm job bundle for fill, extend or train", lambda args: _usage(args, "farm submit"))
    submit = farm.group("submit")

    def bundle_flags(p) -> None:
        p.add_argument("--bundle", required=True, help="the bundle folder to write (empty; on shared storage)")
        p.add_argument("--config", help="the server config (TOML) the farm's nodes use: model, adapters, roots")
        p.add_argument("--command", default="bodydouble", help="the bodydouble command on the farm's nodes")
        p.add_argument("--cuebot", help="also submit the OpenCue outline to this Cuebot (host[:port])")

    for name, cls, help in (("fill", FillRequest, "inpaint an unseen angle over a plate sequence, frames chunked"),
                            ("extend", ExtendRequest, "frames after a plate's last one (one task)")):
        p = submit.add(name, help, needs_server(cmd_submit))
        p.add_argument("--plate", required=True, help="plate file pattern, e.g. /shows/x/sh010/plate.####.exr")
        p.add_argument("--frames", required=True, help="FIRST-LAST")
        p.add_argument("--adapter", action="append", help="adapter name[:weight]; repeat to blend")
        if name == "fill":
            p.add_argument("--mask", help="mask file pattern (default: the plate's alpha)")
            p.add_argument("--chunk", type=int, default=8, help="frames per task (default 8)")
        add_fields(p, cls, GENERATION_FLAGS)
        bundle_flags(p)
    p = submit.add("train", "train a character adapter (one task; publishes into the config's adapters folder)",
                   needs_server(cmd_submit))
    add_fields(p, TrainRequest, TRAIN_FLAGS)
    bundle_flags(p)

    p = farm.add("run", "run a bundle's steps on this machine with openjd-sessions (as one farm node)",
                 needs_server(lambda args: run_bundle(Path(args.bundle)) or 0))
    p.add_argument("bundle")

    p = farm.add("task", "one step of a farm job (what the job template runs)", needs_server(cmd_task))
    p.add_argument("step", choices=["prepare", "worker-start", "render", "worker-stop", "assemble", "operation"])
    p.add_argument("--bundle")
    p.add_argument("--session")
    p.add_argument("--frames")


def _usage(args, name: str) -> int:
    print(f"bodydouble {name}: give a subcommand (see --help)", file=sys.stderr)
    return 2


def cmd_submit(args) -> int:
    from bodydouble.cli import _plate_frames, parse_adapters
    from bodydouble.cliflags import values
    from bodydouble.jobspec import ExtendRequest, FillRequest, TrainRequest

    operation = args.submit_command
    if operation == "train":
        request = TrainRequest(**values(TrainRequest, args, frames=[os.path.abspath(f) for f in args.frames]))
        name = f"BodyDouble train {request.character}"
    else:
        cls = FillRequest if operation == "fill" else ExtendRequest
        frames = _plate_frames(args, getattr(args, "mask", None))
        request = cls(**values(cls, args, frames=frames, adapters=parse_adapters(args.adapter)))
        name = f"BodyDouble {operation} {request.shot or Path(args.plate).name.split('.')[0]}"
        if operation == "fill" and request.whole_shot:
            # Farm tasks fill chunks of frames on separate nodes: a shot fill would silently become per-frame fill.
            raise errors.RequestError("the farm fills chunks of frames on separate nodes; the video engine and "
                                      "coherence need the whole shot on one server (`bodydouble fill`)",
                                      code=errors.NOT_SUPPORTED)
    request.validate()
    folder = write_bundle(Path(args.bundle), operation, request, args.config, name, getattr(args, "chunk", 8),
                          args.command)
    print(f"OpenJD job bundle: {folder} (submit it with your farm's tools, e.g. `deadline bundle submit {folder}`, "
          f"or run it here: `bodydouble farm run {folder}`)")
    print(f"OpenCue outline: {folder / OUTLINE}" + ("" if args.cuebot else " (not submitted: no --cuebot given)"))
    if args.cuebot:
        print(f"OpenCue jobs launched: {submit_to_cuebot(folder, args.cuebot)}")
    return 0


def cmd_task(args) -> int:
    logging.basicConfig(level=logging.WARNING)
    bundle = Path(args.bundle).resolve() if args.bundle else None
    session = Path(args.session) if args.session else None
    if args.step == "prepare":
        task_prepare(bundle)
    elif args.step == "worker-start":
        task_worker_start(bundle, session)
    elif args.step == "render":
        task_render(bundle, session, args.frames)
    elif args.step == "worker-stop":
        task_worker_stop(session)
    elif args.step == "assemble":
        task_assemble(bundle)
    else:
        task_operation(bundle)
    return 0


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "session-worker":
    logging.basicConfig(level=logging.WARNING)
    session_worker(Path(sys.argv[2]), Path(sys.argv[3]))
