"""Command-line flags generated from a dataclass's fields, and the dataclass built back from the parsed flags.

One loop over the fields, so an option is written once (in its dataclass: ``TrainOptions``, ``ServerConfig``)
and every command that takes it gets the flag, its type and its default. What a flag needs beyond the field
(help text, another name, ``required``, ``choices``) is passed as a ``Flag`` override.

A field becomes:  ``int``/``float``/``str`` (optionally ``None``): ``--field-name VALUE``;
``bool`` default False: ``--field-name``; ``bool`` default True: ``--no-field-name``;
``list[str]``: ``--field-name`` repeated (``action="append"``). Fields of any other type (nested settings
tables such as ``ServerConfig.limits``) get no flag: they live in the config file.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

_SCALARS = (int, float, str)


@dataclass(frozen=True)
class Flag:
    """How one field appears on the command line, where the generated default is not enough."""

    help: str | None = None
    name: str | None = None         # the flag without dashes (default: the field name, '_' -> '-')
    positional: bool = False        # a positional argument (a list field: nargs="+")
    required: bool = False
    choices: tuple | None = None
    skip: bool = False              # no flag for this field


def _kind(hint) -> tuple[str, type | None]:
    """('scalar', type) | ('bool', bool) | ('list', item type) | ('other', None), looking through Optional."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    if hint is bool:
        return "bool", bool
    if hint in _SCALARS:
        return "scalar", hint
    if typing.get_origin(hint) is list and typing.get_args(hint)[0] in _SCALARS:
        return "list", typing.get_args(hint)[0]
    return "other", None


def field_flags(cls) -> dict[str, tuple[dataclasses.Field, str, type | None]]:
    """The fields of ``cls`` that can be flags: name -> (field, kind, type)."""
    hints = typing.get_type_hints(cls)
    found = {}
    for f in dataclasses.fields(cls):
        kind, typ = _kind(hints[f.name])
        if kind != "other" and f.init:
            found[f.name] = (f, kind, typ)
    return found


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def add_fields(parser: argparse.ArgumentParser, cls, flags: dict[str, Flag] | None = None, *,
               defaults: bool = True, only: typing.Iterable[str] | None = None) -> list[str]:
    """Add a flag per field of ``cls`` (``only`` those named, if given); returns the field names added.

    ``defaults=False``: every flag defaults to None ("not given"), for commands that layer flags over a
    config file (``ServerConfig.load`` overrides only what is not None)."""
    flags = flags or {}
    added = []
    for name, (f, kind, typ) in field_flags(cls).items():
        spec = flags.get(name, Flag())
        if spec.skip or (only is not None and name not in only):
            continue
        default = _default(f) if defaults else None
        flag = (spec.name or name).replace("_", "-")
        option = "--" + flag
        shown = _default(f)
        note = "" if kind == "bool" or shown in (None, "", []) else f"default {shown}"
        extra: dict[str, Any] = {"help": f"{spec.help} ({note})" if spec.help and note else spec.help or note or None}
        if kind in ("scalar", "list") and not spec.positional:
            extra["metavar"] = flag.upper().replace("-", "_")
        if spec.choices:
            extra["choices"] = spec.choices
        if spec.positional:
            parser.add_argument(name, nargs="+" if kind == "list" else None, type=typ, **extra)
        elif kind == "bool" and (default is True):
            parser.add_argument("--no-" + (spec.name or name).replace("_", "-"), dest=name, action="store_false",
                                **extra)
        elif kind == "bool":
            parser.add_argument(option, dest=name, action="store_true", default=default, **extra)
        elif kind == "list":
            parser.add_argument(option, dest=name, action="append", type=typ, default=None, **extra)
        else:
            parser.add_argument(option, dest=name, type=typ, default=default, required=spec.required, **extra)
        added.append(name)
    return added


def values(cls, args: argparse.Namespace, **changes) -> dict:
    """The parsed flags of ``cls``'s fields (those the parser has), with ``changes`` applied: ``cls(**values)``."""
    found = {name: getattr(args, name) for name in field_flags(cls) if hasattr(args, name)}
    return found | changes
