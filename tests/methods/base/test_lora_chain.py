"""Merged phases of the chain methods (c3LA family, CoLA, RAC) are exact, also on a bf16 base
(issue #19): the update the run evaluates is the one it records and exports."""

from __future__ import annotations

import pytest
import torch

from methods.base.lora_chain import merged_delta
from tests.helpers.methods import logits, method_from_config, train_steps
from tests.helpers.tiny import fixed_batch, tiny_llama


def effective_delta(method, name):
    """The update the trained layer applies, read from the layer (merged phases + current)."""
    layer = method.layers[name]
    if hasattr(layer, "cols"):
        return layer.delta_weight().float()
    base = layer.get_base_layer()
    current = method.scale * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    return (merged_delta(base) + current).detach().float()


def recorded_delta(method, name):
    """The same update rebuilt from the recorded terms alone (the export's input), in float64."""
    total = 0
    for a, b in export_terms(method)[name]:
        total = total + method.scale * b.detach().double().cpu() @ a.detach().double().cpu()
    return total


def export_terms(method):
    if hasattr(method, "columns_used"):
        return method.terms()
    return {
        name: [*(m[name] for m in method.history), (layer.lora_A["default"].weight, layer.lora_B["default"].weight)]
        for name, layer in method.layers.items()
    }


def train_chain(name, base, *overrides, steps=6):
    method = method_from_config(name, "method.r=4", "method.phases=3", "method.dropout=0.0", *overrides)
    model = method.apply(base)
    train_steps(method, model, fixed_batch(), steps=steps)
    return method, model.eval()


@pytest.mark.parametrize("name", ["c3la", "c3la_random", "cola", "rac"])
def test_merged_updates_stay_exact_on_a_bf16_base(name, tmp_path):
    base = tiny_llama().to(torch.bfloat16)
    w0 = {n: p.detach().clone() for n, p in base.named_parameters()}
    method, model = train_chain(name, base, "method.lr=3e-5")
    assert len(method.history) == 2
    worst_inplace = 0.0
    for layer_name, layer in method.layers.items():
        base_layer = layer if hasattr(layer, "cols") else layer.get_base_layer()
        want = recorded_delta(method, layer_name)
        got = effective_delta(method, layer_name).double()
        assert float((got - want).norm() / want.norm()) < 1e-6, layer_name
        # what adding the update into the bf16 weight would have kept of it (the old behaviour)
        w = base_layer.weight.detach()
        inplace = (w.double() + want).to(torch.bfloat16).double() - w.double()
        worst_inplace = max(worst_inplace, float((inplace - want).norm() / want.norm()))
    assert worst_inplace > 2e-2  # this update is small enough that a bf16 merge would lose a visible part
    for n, p in model.named_parameters():  # the frozen base weights are untouched
        key = n.replace("base_model.model.", "").replace(".base_layer", "")
        if not p.requires_grad and key in w0:
            assert torch.equal(p.detach(), w0[key]), n

    # the evaluated model is the exported adapter on the original base (compared in float32)
    from peft import PeftModel

    method.export(model, tmp_path)
    loaded = PeftModel.from_pretrained(tiny_llama().to(torch.bfloat16), str(tmp_path)).float().eval()
    batch = fixed_batch()
    got, want = logits(model.float(), batch), logits(loaded, batch)
    moved = float((want - logits(tiny_llama().to(torch.bfloat16).float(), batch)).abs().max())
    gap = float((got - want).abs().max())
    assert gap < 1e-3 * moved, (gap, moved)  # equal, up to float32 summation order


@pytest.mark.parametrize("name", ["c3la", "c3la_random"])
def test_each_window_holds_its_own_phase_update(name):
    """Per visited window j, (W_final - W0)[:, window_j] = s * B_j, with B_j read off the layer just
    before each boundary acts and W_final from the trained layer's outputs on the unit vectors (not
    from the method's records); every other column is untouched."""
    base = tiny_llama()
    w0 = {n: m.weight.detach().clone() for n, m in base.named_modules() if n.endswith(("q_proj", "v_proj"))}
    method = method_from_config(name, "method.r=4", "method.phases=3", "method.dropout=0.0", "method.lr=1e-2")
    model = method.apply(base).train()
    optimizer = torch.optim.AdamW(method.param_groups(model, 0.0))
    method.on_train_begin(model, 9)
    phases = {n: [] for n in method.layers}
    for step in range(1, 10):
        optimizer.zero_grad()
        model(**fixed_batch()).loss.backward()
        optimizer.step()
        now = {n: (layer.cols.clone(), layer.lora_B.detach().clone()) for n, layer in method.layers.items()}
        if method.after_step(model, step, optimizer):
            for n, cols_b in now.items():
                phases[n].append(cols_b)
            optimizer = torch.optim.AdamW(method.param_groups(model, 0.0))
    for layer_name, layer in method.layers.items():
        phases[layer_name].append((layer.cols.clone(), layer.lora_B.detach().clone()))
        assert len(phases[layer_name]) == 3
        with torch.no_grad():
            final = layer.eval()(torch.eye(layer.in_features)).t()  # column i = W_final e_i (q/v have no bias)
        change = final - w0[layer_name]
        touched = set()
        for cols, b in phases[layer_name]:
            assert not touched & set(cols.tolist())  # three distinct windows of d_in = 32 / 4
            touched |= set(cols.tolist())
            torch.testing.assert_close(change[:, cols], method.scale * b, atol=1e-6, rtol=1e-5)
            assert float(b.abs().max()) > 0
        rest = [c for c in range(layer.in_features) if c not in touched]
        assert float(change[:, rest].abs().max()) == 0
