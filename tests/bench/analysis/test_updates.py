"""Every method's update, probed and (where given) factored, against a computation of its own."""

from __future__ import annotations

import pytest
import torch

from bench.analysis import spectra, updates
from tests.helpers.methods import METHODS, method_from_config, trained
from tests.helpers.tiny import tiny_llama


@pytest.mark.parametrize("name", METHODS)
def test_a_methods_factors_equal_its_probed_update_on_every_layer(name):
    method, model, w0 = trained(name)
    factors = method.update_factors(model)
    assert w0 and all(n.endswith(("q_proj", "v_proj")) for n in w0)
    if factors is None:
        pytest.skip(f"{name} gives no factors: its update is probed")
    assert set(factors) == set(w0)
    for layer, (B, A) in factors.items():
        probed = updates.probed_update(model, layer, w0[layer])
        assert float(probed.abs().max()) > 0, layer
        assert torch.allclose((B.double() @ A.double()).float(), probed, atol=1e-5), layer
    assert updates.check_factors(model, factors, w0) in factors


def test_wrong_factors_are_an_error_not_a_spectrum():
    method, model, w0 = trained("lora")
    factors = {n: (2.0 * B, A) for n, (B, A) in method.update_factors(model).items()}
    with pytest.raises(RuntimeError, match="update_factors is wrong"):
        updates.check_factors(model, factors, w0)


def test_an_update_of_zero_passes_the_factor_check_and_a_wrong_one_still_fails():
    # a study's base job: one step whose learning rate is still zero in its warm-up, so Delta W = 0
    # exactly; with a bias (BERT's layers have one) the probe returns only its own rounding
    from peft import LoraConfig, get_peft_model

    g = torch.Generator().manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(32, 24))
    with torch.no_grad():
        base[0].weight.copy_(torch.randn(24, 32, generator=g) * 0.05)
        base[0].bias.copy_(torch.randn(24, generator=g) * 3.0)
    w0 = {"0": base[0].weight.detach().clone()}
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["0"]))  # lora_B starts at zero
    layer = updates.find_module(model, "0")
    A = layer.lora_A["default"].weight.detach()
    noise = updates.probed_update(model, "0", w0["0"])
    bias = updates.probe(layer, 32)[1]
    assert 0 < float(noise.norm()) < updates.probe_rounding(w0["0"], bias)  # rounding, not zero
    assert updates.check_factors(model, {"0": (torch.zeros(24, 4), A)}, w0) == "0"
    # factors that claim an update the layer does not have are still caught
    with pytest.raises(RuntimeError, match="update_factors is wrong"):
        updates.check_factors(model, {"0": (torch.full((24, 4), 1e-3), A)}, w0)


def test_full_fine_tunings_probed_update_is_the_change_of_the_weight():
    method, model, w0 = trained("full")
    for layer, w in w0.items():
        module = updates.find_module(model, layer)
        assert torch.allclose(updates.probed_update(model, layer, w), module.weight.detach() - w, atol=1e-6)
        # a dense update: every singular value is non-zero
        svd = spectra.dense_svd(module.weight.detach() - w)
        assert spectra.numerical_rank(svd.S, tuple(w.shape)) == min(w.shape)


@pytest.mark.parametrize("r", [1, 3])
def test_a_lora_of_rank_r_has_at_most_r_non_zero_singular_values(r):
    _, model, w0 = trained("lora", f"method.r={r}")
    for layer, w in w0.items():
        s = spectra.dense_svd(updates.probed_update(model, layer, w)).S
        assert spectra.numerical_rank(s, tuple(w.shape)) == r, layer


def test_clas_update_lives_in_its_selected_input_columns():
    method, model, w0 = trained("cla", "method.r=4")
    for layer, w in w0.items():
        delta = updates.probed_update(model, layer, w)
        cols = method.layers[layer].cols
        outside = torch.ones(w.shape[1], dtype=torch.bool)
        outside[cols] = False
        assert float(delta[:, cols].abs().max()) > 0
        assert float(delta[:, outside].abs().max()) < 1e-6, layer
        # its row space is spanned by the selector's columns: projecting onto them changes nothing
        selector = torch.eye(w.shape[1])[:, cols]
        assert torch.allclose(delta @ selector @ selector.T, delta, atol=1e-6)


@pytest.mark.parametrize("name", ["adalora", "c3a", "dora", "pissa", "vera"])
def test_a_probed_update_equals_the_change_peft_merges_into_the_weight(name):
    """Methods without factors: the probe against PEFT's own merge (W0 + its delta, written back)."""
    import copy

    _, model, w0 = trained(name)
    merged = copy.deepcopy(model).merge_and_unload()
    for layer, w in w0.items():
        want = updates.find_module(merged, layer).weight.detach() - w
        assert float(want.abs().max()) > 0, layer
        assert torch.allclose(updates.probed_update(model, layer, w), want, atol=1e-5), layer


def test_a_bf16_layer_is_probed_in_float32_so_a_small_update_is_not_lost_in_rounding():
    """bf16 weights (the GPU profiles' dtype): the probe of a LoRA update under 1 % of W0 equals
    s B A computed from the factors, where probing in bf16 was 30 % off."""
    base = tiny_llama().to(torch.bfloat16)
    method = method_from_config("lora")
    w0 = updates.snapshot(updates.analysed_layers(base, method, ["q_proj", "v_proj"]))
    model = method.apply(base)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(1e-4 * torch.randn(p.shape, generator=g).to(p.dtype))
    factors = method.update_factors(model)
    layer = "model.layers.0.self_attn.q_proj"
    B, A = factors[layer]
    probed = updates.probed_update(model, layer, w0[layer])
    exact = (B.double() @ A.double()).float()
    assert float(exact.norm()) < 1e-2 * float(w0[layer].norm())  # small against W0, as after a few steps
    assert float((probed - exact).norm() / exact.norm()) < 1e-4
    assert updates.check_factors(model, factors, w0) in factors
    assert next(updates.find_module(model, layer).parameters()).dtype == torch.bfloat16  # the model is untouched
