"""c3LA shift-only specifics: at a boundary only the window moves r columns; B is kept (not merged,
not reset) and the optimizer too, so lr_after_reset=constant has nothing to act on."""

from __future__ import annotations

import pytest
import torch

from bench.config import ConfigError
from tests.helpers.tiny import fixed_batch, tiny_llama
from tests.methods.test_asym_lora import restore
from tests.methods.test_c3la import cross_first_boundary
from tests.methods.test_cla import assert_column_layer_adds
from tests.methods.test_matrix import logits, method_from_config


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


def test_boundary_moves_the_window_by_r_and_keeps_b():
    for old, new in assert_window_moved_and_b_kept("c3la_shift").values():
        assert old == [0, 1, 2, 3] and new == [4, 5, 6, 7]


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


def test_resume_continues_on_the_same_windows():
    assert_resume_continues_on_the_same_windows("c3la_shift")


def test_constant_rate_after_reset_is_refused():
    with pytest.raises(ConfigError, match="method c3la_shift keeps its optimizer and schedule"):
        method_from_config("c3la_shift", "+method.lr_after_reset=constant")  # not in its YAML
