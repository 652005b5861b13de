"""One generic, strict codec between typed request dataclasses and (JSON dict, buffers).

Arrays inside a request become ``{"buffer": i}`` indices into the message's buffer list, the
same shape as the wire (JSON header + raw buffers). Decoding is strict: unknown fields,
missing fields and wrong types are errors, so a typo in a host never silently does nothing.
Range checks live beside each type, in its ``validate()``.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Union

import numpy as np

from . import errors


def _invalid(path: str, message: str) -> errors.RequestError:
    return errors.RequestError(f"{path}: {message}" if path else message, code=errors.INVALID_REQUEST)


def to_wire(obj: Any, buffers: list[np.ndarray], meanings: list[str], path: str = "") -> Any:
    """Plain JSON value for ``obj``; arrays are appended to ``buffers``."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_wire(getattr(obj, f.name), buffers, meanings, f"{path}.{f.name}".lstrip("."))
            for f in dataclasses.fields(obj)
            if not f.metadata.get("local")
        }
    if isinstance(obj, np.ndarray):
        buffers.append(obj)
        meanings.append(path)
        return {"buffer": len(buffers) - 1}
    if isinstance(obj, (list, tuple)):
        return [to_wire(v, buffers, meanings, f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        return {k: to_wire(v, buffers, meanings, f"{path}.{k}") for k, v in obj.items()}
    return obj


def from_wire(cls: type, data: Any, buffers: list[np.ndarray], path: str = "") -> Any:
    """Build and validate a ``cls`` instance from a JSON value, taking arrays from ``buffers``."""
    value = _decode(cls, data, buffers, path)
    return value


def _decode(tp: Any, data: Any, buffers: list[np.ndarray], path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if data is None and type(None) in options:
            return None
        problems = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _decode(option, data, buffers, path)
            except errors.RequestError as exc:
                problems.append(exc)
        if len(problems) == 1:          # Optional[X]: X's own error already names the field
            raise problems[0]
        # Each option's error already starts with the path: join them as they are, not under it again.
        raise errors.RequestError(" / ".join(str(p) for p in problems) or f"{path}: must not be null",
                                  code=errors.INVALID_REQUEST)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(data, list):
            raise _invalid(path, f"expected a list, got {type(data).__name__}")
        return [_decode(item, v, buffers, f"{path}[{i}]") for i, v in enumerate(data)]
    if origin is dict:
        if not isinstance(data, dict):
            raise _invalid(path, f"expected an object, got {type(data).__name__}")
        return dict(data)
    if dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, data, buffers, path)
    if tp is np.ndarray:
        if not (isinstance(data, dict) and set(data) == {"buffer"} and type(data["buffer"]) is int):
            raise _invalid(path, 'expected a buffer reference {"buffer": index}')
        index = data["buffer"]
        if not 0 <= index < len(buffers):
            raise _invalid(path, f"buffer {index} was not sent (message has {len(buffers)})")
        return buffers[index]
    if tp is float:
        if type(data) not in (int, float):
            raise _invalid(path, f"expected a number, got {type(data).__name__}")
        return float(data)
    if tp in (int, str, bool):
        if type(data) is not tp:
            raise _invalid(path, f"expected {tp.__name__}, got {type(data).__name__}")
        return data
    if tp is Any:
        return data
    raise TypeError(f"codec cannot decode {tp!r}")  # a programming error, not bad input


def _decode_dataclass(cls: type, data: Any, buffers: list[np.ndarray], path: str) -> Any:
    if not isinstance(data, dict):
        raise _invalid(path, f"expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("local")}
    unknown = set(data) - set(fields)
    if unknown:
        raise _invalid(path, f"unknown fields {sorted(unknown)}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        where = f"{path}.{name}".lstrip(".")
        if name in data:
            kwargs[name] = _decode(hints[name], data[name], buffers, where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise _invalid(where, "is required")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except ValueError as exc:
            raise _invalid(path, str(exc)) from None
    return obj
