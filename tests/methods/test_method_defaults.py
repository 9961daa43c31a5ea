"""Each method default lives in one place: a value a method's composed config states (its file and
the family values it extends from conf/method_base/) equals the class field's default, so a method
built in Python is the method a run composes (the learning rate alone is required by the class and
set only in the YAML; `${...}` values come from other groups)."""

from __future__ import annotations

import dataclasses

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from tests.conftest import CONF, compose
from tests.helpers.methods import VARIANTS

METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))
ONLY_IN_YAML = {"_target_", "name", "lr"}


def stated(name: str) -> dict:
    """The method's composed values, interpolations unresolved."""
    return OmegaConf.to_container(compose(f"method={name}").method, resolve=False)


def field_default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


@pytest.mark.parametrize("name", METHODS)
def test_composed_values_equal_the_class_defaults(name):
    values = stated(name)
    fields = {f.name: f for f in dataclasses.fields(get_class(values["_target_"])) if f.init}
    drift = {}
    for key, value in values.items():
        if key in ONLY_IN_YAML or (isinstance(value, str) and value.startswith("${")):
            continue
        assert key in fields, f"method={name}: '{key}' is not a field of {values['_target_']}"
        default = field_default(fields[key])
        variant = VARIANTS.get(name, (None, {}))[1]
        if default != value and variant.get(key) != value:  # a variant sets its declared fields on purpose
            drift[key] = (value, default)
    assert not drift, f"method={name}: composed value vs class default differ: {drift}"


@pytest.mark.parametrize("name", METHODS)
def test_the_learning_rate_has_no_class_default(name):
    lr = {f.name: f for f in dataclasses.fields(get_class(stated(name)["_target_"]))}["lr"]
    assert field_default(lr) is dataclasses.MISSING, "a class lr default would be a second source"


def test_every_family_file_is_extended_and_nothing_is_restated():
    """A value of conf/method_base/ is written there once: every family file is used, and a method
    that extends one restates none of its values unchanged."""
    import yaml

    families = {p.stem: yaml.safe_load(p.read_text()) for p in (CONF / "method_base").glob("*.yaml")}
    used = set()
    for name in METHODS:
        own = yaml.safe_load((CONF / "method" / f"{name}.yaml").read_text())
        for entry in own.get("defaults", []):
            family = str(entry).removeprefix("/method_base/").removesuffix("@_here_")
            if family in families:
                used.add(family)
                same = {k for k, v in families[family].items() if k in own and own[k] == v}
                assert not same, f"method={name} restates {sorted(same)} of method_base/{family}"
    assert used == set(families)
