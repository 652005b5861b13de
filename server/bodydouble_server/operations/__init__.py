"""One module per operation: ``run_<op>(engine, job, request)`` on the worker, ``validate(request, engine)``
at submit time on the socket loop (before ``accepted``; see ``common``). ``OPERATIONS`` maps a name to both."""
from dataclasses import dataclass
from typing import Callable

from ..scale import offload
from . import extend, fill, train


@dataclass(frozen=True)
class Operation:
    run: Callable       # (engine, job, request) -> final protocol.Message; the worker thread
    validate: Callable  # (request, engine) -> None or raises RequestError; the socket loop, before accepted
    beside: int = 0     # > 0: run beside the worker thread, so other jobs keep running; at most this many at once
    # Set: a job a killed server had accepted is taken up again at the next start (server.resume_jobs);
    # (request, engine) -> what it resumes from, for status and the log.
    resume: Callable | None = None


OPERATIONS = {"extend": Operation(extend.run_extend, extend.validate),
              "fill": Operation(fill.run_fill, fill.validate),
              # Training runs in its own process (scale/offload.py) so fill and extend keep answering meanwhile.
              "train": Operation(train.answering_from_published(offload.run_train), train.validate, beside=1, resume=train.resume_point)}
