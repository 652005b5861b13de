"""The work a pool replica or a farm task does, the same in both: one model loaded per process, the adapters it
is asked for resident, fill frames rendered into a take that whoever split the job opened.

Takes on shared storage follow the single server's rules, with many writers: only the one that split the job
(the pool gateway, the farm's assemble step) opens the take, writes ``take.json`` and marks it complete; workers
only add frame files. A frame is rendered into a hidden temporary and *published once*: a hard link onto its
final name, which fails when the name exists. So a task retried after its worker died (it may have published
before dying) never writes a frame twice and never replaces one; it reports the frame as already there.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import os
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

from bodydouble import atomic, errors
from bodydouble.jobspec import AdapterRef, FillRequest

from .. import takes
from ..config import ServerConfig

log = logging.getLogger("bodydouble.scale")


@dataclass(frozen=True)
class TakeRef:
    """A take opened elsewhere, as a worker needs it: where its frames go and what its headers say."""

    dir: str
    number: int
    shot: str
    label: str
    job: str            # the job id the frames' headers carry

    @classmethod
    def of(cls, take: takes.Take, job_id: str) -> "TakeRef":
        return cls(dir=str(take.dir), number=take.number, shot=take.shot, label=take.label, job=job_id)

    def take(self) -> takes.Take:
        return takes.Take(dir=Path(self.dir), number=self.number, shot=self.shot, label=self.label, info={})


def error_reply(exc: errors.BodyDoubleError) -> dict:
    """An error as data between our processes (Serve replicas, farm workers, training processes): never a
    pickled exception."""
    return {"error": {"code": exc.code, "message": str(exc), "details": exc.details or {}}}


def raise_if_error(reply: dict) -> dict:
    """``reply``, unless it is an ``error_reply``: then the error it carries, raised as the client would."""
    if "error" in reply:
        error = reply["error"]
        raise errors.error_from_reply(error["code"], error["message"], error.get("details"))
    return reply


def publish_once(staged: Path, target: Path) -> bool:
    """Move a finished file onto ``target`` unless a file is there: True when this call published it.

    A hard link is atomic and never replaces; where the file system has none (some SMB shares) an existence
    check then a rename stands in (two workers rendering the same frame of a take at once is the only race,
    and the pool never runs one frame twice at once)."""
    try:
        try:
            os.link(staged, target)
        except FileExistsError:
            return False
        except OSError:
            if target.exists():
                return False
            os.replace(staged, target)
        atomic.fsync_dir(target.parent)
        return True
    finally:
        staged.unlink(missing_ok=True)


def model_id(adapters: list[AdapterRef], kind: str = "image") -> str:
    """A pool's multiplexed model id for a request: its model kind's adapter set (names, sorted; weights do not
    matter), e.g. ``hero+villain`` for a fill, ``video:hero`` for an extend."""
    names = "+".join(sorted({a.name for a in adapters})) or BASE
    return names if kind == "image" else f"{kind}:{names}"


BASE = "__base__"       # the model id of requests without adapters


def adapter_names(model: str) -> tuple[str, list[str]]:
    """The model kind and adapter names a ``model_id`` stands for."""
    kind, _, names = model.rpartition(":")
    return kind or "image", [] if names == BASE else names.split("+")


class FrameWorker:
    """One loaded model (a pool replica, a farm task's session) that fills frames into takes opened elsewhere,
    and runs extends on its video model (loaded on the first one, as on a server).

    Only the adapters held (``hold``/``release``: a pool replica's multiplexed models, a farm task's request)
    are resident; each hold rescans the adapters folder, so an adapter published after start is found without
    a restart. Not thread-safe, like a pipeline: callers serialise (the Serve replica holds ``lock``).
    """

    def __init__(self, config: ServerConfig, name: str | None = None, video: bool = True):
        from ..adapters import AdapterLibrary
        from ..engine import Engine

        self.config = config
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.lock = threading.Lock()
        # The engine starts on an empty adapters folder, so it loads none; each model kind's library is then the
        # real folder with only the held adapters resident.
        self._empty = tempfile.TemporaryDirectory(prefix="bodydouble-worker-")
        self.engine = Engine(dataclasses.replace(config, adapters=self._empty.name,
                                                 **({} if video else {"video_model": "none"})))
        self.engine.load()
        self.pipe = self.engine.pipeline("fill")
        self.libraries = {}
        for slot in self.engine.available():
            slot.adapters = AdapterLibrary(Path(config.adapters), slot.identity, slot.kind.name)
            slot.adapters.resident = set()
            self.libraries[slot.kind.name] = slot
        self.engine.rescan()
        self._holds: dict[str, collections.Counter] = {kind: collections.Counter() for kind in self.libraries}
        self.loads = 0          # adapter sets made resident (a pool: multiplexed model loads)
        self.frames_written = 0

    @property
    def adapters(self):
        """The image model's adapters (fill's)."""
        return self.libraries["image"].adapters

    def describe(self) -> dict:
        return {**self.engine.describe(), "worker": self.name, "pid": os.getpid(), "loads": self.loads,
                "resident": self.adapters.loaded, "frames_written": self.frames_written}

    def listing(self) -> list[dict]:
        self._sync()
        return self.adapters.listing()

    # -- resident adapters -----------------------------------------------------------------------------
    def hold(self, names: list[str], kind: str = "image") -> None:
        """Make ``names`` resident in the ``kind`` model; refuses (clearly) an unknown, incompatible or broken
        adapter, and a kind this worker has no model of."""
        if kind not in self.libraries:
            self.engine.model(kind)           # the coded reason (not_supported, model_unavailable)
        self._holds[kind].update(names)
        try:
            self._sync()
            self.libraries[kind].adapters.resolve([AdapterRef(n) for n in names])
        except BaseException:
            self.release(names, kind)
            raise
        self.loads += 1

    def release(self, names: list[str], kind: str = "image") -> None:
        holds = self._holds[kind]
        holds.subtract(names)
        self._holds[kind] = +holds          # drop names no longer held
        self._sync()

    def _sync(self) -> None:
        for kind, slot in self.libraries.items():
            slot.adapters.resident = set(self._holds[kind])
            slot.rescan()               # into its loaded pipelines (a lazy video model: inspected only)

    # -- work ------------------------------------------------------------------------------------------
    def extend(self, req, job) -> dict:
        """The server's own extend (operations/extend.py) on this worker's video model, as ``job`` (a relay to
        the gateway: progress, the take it opens, cancel): the result body, or an ``error_reply``. It opens
        its take on shared storage, writes every chunk as it ends and marks the take, as a server does."""
        from ..jobs import Cancelled
        from ..operations import extend

        try:
            if "video" in self.libraries:
                missing = [a.name for a in req.adapters if a.name not in self.libraries["video"].adapters.loaded]
                if missing:                       # a call without its multiplexed hold
                    self.hold(missing, "video")
            return extend.run_extend(self.engine, job, dataclasses.replace(req, return_pixels=False)).body
        except errors.BodyDoubleError as exc:
            return error_reply(exc)
        except Cancelled:
            return error_reply(errors.JobCancelled(f"job {job.id} cancelled"))

    def fill(self, take: TakeRef, req: FillRequest,
             on_step: Callable[[int, int, int], None] | None = None) -> list[dict]:
        """Render ``req.frames`` into the take: ``[{frame, path, written, worker}]``. A frame whose file is
        there already (a retried task) is reported with ``written: False`` and not rendered again.

        Pipelined as the server's own fill (operations/fill.py): while frame N generates, frame N+1 is read and
        prepared and frame N-1 composited, written and published on threads of their own, as far as the
        plates' size allows (common.frames_in_flight).

        ``on_step(frame, step, steps)``: progress, and where a cancel raises between denoising steps."""
        import concurrent.futures

        from ..imaging import frames as frame_io
        from ..imaging.colour import ColourTransform
        from ..operations import common
        from ..operations import fill as fill_op

        names = [a.name for a in req.adapters]
        missing = [n for n in names if n not in self.adapters.loaded]
        if missing:                       # a farm task, or a pool call without its multiplexed hold
            self.hold(missing)
        chosen = self.adapters.resolve(req.adapters)
        self.adapters.activate(self.pipe, chosen)
        colour = ColourTransform(req.colorspace)
        model = self.engine.model_for("fill")
        target = take.take()
        attributes = {**common.provenance(self.engine, "fill", chosen, req, target, SimpleNamespace(id=take.job)),
                      "worker": self.name}
        done = {item.frame: {"frame": item.frame, "path": str(target.frame_path(item.frame)), "written": False,
                             "worker": self.name} for item in req.frames if target.frame_path(item.frame).exists()}

        def read(item) -> "fill_op.Prepared":
            plate, mask, mask_repaired = fill_op.read_inputs(self.engine, req, item)
            return fill_op.prepare_frame(model, req, colour, plate, mask, item=item, mask_repaired=mask_repaired)

        def write(prepared: "fill_op.Prepared", image) -> None:
            pixels, headers, _ = fill_op.composited(req, prepared, image, attributes)
            path = target.frame_path(prepared.item.frame)
            staged = path.with_name(f".{path.name}.{os.urandom(4).hex()}{atomic.TEMP_MARK}.exr")
            frame_io.write_exr_atomic(staged, pixels, headers)
            written = publish_once(staged, path)
            self.frames_written += written
            done[prepared.item.frame] = {"frame": prepared.item.frame, "path": str(path), "written": written,
                                         "worker": self.name}

        todo = [item for item in req.frames if item.frame not in done]
        writes: collections.deque = collections.deque()
        # Leaving the block waits for every started write: what reached the disk is published, whatever failed.
        with common.Prefetcher(read, todo, fits=lambda p: int(common.frames_in_flight(p.plate.nbytes) > 1)) as reader, \
                concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bodydouble-write") as writer:
            for _ in todo:
                [prepared] = reader.next_batch(1)
                frame = prepared.item.frame
                step = (lambda s, n, _frame=frame: on_step(_frame, s, n)) if on_step else (lambda s, n: None)
                [image] = fill_op.generate(self.pipe, req, [prepared], step)
                writes.append(writer.submit(write, prepared, image))
                depth = max(0, common.frames_in_flight(prepared.plate.nbytes) - 2)
                del prepared, image                  # the writer's now
                while len(writes) > depth:
                    writes.popleft().result()
            while writes:
                writes.popleft().result()
        return [done[item.frame] for item in req.frames]


def published(take: takes.Take, frames) -> list[int]:
    """Those of ``frames`` whose file is in the take: whole, since workers only publish by link or rename (what
    progress counts while a worker runs, and what a take needs before it may say complete)."""
    return [f for f in frames if take.frame_path(f).is_file()]


def check_frames(take: takes.Take, expected: list[int]) -> None:
    """Before a take may say complete: every expected frame's file is there (whole: files are only ever
    published by rename or link) and listed once. Temporaries a killed worker left are removed first."""
    atomic.sweep(take.dir)
    there = set(published(take, expected))
    missing = [f for f in expected if f not in there]
    if missing:
        raise errors.RequestError(f"take {take.dir}: frames {missing} were never written", code=errors.JOB_FAILED)
    take.frames.update({frame: str(take.frame_path(frame)) for frame in expected})
