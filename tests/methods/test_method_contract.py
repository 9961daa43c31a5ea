"""The method protocol's contract: required hooks are checked when a class is defined, after_step
reports a `Change`, and a method's runtime state is declared (never config)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import torch

from bench.api import Change, Method, runtime
from bench.config import ConfigError
from methods.adalora import AdaLoRA
from methods.base import peft_common
from methods.lora import LoRA
from methods.prunedlora import PrunedLoRA
from tests.helpers.methods import METHODS, method_from_config
from tests.helpers.tiny import fixed_batch, tiny_llama


def test_change_none_is_the_only_falsy_report():
    assert [bool(c) for c in Change] == [False, True, True]
    # the runner's test for "the method carried the optimizer state itself"
    assert [c != Change.PARAMETERS_REPLACED for c in Change] == [True, True, False]


def test_the_runner_reads_a_report_as_a_change_and_refuses_anything_else():
    assert Change.reported(Change.PARAMETERS_REPLACED, "m") is Change.PARAMETERS_REPLACED
    assert Change.reported(True, "m") is Change.REBUILD_OPTIMIZER  # a bool keeps its old meaning
    assert Change.reported(False, "m") is Change.NONE and Change.reported(None, "m") is Change.NONE
    # truthy and unequal to PARAMETERS_REPLACED: the runner would have thrown the carried state away
    with pytest.raises(TypeError, match="method 'm': after_step returned 'parameters_replaced'; return a"):
        Change.reported("parameters_replaced", "m")


def test_a_method_without_export_fails_when_it_is_defined():
    with pytest.raises(TypeError, match=r"NoExport does not define the required hook\(s\) export;"):

        @dataclass(kw_only=True)
        class NoExport(Method):
            def apply(self, model):
                return model


def test_the_message_names_every_missing_hook_of_the_class_and_its_bases():
    with pytest.raises(TypeError, match=r"Bare does not define the required hook\(s\) adapter_params, peft_config;"):

        @dataclass(kw_only=True)
        class Bare(peft_common.PeftMethod):
            pass


def test_a_shared_base_may_leave_hooks_to_its_subclasses_but_cannot_be_built():
    @dataclass(kw_only=True)
    class Base(Method, abstract=True):
        def apply(self, model):
            return model

    @dataclass(kw_only=True)
    class Concrete(Base):
        def export(self, model, out_dir):
            return {"format": "none", "path": str(out_dir)}

    assert Concrete(name="c", lr=1.0).apply("model") == "model"
    with pytest.raises(TypeError, match="Base is an abstract method base .*export"):
        Base(name="b", lr=1.0)


def test_runtime_state_is_not_config():
    @dataclass(kw_only=True)
    class Counting(LoRA):
        seen: list = runtime(default_factory=list)

    method = Counting(name="counting", lr=1.0)
    assert method.seen == [] and "seen" not in repr(method)
    method.seen.append(1)
    assert method == Counting(name="counting", lr=1.0)  # state does not make another method
    with pytest.raises(TypeError, match="seen"):
        Counting(name="counting", lr=1.0, seen=[1])


def runtime_fields(cls) -> set:
    return {f.name for f in dataclasses.fields(cls) if not f.init}


def class_level_names(cls) -> set:
    """Names a class or its bases declare (class variables such as `zero_init`, which C3A refines
    per instance)."""
    return {name for klass in cls.__mro__ for name in vars(klass)}


@pytest.mark.parametrize("name", METHODS)
def test_after_step_reports_a_change_and_all_state_is_declared(name):
    """Every configured method, through apply and a few steps: after_step returns a Change (a
    chain boundary included), and every attribute it set is a declared field or a class-level
    declaration, never undeclared state grown in apply."""
    method = method_from_config(name, "method.lr=1e-2")
    model = method.apply(tiny_llama())
    optimizer = torch.optim.AdamW(method.param_groups(model, 0.0))
    method.on_train_begin(model, 2)  # the chain methods' first boundary comes after step 1
    batch, reports = fixed_batch(), []
    for step in range(1, 3):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        method.before_optimizer_step(model, step, optimizer)
        optimizer.step()
        reports.append(method.after_step(model, step, optimizer))
        if reports[-1] is Change.REBUILD_OPTIMIZER:
            optimizer = torch.optim.AdamW(method.param_groups(model, 0.0))
    assert all(isinstance(r, Change) for r in reports), reports
    fields = {f.name for f in dataclasses.fields(method)}
    undeclared = set(vars(method)) - fields - class_level_names(type(method))
    assert not undeclared, f"{name}: state set outside the declared fields: {sorted(undeclared)}"
    config_fields = {f.name for f in dataclasses.fields(method) if f.init}
    assert not runtime_fields(type(method)) & config_fields


def test_chain_boundaries_are_reported_by_what_they_change():
    reports = {}
    for name, overrides in (("cola", ("method.phases=2",)), ("c3la_shift", ("method.phases=2",))):
        method = method_from_config(name, *overrides)
        model = method.apply(tiny_llama())
        method.on_train_begin(model, 4)
        reports[name] = [method.after_step(model, step, None) for step in (1, 2, 3)]
    assert reports["cola"] == [Change.NONE, Change.REBUILD_OPTIMIZER, Change.NONE]  # fresh moments
    assert reports["c3la_shift"] == [Change.NONE] * 3  # the window moves, the optimizer stays


@pytest.mark.parametrize(
    ("cls", "target", "initial", "default"),
    [(PrunedLoRA, "r_target", "r_init", 2.0), (AdaLoRA, "target_r", "init_r", 1.5)],
)
def test_the_rank_pruning_mixin_derives_and_checks_the_initial_rank(cls, target, initial, default):
    def built(**kw):
        return getattr(cls(name="m", lr=1.0, **{target: 8}, **kw), initial)

    assert built() == round(8 * default)
    assert built(sparsity=0.75) == 32 == round(8 / (1 - 0.75))
    assert built(**{initial: 20}) == 20
    with pytest.raises(ConfigError, match=f"method.{initial}=20 contradicts method.sparsity=0.75 .{target}=8 gives"):
        built(sparsity=0.75, **{initial: 20})
    with pytest.raises(ConfigError, match=r"method.sparsity=1.0 is out of range; valid: 0.0 <= x < 1.0 or null"):
        built(sparsity=1.0)
