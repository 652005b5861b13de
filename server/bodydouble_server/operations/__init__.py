"""One module per operation: ``run_<op>(engine, job, request)`` on the worker, ``validate(request, engine)``
at submit time on the socket loop (before ``accepted``; see ``common``). ``OPERATIONS`` maps a name to both."""
from dataclasses import dataclass
from typing import Callable

from . import extend, fill, train


@dataclass(frozen=True)
class Operation:
    run: Callable       # (engine, job, request) -> final protocol.Message; the worker thread
    validate: Callable  # (request, engine) -> None or raises RequestError; the socket loop, before accepted


OPERATIONS = {"extend": Operation(extend.run_extend, extend.validate),
              "fill": Operation(fill.run_fill, fill.validate),
              "train": Operation(train.run_train, train.validate)}
