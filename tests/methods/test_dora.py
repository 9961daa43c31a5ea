"""DoRA specifics: the adapted weight is m * (W0 + s B A) / ||W0 + s B A||_row, m starting at W0's
row norms; match_lora_rank picks the largest r within LoRA's count. Counts: test_param_formulas.py."""

from __future__ import annotations

import torch

from tests.helpers.adapters import assert_layer_adds, factors, randomise
from tests.helpers.methods import method_from_config
from tests.helpers.tiny import tiny_llama


def dora_layers(model) -> dict:
    return {n: m for n, m in model.named_modules() if hasattr(m, "lora_magnitude_vector") and "default" in m.lora_A}


def magnitude(layer) -> torch.Tensor:
    return layer.lora_magnitude_vector["default"].weight


def test_magnitude_starts_at_the_row_norms_of_w0():
    model = method_from_config("dora", "method.r=4").apply(tiny_llama())
    layers = dora_layers(model)
    assert len(layers) == 4
    for layer in layers.values():
        w0 = layer.get_base_layer().weight
        torch.testing.assert_close(magnitude(layer).detach(), w0.norm(dim=1))
        assert magnitude(layer).requires_grad


def test_layer_output_is_magnitude_times_row_normalised_direction():
    model = method_from_config("dora", "method.r=4", "method.alpha=8", "method.dropout=0.0").apply(tiny_llama())
    for layer in dora_layers(model).values():
        a, b = factors(layer)
        randomise(b, magnitude(layer), seed=3)
        with torch.no_grad():
            magnitude(layer).abs_()
        w0 = layer.get_base_layer().weight
        direction = w0 + 2.0 * b.detach() @ a.detach()
        adapted = magnitude(layer).detach()[:, None] * direction / direction.norm(dim=1, keepdim=True)
        assert_layer_adds(layer, adapted - w0)


def test_matched_rank_is_the_largest_within_loras_count():
    # q_proj 32x32 and v_proj 16x32 in 2 layers: LoRA at r = 4 has 4 * 224 = 896 parameters; DoRA
    # has 224 r + 96 (the magnitudes): r = 3 gives 768, r = 4 would give 992
    base = tiny_llama()
    method = method_from_config("dora", "method.match_lora_rank=4")
    assert method.expected_trainable_params(base) == 3 * 224 + 96
    assert method.r == 3
