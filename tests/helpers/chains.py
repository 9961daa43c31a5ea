"""Chained methods (merge and restart at phase boundaries): training across boundaries, and the
checks the chain tests share."""

from __future__ import annotations

import copy

import torch

from tests.helpers.adapters import assert_column_layer_adds, assert_layer_adds, factors, restore
from tests.helpers.methods import logits, method_from_config
from tests.helpers.tiny import fixed_batch, tiny_llama


def run_chain(name, steps, *overrides):
    """Train with a boundary check after every step: returns (method, model, W0 before, events)."""
    method = method_from_config(name, "method.r=4", "method.lr=1e-2", *overrides)
    model = method.apply(tiny_llama())
    before = {
        n: layer.weight.detach().clone() if hasattr(layer, "cols") else layer.get_base_layer().weight.detach().clone()
        for n, layer in method.layers.items()
    }
    optimizer = torch.optim.AdamW(method.param_groups(model, 0.0))
    method.on_train_begin(model, steps)
    batch, events = fixed_batch(), []
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
        change = method.after_step(model, step, optimizer)
        if change:
            events.append((step, change, {n: copy.deepcopy(layer.state_dict()) for n, layer in method.layers.items()}))
            optimizer = torch.optim.AdamW(method.param_groups(model, 0.0))
    return method, model, before, events


def run_two_phases(name: str):
    """4 steps, a boundary after step 2 (a phase's first step has B = 0, so A's gradient is 0)."""
    return run_chain(name, 4, "method.phases=2")


def assert_layer_adds_every_phase(method) -> None:
    for name, layer in method.layers.items():
        terms = [*(m[name] for m in method.history), factors(layer)]
        assert len(terms) == 2
        assert_layer_adds(layer, sum(method.scale * b.detach() @ a.detach() for a, b in terms))


def second_phase_a(method, events, name: str):
    """A right after the boundary (its restart) and at the end of the second phase."""
    return events[0][2][name]["lora_A.default.weight"], factors(method.layers[name])[0].detach()


def cross_first_boundary(name: str, *overrides: str):
    """Train to the first boundary (step 2 of 8, 4 phases) and cross it: returns the method, the
    model, what `after_step` told the runner, and each layer's (cols, B) just before the boundary."""
    method = method_from_config(name, "method.r=4", "method.lr=1e-2", "method.phases=4", *overrides)
    model = method.apply(tiny_llama())
    optimizer = torch.optim.AdamW(method.param_groups(model, 0.0))
    method.on_train_begin(model, 8)
    for step in (1, 2):
        optimizer.zero_grad()
        model(**fixed_batch()).loss.backward()
        optimizer.step()
        if step == 2:
            before = {n: (layer.cols.clone(), layer.lora_B.detach().clone()) for n, layer in method.layers.items()}
        change = method.after_step(model, step, optimizer)
    return method, model, change, before


def assert_window_moved_and_b_kept(name: str) -> dict:
    """Cross a boundary; B is carried to the new window unchanged, nothing merged. Returns the
    windows before and after, per layer."""
    method, _, change, before = cross_first_boundary(name)
    assert not change and method.history == []
    moved = {}
    for layer_name, layer in method.layers.items():
        cols, b = before[layer_name]
        assert layer.lora_B.detach().equal(b) and int(layer.merged_cols.numel()) == 0
        assert_column_layer_adds(layer, [(layer.cols, b)], method.scale)  # B on the new window alone
        moved[layer_name] = (cols.tolist(), layer.cols.tolist())
    return moved


def assert_resume_continues_on_the_same_windows(name: str) -> None:
    """A fresh method restored from the state after a boundary computes what the trained one does,
    and its next boundary moves to the same windows (the phase is restored, not just the columns)."""
    method, model, _, _ = cross_first_boundary(name)
    fresh = method_from_config(name, "method.r=4", "method.lr=1e-2", "method.phases=4")
    again = fresh.apply(tiny_llama())
    restore(fresh, again, method.state_dict(model), model)
    batch = fixed_batch()
    assert torch.equal(logits(again.eval(), batch), logits(model.eval(), batch))
    fresh.on_train_begin(again, 8)
    for m, mdl in ((method, model), (fresh, again)):
        m.after_step(mdl, 4, None)
    assert all(fresh.layers[n].cols.equal(layer.cols) for n, layer in method.layers.items())
