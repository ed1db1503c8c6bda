"""JSON values, typed: what crosses a process boundary or lands in a result file.

The core has no untyped value: a message's payload, an event's data, a record of an
appliance are :data:`Json`, and whoever reads a number or a text out of one says what it
expects (:func:`number`, :func:`text`), so a payload of the wrong shape is an error that
names the key, not a ``TypeError`` three calls later.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping, Sequence
from typing import TypeAlias, TypeVar, Union, cast

Json: TypeAlias = Union[  # noqa: UP007 (a recursive alias is a string's union)
    bool, int, float, str, Sequence["Json"], Mapping[str, "Json"], None]
"""Read-only views (``Sequence``, ``Mapping``): a ``dict[str, int]`` is JSON too."""
JsonObject: TypeAlias = dict[str, Json]
"""A JSON object being written."""
T = TypeVar("T")


class JsonShapeError(ValueError):
    """JSON data that is not what the reader expects; the message names the field."""


def number(data: Mapping[str, Json], key: str, default: float | None = None) -> float:
    """``data[key]`` as a number (``default`` when it is missing)."""
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key}: expected a number, got {value!r}")
    return float(value)


def text(data: Mapping[str, Json], key: str, default: str = "") -> str:
    """``data[key]`` as text (``default`` when it is missing; other scalars as written)."""
    value = data.get(key, default)
    if not isinstance(value, str | int | float | None):
        raise ValueError(f"{key}: expected text, got {value!r}")
    return default if value is None else str(value)


def from_json(cls: type[T], raw: Json, where: str = "") -> T:
    """The ``cls`` that :func:`to_json` wrote: an unknown key, a missing key (with no
    default) or a value of the wrong type raises :class:`JsonShapeError` naming it."""
    return cast(T, _dataclass(cls, raw, where or cls.__name__))


def to_json(value: object) -> Json:
    """A dataclass (or any value in one) as JSON data: fields by name, tuples as lists,
    enumerations by value; a class with its own ``to_record`` writes itself."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        record = getattr(value, "to_record", None)
        if callable(record):
            return cast(Json, record())
        return fields_json(value)
    if isinstance(value, enum.Enum):
        return cast(Json, value.value)
    if isinstance(value, tuple | list):
        return [to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot encode {type(value).__name__} {value!r}")


def fields_json(value: object) -> JsonObject:
    """A dataclass's fields as a JSON object (what ``to_record`` methods build on)."""
    assert dataclasses.is_dataclass(value) and not isinstance(value, type)
    return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}


def _dataclass(cls: type, raw: object, where: str) -> object:
    if not isinstance(raw, dict):
        raise JsonShapeError(f"{where}: expected an object, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise JsonShapeError(f"{where}: unknown key {unknown[0]!r} (known: "
                          f"{', '.join(fields)})")
    values = {}
    for name, f in fields.items():
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise JsonShapeError(f"{where}: missing key {name!r}")
            continue
        values[name] = _value(hints[name], raw[name], f"{where}.{name}")
    return cls(**values)


def _value(tp: object, raw: object, where: str) -> object:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType) and {bool, int, float, str} <= set(args):
        return raw  # Json itself: what json.loads gave is kept as it is
    if origin in (Union, types.UnionType):
        if raw is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _value(options[0], raw, where)
        raise JsonShapeError(f"{where}: a union of several types cannot be decoded")
    if origin is tuple:
        if not isinstance(raw, list):
            raise JsonShapeError(f"{where}: expected a list, got {type(raw).__name__}")
        return tuple(_value(args[0], v, f"{where}[{i}]") for i, v in enumerate(raw))
    if origin in (Mapping, dict):
        if not isinstance(raw, dict):
            raise JsonShapeError(f"{where}: expected an object, got {type(raw).__name__}")
        return {str(k): _value(args[1], v, f"{where}[{k!r}]") for k, v in raw.items()}
    if isinstance(tp, type):
        return _typed(tp, raw, where)
    raise JsonShapeError(f"{where}: no decoder for {tp!r}")


def _typed(tp: type, raw: object, where: str) -> object:
    record = getattr(tp, "from_record", None)
    if callable(record):
        if not isinstance(raw, dict):
            raise JsonShapeError(f"{where}: expected an object, got {type(raw).__name__}")
        try:
            return record(raw)
        except (ValueError, TypeError, KeyError) as exc:
            raise JsonShapeError(f"{where}: {exc}") from None
    if dataclasses.is_dataclass(tp):
        return _dataclass(tp, raw, where)
    if issubclass(tp, enum.Enum):
        try:
            return tp(raw)
        except ValueError:
            raise JsonShapeError(f"{where}: {raw!r} is not one of "
                                 f"{', '.join(str(m.value) for m in tp)}") from None
    if tp is float and isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    if tp is int and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if tp in (str, bool) and type(raw) is tp:
        return raw
    raise JsonShapeError(f"{where}: expected {tp.__name__}, got {type(raw).__name__} {raw!r}")
