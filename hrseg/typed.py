"""Typed dataclasses from plain JSON values: each value checked against its field's annotation.

Configs are JSON documents (a run's ``config.json``, a TOML file, ``--set``);
this turns one back into nested dataclasses, with lists as tuples and ints as
floats where the annotation says so, and a one-line error naming the key
(``optim.lr: expected a number, got "x"``) for anything else.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Union, get_args, get_origin, get_type_hints

from hrseg.errors import HrsegError


def to_jsonable(obj: Any) -> Any:
    """Tuples as lists, recursively: what ``json.dumps`` writes and ``from_dict`` reads back."""
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj


class _Mismatch(Exception):
    pass


def _type_name(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is tuple:
        plural = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}.get(args[0], "values")
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {plural}"
        return f"a list of {len(args)} {plural}"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` as the annotated type (lists -> tuples, ints -> floats), or _Mismatch."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                try:
                    return _coerce(value, arg)
                except _Mismatch:
                    continue
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_coerce(v, a) for v, a in zip(value, args))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    raise TypeError(f"config field type {hint!r} is not supported")


def from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    """Rebuild a (nested) dataclass; unknown keys and wrong types are errors naming the key."""
    if not isinstance(data, dict):
        raise HrsegError(f"{where}: expected an object (a section of fields), got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise HrsegError(f"{where}: unknown key(s) {', '.join(unknown)}")
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where != "config" else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_dict(typing.cast(type, hint), value, key)
            continue
        try:
            kwargs[name] = _coerce(value, hint)
        except _Mismatch:
            raise HrsegError(f"{key}: expected {_type_name(hint)}, got {json.dumps(value)}") from None
    return cls(**kwargs)
