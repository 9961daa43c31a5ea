"""r-c3LA specifics: each matrix visits the non-overlapping windows in its own seeded order
without replacement, and after the last window the same order again. That training follows these
windows: test_beyond_lora.py."""

from __future__ import annotations

from tests.helpers.methods import method_from_config
from tests.helpers.tiny import tiny_llama


def window_starts(seed: int, phases: int) -> dict:
    """Each matrix's window start in phases 0..phases-1 (r = 8 on 32 input columns: 4 windows)."""
    method = method_from_config("c3la_random", "method.r=8", f"seed={seed}")
    method.apply(tiny_llama())
    return {name: [int(method.columns(name, 32, p)[0]) for p in range(phases)] for name in method.layers}


def test_after_every_window_the_same_order_repeats():
    for starts in window_starts(3, 8).values():
        assert sorted(starts[:4]) == [0, 8, 16, 24] and starts[4:] == starts[:4]


def test_order_follows_the_selector_seed():
    first = window_starts(3, 4)
    assert first == window_starts(3, 4) and first != window_starts(4, 4)
    assert len({tuple(s) for s in first.values()}) > 1  # each matrix its own order
