"""Choices and ranges declared on a field (`bench.api.choice` / `bounded`): one check, one
message format that lists what is valid, inherited by a subclass that only changes a default."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

import pytest

from bench.api import Task, bounded, choice
from bench.config import ConfigError


@dataclass(kw_only=True)
class Knobs(Task):
    mode: str = choice("penalty", "proximal", default="proximal")
    sparsity: float = bounded(0.0, 1.0, default=0.5, low_open=True)
    rank: Optional[int] = bounded(1, default=None)
    dropout: float = bounded(0, 1, default=0.0, high_open=True)
    init: Any = choice("gaussian", True, default=True)  # Any: the type check lets 1 through
    scale: float = choice(0.5, 1.0, default=1.0)


@dataclass(kw_only=True)
class NewDefault(Knobs):
    sparsity: float = 0.25  # only the default changes: the declared range still applies


def refusal(cls=Knobs, **values) -> str:
    with pytest.raises(ConfigError) as err:
        cls(name="knobs", **values)
    return str(err.value)


def test_defaults_and_good_values_pass():
    assert Knobs(name="knobs").sparsity == 0.5
    good = Knobs(name="knobs", mode="penalty", sparsity=1.0, rank=3, dropout=0.0, init="gaussian")
    assert (good.mode, good.sparsity, good.rank, good.init) == ("penalty", 1.0, 3, "gaussian")


def test_a_bad_choice_lists_the_valid_values():
    assert "task.mode='lasso' is not valid; choose one of: penalty, proximal" in refusal(mode="lasso")


def test_a_choice_is_compared_with_its_type():
    # 1 == True in Python; a config's 1 is still no choice of the boolean True
    assert "task.init=1 is not valid; choose one of: gaussian, True" in refusal(init=1)


def test_an_int_is_a_float_choice_and_a_bool_is_not():
    # the type check lets an int stand for a float; the choice must then accept it too
    assert Knobs(name="knobs", scale=1).scale == 1
    assert "task.scale=True: expected <class 'float'>, got bool" in refusal(scale=True)  # the type check's
    assert "task.scale=2 is not valid" in refusal(scale=2)


@pytest.mark.parametrize(
    "field,value,valid",
    [
        ("sparsity", 0.0, "0.0 < x <= 1.0"),
        ("sparsity", 1.5, "0.0 < x <= 1.0"),
        ("dropout", 1, "0 <= x < 1"),
        ("dropout", -0.1, "0 <= x < 1"),
        ("rank", 0, "x >= 1 or null"),
    ],
)
def test_an_out_of_range_value_names_the_range(field, value, valid):
    assert f"task.{field}={value!r} is out of range; valid: {valid}" in refusal(**{field: value})


def test_every_bad_field_is_reported_at_once():
    message = refusal(mode="lasso", rank=0)
    assert re.search(r"task\.mode=.*\n.*task\.rank=0", message)


def test_a_subclass_that_changes_a_default_keeps_the_range():
    assert NewDefault(name="knobs").sparsity == 0.25
    assert "task.sparsity=2 is out of range; valid: 0.0 < x <= 1.0" in refusal(NewDefault, sparsity=2)


def test_the_type_check_runs_first():
    assert "expected <class 'float'>, got str" in refusal(sparsity="half")


@dataclass(kw_only=True)
class Capped(Task):
    share: float = bounded(high=0.5, default=0.1)


def test_a_range_with_only_an_upper_end():
    assert Capped(name="capped", share=-3.0).share == -3.0
    assert "task.share=0.6 is out of range; valid: x <= 0.5" in refusal(Capped, share=0.6)
