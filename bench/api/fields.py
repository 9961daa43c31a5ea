"""The field rules of a method's or task's dataclass: declared choices and ranges, runtime state,
required hooks, and the mark that keeps a field added after runs were recorded out of their hash.
Checked on construction (`check_field_types`, `check_field_values`), so a wrong value fails before
any model is loaded."""

from __future__ import annotations

import functools
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Optional

from bench.errors import ConfigError


def required(hook):
    """Mark a hook every concrete subclass must define (checked when the subclass is defined)."""
    hook.__required_hook__ = True
    return hook


def missing_hooks(cls) -> list[str]:
    """The required hooks `cls` (with its bases and mixins) still leaves undefined."""
    return sorted(name for name in dir(cls) if getattr(getattr(cls, name, None), "__required_hook__", False))


def runtime(default: Any = MISSING, *, default_factory: Any = MISSING):
    """A method's runtime state (layers, budgets, counters, histories), set in `apply` or during
    training: a dataclass field outside `__init__`, repr and comparison, so a config can never set
    it and it is no hyperparameter (the run hash comes from the composed config, not the object)."""
    return field(
        default=default,
        default_factory=default_factory,
        init=False,
        repr=False,
        compare=False,
        metadata={"runtime": True},
    )


def _same_kind(a: Any, b: Any) -> bool:
    """bool is its own kind (True is not 1); int and float are one kind (1 is the float choice 1.0),
    as the type check lets an int stand for a float."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b)
    numbers = (int, float)
    return type(a) is type(b) or (isinstance(a, numbers) and isinstance(b, numbers))


@dataclass(frozen=True)
class Choices:
    """The values a field may take, listed in the error in this order. Equal and of the same type:
    True is no choice of 1. None passes when the field's type allows it (the type check rules on
    None)."""

    values: tuple

    def allows(self, value: Any) -> bool:
        return value is None or any(value == v and _same_kind(value, v) for v in self.values)

    def problem(self, key: str, value: Any, nullable: bool) -> str:
        listed = ", ".join(map(str, self.values)) + (", null" if nullable else "")
        return f"{key}={value!r} is not valid; choose one of: {listed}"


@dataclass(frozen=True)
class Range:
    """An interval of numbers a field may take; either end may be open or absent. None passes when
    the field's type allows it (the type check rules on None)."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False

    def allows(self, value: Any) -> bool:
        if value is None:
            return True
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def describe(self) -> str:
        if self.high is None:  # "x >= 1" reads better than "1 <= x"
            return f"x {'>' if self.low_open else '>='} {self.low}"
        lower = "" if self.low is None else f"{self.low} {'<' if self.low_open else '<='} "
        return f"{lower}x {'<' if self.high_open else '<='} {self.high}"

    def problem(self, key: str, value: Any, nullable: bool) -> str:
        return f"{key}={value!r} is out of range; valid: {self.describe()}{' or null' if nullable else ''}"


# Field metadata: the field was added after runs were recorded, and runs without it behaved as its
# default does; at that default it is left out of the run hash (bench.config.run_hash), so those
# runs keep their identity. Pass `hash_neutral=True` to choice / bounded, or give the metadata.
HASH_NEUTRAL = "hash_neutral"


def choice(*values: Any, default: Any = MISSING, hash_neutral: bool = False):
    """A field that takes one of `values`, e.g. `mode: str = choice("penalty", "proximal",
    default="proximal")`; checked on construction by `check_field_values`."""
    return field(default=default, metadata={"valid": Choices(values), HASH_NEUTRAL: hash_neutral})


def bounded(
    low: Optional[float] = None,
    high: Optional[float] = None,
    *,
    default: Any = MISSING,
    low_open: bool = False,
    high_open: bool = False,
    hash_neutral: bool = False,
):
    """A numeric field within [low, high] (an end None: unbounded; `low_open` / `high_open`: the end
    itself excluded), e.g. `sparsity: float = bounded(0.0, 1.0, default=0.5, low_open=True)`;
    checked on construction by `check_field_values`."""
    rule = Range(low, high, low_open, high_open)
    return field(default=default, metadata={"valid": rule, HASH_NEUTRAL: hash_neutral})


def hash_neutral_defaults(cls: type) -> dict[str, Any]:
    """{field: default} of `cls`'s fields marked HASH_NEUTRAL (the nearest class in the MRO that
    declares the field decides; a subclass that changes only the default keeps the mark)."""
    return dict(_hash_neutral_defaults(cls))


@functools.lru_cache(maxsize=None)
def _hash_neutral_defaults(cls: type) -> tuple:  # a report hashes every run: once per class
    out = {}
    for f in fields(cls):
        marked = any(
            (getattr(k, "__dataclass_fields__", {}).get(f.name) or field()).metadata.get(HASH_NEUTRAL)
            for k in cls.__mro__
        )
        if marked and f.default is not MISSING:
            out[f.name] = f.default
    return tuple(out.items())


def retired_keys(cls: type) -> dict[str, Any]:
    """{key: value} of the keys `cls` lists in its `retired` class variable and no longer declares
    as fields: removed fields, at the value the runs recorded before the removal had. The run hash
    keeps each at that value (bench.config.run_hash), so those runs keep their identity."""
    declared = {f.name for f in fields(cls)}
    return {k: v for k, v in getattr(cls, "retired", {}).items() if k not in declared}


def field_rule(cls: type, name: str) -> Optional[Choices | Range]:
    """The choices or range declared for field `name`, by the nearest class in `cls`'s MRO that
    declares one: a subclass that only changes a field's default keeps its base's rule."""
    for klass in cls.__mro__:
        declared = getattr(klass, "__dataclass_fields__", {}).get(name)
        if declared is not None and "valid" in declared.metadata:
            return declared.metadata["valid"]
    return None


def check_field_values(obj: Any, group: str) -> None:
    """Every declared choice and range, checked after the types: one message format, which lists
    what is valid."""
    hints = typing.get_type_hints(type(obj))
    problems = []
    for f in fields(obj):
        rule = field_rule(type(obj), f.name) if f.init else None
        value = getattr(obj, f.name)
        if rule is not None and not rule.allows(value):
            problems.append(rule.problem(f"{group}.{f.name}", value, _type_ok(None, hints[f.name])))
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(annotation) or (Any,)
        return isinstance(value, (list, tuple)) and all(_type_ok(v, inner) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def check_field_types(obj: Any, group: str) -> None:
    hints = typing.get_type_hints(type(obj))
    problems = []
    for f in fields(obj):
        if not f.init:  # runtime state, not config
            continue
        value = getattr(obj, f.name)
        if not _type_ok(value, hints[f.name]):
            problems.append(f"{group}.{f.name}={value!r}: expected {hints[f.name]}, got {type(value).__name__}")
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))
