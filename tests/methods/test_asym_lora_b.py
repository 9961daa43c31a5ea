"""Asymmetric LoRA, the mirror: B frozen at a N(0, 0.02^2) start, only A trained (from zero).
The count (r * d_in per matrix) is checked in test_beyond_lora.py."""

from __future__ import annotations

import torch

from tests.helpers.adapters import assert_layer_adds, assert_trains_one_factor, factors, randomise
from tests.helpers.methods import method_from_config
from tests.helpers.tiny import tiny_llama


def test_only_a_trains_and_b_keeps_its_random_start():
    assert_trains_one_factor("asym_lora_b", frozen=1)


def test_frozen_b_is_normal_with_std_0_02():
    method = method_from_config("asym_lora_b")  # r = 16: 2 * (32 + 16) * 16 values
    method.apply(tiny_llama())
    values = torch.cat([factors(layer)[1].detach().flatten() for layer in method.layers.values()])
    assert values.numel() == 2 * (32 + 16) * 16 and abs(float(values.std()) - 0.02) < 0.002


def test_layer_output_is_w0_plus_scaled_b_a():
    method = method_from_config("asym_lora_b", "method.r=4", "method.alpha=12", "method.dropout=0.0")
    method.apply(tiny_llama())
    for layer in method.layers.values():
        a, b = factors(layer)
        randomise(a)
        assert_layer_adds(layer, 3.0 * b.detach() @ a.detach())
