"""The method test matrix: every conf/method/*.yaml, on a tiny Llama, passes the same checks.

A new method gets all of these by adding its two files; the class variables `zero_init`,
`supports_merge` declare which properties it claims; a rank-pruning method (the RankPruning mixin)
has the `sparsity` knob.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from bench.cli_check import unknown_key_message
from bench.config import ConfigError
from bench.run import execute, prepare
from methods.base.rank_pruning import RankPruning
from tests.conftest import TINY, compose
from tests.helpers.methods import METHODS, logits, method_from_config, train_steps
from tests.helpers.tiny import fixed_batch, tiny_llama


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", METHODS)
def test_trainable_count_matches_closed_form(name):
    base = tiny_llama()
    method = method_from_config(name)
    expected = method.expected_trainable_params(base)
    model = method.apply(base)
    assert trainable(model) == expected > 0


@pytest.mark.parametrize("name", METHODS)
def test_trainable_count_holds_on_a_bf16_base(name):
    """A bf16 base (as on a GPU) trains exactly the tensors an fp32 one does; PEFT's AdaLoRA once
    turned its constant `ranknum` into a trainable tensor there."""
    method = method_from_config(name)
    base = tiny_llama().to(torch.bfloat16)
    expected = method.expected_trainable_params(base)
    model = method.apply(base)
    assert trainable(model) == expected > 0


@pytest.mark.parametrize("name", METHODS)
def test_untrained_adapter_leaves_outputs_unchanged(name):
    method = method_from_config(name)
    if not method.zero_init:
        pytest.skip(f"{name} starts from a non-zero update (see methods/{name}.py)")
    base = tiny_llama()
    batch = fixed_batch()
    want = logits(base, batch)
    got = logits(method.apply(base).eval(), batch)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", METHODS)
def test_a_few_steps_lower_the_loss(name):
    # The configured rates suit real models; on this tiny one every method gets the same 1e-2
    # (per-group ratios such as LoRA+'s are kept).
    method = method_from_config(name, "method.lr=1e-2")
    model = method.apply(tiny_llama())
    losses = train_steps(method, model, fixed_batch())
    assert min(losses[-3:]) < losses[0] - 0.01, losses


@pytest.mark.parametrize("name", METHODS)
def test_export_reloads_with_plain_libraries_and_reproduces_outputs(name, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    method = method_from_config(name)
    model = method.apply(tiny_llama(seed=1))
    train_steps(method, model, fixed_batch(seed=2), steps=3)
    model.eval()
    batch = fixed_batch()
    want = logits(model, batch)
    info = method.export(model, tmp_path / "export")
    if info["format"] == "peft":
        loaded = PeftModel.from_pretrained(tiny_llama(seed=1), str(tmp_path / "export")).eval()
    else:
        assert info["format"] == "transformers"
        loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "export")).eval()
    torch.testing.assert_close(logits(loaded, batch), want, atol=1e-4, rtol=1e-4)
    if method.supports_merge:
        merged = loaded.merge_and_unload().eval()
        torch.testing.assert_close(logits(merged, batch), want, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("name", METHODS)
def test_sparsity_is_a_knob_of_the_rank_pruning_methods_only(name):
    if isinstance(method_from_config(name), RankPruning):
        assert method_from_config(name, "method.sparsity=0.5").sparsity == 0.5
    else:  # no such key: the command line says so and lists the method's keys
        message = unknown_key_message([f"method={name}", "method.sparsity=0.5"])
        assert message and "unknown config key 'method.sparsity'" in message and "valid keys there:" in message


@pytest.mark.parametrize("name", METHODS)
def test_runs_end_to_end_through_the_runner(name, tmp_path):
    cfg = compose(
        *TINY,
        f"method={name}",
        f"run.root={tmp_path}",
        "logger=none",
        "eval.base=false",
        "eval.limit=2",
        "eval.max_gen_toks=4",
        "train.max_steps=4",
    )  # 4: the chain methods merge
    method, task, config, config_hash = prepare(cfg)
    assert execute(cfg, method, task, config, config_hash) == "success"
    result = json.loads(next(tmp_path.rglob("result.json")).read_text())
    m = result["metrics"]
    assert m["trainable_params"] == m["expected_trainable_params"] > 0
    assert isinstance(result["method_report"], dict)
    assert result["artifacts"]["export"]["path"] == "adapter" and m["adapter_bytes"] > 0


# -- method-specific properties ---------------------------------------------------------------
def test_lora_plus_gives_b_the_larger_learning_rate():
    method = method_from_config("lora_plus", "method.lr_ratio=4")
    model = method.apply(tiny_llama())
    a_group, b_group = method.param_groups(model, 0.0)
    assert b_group["lr"] == 4 * a_group["lr"]
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("lora_B" in names[id(p)] for p in b_group["params"])
    assert all("lora_A" in names[id(p)] for p in a_group["params"])


@pytest.mark.parametrize("name,rank", [("c3a", 4), ("dora", 4), ("vera", 4)])
def test_parameter_matching_to_lora(name, rank):
    base = tiny_llama()
    lora = method_from_config("lora", f"method.r={rank}").expected_trainable_params(base)
    method = method_from_config(name, f"method.match_lora_rank={rank}")
    realised = method.expected_trainable_params(copy.deepcopy(base))
    method.apply(base)
    report = method.report(None)
    assert report["lora_params_at_that_rank"] == lora and report["realised_params"] == realised
    assert abs(realised - lora) / lora < 0.25, (realised, lora)


def test_c3a_rejects_a_block_size_that_does_not_divide():
    with pytest.raises(ConfigError, match="valid block sizes: \\[1, 2, 4, 8, 16\\]"):
        method_from_config("c3a", "method.block_size=5").apply(tiny_llama())


def test_adalora_budget_follows_the_schedule_and_ends_at_target():
    method = method_from_config(
        "adalora", "method.target_r=2", "method.sparsity=0.5", "method.tinit_ratio=0.2", "method.tfinal_ratio=0.2"
    )
    assert method.init_r == 4
    model = method.apply(tiny_llama())
    steps = 20
    train_steps(method, model, fixed_batch(), steps=steps)
    matrices = 4  # q_proj and v_proj in 2 layers
    history = method.history
    assert [h["budget"] for h in history[:4]] == [4 * matrices] * 4  # tinit: full budget
    budgets = [h["budget"] for h in history]
    assert budgets == sorted(budgets, reverse=True)  # never grows
    for h in history[4:16]:  # pruning: the mask realises the budget at each step
        assert h["rank"] == h["budget"], h
    assert history[-1]["budget"] == history[-1]["rank"] == 2 * matrices
    report = method.report(model)
    assert report["total_rank_final"] == 2 * matrices and report["sparsity"] == 0.5
    assert sum(report["rank_pattern"].values()) == 2 * matrices


@pytest.mark.parametrize(
    "overrides,message",
    [
        (("method.target_r=8", "method.init_r=4"), "is larger than method.init_r=4"),
        (("method.sparsity=0.5", "method.init_r=12"), "contradicts method.sparsity"),
        (("method.tinit_ratio=0.6", "method.tfinal_ratio=0.5"), "leaves no steps for pruning"),
    ],
)
def test_adalora_rejects_impossible_budgets(overrides, message):
    with pytest.raises(ConfigError, match=message):
        method_from_config("adalora", *overrides)


def test_c3a_zero_init_option_keeps_outputs():
    method = method_from_config("c3a", "method.init_weights=true")
    assert method.zero_init
    base = tiny_llama()
    batch = fixed_batch()
    want = logits(base, batch)
    torch.testing.assert_close(logits(method.apply(base).eval(), batch), want)
