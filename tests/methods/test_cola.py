"""CoLA specifics: both factors train within a phase; at a boundary A restarts random (kaiming:
within 1 / sqrt(d_in)) and B at zero; the trained layer adds s * sum_j B_j A_j over every phase,
written out densely here. Merges and export rank: test_beyond_lora.py, test_chain_merges.py."""

from __future__ import annotations

from tests.methods.test_asym_lora import assert_layer_adds, factors
from tests.methods.test_beyond_lora import run_chain


def run_two_phases(name: str):
    """4 steps, a boundary after step 2 (a phase's first step has B = 0, so A's gradient is 0)."""
    return run_chain(name, 4, "method.phases=2")


def assert_layer_adds_every_phase(method) -> None:
    for name, layer in method.layers.items():
        terms = [*(m[name] for m in method.history), factors(layer)]
        assert len(terms) == 2
        assert_layer_adds(layer, sum(method.scale * b.detach() @ a.detach() for a, b in terms))


def second_phase_a(method, events, name: str):
    """A right after the boundary (its restart) and at the end of the second phase."""
    return events[0][2][name]["lora_A.default.weight"], factors(method.layers[name])[0].detach()


def test_a_trains_within_a_phase_and_restarts_within_the_kaiming_bound():
    method, _, _, events = run_two_phases("cola")
    for name in method.layers:
        restart, end = second_phase_a(method, events, name)
        assert not restart.equal(end)
        bound = restart.shape[1] ** -0.5
        assert 0.8 * bound < float(restart.abs().max()) <= bound
    assert_layer_adds_every_phase(method)
