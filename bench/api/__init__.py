"""The two contracts the runner knows, Method and Task, and the field rules their dataclasses use.

A method or task is a dataclass built by Hydra from `conf/<group>/<name>.yaml` (`_target_`). Its
fields are its hyperparameters; their types, choices and ranges are checked on construction, so a
wrong value fails before any model is loaded. The runner calls only what is defined here and never
names a concrete method or task.

- method.py: `Method` (its hooks in lifecycle order), `Change` (what after_step reports),
  `Mechanism` (how far a method's own mechanism acted in a run);
- task.py: `Task`;
- fields.py: `choice`, `bounded`, `runtime`, `required`, and the checks and the hash-neutral mark.
"""

from bench.api.fields import (
    HASH_NEUTRAL,
    Choices,
    Range,
    bounded,
    check_field_types,
    check_field_values,
    choice,
    field_rule,
    hash_neutral_defaults,
    missing_hooks,
    required,
    retired_keys,
    runtime,
)
from bench.api.method import Change, Mechanism, Method
from bench.api.task import Task

__all__ = [
    "HASH_NEUTRAL",
    "Change",
    "Choices",
    "Mechanism",
    "Method",
    "Range",
    "Task",
    "bounded",
    "check_field_types",
    "check_field_values",
    "choice",
    "field_rule",
    "hash_neutral_defaults",
    "missing_hooks",
    "required",
    "retired_keys",
    "runtime",
]
