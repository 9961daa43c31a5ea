"""RAC specifics: within a phase A stays at its fresh N(0, 0.02^2) draw and only B trains; the
trained layer adds s * sum_j B_j A_j over every phase (dense reference: tests/helpers/chains.py)."""

from __future__ import annotations

import torch

from tests.helpers.chains import assert_layer_adds_every_phase, run_two_phases, second_phase_a


def test_a_is_frozen_within_a_phase_and_drawn_normal_with_std_0_02():
    method, _, _, events = run_two_phases("rac")
    restarts = []
    for name in method.layers:
        restart, end = second_phase_a(method, events, name)
        assert restart.equal(end) and not restart.equal(method.history[0][name][0])  # a new A per phase
        restarts.append(restart.flatten())
    values = torch.cat(restarts)  # 4 matrices x 4 x 32
    assert abs(float(values.std()) - 0.02) < 0.003
    assert_layer_adds_every_phase(method)
