"""Random-offset shift-only c3LA specifics: at a boundary the window jumps to a random contiguous
offset; B is kept and nothing merges. The offsets' spread and export: test_c3la_offset.py."""

from __future__ import annotations

import pytest

from bench.config import ConfigError
from tests.helpers.chains import assert_resume_continues_on_the_same_windows, assert_window_moved_and_b_kept
from tests.helpers.methods import method_from_config


def test_boundary_jumps_to_a_contiguous_window_and_keeps_b():
    moved = assert_window_moved_and_b_kept("c3la_offset_shift")
    for old, new in moved.values():
        assert old == [0, 1, 2, 3] and new == list(range(new[0], new[0] + 4)) and 0 <= new[0] <= 28
    assert len({new[0] for _, new in moved.values()}) > 1  # each matrix draws its own offset


def test_resume_continues_on_the_same_windows():
    assert_resume_continues_on_the_same_windows("c3la_offset_shift")


def test_constant_rate_after_reset_is_refused():
    with pytest.raises(ConfigError, match="method c3la_offset_shift keeps its optimizer and schedule"):
        method_from_config("c3la_offset_shift", "+method.lr_after_reset=constant")  # not in its YAML
