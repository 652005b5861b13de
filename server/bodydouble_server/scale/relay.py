"""A pool job's events between the gateway and the Ray process running it (an extend on a replica, a training
task): progress, the take it opened, and the gateway's cancel.

The gateway opens one ``Channel`` (a small Ray actor, no CPU) per extend or train job and hands it to the work;
the work runs the server's own operation with a ``relay_job`` as its job, whose every ``report`` puts an event
into the channel and hears back whether the gateway asked to cancel, so a cancel lands at the next step, as on
a single server. The gateway drains the channel a few times a second (``take``). Nothing here streams through
Serve: Serve's streaming handles do not work over Ray Client (``ray://``), plain actor calls do.
"""
from __future__ import annotations

import logging
import threading

log = logging.getLogger("bodydouble.pool")

PUT_TIMEOUT = 30.0      # seconds a report waits on the channel before taking the gateway for gone


class Channel:
    """The actor: events in arrival order, and the gateway's cancel."""

    def __init__(self):
        self.events: list[dict] = []
        self.cancelled = False

    def put(self, event: dict) -> bool:
        """One event from the work; True once the gateway asked to cancel."""
        self.events.append(event)
        return self.cancelled

    def take(self, cancel: bool = False) -> list[dict]:
        """The events since the last call; ``cancel``: ask the work to stop at its next step."""
        self.cancelled = self.cancelled or cancel
        events, self.events = self.events, []
        return events


def open_channel():
    """A new channel actor (an ordinary Ray actor: it works through Ray Client too)."""
    import ray

    return ray.remote(num_cpus=0, max_restarts=0)(Channel).remote()


def relay_job(job_id: str, channel, cancel: threading.Event | None = None, replica: str | None = None):
    """What an operation calls on its job, relayed to the gateway through ``channel``. ``cancel``: an event the
    caller also sets (a replica's cancelled request); ``replica``: named in every progress event. A channel that
    cannot be reached (the gateway gone) stops the work as a cancel would."""
    import ray

    from .farm import ConsoleJob

    def put(event: dict) -> None:
        try:
            if ray.get(channel.put.remote(event), timeout=PUT_TIMEOUT):
                job.cancel_event.set()
        except Exception as exc:  # noqa: BLE001  (the gateway or its channel is gone: nobody waits for this work)
            log.warning("job %s: its gateway cannot be reached (%s: %s); stopping", job_id, type(exc).__name__, exc)
            job.cancel_event.set()

    class RelayJob(ConsoleJob):
        def opened_take(self, take) -> None:
            super().opened_take(take)
            put({"take": {"dir": str(take.dir), "number": take.number, "shot": take.shot, "label": take.label}})

    where = {"replica": replica} if replica else {}
    job = RelayJob(job_id, on_report=lambda body: put({"progress": {**body, **where}}))
    if cancel is not None:
        job.cancel_event = cancel
    return job


def placement(device: str | None = None) -> dict:
    """Where Ray placed this process's work: its resources, the GPUs Ray gave it (CUDA_VISIBLE_DEVICES) and the
    node. ``device``: the one the model runs on; a GPU Ray gave that torch cannot see is said once, loudly."""
    import os

    import ray

    context = ray.get_runtime_context()
    gpus = [str(g) for g in ray.get_gpu_ids()]
    if gpus and device is not None and not str(device).startswith("cuda"):
        log.warning("Ray gave this process GPU %s (CUDA_VISIBLE_DEVICES=%s) but torch sees no CUDA device: the "
                    "model runs on the CPU", ",".join(gpus), os.environ.get("CUDA_VISIBLE_DEVICES"))
    return {"resources": context.get_assigned_resources(), "gpu_ids": gpus,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "node": context.get_node_id()}
