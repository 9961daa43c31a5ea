"""Asymmetric LoRA specifics: A frozen at its random start, only B trained; the layer computes
x (W0 + s B A)^T. Shared properties are in test_matrix.py, the count in test_beyond_lora.py."""

from __future__ import annotations

import pytest
import torch

from methods.peft_common import lora_layers
from tests.helpers.tiny import fixed_batch, tiny_llama
from tests.methods.test_matrix import method_from_config, train_steps


def factors(layer) -> tuple[torch.Tensor, torch.Tensor]:
    return layer.lora_A["default"].weight, layer.lora_B["default"].weight


def randomise(*tensors: torch.Tensor, seed: int = 0) -> None:
    """Give factors that start at zero a value, so the update they carry is visible."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in tensors:
            t.copy_(torch.randn(t.shape, generator=g) * 0.1)


def assert_layer_adds(layer, delta: torch.Tensor, base=None) -> None:
    """layer(x) == x (W0 + delta)^T + bias, with W0 the frozen base weight, computed densely."""
    base = layer.get_base_layer() if base is None else base
    x = torch.randn(5, base.in_features, generator=torch.Generator().manual_seed(1))
    want = x @ (base.weight + delta).T + (0 if base.bias is None else base.bias)
    with torch.no_grad():
        got = layer.eval()(x)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def restore(method, model, state: dict, trained_model) -> None:
    """What a resume does: the method's state, then the checkpointed trainable tensors."""
    method.load_state_dict(model, state)
    trained = dict(trained_model.named_parameters())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(trained[name])


def snapshot(layers: dict) -> dict:
    return {name: tuple(f.detach().clone() for f in factors(layer)) for name, layer in layers.items()}


def assert_trains_one_factor(method_name: str, frozen: int, *overrides: str) -> None:
    """After a few steps factor `frozen` (0: A, 1: B) still holds its random start bit for bit,
    and the other has left its zero start."""
    method = method_from_config(method_name, "method.r=4", "method.lr=1e-2", *overrides)
    model = method.apply(tiny_llama())
    start = snapshot(method.layers)
    train_steps(method, model, fixed_batch(), steps=3)
    trained = 1 - frozen
    for name, layer in method.layers.items():
        now = factors(layer)
        assert not now[frozen].requires_grad and now[trained].requires_grad
        assert torch.equal(now[frozen], start[name][frozen]) and float(start[name][frozen].abs().max()) > 0
        assert float(start[name][trained].abs().max()) == 0 < float(now[trained].detach().abs().max())


def test_only_b_trains_and_a_keeps_its_random_start():
    assert_trains_one_factor("asym_lora", frozen=0)


def test_kaiming_start_is_uniform_within_one_over_sqrt_d_in():
    # kaiming_uniform_(a=sqrt 5): bound = sqrt(2 / (1 + 5)) * sqrt(3 / d_in) = 1 / sqrt(d_in)
    method = method_from_config("asym_lora", "method.random_init=kaiming")
    method.apply(tiny_llama())
    for layer in method.layers.values():
        a = factors(layer)[0].detach()
        bound = a.shape[1] ** -0.5
        assert float(a.abs().max()) <= bound and float(a.abs().max()) > 0.9 * bound


def test_normal_start_has_std_0_02():
    method = method_from_config("asym_lora", "method.random_init=normal")
    method.apply(tiny_llama())
    values = torch.cat([factors(layer)[0].detach().flatten() for layer in method.layers.values()])
    assert values.numel() >= 2000 and abs(float(values.std()) - 0.02) < 0.002
    assert abs(float(values.mean())) < 0.002


@pytest.mark.parametrize("overrides,scale", [((), 8.0 / 4), (("method.use_rslora=true",), 8.0 / 2)])
def test_layer_output_is_w0_plus_scaled_b_a(overrides, scale):
    method = method_from_config("asym_lora", "method.r=4", "method.alpha=8", "method.dropout=0.0", *overrides)
    model = method.apply(tiny_llama())
    assert lora_layers(model).keys() == method.layers.keys()
    for layer in method.layers.values():
        a, b = factors(layer)
        randomise(b)
        assert_layer_adds(layer, scale * b.detach() @ a.detach())
