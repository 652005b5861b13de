"""The Ray Serve application of a BodyDouble GPU pool: replicas that each own a GPU and keep adapters resident.

Deploy it with Serve's own tools (docs/scale-out.md), on a cluster whose nodes see the same shared storage::

    serve run --name bodydouble bodydouble_server.scale.serve_app:build_app config=/studio/bodydouble/server.toml replicas=4

Each replica is a ``worker.FrameWorker``: the base model loaded once, and the adapter sets it is asked for kept
resident with ``@serve.multiplexed`` (model id = the request's adapter set, ``worker.model_id``), so Serve routes
a request to a replica that already holds its adapters and evicts the least recently used set past
``max_adapters``. A replica renders one frame at a time (``max_ongoing_requests=1``: one GPU); Serve's router
queues the rest. A cancelled request (``DeploymentResponse.cancel()``) stops its frame at the next denoising
step. An extend is one request (its chunks condition on each other) run whole by one replica, whose video model
loads on the first one; its progress and cancel travel through the gateway's channel (relay.py). Errors come
back as data (code, message), never as pickled exceptions.
"""
from __future__ import annotations

import asyncio
import os
import threading

from bodydouble import errors

from .relay import placement
from .worker import FrameWorker, TakeRef, adapter_names, error_reply

APP = "bodydouble"                  # the Serve application name the gateway looks up
DEPLOYMENT = "BodyDoubleReplica"


class _Held:
    """A multiplexed "model": an adapter set of one model kind held resident on this replica until Serve
    evicts it."""

    def __init__(self, replica, kind: str, names: list[str]):
        self.replica, self.kind, self.names, self._released = replica, kind, names, False

    def __del__(self):                # Serve calls it on eviction (in a thread); the GC may call it again
        if not self._released:
            self._released = True
            with self.replica.worker.lock:
                self.replica.worker.release(self.names, self.kind)


def replica_class(max_adapters: int):
    """The replica class, with its multiplexing limit (``serve.multiplexed`` takes it at class creation)."""
    from ray import serve

    class BodyDoubleReplica:
        def __init__(self, config_path: str | None, settings: dict):
            from ..config import ServerConfig

            context = serve.get_replica_context()
            self.id = getattr(getattr(context, "replica_id", None), "unique_id", None) or str(context.replica_tag)
            self.worker = FrameWorker(ServerConfig.load(config_path, **settings), name=f"replica-{self.id}")
            self.placement = placement(self.worker.engine.device)

        async def _locked(self, fn, *args, cancel: threading.Event | None = None):
            """``fn`` on a thread holding the worker's lock: one pipeline call at a time, and the event loop free
            to take a cancel. A cancelled call waits for the thread to stop (at its next step) before ending."""
            def run():
                with self.worker.lock:
                    if cancel is not None and cancel.is_set():
                        return None
                    return fn(*args)

            work = asyncio.ensure_future(asyncio.to_thread(run))
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                if cancel is not None:
                    cancel.set()
                await asyncio.wait([work])
                raise

        @serve.multiplexed(max_num_models_per_replica=max_adapters)
        async def _adapters(self, model: str) -> _Held:
            kind, names = adapter_names(model)
            await self._locked(self.worker.hold, names, kind)
            return _Held(self, kind, names)

        async def fill(self, take: TakeRef, request) -> dict:
            """Render a fill request's frames (a task of a larger job) into ``take``."""
            from ..jobs import Cancelled

            cancel = threading.Event()

            def on_step(frame: int, step: int, steps: int) -> None:
                if cancel.is_set():
                    raise Cancelled()

            try:
                await self._adapters(serve.get_multiplexed_model_id())
                frames = await self._locked(self.worker.fill, take, request, on_step, cancel=cancel)
            except errors.BodyDoubleError as exc:
                return error_reply(exc)
            return {"frames": frames, "replica": self.id, "pid": os.getpid(), "loads": self.worker.loads}

        async def extend(self, request, job: str, channel) -> dict:
            """Run an extend request (a whole job: its chunks condition on each other) as ``job``, relayed to
            the gateway through ``channel`` (relay.py): progress, its take, cancel."""
            from .relay import relay_job

            cancel = threading.Event()
            try:
                await self._adapters(serve.get_multiplexed_model_id())
            except errors.BodyDoubleError as exc:
                return error_reply(exc)
            out = await self._locked(self.worker.extend, request, relay_job(job, channel, cancel, self.id),
                                     cancel=cancel)
            return {**(out or error_reply(errors.JobCancelled(f"job {job} cancelled"))), "replica": self.id,
                    "pid": os.getpid()}

        async def describe(self) -> dict:
            info = await self._locked(self.worker.describe)
            return {**info, "replica": self.id, **self.placement}

        async def listing(self) -> list[dict]:
            return await self._locked(self.worker.listing)

    return BodyDoubleReplica


def build_app(args: dict):
    """Serve's application builder (``serve run ...:build_app key=value``, or ``args:`` in a Serve config file).

    ``config``: the server TOML the replicas load (model, adapters, roots: paths on shared storage);
    ``settings``: overrides of it (a dict); ``replicas`` (default 1); ``gpus`` per replica (default 1; 0 for
    CPU replicas); ``cpus`` per replica (default 1); ``max_adapters``: adapter sets resident per replica
    (default 8); ``env``: environment variables of the replicas (a dict)."""
    from ray import serve

    settings = dict(args.get("settings") or {})
    options = {"num_gpus": float(args.get("gpus", 1)), "num_cpus": float(args.get("cpus", 1))}
    if args.get("env"):
        options["runtime_env"] = {"env_vars": {k: str(v) for k, v in dict(args["env"]).items()}}
    deployment = serve.deployment(
        replica_class(int(args.get("max_adapters", 8))), name=DEPLOYMENT, num_replicas=int(args.get("replicas", 1)),
        max_ongoing_requests=1, ray_actor_options=options)
    return deployment.bind(args.get("config"), settings)
