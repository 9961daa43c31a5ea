"""Dense r-cLA specifics: A (unit-norm Gaussian rows, test_c3la_offset.py) stays frozen bit for bit
while B trains, and the layer adds s B A."""

from __future__ import annotations

from tests.helpers.adapters import assert_layer_adds, assert_trains_one_factor, factors, randomise
from tests.helpers.methods import method_from_config
from tests.helpers.tiny import tiny_llama


def test_a_stays_frozen_while_b_trains():
    assert_trains_one_factor("cla_random_dense", frozen=0)


def test_layer_output_is_w0_plus_scaled_b_a():
    method = method_from_config("cla_random_dense", "method.r=4", "method.alpha=8")
    method.apply(tiny_llama())
    for layer in method.layers.values():
        a, b = factors(layer)
        randomise(b)
        assert_layer_adds(layer, 2.0 * b.detach() @ a.detach())
    assert method.report(None)["random_init"] == "row_normalised_gaussian"
