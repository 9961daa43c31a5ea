"""c3LA specifics: at a boundary B's update is merged, B restarts at zero on the next window and
the optimizer is rebuilt; the trained layer adds the sum of every phase's s B_j on its window
(dense reference here); phase_steps cuts fixed-length phases. Window order: test_beyond_lora.py."""

from __future__ import annotations

import pytest
import torch

from bench.api import Change
from tests.helpers.adapters import assert_column_layer_adds
from tests.helpers.chains import cross_first_boundary, run_chain


def test_boundary_merges_restarts_b_and_moves_to_the_next_window():
    method, _, change, before = cross_first_boundary("c3la")
    assert change == Change.REBUILD_OPTIMIZER
    for name, layer in method.layers.items():
        cols, b = before[name]
        assert cols.tolist() == [0, 1, 2, 3] and layer.cols.tolist() == [4, 5, 6, 7]
        assert float(layer.lora_B.detach().abs().max()) == 0 < float(b.abs().max())
        assert_column_layer_adds(layer, [(cols, b)], method.scale)  # the merged phase alone


def test_trained_layer_adds_every_phase_on_its_window():
    method, _, before, _ = run_chain("c3la", 4, "method.phases=4")
    for name, layer in method.layers.items():
        assert torch.equal(layer.weight, before[name])  # merged beside W0, which stays as loaded
        terms = [m[name] for m in method.history] + [(layer.cols, layer.lora_B)]
        assert [cols.tolist()[0] for cols, _ in terms] == [0, 4, 8, 12]
        assert_column_layer_adds(layer, terms, method.scale)
    report = method.report(None)
    assert report["merges"] == 3 and report["column_sparsity"] == pytest.approx(1 - 16 / 32)


def test_phase_steps_cuts_fixed_length_phases():
    _, _, _, events = run_chain("c3la", 5, "method.phases=null", "method.phase_steps=2")
    assert [e[0] for e in events] == [2, 4]
