"""c3la_offset / c3la_offset_shift (the random-offset r-c3LA of the ProjectModelsTwo trainers) and
cla_random_dense (their dense row-normalised r-cLA)."""

from __future__ import annotations

import pytest
import torch

from bench.api import Change
from bench.config import ConfigError
from tests.helpers.chains import run_chain
from tests.helpers.methods import logits, method_from_config
from tests.helpers.tiny import fixed_batch, tiny_llama


def visited(method, name):
    layer = method.layers[name]
    return [m[name][0].tolist() for m in method.history] + [layer.cols.tolist()]


def test_offsets_start_at_zero_then_jump_to_random_contiguous_windows():
    method, _, _, events = run_chain("c3la_offset", 12, "method.phases=6", "seed=5")
    assert [e[0] for e in events] == [2, 4, 6, 8, 10] and all(e[1] == Change.REBUILD_OPTIMIZER for e in events)
    starts = {}
    for name, layer in method.layers.items():
        windows = visited(method, name)
        assert windows[0] == [0, 1, 2, 3]
        for w in windows:
            assert w == list(range(w[0], w[0] + 4)) and 0 <= w[0] <= layer.in_features - 4
        starts[name] = tuple(w[0] for w in windows)
    assert len(set(starts.values())) > 1  # each matrix draws its own offsets
    again, _, _, _ = run_chain("c3la_offset", 12, "method.phases=6", "seed=5")
    other, _, _, _ = run_chain("c3la_offset", 12, "method.phases=6", "seed=6")
    assert {n: tuple(w[0] for w in visited(again, n)) for n in again.layers} == starts
    assert {n: tuple(w[0] for w in visited(other, n)) for n in other.layers} != starts
    assert any(w % 4 for s in starts.values() for w in s)  # offsets off c3la's r-grid occur


def test_offset_chain_delta_is_the_sum_of_its_phases_overlaps_included():
    method, _, before, _ = run_chain("c3la_offset", 12, "method.phases=6", "seed=5")
    for name, layer in method.layers.items():
        want = torch.zeros(layer.out_features, layer.in_features, dtype=torch.float64)
        phases = [m[name] for m in method.history] + [(layer.cols.cpu(), layer.lora_B.detach().cpu())]
        for cols, b in phases:  # a plain loop, column by column: overlapping windows add up
            for k, c in enumerate(cols.tolist()):
                want[:, c] += method.scale * b[:, k].double()
        assert torch.equal(layer.weight, before[name])
        torch.testing.assert_close(layer.delta_weight().double(), want, atol=1e-6, rtol=1e-6)


def test_fresh_moments_false_keeps_the_optimizer_and_still_merges():
    method, _, before, events = run_chain("c3la_offset", 8, "method.phases=4", "method.fresh_moments=false")
    assert events == [] and len(method.history) == 3  # merged, B reset, optimizer kept
    with pytest.raises(ConfigError, match="lr_after_reset=constant applies when a boundary rebuilds"):
        method_from_config("c3la_offset", "method.fresh_moments=false", "method.lr_after_reset=constant")


def test_offset_shift_moves_the_window_only():
    method, _, before, events = run_chain("c3la_offset_shift", 8, "method.phases=4", "seed=5")
    assert events == [] and method.history == []
    for name, layer in method.layers.items():
        assert torch.equal(layer.weight, before[name]) and float(layer.lora_B.detach().abs().max()) > 0
        assert int(layer.merged_cols.numel()) == 0
    offsets = {tuple(layer.cols.tolist()) for layer in method.layers.values()}
    assert offsets != {(12, 13, 14, 15)}  # not c3la_shift's cyclic walk


@pytest.mark.parametrize("name", ["c3la_offset", "c3la_offset_shift"])
def test_offset_variants_export_the_model_they_evaluate(name, tmp_path):
    from peft import PeftModel

    method, model, _, _ = run_chain(name, 8, "method.phases=4")
    model.eval()
    batch = fixed_batch()
    method.export(model, tmp_path)
    loaded = PeftModel.from_pretrained(tiny_llama(), str(tmp_path)).eval()
    torch.testing.assert_close(logits(loaded, batch), logits(model, batch), atol=1e-5, rtol=1e-4)


def test_dense_random_a_is_a_frozen_row_normalised_gaussian_per_layer():
    from methods.base.column_adapter import layer_generator

    method = method_from_config("cla_random_dense", "method.r=4", "seed=3")
    method.apply(tiny_llama())
    seen = []
    for name, layer in method.layers.items():
        a = layer.lora_A["default"].weight
        g = layer_generator(3, name)  # the reference's formula: randn, then rows / (norm + 1e-8)
        raw = torch.randn(4, a.shape[1], generator=g)
        torch.testing.assert_close(a.detach(), raw / (raw.norm(dim=1, keepdim=True) + 1e-8), rtol=0, atol=0)
        torch.testing.assert_close(a.detach().norm(dim=1), torch.ones(4))
        assert not a.requires_grad and layer.lora_B["default"].weight.requires_grad
        assert float(layer.lora_B["default"].weight.detach().abs().max()) == 0
        seen.append(a.detach().clone())
    assert not torch.equal(seen[0], seen[1])
