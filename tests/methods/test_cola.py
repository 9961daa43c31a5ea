"""CoLA specifics: both factors train within a phase; at a boundary A restarts random (kaiming:
within 1 / sqrt(d_in)) and B at zero; the trained layer adds s * sum_j B_j A_j over every phase,
written out densely here. Merges and export rank: test_beyond_lora.py, base/test_lora_chain.py."""

from __future__ import annotations

from tests.helpers.chains import assert_layer_adds_every_phase, run_two_phases, second_phase_a


def test_a_trains_within_a_phase_and_restarts_within_the_kaiming_bound():
    method, _, _, events = run_two_phases("cola")
    for name in method.layers:
        restart, end = second_phase_a(method, events, name)
        assert not restart.equal(end)
        bound = restart.shape[1] ** -0.5
        assert 0.8 * bound < float(restart.abs().max()) <= bound
    assert_layer_adds_every_phase(method)
