"""The pool gateway: ``bodydouble serve --pool ADDRESS`` keeps the ZeroMQ front exactly as hosts know it and
hands fill jobs to the Ray Serve application of serve_app.py.

The gateway resolves the same model settings as its replicas (identity hashes, adapters inspected against them,
consent and audit: every submit-time check runs here, before ``accepted``) but loads no pipeline. A fill job is
split into one task per frame; all are handed to Serve at once, whose router queues them and sends each to a
replica holding the request's adapter set (``multiplexed_model_id``). Progress is the frames done; cancel
cancels every task (queued ones never start, running ones stop at their next step); a task whose replica died
(``ActorDiedError``: Serve does not retry) is sent again, up to ``ATTEMPTS`` times. The take is opened here,
frames are published once by the replicas (worker.py), and it says complete only when every frame is there.

Addresses: ``ray://HOST:10001`` (Ray Client), ``HOST:6379`` (join the cluster as a driver), ``auto`` (the
cluster ``ray start`` made on this machine). A pool that cannot be reached fails the server's load with a
clear ``model_unavailable`` reason, which every request then gets; it never hangs.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time

from bodydouble import errors, protocol
from bodydouble.jobspec import FillRequest

from ..config import ServerConfig
from ..engine import Engine
from ..operations import OPERATIONS, Operation, common
from ..operations.fill import TAKE_SETTINGS
from . import worker
from .serve_app import APP

log = logging.getLogger("bodydouble.pool")

ATTEMPTS = 3                  # tries per frame task when replicas die under it
CONNECT_TIMEOUT = 5.0         # seconds to reach the cluster's address before saying it is down
CALL_TIMEOUT = 60.0           # seconds for a small call (describe, listing)
CONCURRENT_JOBS = 16          # fill jobs the gateway hands to the pool at once (each waits on replicas, not a CPU)


def _died(exc: BaseException) -> bool:
    """A task lost with its replica (killed, crashed, node gone): worth sending again."""
    from ray import exceptions

    return isinstance(exc, (exceptions.ActorDiedError, exceptions.ActorUnavailableError, exceptions.WorkerCrashedError,
                            exceptions.NodeDiedError))


class Pool:
    """The gateway's handle on the Serve application."""

    def __init__(self, address: str, app: str = APP):
        self.address, self.app = address, app
        self.handle = None
        self.info: dict = {}

    def connect(self) -> None:
        self._check_reachable()
        import ray
        from ray import serve

        try:
            if not ray.is_initialized():
                ray.init(address=self.address, namespace="bodydouble", log_to_driver=False,
                         logging_level=logging.WARNING)
            self.handle = serve.get_app_handle(self.app)
        except Exception as exc:
            raise self.unavailable(f"{type(exc).__name__}: {exc}") from None
        self.info = self.call("describe")

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
        from ray import serve

        try:
            app = serve.status().applications[self.app]
            return sum(d.replica_states.get("RUNNING", 0) for d in app.deployments.values())
        except Exception:      # status is for display only
            return 0

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
        with common.completing(take):
            tasks = [dataclasses.replace(req, frames=[item], return_pixels=False) for item in req.frames]
            stats = asyncio.run(self._spread(job, take, worker.TakeRef.of(take, job.id), tasks,
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

    async def _spread(self, job, take, ref: worker.TakeRef, tasks: list[FillRequest], model: str) -> dict:
        """Every task handed to Serve at once; results recorded as they come; dead replicas' tasks resent."""
        handle = self.handle.options(multiplexed_model_id=model)
        running: dict[asyncio.Future, tuple[int, int, object]] = {}    # future -> (task, attempt, response)

        async def result(response):
            return await response

        def send(index: int, attempt: int) -> None:
            response = handle.fill.remote(ref, tasks[index])
            running[asyncio.ensure_future(result(response))] = (index, attempt, response)

        for index in range(len(tasks)):
            send(index, 1)
        total, done, retries, written, replicas, loads = len(tasks), 0, 0, 0, {}, {}
        started = time.monotonic()
        try:
            while running:
                finished, _ = await asyncio.wait(running, timeout=0.1, return_when=asyncio.FIRST_COMPLETED)
                job.check_cancelled()
                for future in finished:
                    index, attempt, _ = running.pop(future)
                    try:
                        out = future.result()
                    except Exception as exc:
                        if not _died(exc) or attempt >= ATTEMPTS:
                            raise errors.JobFailed(f"frame {tasks[index].frames[0].frame}: the pool failed it "
                                                   f"({attempt} tries): {type(exc).__name__}: {exc}") from None
                        log.warning("job %s: a replica died under frame %s; sending it again", job.id,
                                    tasks[index].frames[0].frame)
                        retries += 1
                        send(index, attempt + 1)
                        continue
                    for entry in worker.raise_if_error(out)["frames"]:
                        take.add(entry["frame"], entry["path"])
                        written += entry["written"]
                    replicas[out["replica"]] = replicas.get(out["replica"], 0) + 1
                    loads[out["replica"]] = out["loads"]
                    done += 1
                    frame = tasks[index].frames[0].frame
                    job.report(done / total, f"frame {frame} done on replica {out['replica']} ({done}/{total})",
                               frame=frame, frames=total, frames_done=done, replica=out["replica"])
        except BaseException:
            for _, _, response in running.values():
                response.cancel()          # queued tasks never start; running ones stop at their next step
            if running:
                finished, _ = await asyncio.wait(running, timeout=30)
                for future in finished:
                    future.exception()     # retrieved: they ended as cancelled, as asked
            raise
        return {"tasks": total, "retries": retries, "frames_written": written, "by_replica": replicas,
                "loads": loads, "seconds": round(time.monotonic() - started, 3)}


class GatewayEngine(Engine):
    """The gateway's engine: each model slot resolved (identity, family, adapters inspected: what submit-time
    checks, listings and policy read) with no pipeline loaded, and the pool it hands work to."""

    def __init__(self, config: ServerConfig):
        super().__init__(config)
        self.pool = Pool(config.pool)

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
        video = ModelSlot("video", self.config, "cpu", None)
        video.error = (errors.NOT_SUPPORTED, "extend does not run on the GPU pool: run it on a single server or as "
                                             "a farm job (bodydouble farm submit extend)")
        self.slots["video"] = video

    @property
    def operations(self) -> list[str]:
        return ["fill"]

    def describe(self) -> dict:
        return {**super().describe(), "pool": {"address": self.pool.address, "app": self.pool.app,
                                               "replicas": self.pool.replicas()}}


def gateway(config: ServerConfig) -> tuple[GatewayEngine, dict[str, Operation]]:
    """The engine and operations of a server whose work runs on the pool ``config.pool``."""
    def elsewhere(operation: str):
        def refuse(*_args):
            raise errors.RequestError(f"{operation} does not run on the GPU pool: run it on a single server or as a "
                                      f"farm job (bodydouble farm submit {operation})", code=errors.NOT_SUPPORTED)
        return Operation(refuse, lambda request, engine: refuse())

    return GatewayEngine(config), {
        "fill": Operation(lambda engine, job, req: engine.pool.run_fill(engine, job, req), OPERATIONS["fill"].validate,
                          beside=CONCURRENT_JOBS),
        "extend": elsewhere("extend"), "train": elsewhere("train")}
