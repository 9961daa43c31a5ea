"""AdaLoRA specifics: the layer adds (alpha / init_r) B diag(E) A x (`alpha_rule=scaled`:
alpha / target_r), a zero in E masks a triplet and the rank pattern counts what is left; init_r
follows target_r and sparsity. Budget schedule and impossible budgets: test_matrix.py."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

from bench.config import ConfigError, resolved
from methods.adalora import AdaLoRA
from tests.conftest import TINY, compose
from tests.helpers.adapters import assert_layer_adds, randomise, restore
from tests.helpers.methods import method_from_config
from tests.helpers.tiny import fixed_batch, tiny_llama


def adalora_layers(model) -> dict:
    return {
        n.replace("base_model.model.", "", 1): m
        for n, m in model.named_modules()
        if hasattr(m, "lora_E") and "default" in m.lora_E
    }


def svd_factors(layer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return layer.lora_A["default"], layer.lora_E["default"], layer.lora_B["default"]


@pytest.mark.parametrize("rule,scale", [("fixed", 16.0 / 6), ("scaled", 16.0 / 4)])
def test_layer_output_is_p_diag_e_q_with_the_rules_scaling(rule, scale):
    method = method_from_config(
        "adalora", "method.target_r=4", "method.init_r=6", "method.alpha=16", f"method.alpha_rule={rule}"
    )
    model = method.apply(tiny_llama())
    assert method.report(model)["scaling"] == pytest.approx(scale)
    for layer in adalora_layers(model).values():
        a, e, b = svd_factors(layer)
        randomise(e, b, seed=6)
        delta = scale * b.detach() @ (e.detach() * a.detach())
        assert_layer_adds(layer, delta * 6 / (6 + 1e-5))  # PEFT divides by ranknum + 1e-5


def test_zeroed_gates_mask_their_triplets_and_the_rank_pattern_counts_the_rest():
    method = method_from_config("adalora", "method.target_r=2", "method.init_r=4", "method.dropout=0.0")
    model = method.apply(tiny_llama())
    layers = adalora_layers(model)
    keep = {name: i % 4 + 1 for i, name in enumerate(layers)}  # 1..4 live triplets per matrix
    for name, layer in layers.items():
        a, e, b = svd_factors(layer)
        randomise(e, b, seed=7)
        with torch.no_grad():
            e[keep[name] :] = 0
        live = slice(0, keep[name])
        scale = 32.0 / 4 * 4 / (4 + 1e-5)
        assert_layer_adds(layer, scale * b.detach()[:, live] @ (e.detach()[live] * a.detach()[live]))
    assert method.rank_pattern(model) == keep
    assert method.total_rank(model) == sum(keep.values())


@pytest.mark.parametrize(
    "overrides,init_r",
    [
        (("method.target_r=8",), 12),  # 1.5 target_r without sparsity
        (("method.target_r=8", "method.sparsity=0.5"), 16),
        (("method.target_r=2", "method.sparsity=0.75"), 8),
    ],
)
def test_init_r_follows_target_r_and_sparsity(overrides, init_r):
    assert method_from_config("adalora", *overrides).init_r == init_r


@pytest.mark.parametrize(
    "overrides,message",
    [
        (("method.alpha_rule=linear",), "choose one of: fixed, scaled"),
        (("method.beta1=1.0",), r"method\.beta1=1\.0 is out of range; valid: 0 < x < 1"),
        (("method.delta_t=0",), r"method\.delta_t=0 is out of range; valid: x >= 1"),
        (("method.target_r=4", "method.init_r=4"), "leaves AdaLoRA nothing to prune"),
    ],
)
def test_bad_settings_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        method_from_config("adalora", *overrides)


def sgd_steps(method, model, steps) -> None:
    """Plain SGD (no optimizer state to carry over a resume), with AdaLoRA's step after each."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    for step in steps:
        optimizer.zero_grad()
        model(**fixed_batch()).loss.backward()
        optimizer.step()
        method.after_step(model, step, optimizer)


def test_resume_from_state_prunes_as_an_uninterrupted_run():
    # 5 steps resumed after 3: zeroed importance averages in the state change the masks from
    # step 4 on (tried), so this fails if the state stops carrying them
    overrides = ("method.target_r=2", "method.init_r=4", "method.dropout=0.0", "method.tinit_ratio=0.0")

    def fresh():
        method = method_from_config("adalora", *overrides)
        model = method.apply(tiny_llama())
        method.on_train_begin(model, 5)
        return method, model

    whole, whole_model = fresh()
    sgd_steps(whole, whole_model, range(1, 6))
    first, first_model = fresh()
    sgd_steps(first, first_model, range(1, 4))
    resumed, resumed_model = fresh()
    restore(resumed, resumed_model, first.state_dict(first_model), first_model)
    sgd_steps(resumed, resumed_model, range(4, 6))
    assert resumed.history == whole.history and whole.history[-1]["rank"] == 2 * 4
    assert resumed.rank_pattern(resumed_model) == whole.rank_pattern(whole_model)
    want = dict(whole_model.named_parameters())
    for n, p in resumed_model.named_parameters():
        torch.testing.assert_close(p, want[n], atol=1e-6, rtol=1e-5)


def test_mechanism_of_a_run_that_reached_the_final_budget_is_one():
    # 5 steps, tinit 0, tfinal int(0.2 * 5) = 1: the final budget is fixed at step 4
    method = method_from_config("adalora", "method.target_r=2", "method.init_r=4", "method.tinit_ratio=0.0")
    model = method.apply(tiny_llama())
    method.on_train_begin(model, 5)
    sgd_steps(method, model, range(1, 6))
    report = json.loads(json.dumps(method.report(model)))  # as result.json holds it
    assert report["schedule"] == {"tinit": 0, "tfinal": 1, "total_step": 5}
    assert report["total_rank_final"] == report["budget_target"] == 2 * 4
    config = resolved(compose(*TINY, "method=adalora", "method.tinit_ratio=0.0", "train.max_steps=5"))
    module, _, name = config["method"]["_target_"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)  # what a study does: no model, no instance
    assert cls is AdaLoRA
    mechanism = cls.mechanism(report, config)
    assert mechanism.measure == 1.0 and mechanism.name == "share of the budget schedule completed"
    assert mechanism.evidence == (
        "schedule: full budget to step 0, final budget fixed at step 4 (total_step 5); last step 5; "
        "total rank 16 -> 8 (target budget 8)"
    )


@pytest.mark.parametrize("last,measure", [(80, 1.0), (95, 1.0), (45, 0.5), (10, 0.0), (3, 0.0)])
def test_mechanism_is_the_share_of_the_decreasing_phase_the_run_went_through(last, measure):
    # tinit 10, final budget fixed at 100 - 20 = 80: (last - 10) / 70 between them
    report = {
        "schedule": {"tinit": 10, "tfinal": 20, "total_step": 100},
        "rank_history": [{"step": s, "budget": 0, "rank": 0} for s in range(1, last + 1)],
    }
    assert AdaLoRA.mechanism(report, {"train": {"max_steps": 100}}).measure == pytest.approx(measure)


def test_mechanism_of_a_report_without_its_schedule_derives_it_from_the_config():
    config = {"method": {"tinit_ratio": 0.1, "tfinal_ratio": 0.2}, "train": {"max_steps": 100}}
    report = {"rank_history": [{"step": 45, "budget": 0, "rank": 0}]}
    mechanism = AdaLoRA.mechanism(report, config)
    assert mechanism.measure == pytest.approx(0.5) and "final budget fixed at step 80" in mechanism.evidence
