"""r-cLA specifics: the layer adds s B on its r random columns (dense reference here); the
random_window selector takes one contiguous window; both follow the run's seed."""

from __future__ import annotations

from tests.helpers.adapters import applied, assert_column_layer_adds
from tests.helpers.methods import method_from_config


def test_layer_output_adds_s_b_on_its_own_columns():
    method, _ = applied("cla_random")
    for layer in method.layers.values():
        cols = layer.cols.tolist()
        assert len(set(cols)) == 4 and cols == sorted(cols) and 0 <= cols[0] and cols[-1] < layer.in_features
        assert_column_layer_adds(layer, [(layer.cols, layer.lora_B)], 2.0)


def test_random_window_is_one_contiguous_window_per_matrix():
    def windows(seed):
        method, _ = applied("cla_random", "method.selector=random_window", f"seed={seed}")
        for layer in method.layers.values():
            start = int(layer.cols[0])
            assert layer.cols.tolist() == list(range(start, start + 4)) and start + 4 <= layer.in_features
            assert_column_layer_adds(layer, [(layer.cols, layer.lora_B)], 2.0)
        return [int(layer.cols[0]) for layer in method.layers.values()]

    first = windows(1)
    assert first == windows(1) and len(set(first)) > 1 and first != windows(2)


def test_selector_seed_is_the_runs_seed():
    assert method_from_config("cla_random", "seed=7").selector_seed == 7
