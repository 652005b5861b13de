"""Malformed and mutated BodyDouble messages, for the socket fuzz test and bench/fuzz_soak.py (one generator)."""
from __future__ import annotations

import json
import random
from typing import Iterator

from bodydouble import protocol

# Light requests only: a mutation of one can never start a job, so every message gets exactly one reply.
_TEMPLATES = [("hello", {"client": "fuzz"}), ("heartbeat", {}), ("list_adapters", {}),
              ("status", {"job": "job-x-1"}), ("cancel", {"job": "job-x-2"}), ("follow", {"job": "job-x-3"})]
_ODD_VALUES = [None, True, 1.5, "x" * 200, [], {"a": [1]}, -1, 2**70, "", "submit"]


def request(mtype: str, rid: str, body: dict | None = None) -> list[bytes]:
    return [bytes(f) for f in protocol.encode(protocol.Message(type=mtype, id=rid, body=body or {}))]


def mutations(rng: random.Random, count: int) -> Iterator[list[bytes]]:
    """``count`` messages: random frames, flipped header bytes, truncated headers, extra frames, odd header values,
    and (one in seven) the valid message itself."""
    templates = [request(mtype, f"{mtype[0]}1", body) for mtype, body in _TEMPLATES]
    for i in range(count):
        frames = list(rng.choice(templates))
        kind = i % 7
        if kind == 0:
            frames = [rng.randbytes(rng.randint(0, 40)) for _ in range(rng.randint(0, 4))] or [b""]
        elif kind == 1:
            header = bytearray(frames[1])
            for _ in range(rng.randint(1, 6)):
                header[rng.randrange(len(header))] = rng.randrange(256)
            frames[1] = bytes(header)
        elif kind == 2:
            frames[1] = frames[1][: rng.randrange(len(frames[1]))]
        elif kind == 3:
            frames.append(rng.randbytes(rng.randint(0, 64)))
        elif kind == 4:
            header = json.loads(frames[1])
            header[rng.choice(["protocol", "type", "id", "body", "buffers"])] = rng.choice(_ODD_VALUES)
            frames[1] = json.dumps(header).encode()
        elif kind == 5:
            depth = rng.choice([10, 1000, 10_000])
            frames[1] = b'{"protocol": 1, "type": "hello", "id": "d", "body": {"client": ' + b"[" * depth + \
                b"]" * depth + b"}}"
        yield frames
