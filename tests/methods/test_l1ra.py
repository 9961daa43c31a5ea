"""L1RA: gates, the proximal L1 step, rank updates that conserve the budget and keep outputs."""
from __future__ import annotations

import json

import pytest
import torch

from bench.run import execute, prepare
from tests.conftest import TINY, compose
from tests.helpers.tiny import fixed_batch, tiny_llama
from tests.methods.test_matrix import logits, method_from_config


def l1ra(*overrides):
    return method_from_config("l1ra", "method.r=4", *overrides)


def test_proximal_step_zeroes_a_gate_without_gradient_in_the_expected_steps():
    # 0.25 * 0.25 = 1/16 per step, exact in binary: a gate at 1 reaches 0 after exactly 16 steps
    method = l1ra("method.eta_c=0.25", "method.l1_lambda=0.25", "method.rank_update_ratio=1.0")
    model = method.apply(tiny_llama())
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.requires_grad_(False)  # B stays 0, so every gate's gradient is exactly 0
    groups = [g for g in method.param_groups(model, 0.0) if g["params"]]
    optimizer = torch.optim.AdamW(groups)
    method.on_train_begin(model, 100)
    batch = fixed_batch()
    for step in range(1, 17):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        assert all(g.grad is None or not g.grad.any() for g in method.gates().values())
        optimizer.step()
        method.after_step(model, step, optimizer)
        gates = torch.cat([g.detach() for g in method.gates().values()])
        assert (gates > 0).all() if step < 16 else (gates == 0).all(), (step, gates)


def test_gates_stay_in_the_unit_interval():
    method = l1ra("method.eta_c=5.0", "method.l1_lambda=0.0")
    model = method.apply(tiny_llama())
    optimizer = torch.optim.AdamW(method.param_groups(model, 0.0))
    method.on_train_begin(model, 100)
    for step in range(1, 6):
        optimizer.zero_grad()
        (-model(**fixed_batch()).logits.mean() * 100).backward()  # pushes gates hard
        optimizer.step()
        method.after_step(model, step, optimizer)
    gates = torch.cat([g.detach() for g in method.gates().values()])
    assert gates.min() >= 0 and gates.max() <= 1


def prepared(*overrides):
    method = l1ra(*overrides)
    model = method.apply(tiny_llama())
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and p.ndim == 2:
                p.normal_(0, 0.2)  # a trained-looking adapter
        names = sorted(method.layers)
        method.layers[names[0]].l1ra_gate[:2] = 0.0  # two dead components in the first adapter
        method.layers[names[1]].l1ra_gate[:] = torch.tensor([0.9, 0.8, 0.7, 0.6])
        method.layers[names[2]].l1ra_gate[:] = torch.tensor([0.5, 0.5, 0.5, 0.4])
        method.layers[names[3]].l1ra_gate[:] = torch.tensor([0.95, 0.9, 0.9, 0.9])
    return method, model, names


def test_rank_update_conserves_budget_and_outputs():
    method, model, names = prepared()
    batch = fixed_batch()
    before = logits(model.eval(), batch)
    assert method.update_ranks(step=1) is True
    ranks = method.ranks()
    assert sum(ranks.values()) == method.budget == 16
    assert ranks[names[0]] == 2  # pruned from 4
    # 2 spare ranks go round-robin to the adapters whose weakest gate is largest: names[3], then names[1]
    assert ranks[names[3]] == 5 and ranks[names[1]] == 5 and ranks[names[2]] == 4
    for name, layer in method.layers.items():
        r = ranks[name]
        assert layer.lora_A["default"].weight.shape[0] == r == layer.lora_B["default"].weight.shape[1]
        assert layer.l1ra_gate.shape == (r,)
    torch.testing.assert_close(logits(model, batch), before, atol=1e-6, rtol=1e-5)
    event = method.events[-1]
    assert event["pruned"] == {names[0]: 2} and event["budget"] == 16
    assert event["reassigned"] == {names[3]: 1, names[1]: 1}


def test_prune_only_ablation_shrinks_the_budget():
    method, model, names = prepared("method.reassign=false")
    method.update_ranks(step=1)
    assert sum(method.ranks().values()) == 14


def test_an_adapter_keeps_its_last_component():
    method, model, names = prepared()
    with torch.no_grad():
        method.layers[names[1]].l1ra_gate.zero_()
    method.update_ranks(step=1)
    assert method.ranks()[names[1]] == 1 and sum(method.ranks().values()) == 16


def test_training_with_rank_moves_runs_and_reports(tmp_path):
    cfg = compose(*TINY, "method=l1ra", "method.r=4", "method.eta_c=0.5", "method.l1_lambda=0.3",
                  "method.rank_update_ratio=0.25", "train.max_steps=20", f"run.root={tmp_path}", "logger=none",
                  "eval.enabled=false")
    method, task, config, config_hash = prepare(cfg)
    assert execute(cfg, method, task, config, config_hash) == "success"
    result = json.loads(next(tmp_path.rglob("result.json")).read_text())
    report = result["method_report"]
    assert [e["step"] for e in report["events"]] == [5, 10, 15]
    assert all(e["budget"] == 16 for e in report["events"])
    assert any(e["pruned"] for e in report["events"])  # ranks did move
    assert sum(report["rank_pattern"].values()) == report["budget_final"] == 16
    assert set(report["rank_by_module_type"]) == {"q_proj", "v_proj"}
    # trainable params follow the ranks: r_i (d_in + d_out + 1), q: 64x64, v: 64x64 in tiny-llama
    assert result["metrics"]["trainable_params"] == 4 * 4 * (64 + 64 + 1)


def test_penalty_mode_adds_the_l1_term_to_the_loss():
    method = l1ra("method.l1_mode=penalty", "method.l1_lambda=0.5")
    model = method.apply(tiny_llama())
    extra = method.extra_loss(model, 1)
    assert extra.item() == pytest.approx(0.5 * 4)  # mean over adapters of ||c||_1 = 4 at init
