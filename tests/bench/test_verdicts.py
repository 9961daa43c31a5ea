"""bench/verdicts.py: the rules on constructed comparisons whose intervals are known, the case the
previous "competitive" rule got wrong, preconditions, and Holm's correction within a family."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench.paired import ArmScores, compare, ratio
from bench.verdicts import (
    Verdict,
    apply_holm,
    assay_sensitivity,
    better,
    cheaper,
    grid_reason,
    inside_grid,
    judge,
    mechanism,
    non_inferior,
    not_tested,
)


def old_competitive_rule(mean_a: float, mean_b: float, std_a: float, std_b: float, n: int) -> bool:
    """The suite's previous rule: A is competitive with B when the difference is within the spread,
    the larger of either arm's seed standard deviation and the binomial standard error of the
    difference."""
    spread = max(std_a, std_b, math.sqrt((mean_a * (1 - mean_a) + mean_b * (1 - mean_b)) / n))
    return mean_a - mean_b >= -spread


def arms(a_values, b_values, a_seeds=None, b_seeds=None) -> tuple[ArmScores, ArmScores]:
    a_values, b_values = np.asarray(a_values, float), np.asarray(b_values, float)
    n = a_values.shape[1]
    ids = tuple(f"q{i}" for i in range(n))
    a_seeds = tuple(range(len(a_values))) if a_seeds is None else a_seeds
    b_seeds = tuple(range(len(b_values))) if b_seeds is None else b_seeds
    return ArmScores("A", a_seeds, ids, a_values), ArmScores("B", b_seeds, ids, b_values)


def shifted(gain: float, sd: float = 1.0, n: int = 100, seed: int = 0):
    """One run per arm on n items whose differences have mean exactly `gain` and sd exactly `sd`:
    the 95 % interval is gain -+ t(0.975, n - 1) sd / sqrt(n)."""
    z = np.random.default_rng(seed).normal(size=n)
    d = gain + sd * (z - z.mean()) / z.std(ddof=1)
    base = np.random.default_rng(seed + 1).normal(size=n)
    a, b = arms((base + d)[None], base[None])
    return compare(a, b, metric="score", kind="continuous", higher_is_better=True, cross_checks=False)


# --- the case the old rule gets wrong ----------------------------------------------------------


def asdiv_case():
    """100 items, 3 seeds: A gets 1 % exact match on every seed, B 0 %, 3 % and 6 % (mean 3 %)."""
    n = 100
    a = np.zeros((3, n))
    for s in range(3):
        a[s, 10 * s] = 1
    b = np.zeros((3, n))
    b[1, 50:53] = 1
    b[2, 50:56] = 1
    return arms(a, b)


def test_old_rule_calls_competitive_what_the_new_rule_leaves_open():
    a, b = asdiv_case()
    means_a, means_b = a.values.mean(1), b.values.mean(1)
    assert means_a.mean() == pytest.approx(0.01) and means_b.mean() == pytest.approx(0.03)
    # spread = max(0, std(0, 0.03, 0.06) = 0.03, sqrt((0.0099 + 0.0291) / 100) = 0.0197) = 0.03 >= 0.02
    assert old_competitive_rule(0.01, 0.03, np.std(means_a, ddof=1), np.std(means_b, ddof=1), 100)
    c = compare(a, b, metric="exact_match", kind="binary", higher_is_better=True)
    v = non_inferior("A is non-inferior to B on ASDiv", c, margin=0.02)
    assert c.gain == pytest.approx(-0.02)
    assert v.verdict == "inconclusive"
    assert v.ci90[0] < -0.02 < v.ci90[1]
    assert any(f"margin of {-v.ci90[0]:.4g}" in r for r in v.reasons)
    assert v.p_value > 0.05


# --- rules -------------------------------------------------------------------------------------


def test_better_worse_inconclusive():
    # t(0.975, 99) = 1.984, sd 1, n 100: the interval is gain -+ 0.198
    assert better("A > B", shifted(0.3)).verdict == "better"
    assert better("A > B", shifted(-0.3)).verdict == "worse"
    v = better("A > B", shifted(0.1))
    assert v.verdict == "inconclusive"
    assert v.ci95 == pytest.approx((0.1 - 0.19842, 0.1 + 0.19842), abs=1e-4)
    mde = v.comparison.mde80
    assert mde == pytest.approx((1.98422 + 0.84542) * 0.1, abs=1e-4)
    assert any(f"could detect about {mde:.4g} at 80 % power" in r for r in v.reasons)
    assert v.margin is None and v.kind == "better"


@pytest.mark.parametrize("gain", [-0.5, -0.2, -0.1, 0.0, 0.19, 0.2, 0.5])
def test_better_verdict_and_its_p_value_agree(gain):
    c = shifted(gain, n=100)
    v = better("A > B", c)
    assert (v.verdict == "better") == (v.p_value < 0.05 and c.gain > 0)
    assert v.p_value == pytest.approx(c.p_two_sided())


def test_non_inferior_rules():
    # t(0.95, 99) = 1.6604, sd 1, n 100: the one-sided bounds are gain -+ 0.166
    v = non_inferior("A >= B - 0.2", shifted(0.0), margin=0.2)
    assert v.verdict == "non-inferior" and v.ci90[0] == pytest.approx(-0.16604, abs=1e-4)
    assert non_inferior("x", shifted(0.0), margin=0.17).verdict == "non-inferior"
    assert non_inferior("x", shifted(0.0), margin=0.16).verdict == "inconclusive"
    strong = non_inferior("x", shifted(0.3), margin=0.1)
    assert strong.verdict == "non-inferior" and any("and better" in r for r in strong.reasons)
    assert non_inferior("x", shifted(-0.5), margin=0.1).verdict == "worse"
    open_ = non_inferior("x", shifted(-0.05), margin=0.1)
    assert open_.verdict == "inconclusive"
    assert any("margin of 0.216" in r for r in open_.reasons)  # delta* = 0.05 + 0.166
    assert open_.margin == 0.1
    with pytest.raises(ValueError):
        non_inferior("x", shifted(0.0), margin=0)


def test_non_inferior_verdict_and_its_p_value_agree():
    for gain in (-0.2, -0.1, -0.06, 0.0, 0.1):
        v = non_inferior("x", shifted(gain), margin=0.1)
        assert (v.verdict == "non-inferior") == (v.p_value < 0.05)


def test_cheaper():
    seeds = [0, 1, 2]
    half = ratio([1.0, 2.0, 3.0], [2.0, 4.0, 6.0], seeds, seeds, metric="seconds")
    assert cheaper("A is faster", half).verdict == "cheaper"
    assert cheaper("A is at least 2x faster", half, max_ratio=0.5).verdict == "inconclusive"
    double = ratio([2.0, 4.0, 6.0], [1.0, 2.0, 3.0], seeds, seeds)
    assert cheaper("A is faster", double).verdict == "worse"
    noisy = ratio([0.9, 1.2, 1.0], [1.0, 1.0, 1.1], seeds, seeds)
    v = cheaper("A is faster", noisy)
    assert v.verdict == "inconclusive" and v.delta == pytest.approx(noisy.ratio)
    assert v.margin == 1.0 and v.kind == "cheaper"


# --- preconditions -----------------------------------------------------------------------------


def test_failed_assay_sensitivity_means_not_tested():
    # the reference beats the base model by 0.05, 95 % lower bound 0.05 - 1.9842 x 0.01 = 0.03016 < 2 x 0.02
    reference_vs_base = shifted(0.05, sd=0.1)
    reason = assay_sensitivity(reference_vs_base, margin=0.02)
    assert reason is not None and "no assay sensitivity" in reason
    assert "0.03016" in reason and "0.04" in reason
    assert assay_sensitivity(shifted(0.1, sd=0.1), margin=0.02) is None
    v = judge("A >= ref - 0.02", "non_inferior", shifted(0.0, sd=0.01), margin=0.02, failures=[reason, None])
    assert v.verdict == "not tested" and v.reasons == (reason,)
    assert v.p_value is None and v.ci95 is None


def test_mechanism():
    assert mechanism(True, "ranks moved") is None
    assert "did not act" in mechanism(False, "no rank moved")
    assert "could not be verified" in mechanism(None, "no record")
    v = judge("x", "better", shifted(0.3), failures=[mechanism(False, "the gate never opened")])
    assert v.verdict == "not tested" and "the gate never opened" in v.reasons[0]


def test_rate_at_the_end_of_its_grid_is_provisional():
    grid = [1e-4, 3e-4, 1e-3]
    assert inside_grid(3e-4, grid) and not inside_grid(1e-3, grid) and not inside_grid(1e-4, grid)
    assert not inside_grid(1e-3 * (1 + 1e-12), grid) and not inside_grid(3e-3, grid)
    assert not inside_grid(1e-4, [1e-4]) and grid_reason(3e-4, grid) is None
    v = judge("x", "better", shifted(0.3), provisional=[grid_reason(1e-3, grid)])
    assert v.verdict == "better" and v.provisional
    assert any("provisional" in r and "0.001" in r for r in v.reasons)
    assert not judge("x", "better", shifted(0.3), provisional=[grid_reason(3e-4, grid)]).provisional


def test_judge_dispatches():
    assert judge("x", "better", shifted(0.3)).verdict == "better"
    assert judge("x", "non_inferior", shifted(0.0), margin=0.2).verdict == "non-inferior"
    seeds = [0, 1]
    assert judge("x", "cheaper", ratio([1.0, 2.0], [2.0, 4.0], seeds, seeds)).verdict == "cheaper"
    assert judge("x", "better", None, metric="acc").verdict == "not tested"
    with pytest.raises(ValueError):
        judge("x", "non_inferior", shifted(0.0))


# --- Holm --------------------------------------------------------------------------------------


def claim(name: str, p: float, family: str | None = "asdiv", verdict: str = "better") -> Verdict:
    return Verdict(name, "better", "acc", 0.1, (0.01, 0.2), (0.02, 0.18), None, verdict, (), p_value=p, family=family)


def test_holm_family_undoes_a_claim_that_passes_alone():
    family = [claim("a", 0.03), claim("b", 0.2, verdict="inconclusive"), claim("c", 0.5, verdict="inconclusive")]
    alone = apply_holm([claim("a", 0.03, family="alone")])
    assert alone[0].verdict == "better" and alone[0].p_adjusted == pytest.approx(0.03)
    out = apply_holm(family)
    # sorted 0.03 x 3 = 0.09; 0.2 x 2 = 0.4; 0.5 x 1 = 0.5
    assert [v.p_adjusted for v in out] == pytest.approx([0.09, 0.4, 0.5])
    assert out[0].verdict == "inconclusive"
    assert "after Holm's correction over the family asdiv of 3 claims (adjusted p = 0.09" in out[0].reasons[-1]
    assert out[1].verdict == "inconclusive" and out[1].reasons == ()  # not positive: nothing to undo


def test_holm_keeps_a_claim_that_survives_and_leaves_others_alone():
    skipped = not_tested("d", "better", "acc", ["no assay sensitivity"], family="asdiv")
    lone = claim("e", 0.04, family=None)
    out = apply_holm([claim("a", 0.001), skipped, claim("b", 0.02), lone, claim("x", 0.01, family="gsm")])
    assert out[0].verdict == "better" and out[0].p_adjusted == pytest.approx(0.002)
    assert out[2].verdict == "better" and out[2].p_adjusted == pytest.approx(0.02)
    assert out[1] == skipped and out[3] == lone
    assert out[4].p_adjusted == pytest.approx(0.01)


def test_holm_on_real_comparisons():
    vs = [better(f"claim {g}", shifted(g, seed=i), family="f") for i, g in enumerate((0.5, 0.21, 0.22))]
    assert [v.verdict for v in vs] == ["better"] * 3
    out = apply_holm(vs)
    # 0.21 and 0.22 clear 0 alone (p about 0.04 and 0.03) but not after doubling: 0.06
    assert [v.verdict for v in out] == ["better", "inconclusive", "inconclusive"]
    assert all(v.p_adjusted >= v.p_value for v in out)
    for v in out:
        assert (v.verdict == "better") == (v.p_adjusted < 0.05)


def test_as_dict_is_json():
    v = better("A > B", shifted(0.3))
    d = json.loads(json.dumps(v.as_dict(), allow_nan=False))
    assert d["verdict"] == "better" and d["comparison"]["gain"] == pytest.approx(0.3)
    skipped = not_tested("x", "cheaper", "seconds", ["no timing"])
    assert json.loads(json.dumps(skipped.as_dict()))["comparison"] is None
