"""The pool gateway: ``bodydouble serve --pool ADDRESS`` keeps the ZeroMQ front exactly as hosts know it and
hands fill, extend and train jobs to the Ray cluster running the Serve application of serve_app.py.

The gateway resolves the same model settings as its replicas (identity hashes, adapters inspected against them,
consent and audit: every submit-time check runs here, before ``accepted``) but loads no pipeline.

- **Fill** is dealt to the replicas in chunks of frames, one chunk in flight per running replica, each sent by
  Serve to a replica holding the request's adapter set (``multiplexed_model_id``); chunks shrink towards the
  end of the job (``Pool._spread``). Progress is the frames published; cancel cancels every task (running ones
  stop at their next step); a chunk whose replica died (``ActorDiedError``: Serve does not retry) is sent
  again, up to ``ATTEMPTS`` times. The take is opened here, frames are published once by the replicas
  (worker.py), and it says complete only when every frame is there.
- **Extend** is one task (each chunk conditions on the one before) on one replica holding the video adapters
  (model id ``video:<adapters>``); the replica runs the server's own extend, which opens the take on shared
  storage and writes each chunk as it ends. Per-step progress and cancel travel through a channel (relay.py).
  A replica that dies leaves its take marked ``interrupted`` and the extend starts again, in a new take, on
  another replica (up to ``ATTEMPTS`` tries; a retry does not resume from the last chunk).
- **Train** is one Ray task with the resources of a replica (its GPU), running the server's own train
  operation (offload.train_task), which publishes the adapter atomically into the shared adapters folder; the
  gateway rescans, and replicas load it on its first request. A task that dies is started again and resumes
  from the training's last checkpoint.

**Stalls**: when the cluster or its Serve controller dies, calls into it may never return. A job ends with
``model_unavailable`` (and its take marked ``interrupted``) once the pool made no progress at all (no frame,
step or event of any job) for ``pool_stall_timeout`` seconds; the server goes on answering.

Addresses: ``ray://HOST:10001`` (Ray Client), ``HOST:6379`` (join the cluster as a driver), ``auto`` (the
cluster ``ray start`` made on this machine). A pool that cannot be reached fails the server's load with a
clear ``model_unavailable`` reason, which every request then gets; it never hangs.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import socket
import threading
import time
from pathlib import Path

from bodydouble import atomic, errors, protocol
from bodydouble.jobspec import ExtendRequest, FillRequest, TrainRequest

from .. import takes
from ..config import ServerConfig
from ..engine import Engine
from ..operations import OPERATIONS, Operation, common
from ..operations.fill import TAKE_SETTINGS
from . import offload, relay, worker
from .serve_app import APP

log = logging.getLogger("bodydouble.pool")

ATTEMPTS = 3                  # tries per frame task when replicas die under it
CONNECT_TIMEOUT = 5.0         # seconds to reach the cluster's address before saying it is down
CONNECT_TRIES = 3             # Ray Client connections tried (its per-connection server sometimes fails to start)
CALL_TIMEOUT = 60.0           # seconds for a small call (describe, listing)
CONCURRENT_JOBS = 16          # jobs the gateway hands to the pool at once (each waits on the pool, not a CPU)
MAX_CHUNK = 4                 # frames a fill task carries at most (see Pool._spread)
POLL = 0.2                    # seconds between looks at a relayed job's channel
STATUS_EVERY = 2.0            # seconds a replica count (hello) is kept before it is asked again


def _died(exc: BaseException) -> bool:
    """A task lost with its replica (killed, crashed, node gone): worth sending again."""
    from ray import exceptions

    return isinstance(exc, (exceptions.ActorDiedError, exceptions.ActorUnavailableError, exceptions.WorkerCrashedError,
                            exceptions.NodeDiedError))


class Pool:
    """The gateway's handle on the Serve application."""

    def __init__(self, address: str, app: str = APP, stall_timeout: float = 600.0):
        self.address, self.app, self.stall_timeout = address, app, stall_timeout
        self.handle = None
        self.info: dict = {}
        self.last_progress = time.monotonic()     # the last frame, step or event of any job (stall watch)
        self._replicas, self._replicas_asked = 0, 0.0
        self._status_lock = threading.Lock()

    def connect(self) -> None:
        self._check_reachable()
        import ray
        from ray import serve

        try:
            if not ray.is_initialized():
                self._init()
            self.handle = serve.get_app_handle(self.app)
        except Exception as exc:
            hint = ""
            if "connection timeout" in str(exc) and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
                hint = (" (a cluster with token authentication, Ray's default when a token exists, answers Ray Client "
                        "only with RAY_AUTH_MODE=token and its token, RAY_AUTH_TOKEN or ~/.ray/auth_token, set for "
                        "this server)")
            if "does not exist" in str(exc):
                hint = f" (deploy it under that name: serve run --name {self.app} ..., or name: {self.app} in a Serve config)"
            raise self.unavailable(f"{type(exc).__name__}: {exc}{hint}") from None
        self.info = self.call("describe")
        self._status_lock.acquire()
        self._replicas_asked = time.monotonic()
        self._count_replicas()              # hello's first answer has the count; later ones refresh it on a thread

    def _init(self) -> None:
        """Join the cluster. Ray Client's proxy starts a server process per connection and, on a busy head
        node, sometimes loses the race with it ("Starting Ray client server failed", Ray 2.60): tried again."""
        import ray

        for attempt in range(1, CONNECT_TRIES + 1):
            try:
                ray.init(address=self.address, namespace="bodydouble", log_to_driver=False,
                         logging_level=logging.WARNING)
                return
            except ConnectionAbortedError as exc:
                if attempt == CONNECT_TRIES or "client server failed" not in str(exc):
                    raise
                log.warning("pool %s: Ray Client's server did not start (%s); trying again", self.address,
                            str(exc).strip().splitlines()[-1])

    def _check_reachable(self) -> None:
        host_port = self.address.removeprefix("ray://")
        if host_port in ("auto", "local"):
            return
        host, _, port = host_port.rpartition(":")
        if not host or not port.isdigit():
            raise errors.RequestError(f"pool address {self.address!r} is not ray://HOST:PORT, HOST:PORT or auto",
                                      code=errors.INVALID_REQUEST)
        try:
            socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
        except OSError as exc:
            raise self.unavailable(f"nothing answers at {host}:{port} ({exc.strerror or exc})") from None

    def unavailable(self, why: str) -> errors.RequestError:
        return errors.RequestError(
            f"the GPU pool at {self.address} is unavailable: {why}. Start the cluster and deploy the BodyDouble "
            f"application (docs/scale-out.md), or serve without --pool", code=errors.MODEL_UNAVAILABLE,
            details={"pool": self.address})

    def call(self, method: str, *args, timeout: float = CALL_TIMEOUT):
        try:
            return getattr(self.handle, method).remote(*args).result(timeout_s=timeout)
        except Exception as exc:
            raise self.unavailable(f"{method} failed: {type(exc).__name__}: {exc}") from None

    def replicas(self) -> int:
        """Running replicas, for hello: the last count, refreshed on a thread at most every STATUS_EVERY s,
        so a hello never waits on a cluster that stopped answering."""
        if time.monotonic() - self._replicas_asked >= STATUS_EVERY and self._status_lock.acquire(blocking=False):
            self._replicas_asked = time.monotonic()
            threading.Thread(target=self._count_replicas, name="bodydouble-pool-status", daemon=True).start()
        return self._replicas

    def _count_replicas(self) -> None:
        from ray import serve

        try:
            app = serve.status().applications[self.app]
            self._replicas = sum(d.replica_states.get("RUNNING", 0) for d in app.deployments.values())
        except Exception:      # status is for display only
            self._replicas = 0
        finally:
            self._status_lock.release()

    # -- stalls -------------------------------------------------------------------------------------------
    def progressed(self) -> None:
        self.last_progress = time.monotonic()

    def check_stall(self, since: float) -> None:
        """Raise ``stalled`` when neither this job (started at ``since``) nor any other made progress for
        ``stall_timeout`` seconds: the cluster is presumed gone."""
        quiet = time.monotonic() - max(self.last_progress, since)
        if quiet > self.stall_timeout:
            raise errors.RequestError(
                f"the GPU pool at {self.address} made no progress for {quiet:.0f} s (pool_stall_timeout = "
                f"{self.stall_timeout:g} s): its Ray cluster or Serve controller stopped answering, or the work "
                "waits for resources nobody frees (a training task needs a free GPU). The job was stopped",
                code=errors.MODEL_UNAVAILABLE, details={"pool": self.address, "stalled_s": round(quiet, 1)})

    # -- a fill job over the pool --------------------------------------------------------------------------
    def run_fill(self, engine: Engine, job, req: FillRequest) -> protocol.Message:
        adapters = engine.adapters.resolve(req.adapters)
        common.check_inputs(engine, [(f.plate, f"plate {f.frame}") for f in req.frames]
                            + [(f.mask, f"mask {f.frame}") for f in req.frames if f.mask is not None])
        shot = common.shot_name(req.shot, req.output_dir, req.frames[0].plate)
        take = common.open_take(engine, job, req.output_dir, shot, common.adapter_label(adapters), {
            "operation": "fill", "adapters": [a.describe() for a, _ in adapters],
            "base_model": engine.identity.to_dict(), "pool": {"address": self.address, "app": self.app},
            "request": {k: getattr(req, k) for k in TAKE_SETTINGS},
        })
        frames = [f.frame for f in req.frames]
        with _interrupted_on_stall(take), common.completing(take):
            stats = asyncio.run(self._spread(job, take, worker.TakeRef.of(take, job.id),
                                             dataclasses.replace(req, return_pixels=False),
                                             worker.model_id(req.adapters)))
            worker.check_frames(take, frames)
            take.info["pool"].update(stats)
        returned = None
        if req.return_pixels:
            from ..imaging import frames as frame_io

            returned = {f: frame_io.read_frame(take.frame_path(f), engine.config.limits).wire() for f in frames}
        return common.result_message(job, "fill", take, {
            "adapter": common.adapter_label(adapters), "seed": req.seed, "test_model": engine.identity.test_model,
            "pool": stats}, returned)

    async def _spread(self, job, take, ref: worker.TakeRef, req: FillRequest, model: str) -> dict:
        """The request's frames dealt to the replicas a chunk at a time, one chunk in flight per running replica.

        A replica that ends a chunk gets the next at once (chunks queued in Serve's router wait for a free
        replica on its retry backoff, up to 0.5 s of idle GPU per frame); a chunk of several frames lets the
        replica read and write neighbours while one generates (worker.FrameWorker.fill); chunks shrink towards
        the end (a share of what is left, at most MAX_CHUNK) so the replicas finish together. Progress is per
        frame, from the files the replicas publish. A dead replica's chunk is sent again: frames it published
        stay (the worker skips them)."""
        handle = self.handle.options(multiplexed_model_id=model)
        waiting = collections.deque(req.frames)
        running: dict[asyncio.Future, tuple[list, int, object]] = {}    # future -> (chunk, attempt, response)
        done: set[int] = set()
        total, tasks, retries, written, replicas, loads = len(waiting), 0, 0, 0, {}, {}

        async def result(response):
            return await response

        def send(chunk: list, attempt: int) -> None:
            nonlocal tasks
            response = handle.fill.remote(ref, dataclasses.replace(req, frames=chunk))
            running[asyncio.ensure_future(result(response))] = (chunk, attempt, response)
            tasks += 1

        def deal() -> None:
            width = max(1, self.replicas())
            while waiting and len(running) < width:
                size = min(MAX_CHUNK, -(-len(waiting) // (2 * width)))
                send([waiting.popleft() for _ in range(size)], 1)

        def report(frames: list[int], replica: str | None = None) -> None:
            fresh = set(frames) - done
            done.update(fresh)
            where = {"replica": replica} if replica else {}
            if fresh or replica:
                self.progressed()
                what = f"frame {frames[0]}" if len(frames) == 1 else f"frames {frames[0]}-{frames[-1]}"
                job.report(len(done) / total, f"{what} done{f' on replica {replica}' if replica else ''} "
                           f"({len(done)}/{total})", frame=frames[-1], frames=total, frames_done=len(done), **where)

        deal()
        started = time.monotonic()
        try:
            while running:
                finished, _ = await asyncio.wait(running, timeout=0.1, return_when=asyncio.FIRST_COMPLETED)
                job.check_cancelled()
                for future in finished:
                    chunk, attempt, _ = running.pop(future)
                    numbers = [item.frame for item in chunk]
                    try:
                        out = future.result()
                    except Exception as exc:
                        if not _died(exc) or attempt >= ATTEMPTS:
                            raise errors.JobFailed(f"frames {numbers}: the pool failed them ({attempt} tries): "
                                                   f"{type(exc).__name__}: {exc}") from None
                        log.warning("job %s: a replica died under frames %s; sending them again", job.id, numbers)
                        retries += 1
                        send(chunk, attempt + 1)
                        continue
                    for entry in worker.raise_if_error(out)["frames"]:
                        take.add(entry["frame"], entry["path"])
                        written += entry["written"]
                    replicas[out["replica"]] = replicas.get(out["replica"], 0) + len(chunk)
                    loads[out["replica"]] = out["loads"]
                    deal()                   # before reporting: the replica that just freed starts its next chunk
                    report(numbers, out["replica"])
                for chunk, _, _ in running.values():
                    report(worker.published(take, [item.frame for item in chunk if item.frame not in done]))
                if not finished:
                    self.check_stall(started)
        except BaseException as exc:
            if running and not _is_stall(exc):          # a stalled pool would not answer (nor let go of a call)
                for _, _, response in running.values():
                    response.cancel()      # queued tasks never start; running ones stop at their next step
                finished, _ = await asyncio.wait(running, timeout=30)
                for future in finished:
                    future.exception()     # retrieved: they ended as cancelled, as asked
            raise
        return {"tasks": tasks, "retries": retries, "frames_written": written, "by_replica": replicas,
                "loads": loads, "seconds": round(time.monotonic() - started, 3)}

    # -- extend and train: one relayed task each ----------------------------------------------------------
    def run_extend(self, engine: Engine, job, req: ExtendRequest) -> protocol.Message:
        """One task on a replica holding the request's video adapters; a replica that dies leaves its take
        ``interrupted`` and the extend starts again in a new take (up to ATTEMPTS tries)."""
        engine.model_for("extend").adapters.resolve(req.adapters)
        common.check_inputs(engine, [(f.plate, f"plate {f.frame}") for f in req.frames])
        handle = self.handle.options(multiplexed_model_id=worker.model_id(req.adapters, "video"))
        interrupted: list[str] = []
        opened: list[Path] = []

        def on_event(event: dict) -> None:
            if "take" in event:
                ref = worker.TakeRef(**event["take"], job=job.id)
                opened.append(Path(ref.dir))
                job.opened_take(ref.take())
            else:
                self._report(job, event["progress"])

        def lost(exc: BaseException) -> None:
            if opened and opened[-1] not in map(Path, interrupted):
                why = (f"the GPU pool stopped answering ({exc})" if _is_stall(exc)
                       else f"the pool replica running this extend died ({type(exc).__name__})")
                takes.mark_interrupted(opened[-1], why)
                interrupted.append(str(opened[-1]))

        # A cancel before the replica opened the take also withdraws the call (a queued one never starts); after,
        # it travels through the channel, so the reply comes once the replica marked the take cancelled.
        body = self._relayed(job, lambda channel: handle.extend.remote(req, job.id, channel), on_event, lost,
                             "extend", withdraw=lambda: not opened)
        body["pool"] = {"address": self.address, "replica": body.pop("replica", None), "pid": body.pop("pid", None),
                        "retries": len(interrupted), "interrupted_takes": interrupted}
        returned = None
        if req.return_pixels:
            from ..imaging import frames as frame_io

            returned = {f["frame"]: frame_io.read_frame(Path(f["path"]), engine.config.limits).wire()
                        for f in body["frames"]}
            for index, entry in enumerate(body["frames"]):
                entry["buffer"] = index
        return protocol.Message(type="result", id=job.request_id, body=body,
                                buffers=list((returned or {}).values()),
                                meanings=[f"frame {f}" for f in (returned or {})])

    def run_train(self, engine: Engine, job, req: TrainRequest) -> protocol.Message:
        """A Ray task with a replica's resources runs the server's train operation; a task that dies is
        started again and resumes from the training's last checkpoint."""
        import ray

        resources = self.info.get("resources") or {}
        task = ray.remote(offload.train_task).options(
            num_cpus=resources.get("CPU", 1), num_gpus=resources.get("GPU", 0), max_retries=0)
        config = dataclasses.replace(engine.config, pool=None)

        def on_event(event: dict) -> None:
            if "progress" in event:
                self._report(job, event["progress"])

        body = self._relayed(job, lambda channel: task.remote(config, req, job.id, channel), on_event,
                             lambda exc: None, "train")["result"]
        return protocol.Message(type="result", id=job.request_id, body=offload.published(engine, body))

    def _relayed(self, job, start, on_event, lost, what: str, withdraw=lambda: False) -> dict:
        """Run ``start(channel)`` (a Serve call or a Ray task) with a fresh channel, relaying its events into
        ``job`` until it ends; again when its process died (``lost(exc)`` first), up to ATTEMPTS tries. The
        work's own error comes back as data and is raised as the client would see it."""
        channel, stalled = relay.open_channel(), False
        try:
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    return worker.raise_if_error(asyncio.run(self._relay(job, channel, start, on_event,
                                                                         withdraw)))
                except BaseException as exc:
                    stalled = _is_stall(exc)
                    if _died(exc) or stalled:
                        lost(exc)
                    if not _died(exc) or attempt >= ATTEMPTS:
                        if _died(exc):
                            raise errors.JobFailed(f"the pool failed this {what} ({attempt} tries): "
                                                   f"{type(exc).__name__}: {exc}") from None
                        raise
                    log.warning("job %s: the process running its %s died; starting it again", job.id, what)
                    job.report(0.0, f"the process running this {what} died; starting it again (try {attempt + 1})",
                               retry=attempt)
        finally:
            if not stalled:               # a stalled cluster would hold this call too
                _kill_quietly(channel)

    async def _relay(self, job, channel, start, on_event, withdraw) -> dict:
        work = start(channel)
        future = asyncio.ensure_future(_awaited(work))
        started = time.monotonic()
        cancelled = False
        try:
            while True:
                done, _ = await asyncio.wait({future}, timeout=POLL)
                if job.cancel_event.is_set() and not cancelled:
                    cancelled = True
                    if withdraw() and not done:
                        work.cancel()        # a task still queued never starts; a running one hears the channel
                events = await self._drain(channel, job.cancel_event.is_set())
                for event in events:
                    on_event(event)
                if events or done:
                    self.progressed()
                if done:
                    if cancelled and future.exception() is not None and not _died(future.exception()):
                        raise errors.JobCancelled(f"job {job.id} cancelled")
                    return future.result()
                self.check_stall(started)
        finally:
            if not future.done():
                future.cancel()

    async def _drain(self, channel, cancel: bool) -> list[dict]:
        """The channel's events (and the gateway's cancel); none when it does not answer in time (a stall)."""
        try:
            return await asyncio.wait_for(_ref_future(channel.take.remote(cancel)), timeout=10)
        except Exception as exc:  # noqa: BLE001  (the cluster is unwell: the stall watch decides)
            log.debug("channel did not answer: %s", exc)
            return []

    @staticmethod
    def _report(job, progress: dict) -> None:
        extra = {k: v for k, v in progress.items() if k not in ("fraction", "message", "job", "seq")}
        job.report(progress.get("fraction", 0.0), progress.get("message", ""), **extra)


async def _awaited(work):
    """A Serve response or a Ray object ref, awaited."""
    if hasattr(work, "future"):          # an ObjectRef (a Ray task); also a Ray Client one
        return await _ref_future(work)
    return await work


def _ref_future(ref) -> asyncio.Future:
    """An object ref as an asyncio future whose cancelling (a timeout, a job given up) leaves Ray's own future
    alone: Ray Client sets a result on it later from its own thread, and a cancelled one makes that thread raise."""
    return asyncio.shield(asyncio.wrap_future(ref.future()))


def _kill_quietly(actor) -> None:
    import ray

    try:
        ray.kill(actor)
    except Exception:  # noqa: BLE001  (a cluster that is gone took it along)
        pass


def _is_stall(exc: BaseException) -> bool:
    return isinstance(exc, errors.BodyDoubleError) and "stalled_s" in (exc.details or {})


@contextlib.contextmanager
def _interrupted_on_stall(take: takes.Take):
    """A take this gateway owns whose pool stalled ends ``interrupted`` (its replicas may be gone mid-write),
    not ``failed`` as ``completing`` (inside) first marks it."""
    try:
        yield
    except errors.BodyDoubleError as exc:
        if _is_stall(exc):
            atomic.sweep(take.dir)
            take.finish("interrupted", error=f"the GPU pool stopped answering: {exc}")
        raise


class GatewayEngine(Engine):
    """The gateway's engine: each model slot resolved (identity, family, adapters inspected: what submit-time
    checks, listings and policy read) with no pipeline loaded, and the pool it hands work to."""

    def __init__(self, config: ServerConfig):
        super().__init__(config)
        self.pool = Pool(config.pool, stall_timeout=config.pool_stall_timeout)

    def load(self) -> None:
        from ..models.slots import KINDS, ModelSlot

        self.pool.connect()
        self.device, self.dtype = "pool", "pool"
        image = ModelSlot(dataclasses.replace(KINDS["image"], lazy=True), self.config, "cpu", None).load()
        remote = self.pool.info
        if image.identity.sha256 != remote.get("sha256"):
            raise self.pool.unavailable(
                f"its replicas run {remote.get('name')} (sha256 {str(remote.get('sha256'))[:12]}...) but this "
                f"server's model setting is {image.identity.name} (sha256 {image.identity.sha256[:12]}...): give "
                "both the same config")
        self.slots["image"] = image
        video = ModelSlot("video", self.config, "cpu", None).load()         # lazy: identity and adapters only
        theirs = remote.get("video_model") or {}
        if video.available and theirs.get("sha256") != video.identity.sha256:
            video.error = (errors.MODEL_UNAVAILABLE, (
                f"the pool's replicas have {'no video model' if not theirs else theirs.get('name')} but this "
                f"server's video_model is {video.identity.name}: give both the same config to extend on the pool"))
        self.slots["video"] = video

    def describe(self) -> dict:
        return {**super().describe(), "pool": {"address": self.pool.address, "app": self.pool.app,
                                               "replicas": self.pool.replicas(),
                                               "stall_timeout": self.pool.stall_timeout}}


def gateway(config: ServerConfig) -> tuple[GatewayEngine, dict[str, Operation]]:
    """The engine and operations of a server whose work runs on the pool ``config.pool``: the same checks,
    consent and audit as a single server's (each operation's own ``validate``), the work on the pool."""
    def on_pool(operation: str) -> Operation:
        run, local = getattr(Pool, f"run_{operation}"), OPERATIONS[operation]
        validate = _frame_by_frame(local.validate) if operation == "fill" else local.validate
        # A training a killed gateway had accepted is taken up at its next start, as on a server: its task
        # resumes from the checkpoint in the shared adapters folder.
        return Operation(lambda engine, job, req: run(engine.pool, engine, job, req), validate,
                         beside=CONCURRENT_JOBS, resume=local.resume)

    return GatewayEngine(config), {operation: on_pool(operation) for operation in ("fill", "extend", "train")}


def _frame_by_frame(validate):
    """Fill's submit checks, plus: the pool spreads a fill's frames over replicas one by one, so a shot fill (the
    video engine, or coherence that carries each frame into the next) is refused at submit, not run as
    something else."""
    def check(req, engine) -> None:
        if req.whole_shot:
            raise errors.RequestError(
                "the pool fills frame by frame on its replicas: the video engine and coherence need the whole shot "
                "on one server (submit it to a single server, or use engine 'image' without coherence)",
                code=errors.NOT_SUPPORTED, details={"engine": req.engine, "coherence": req.coherence})
        validate(req, engine)
    return check
