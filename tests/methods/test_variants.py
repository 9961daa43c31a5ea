"""Method variants are configuration: a variant is one YAML over its base method's class, setting a
declared field (docs/methods.md): c3la_shift and c3la_offset_shift set `at_boundary: shift`,
asym_lora_b sets `frozen: lora_B`. Each variant's own behaviour is tested in its test module."""

from __future__ import annotations

import pytest
import yaml

from bench.config import ConfigError
from methods.asym_lora import AsymLoRA
from methods.c3la import ChainedCheapLoRA
from methods.c3la_offset import RandomOffsetColumns
from tests.conftest import CONF
from tests.helpers.methods import method_from_config

VARIANTS = {
    "c3la_shift": (ChainedCheapLoRA, {"at_boundary": "shift"}, "c3la"),
    "c3la_offset_shift": (RandomOffsetColumns, {"at_boundary": "shift"}, "c3la_offset"),
    "asym_lora_b": (AsymLoRA, {"frozen": "lora_B", "random_init": "normal"}, "asym_lora"),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_a_variant_is_its_base_class_with_declared_fields_set(name):
    cls, fields, _ = VARIANTS[name]
    method = method_from_config(name)
    assert type(method) is cls  # no subclass of its own
    assert {k: getattr(method, k) for k in fields} == fields


@pytest.mark.parametrize("name", VARIANTS)
def test_the_base_method_keeps_the_other_choice(name):
    cls, fields, base = VARIANTS[name]
    method = method_from_config(base)
    assert isinstance(method, cls)
    assert all(getattr(method, k) != v for k, v in fields.items() if k != "random_init")
    declared = yaml.safe_load((CONF / "method" / f"{base}.yaml").read_text())
    assert not set(fields) - {"random_init"} & set(declared)  # the base's value is the class default


def test_a_value_outside_the_declared_choices_is_refused_with_them():
    with pytest.raises(ConfigError, match=r"at_boundary.*jump.*merge.*shift"):
        method_from_config("c3la", "+method.at_boundary=jump")
    with pytest.raises(ConfigError, match=r"frozen.*lora_C.*lora_A.*lora_B"):
        method_from_config("asym_lora", "+method.frozen=lora_C")
