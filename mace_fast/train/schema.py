"""A small typed-dataclass validator: turns nested dicts (from YAML) into dataclasses.

Every error is a :class:`ConfigError` whose message starts with the dotted key at fault
(``optim.lr: expected a number, got 'fast'``); unknown keys get the closest valid key
as a suggestion (difflib).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Dict, Iterator, List, Literal, Tuple, Union, get_args, get_origin

__all__ = ["ConfigError", "MISSING", "build", "dotted_fields", "to_dict", "suggest"]

MISSING = dataclasses.MISSING


class ConfigError(ValueError):
    """A bad training configuration; the message names the key (and the file)."""


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is type(None):
        return "null"
    if tp is bool:
        return "a boolean"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin is Union:
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, List):
        return f"a list of {_type_name(get_args(tp)[0]).replace('a ', '').replace('an ', '')}s"
    if origin in (dict, Dict):
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping (section)"
    return str(tp)


def suggest(word: str, choices: List[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against the annotation ``tp``; ints are accepted for floats."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if origin is Union:
        errors = []
        for option in get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(error)
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        if value in choices and type(value) is type(next(c for c in choices if c == value)):
            return value
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}{suggest(value, list(choices))}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin in (list, List):
        if isinstance(value, (list, tuple)):
            (item,) = get_args(tp)
            return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin in (dict, Dict):
        if isinstance(value, dict):
            key_tp, item = get_args(tp)
            return {_coerce(k, key_tp, f"{key} key"): _coerce(v, item, f"{key}.{k}") for k, v in value.items()}
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return build(tp, value, key)
    else:  # pragma: no cover - a schema bug, not a user error
        raise TypeError(f"unsupported annotation {tp!r} for {key}")
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def build(cls: type, data: Dict[str, Any], prefix: str = "") -> Any:
    """Instantiate dataclass ``cls`` from ``data``, validating every field recursively."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    where = f"{prefix}." if prefix else ""
    for name in data:
        if name not in fields:
            raise ConfigError(f"{where}{name}: unknown key{suggest(name, list(fields))}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], f"{where}{name}")
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(f"{where}{name}: missing required key")
    return cls(**kwargs)


def dotted_fields(cls: type, prefix: str = "") -> Iterator[Tuple[str, dataclasses.Field, Any]]:
    """Every leaf field of a nested dataclass schema as ``(dotted key, field, annotation)``."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from dotted_fields(tp, key + ".")
        else:
            yield key, f, tp


def to_dict(obj: Any) -> Any:
    """Nested dataclass -> plain dicts/lists (YAML- and weights-only-safe)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
