"""Asymmetric LoRA specifics: A frozen at its random start, only B trained; the layer computes
x (W0 + s B A)^T. Shared properties are in test_matrix.py, the count in test_beyond_lora.py."""

from __future__ import annotations

import pytest
import torch

from methods.base.peft_common import lora_layers
from tests.helpers.adapters import assert_layer_adds, assert_trains_one_factor, factors, randomise
from tests.helpers.methods import method_from_config
from tests.helpers.tiny import tiny_llama


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
