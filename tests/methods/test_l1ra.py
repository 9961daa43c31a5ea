"""L1RA: gates, the proximal L1 step, rank updates that conserve the budget and keep outputs."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

from bench.api import Change
from bench.run import build, execute, prepare
from methods.base import peft_common
from methods.l1ra import L1RA
from tests.conftest import TINY, compose
from tests.helpers.methods import logits, method_from_config
from tests.helpers.tiny import LLAMA_LINEARS, fixed_batch, tiny_llama


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
    cfg = compose(
        *TINY,
        "method=l1ra",
        "method.r=4",
        "method.eta_c=0.5",
        "method.l1_lambda=0.3",
        "method.rank_update_ratio=0.25",
        "train.max_steps=20",
        f"run.root={tmp_path}",
        "logger=none",
        "eval.enabled=false",
    )
    method, task, config, config_hash = prepare(cfg)
    assert execute(cfg, method, task, config, config_hash) == "success"
    result = json.loads(next(tmp_path.rglob("result.json")).read_text())
    report = result["method_report"]
    assert [e["step"] for e in report["events"]] == [5, 10, 15]
    assert all(e["budget"] == 16 for e in report["events"])
    assert any(e["pruned"] for e in report["events"])  # ranks did move
    assert sum(report["rank_pattern"].values()) == report["budget_final"] == 16
    assert set(report["rank_by_module_type"]) == {"q_proj", "v_proj"}
    # metrics.trainable_params is counted before training; q and v are both 64x64 in tiny-llama, so
    # the count after the moves is the same (shapes that differ: test_trainable_count_after_ranks_moved)
    assert result["metrics"]["trainable_params"] == 4 * 4 * (64 + 64 + 1)
    assert report["trainable_params_initial"] == report["trainable_params_final"] == 4 * 4 * (64 + 64 + 1)
    # the mechanism check, from result.json alone: the class named by the config, no model
    module, _, name = result["config"]["method"]["_target_"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    assert cls is L1RA
    mechanism = cls.mechanism(report, result["config"])
    pruned = sum(n for e in report["events"] for n in e["pruned"].values())
    assert pruned == sum(n for e in report["events"] for n in e["reassigned"].values()) > 0
    assert mechanism.measure == pytest.approx(min(1.0, pruned / 16)) and mechanism.measure > 0
    assert f"3 rank-update events: {pruned} ranks pruned, {pruned} reassigned, budget 16" == mechanism.evidence


def events_report(*events, budget=16):
    return {
        "budget_initial": budget,
        "events": [{"step": 5 * (i + 1), "pruned": p, "reassigned": r} for i, (p, r) in enumerate(events)],
    }


@pytest.mark.parametrize(
    "events,measure",
    [
        ((({"q": 2}, {"v": 1, "k": 1}), ({"v": 1}, {"q": 1}), ({}, {})), 3 / 16),  # 3 ranks changed hands
        ((({"q": 3, "v": 1}, {}),), 4 / 16),  # prune-only: the ranks removed
        ((({"q": 12}, {"v": 12}), ({"v": 12}, {"q": 12})), 1.0),  # more than a budget's worth: capped
        ((({}, {}), ({}, {})), 0.0),  # events, nothing moved
        ((), 0.0),  # no event at all
    ],
)
def test_mechanism_is_the_share_of_the_budget_pruned_over_all_events(events, measure):
    mechanism = L1RA.mechanism(events_report(*events), {})
    assert mechanism.measure == pytest.approx(measure)
    assert mechanism.name == "share of the rank budget moved" and "budget 16" in mechanism.evidence


def test_mechanism_is_zero_when_no_gate_reaches_zero():
    # no L1 pull: the gates stay near 1, so the rank updates (every 2 of 8 steps) prune nothing
    method = l1ra("method.l1_lambda=0.0", "method.rank_update_ratio=0.25")
    model = method.apply(tiny_llama())
    optimizer = torch.optim.AdamW(method.param_groups(model, 0.0))
    method.on_train_begin(model, 8)
    for step in range(1, 6):
        optimizer.zero_grad()
        model(**fixed_batch()).loss.backward()
        optimizer.step()
        assert method.after_step(model, step, optimizer) is Change.NONE
    report = json.loads(json.dumps(method.report(model)))  # as result.json holds it
    assert [e["step"] for e in report["events"]] == [2, 4] and report["gates_zero"] == 0
    mechanism = L1RA.mechanism(report, {"train": {"max_steps": 8}})
    assert mechanism.measure == 0.0
    assert mechanism.evidence == "2 rank-update events: 0 ranks pruned, 0 reassigned, budget 16"


def test_penalty_mode_adds_the_l1_term_to_the_loss():
    method = l1ra("method.l1_mode=penalty", "method.l1_lambda=0.5")
    model = method.apply(tiny_llama())
    extra = method.extra_loss(model, 1)
    assert extra.item() == pytest.approx(0.5 * 4)  # mean over adapters of ||c||_1 = 4 at init


# -- the gated update, computed densely from the layer's tensors ----------------------------------------
def dense_delta(layer, x, scaling):
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    c = layer.l1ra_gate.detach()
    return scaling * x @ (b @ torch.diag(c) @ a).T


def check_gated_output(method, alpha, r_config):
    torch.manual_seed(1)
    for layer in method.layers.values():
        with torch.no_grad():
            layer.l1ra_gate.uniform_(0.05, 0.95)
            layer.lora_B["default"].weight.normal_(0, 0.3)
        x = torch.randn(5, layer.base_layer.in_features)
        with torch.no_grad():
            got = layer(x) - x @ layer.base_layer.weight.T
        torch.testing.assert_close(got, dense_delta(layer, x, alpha / r_config), atol=1e-6, rtol=1e-5)


def test_output_is_w0x_plus_scaled_b_diag_c_a_x_also_after_ranks_were_added():
    method, model, names = prepared()
    model.eval()  # no dropout
    check_gated_output(method, 16.0, 4)
    method, model, names = prepared()
    model.eval()
    method.update_ranks(step=1)
    assert max(method.ranks().values()) == 5  # ranks were added; the scaling stays alpha / r(config)
    check_gated_output(method, 16.0, 4)


# -- the order in which freed ranks are handed out ------------------------------------------------------
def set_gates(method, names, values):
    with torch.no_grad():
        for name, vals in zip(names, values):
            method.layers[name].l1ra_gate.copy_(torch.tensor(vals))


def test_reassignment_reads_gates_pushed_above_one_before_the_projection():
    method = l1ra("method.l1_lambda=0.0", "method.rank_update_ratio=0.5")
    model = method.apply(tiny_llama())
    names = list(method.layers)
    method.on_train_begin(model, 10)  # a rank update at step 5
    # what an optimizer step may leave: above 1 and below 0, before the projection onto [0, 1]
    set_gates(method, names, [[0.0, 0.0, 0.5, 0.9], [1.05, 1.2, 1.1, 1.0], [1.3, 1.4, 1.3, 1.5], [1.1, 1.2, 1.2, 1.1]])
    assert method.after_step(model, 5, None) is Change.REBUILD_OPTIMIZER
    # weakest gates 1.0, 1.3, 1.1 -> names[2] first, then names[3]; clamped they would all tie at 1
    assert method.events[-1]["reassigned"] == {names[2]: 1, names[3]: 1}
    assert method.ranks() == {names[0]: 2, names[1]: 4, names[2]: 5, names[3]: 5}
    gates = torch.cat([g.detach() for g in method.gates().values()])
    assert gates.min() >= 0 and gates.max() == 1  # projected after the update


def test_exact_ties_go_to_the_adapter_with_fewer_ranks_then_in_module_order():
    method, model, names = prepared()
    method.update_ranks(step=1)
    assert method.ranks() == {names[0]: 2, names[1]: 5, names[2]: 4, names[3]: 5}
    set_gates(method, names, [[0.0, 0.4], [0.7] * 5, [0.7] * 4, [0.7] * 5])
    method.update_ranks(step=2)
    assert method.events[-1]["reassigned"] == {names[2]: 1}  # rank 4 before the two at rank 5
    set_gates(method, names, [[0.0], [0.0, 0.0] + [0.7] * 3, [0.7] * 5, [0.7] * 5])
    method.update_ranks(step=3)  # names[0] keeps its last component; 2 spare, names[2] and [3] tie at 5
    assert method.events[-1]["reassigned"] == {names[2]: 1, names[3]: 1}


def test_when_every_adapter_lost_ranks_all_of_them_take_the_spare_ranks():
    method, model, names = prepared()
    # unclamped weakest gates order the adapters: names[2] (0.0), [0] (-0.1), [3] (-0.2), [1] (-0.3)
    set_gates(
        method, names, [[-0.1, 0.5, 0.5, 0.5], [-0.3, -0.2, 0.5, 0.5], [0.0, 0.9, 0.9, 0.9], [-0.2, 0.8, 0.8, 0.8]]
    )
    method.update_ranks(step=1)
    event = method.events[-1]
    assert event["pruned"] == {names[0]: 1, names[1]: 2, names[2]: 1, names[3]: 1}
    # 5 spare ranks, round-robin over that order: names[2], [0], [3], [1], [2]
    assert event["reassigned"] == {names[2]: 2, names[0]: 1, names[3]: 1, names[1]: 1}
    assert method.ranks() == {names[0]: 4, names[1]: 3, names[2]: 5, names[3]: 4}
    assert event["budget"] == 16


# -- realised trainable parameters --------------------------------------------------------------------
def test_trainable_count_after_ranks_moved_between_shapes():
    method, model, names = prepared()  # grouped-query attention: q is 32 -> 32, v is 32 -> 16
    shapes = {n: (l.base_layer.in_features, l.base_layer.out_features) for n, l in method.layers.items()}
    assert shapes[names[0]] != shapes[names[1]]
    method.update_ranks(step=1)
    counted = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ranks = {names[0]: 2, names[1]: 5, names[2]: 4, names[3]: 5}  # test_rank_update_conserves_budget_and_outputs
    formula = sum(r * (shapes[n][0] + shapes[n][1] + 1) for n, r in ranks.items())
    report = method.report(model)
    assert report["trainable_params_final"] == counted == formula == 2 * 65 + 5 * 49 + 4 * 65 + 5 * 49
    assert report["trainable_params_initial"] == 4 * (65 + 49 + 65 + 49)


# -- the gates' learning rate under the suite's scheduler -------------------------------------------------
def test_gate_learning_rate_stays_constant_under_warmup_and_cosine():
    from bench.train import build_optimizer, build_scheduler

    cfg = compose(*TINY, "train.scheduler=cosine", "train.warmup_ratio=0.2")
    method = method_from_config("l1ra", "method.r=4", "method.eta_c=0.02", "method.lr=1e-3")
    model = method.apply(tiny_llama())
    gate_ids = {id(g) for g in method.gates().values()}

    def rates(optimizer):
        gate = [g["lr"] for g in optimizer.param_groups if {id(p) for p in g["params"]} <= gate_ids]
        other = [g["lr"] for g in optimizer.param_groups if not {id(p) for p in g["params"]} & gate_ids]
        return gate, other

    optimizer = build_optimizer(method, model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, total_steps=20)
    seen = []
    for step in range(20):
        gate, other = rates(optimizer)
        assert gate == [0.02], (step, gate)
        seen.append(other[0])
        optimizer.step()
        scheduler.step()
    assert seen[0] == 0.0 and max(seen) == pytest.approx(1e-3) and seen[-1] < 1e-4  # warmup, then cosine
    # a rank update rebuilds the optimizer and fast-forwards the schedule: the gates stay at eta_c
    optimizer = build_optimizer(method, model, cfg.train)
    build_scheduler(optimizer, cfg.train, total_steps=20, done_steps=10)
    gate, other = rates(optimizer)
    assert gate == [0.02] and other[0] == pytest.approx(seen[10])


# -- export ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rslora", [False, True])
def test_export_after_ranks_moved_reloads_with_the_same_outputs(tmp_path, rslora):
    from peft import PeftModel

    method, model, names = prepared(f"method.use_rslora={str(rslora).lower()}")
    method.update_ranks(step=1)
    with torch.no_grad():
        for g in method.gates().values():
            g.uniform_(0.1, 0.9)
    batch = fixed_batch()
    before = logits(model.eval(), batch)
    method.export(model, tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(tiny_llama(), tmp_path / "adapter").eval()
    ranks = {n: int(layer.r["default"]) for n, layer in peft_common.lora_layers(reloaded).items()}
    assert ranks == method.ranks() and len(set(ranks.values())) > 1
    torch.testing.assert_close(logits(reloaded, batch), before, atol=1e-5, rtol=1e-4)


# -- per-step cost ----------------------------------------------------------------------------------------
def llama_with_layers(n: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=n,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    ).eval()


def step_ops(layers: int, mode: str) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    method = l1ra(f"method.l1_mode={mode}", "method.rank_update_ratio=0.5")
    model = method.apply(llama_with_layers(layers))
    method.on_train_begin(model, 100)  # rank updates at steps 50 only
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        method.extra_loss(model, 3)
        method.after_step(model, 3, None)
    events = prof.events()
    assert not [e.name for e in events if e.name in ("aten::item", "aten::_local_scalar_dense")]  # no host sync
    return sorted(e.name for e in events if e.cpu_parent is None)


@pytest.mark.parametrize("mode", ["proximal", "penalty"])
def test_an_ordinary_step_issues_the_same_ops_for_2_and_4_layers(mode):
    two, four = step_ops(2, mode), step_ops(4, mode)
    assert two == four and len(two) <= 8, (two, four)  # a few foreach ops, not a few per adapter


# -- the reference preset -------------------------------------------------------------------------------
def test_reference_preset_is_one_override_and_adapts_every_linear_layer():
    cfg = compose(*TINY, "experiment=l1ra_reference")
    assert cfg.method.name == "l1ra"
    assert (cfg.method.lr, cfg.method.dropout, cfg.method.r, cfg.method.alpha) == (1e-4, 0.1, 16, 16.0)
    assert (cfg.train.weight_decay, cfg.train.max_grad_norm, cfg.train.scheduler, cfg.train.warmup_ratio) == (
        0.1,
        0.3,
        "cosine",
        0.1,
    )
    method = build(cfg.method)
    model = method.apply(tiny_llama())
    report = method.report(model)
    assert set(report["rank_by_module_type"]) == LLAMA_LINEARS
    assert report["budget_final"] == 16 * 7 * 2  # 7 linear layers in each of 2 blocks, not the LM head
