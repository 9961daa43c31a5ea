"""`--where` filters of bench.report.

`key=v1,v2` keeps the runs whose key equals one of the values, `key!=v1,v2` keeps the others;
several filters must all hold. A key is a column of runs.csv (model, task, method, sparsity, seed,
status, device, ...) or a path into the run's config (method.r, train.max_steps, task.train_source).
Filters are parsed with one regular expression and compared as values, never evaluated: a filter
cannot run code.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_FILTER = re.compile(r"^\s*(?P<key>[A-Za-z_][A-Za-z0-9_.\-]*)\s*(?P<op>!=|=)(?P<values>.*)$")
_NULL = ("none", "null")
_ABSENT = object()  # the key does not exist for this run: matches no value
SYNTAX = "key=value, key=v1,v2 or key!=value (e.g. method=lora, task!=gsm8k, method.r=8,16)"


class WhereError(ValueError):
    """A --where filter that cannot be used; the message says what is valid."""


@dataclass(frozen=True)
class Where:
    key: str
    negate: bool
    values: tuple[str, ...]

    def matches(self, value) -> bool:
        return any(_equal(value, wanted) for wanted in self.values) != self.negate

    def __str__(self) -> str:
        return f"{self.key}{'!=' if self.negate else '='}{','.join(self.values)}"


def parse(text: str) -> Where:
    match = _FILTER.match(text)
    if not match or "==" in text or any(c in text for c in "<>"):
        raise WhereError(f"--where {text!r} is not a filter; write {SYNTAX}. Only = and != are supported")
    values = tuple(v.strip() for v in match["values"].split(","))
    if any(v == "" for v in values):
        raise WhereError(f"--where {text!r} has an empty value; write {SYNTAX}")
    return Where(match["key"], match["op"] == "!=", values)


def lookup(row: dict, config: dict, key: str):
    """A runs.csv column first (its derived values, e.g. sparsity), else a config path."""
    if key in row:
        return row[key]
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def select(rows: list[dict], configs: list[dict], filters: list[Where]) -> list[int]:
    """Indices of the runs every filter keeps. A key that no run has is an error, not an empty table."""
    for f in filters:
        if rows and all(lookup(r, c, f.key) is _ABSENT for r, c in zip(rows, configs)):
            columns = ", ".join(k for k in rows[0] if k not in ("path", "error"))
            raise WhereError(
                f"--where key '{f.key}' is not a column of the runs table ({columns}) "
                f"nor a config path of any run (e.g. method.r, train.max_steps)"
            )
    return [i for i, (r, c) in enumerate(zip(rows, configs)) if all(f.matches(lookup(r, c, f.key)) for f in filters)]


def _equal(value, wanted: str) -> bool:
    if value is _ABSENT:
        return False
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return wanted.lower() in _NULL
    if isinstance(value, bool):
        return wanted.lower() == str(value).lower()
    if isinstance(value, (int, float)):
        try:
            return math.isclose(value, float(wanted), rel_tol=1e-9, abs_tol=1e-12)
        except ValueError:
            return False
    return str(value) == wanted
