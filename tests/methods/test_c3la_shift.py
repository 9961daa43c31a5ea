"""c3LA shift-only specifics: at a boundary only the window moves r columns; B is kept (not merged,
not reset) and the optimizer too, so lr_after_reset=constant has nothing to act on."""

from __future__ import annotations

import pytest

from bench.config import ConfigError
from tests.helpers.chains import assert_resume_continues_on_the_same_windows, assert_window_moved_and_b_kept
from tests.helpers.methods import method_from_config


def test_boundary_moves_the_window_by_r_and_keeps_b():
    for old, new in assert_window_moved_and_b_kept("c3la_shift").values():
        assert old == [0, 1, 2, 3] and new == [4, 5, 6, 7]


def test_resume_continues_on_the_same_windows():
    assert_resume_continues_on_the_same_windows("c3la_shift")


def test_constant_rate_after_reset_is_refused():
    with pytest.raises(ConfigError, match="method c3la_shift keeps its optimizer and schedule"):
        method_from_config("c3la_shift", "+method.lr_after_reset=constant")  # not in its YAML
