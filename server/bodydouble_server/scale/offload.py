"""Training off the interactive server: a train job runs in its own worker process, so fill and extend keep
answering while an adapter trains.

The server's job manager runs train jobs beside its worker thread (one at a time: two trainings side by side
starve each other), and this runner starts ``python -m bodydouble_server.scale.offload``: a process that loads
the base model itself and runs the server's own train operation (``operations/train.py``) on the request.
Progress comes back as lines on its stdout (``BODYDOUBLE {json}``), a cancel goes down its stdin (the
training checkpoints and stops, as in the server), and the end is one ``result`` or ``error`` line. When the
adapter is published the server rescans, so it is listed and resident at once; pool replicas find it on their
next load of it. The price: the training process holds its own copy of the base model (GPU memory).

On a GPU pool the same operation runs as a Ray task (``train_task``, started by pool.py with a replica's
resources), relayed to the gateway through a channel (relay.py) instead of stdin/stdout.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading

from bodydouble import codec, errors, protocol
from bodydouble.jobspec import TrainRequest

from .worker import error_reply, raise_if_error

log = logging.getLogger("bodydouble.offload")

MARK = "BODYDOUBLE "        # the prefix of this protocol's lines (libraries may print their own)


def run_train(engine, job, req: TrainRequest) -> protocol.Message:
    """The server's train runner: the operation in a child process, relayed as this job."""
    import dataclasses

    buffers: list = []
    body = codec.to_wire(req, buffers, [])
    config = {f.name: getattr(engine.config, f.name) for f in dataclasses.fields(engine.config)
              if f.name not in ("limits", "pool")}
    config["limits"] = dataclasses.asdict(engine.config.limits)
    child = subprocess.Popen([sys.executable, "-m", "bodydouble_server.scale.offload"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=None, text=True, bufsize=1)
    child.stdin.write(json.dumps({"config": config, "request": body, "job": job.id}) + "\n")
    child.stdin.flush()

    ended = threading.Event()

    def cancel_when_asked() -> None:
        while not ended.wait(0.1):
            if job.cancel_event.is_set():
                try:
                    child.stdin.write("cancel\n")
                    child.stdin.flush()
                except (BrokenPipeError, ValueError, OSError):
                    pass
                return

    threading.Thread(target=cancel_when_asked, name=f"{job.id}-cancel", daemon=True).start()
    final = None
    try:
        for line in child.stdout:
            if not line.startswith(MARK):
                continue
            message = json.loads(line[len(MARK):])
            if "progress" in message:
                progress = message["progress"]
                job.report(progress.pop("fraction"), progress.pop("message", ""),
                           **{k: v for k, v in progress.items() if k not in ("job", "seq")})
            else:
                final = message
    finally:
        if child.poll() is None and final is None:
            child.kill()
        child.wait()
        ended.set()
    if final is None:
        raise errors.JobFailed(f"the training process of job {job.id} ended without a result "
                               f"(exit status {child.returncode})")
    return protocol.Message(type="result", id=job.request_id, body=published(engine, raise_if_error(final)["result"]))


def published(engine, result: dict) -> dict:
    """A training's result once its adapter is published elsewhere (a child process, a pool task): this
    server rescans, so the adapter is listed (and resident) at once, and the result says its status here."""
    if not result.get("report_only"):
        engine.rescan()
        library = engine.model(result.get("model_kind", "image")).adapters     # the model the adapter is for
        adapter = library.adapters.get(result.get("adapter", ""))
        if adapter is not None:
            result.update(adapter_status=adapter.status, adapter_reason=adapter.reason)
    return result


def train_here(config, request: TrainRequest, job) -> dict:
    """The server's own train operation in this process (a training process, a pool's training task), on a
    base model it loads itself: ``{"result": body}`` or an ``error_reply``, never a raised exception."""
    from ..engine import Engine
    from ..jobs import Cancelled
    from ..operations import train

    try:
        engine = Engine(config)
        engine.load()
        return {"result": train.run_train(engine, job, request).body}
    except errors.BodyDoubleError as exc:
        return error_reply(exc)
    except Cancelled:
        return error_reply(errors.JobCancelled(f"job {job.id} cancelled"))
    except Exception as exc:  # noqa: BLE001  (reported to the server, which fails the job with it)
        log.exception("training failed")
        return error_reply(errors.JobFailed(f"{type(exc).__name__}: {exc}"))


def train_task(config, request: TrainRequest, job_id: str, channel) -> dict:
    """A pool's training task (a Ray task with the resources of a replica, pool.py): ``train_here`` with
    progress, cancel and the end relayed to the gateway through ``channel``."""
    from .relay import placement, relay_job

    logging.basicConfig(level=logging.WARNING)
    job = relay_job(job_id, channel)
    job.report(0.0, "training task started", phase="start", **placement())
    return train_here(config, request, job)


def _child() -> int:
    """The training process: one request on stdin, progress and the end on stdout, "cancel" on stdin."""
    from bodydouble import protocol as wire

    from ..config import ServerConfig
    from .farm import ConsoleJob

    def say(message: dict) -> None:
        sys.stdout.write(MARK + json.dumps(message) + "\n")
        sys.stdout.flush()

    spec = json.loads(sys.stdin.readline())
    config = dict(spec["config"])
    limits = config.pop("limits")
    job = ConsoleJob(spec["job"], on_report=lambda body: say({"progress": body}))

    def listen() -> None:       # "cancel", or the server gone (end of input): stop at the next step
        for line in sys.stdin:
            if line.strip() == "cancel":
                break
        job.cancel_event.set()

    threading.Thread(target=listen, name="cancel", daemon=True).start()
    try:
        settings = ServerConfig(**config, limits=wire.Limits(**limits))
        request = codec.from_wire(TrainRequest, spec["request"], [])
    except errors.BodyDoubleError as exc:
        say(error_reply(exc))
    except Exception as exc:  # noqa: BLE001  (what the server sent cannot be used: say so rather than die)
        say(error_reply(errors.JobFailed(f"{type(exc).__name__}: {exc}")))
    else:
        say(train_here(settings, request, job))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(_child())
