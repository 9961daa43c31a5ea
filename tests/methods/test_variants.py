"""Method variants are configuration: a variant is one YAML over its base method's class, setting a
declared field (docs/methods.md): c3la_shift and c3la_offset_shift set `at_boundary: shift`,
asym_lora_b sets `frozen: lora_B`. Each variant's own behaviour is tested in its test module."""

from __future__ import annotations

import pytest
import yaml
from hydra.utils import get_class

from bench.config import ConfigError
from tests.conftest import CONF
from tests.helpers.methods import VARIANTS, method_from_config


@pytest.mark.parametrize("name", VARIANTS)
def test_a_variant_is_its_base_class_with_declared_fields_set(name):
    target, fields, _ = VARIANTS[name]
    method = method_from_config(name)
    assert f"{type(method).__module__}.{type(method).__qualname__}" == target  # no subclass of its own
    assert {k: getattr(method, k) for k in fields} == fields


@pytest.mark.parametrize("name", VARIANTS)
def test_the_base_method_keeps_the_other_choice(name):
    target, fields, base = VARIANTS[name]
    method = method_from_config(base)
    assert isinstance(method, get_class(target))
    assert all(getattr(method, k) != v for k, v in fields.items() if k != "random_init")
    declared = yaml.safe_load((CONF / "method" / f"{base}.yaml").read_text())
    assert not set(fields) - {"random_init"} & set(declared)  # the base's value is the class default


def test_a_value_outside_the_declared_choices_is_refused_with_them():
    with pytest.raises(ConfigError, match=r"at_boundary.*jump.*merge.*shift"):
        method_from_config("c3la", "+method.at_boundary=jump")
    with pytest.raises(ConfigError, match=r"frozen.*lora_C.*lora_A.*lora_B"):
        method_from_config("asym_lora", "+method.frozen=lora_C")
