"""Each method default lives in one place: a value its YAML states equals the class field's default,
so a method built in Python is the method a run composes (the learning rate alone is required by
the class and set only in the YAML; `${...}` values come from other groups)."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import yaml

from tests.conftest import CONF
from tests.helpers.methods import VARIANTS

METHOD_FILES = sorted((CONF / "method").glob("*.yaml"))
ONLY_IN_YAML = {"_target_", "name", "lr", "defaults"}  # defaults: Hydra's, the YAML this one extends


def class_of(target: str):
    module, name = target.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def field_default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


@pytest.mark.parametrize("path", METHOD_FILES, ids=lambda p: p.stem)
def test_yaml_values_equal_the_class_defaults(path):
    stated = yaml.safe_load(path.read_text())
    fields = {f.name: f for f in dataclasses.fields(class_of(stated["_target_"]))}
    drift = {}
    for key, value in stated.items():
        if key in ONLY_IN_YAML or (isinstance(value, str) and value.startswith("${")):
            continue
        assert key in fields, f"{path.name}: '{key}' is not a field of {stated['_target_']}"
        default = field_default(fields[key])
        variant = VARIANTS.get(path.stem, (None, {}))[1]
        if default != value and variant.get(key) != value:  # a variant sets its declared fields on purpose
            drift[key] = (value, default)
    assert not drift, f"{path.name}: YAML value vs class default differ: {drift}"


@pytest.mark.parametrize("path", METHOD_FILES, ids=lambda p: p.stem)
def test_the_learning_rate_has_no_class_default(path):
    target = yaml.safe_load(path.read_text())["_target_"]
    lr = {f.name: f for f in dataclasses.fields(class_of(target))}["lr"]
    assert field_default(lr) is dataclasses.MISSING, "a class lr default would be a second source"
