"""bench/paired.py against known answers: variances computed by hand, interval coverage on
simulated data with a known true difference, McNemar's exact p written out, exact enumeration of
the sign-flip test, Holm's adjustment by hand, and exact cost ratios."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit

from bench.paired import ArmScores, compare, holm, mcnemar_exact, ratio, unpaired


def ids(n: int) -> tuple[str, ...]:
    return tuple(f"item{i}" for i in range(n))


def arm(name: str, values, seeds=None, item_ids=None) -> ArmScores:
    values = np.asarray(values, dtype=float)
    seeds = tuple(range(values.shape[0])) if seeds is None else tuple(seeds)
    return ArmScores(name, seeds, ids(values.shape[1]) if item_ids is None else tuple(item_ids), values)


def cont(a: ArmScores, b: ArmScores, **kw):
    return compare(a, b, metric="score", kind="continuous", higher_is_better=True, **kw)


def binary(a: ArmScores, b: ArmScores, **kw):
    return compare(a, b, metric="exact_match", kind="binary", higher_is_better=True, **kw)


# --- the variance, by hand ---------------------------------------------------------------------


def test_paired_run_term_by_hand():
    # A = u_i + r_s + 0.1 and B = u_i on the same 5 seeds: every item difference is the same, so the
    # item and interaction terms vanish and the variance is var(r) / k with k - 1 df.
    rng = np.random.default_rng(1)
    u, r = rng.normal(size=40), np.array([0.03, -0.01, 0.02, 0.0, -0.04])
    c = cont(arm("A", u + r[:, None] + 0.1), arm("B", np.tile(u, (5, 1))))
    assert c.run_variance == "paired"
    assert c.gain == pytest.approx(0.1 + r.mean())
    assert c.item_var == pytest.approx(0, abs=1e-20)
    assert c.run_var == pytest.approx(np.var(r, ddof=1) / 5)
    assert c.df == pytest.approx(4)
    q = stats.t.ppf(0.975, 4)
    assert c.ci95 == pytest.approx((c.gain - q * c.se, c.gain + q * c.se))
    assert c.mde80 == pytest.approx((stats.t.ppf(0.975, 4) + stats.t.ppf(0.8, 4)) * c.se)


def test_terms_match_their_definitions():
    # item_var = var(d_i, ddof=1) / n; the raw run term var(per-seed mean difference) / k is split
    # into run_var and the item-by-run interaction that item_var already holds.
    rng = np.random.default_rng(2)
    k, n = 6, 50
    A = rng.normal(size=(k, n)) + rng.normal(size=(k, 1))
    B = rng.normal(size=(k, n))
    c = cont(arm("A", A), arm("B", B))
    D = A - B
    assert c.item_var == pytest.approx(np.var(D.mean(0), ddof=1) / n)
    assert c.run_var > 0
    assert c.run_var + c.interaction_var == pytest.approx(np.var(D.mean(1), ddof=1) / k)
    resid = D - D.mean(1, keepdims=True) - D.mean(0, keepdims=True) + D.mean()
    assert c.interaction_var == pytest.approx(np.sum(resid**2) / ((k - 1) * (n - 1)) / (n * k))
    assert c.se**2 == pytest.approx(c.item_var + c.run_var)


def test_constant_arm_contributes_no_run_variance():
    # A's 3 runs shift by r_s; B is one run (a base model): run_var = var(r) / 3 with 2 df.
    rng = np.random.default_rng(3)
    u, r = rng.normal(size=30), np.array([0.05, -0.02, 0.0])
    c = cont(arm("A", u + r[:, None]), arm("B", u[None], seeds=[7]))
    assert c.run_variance == "pooled"
    assert (c.k_a, c.k_b) == (3, 1)
    assert c.run_var == pytest.approx(np.var(r, ddof=1) / 3)
    assert c.df == pytest.approx(2)
    assert any("'B' has one run" in note for note in c.notes)


def test_pooled_run_term_by_hand():
    # 3 seeds each, different seed sets: s2_p (1/kA + 1/kB) with kA + kB - 2 df.
    rng = np.random.default_rng(4)
    u = rng.normal(size=25)
    ra, rb = np.array([0.1, 0.0, -0.05]), np.array([0.02, -0.03, 0.04])
    c = cont(arm("A", u + ra[:, None]), arm("B", u + rb[:, None], seeds=[10, 11, 12]))
    pooled = (2 * np.var(ra, ddof=1) + 2 * np.var(rb, ddof=1)) / 4
    assert c.run_variance == "pooled"
    assert c.run_var == pytest.approx(pooled * (1 / 3 + 1 / 3))
    assert c.df == pytest.approx(4)
    assert any("seed sets differ" in note for note in c.notes)


def test_one_run_each_covers_items_only():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(1, 60)), rng.normal(size=(1, 60))
    c = cont(arm("A", a), arm("B", b))
    assert c.run_variance == "none" and c.run_var == 0
    assert c.item_var == pytest.approx(np.var(a[0] - b[0], ddof=1) / 60)
    assert c.df == pytest.approx(59)
    assert any("item sampling only" in note for note in c.notes)


def test_fewer_than_five_shared_seeds_pool():
    rng = np.random.default_rng(6)
    c = cont(arm("A", rng.normal(size=(4, 20))), arm("B", rng.normal(size=(4, 20))))
    assert c.run_variance == "pooled"
    assert any("fewer than 5" in note for note in c.notes)


def test_lower_is_better_flips_the_gain():
    rng = np.random.default_rng(7)
    a, b = arm("A", rng.normal(size=(1, 30))), arm("B", rng.normal(size=(1, 30)) + 1)
    up = compare(a, b, metric="loss", kind="continuous", higher_is_better=True)
    down = compare(a, b, metric="loss", kind="continuous", higher_is_better=False)
    assert down.delta == up.delta == pytest.approx(up.gain)
    assert down.gain == pytest.approx(-up.gain)
    assert down.ci95 == pytest.approx((-up.ci95[1], -up.ci95[0]))
    assert down.bootstrap_ci95 == pytest.approx((-up.bootstrap_ci95[1], -up.bootstrap_ci95[0]), abs=1e-9)


def test_p_values_agree_with_the_intervals():
    rng = np.random.default_rng(8)
    c = cont(arm("A", rng.normal(0.2, 1, size=(3, 80))), arm("B", rng.normal(size=(3, 80)), seeds=[5, 6, 7]))
    # the one-sided 95 % lower bound is the threshold at which the one-sided p is 0.05
    assert c.p_value(c.ci90[0]) == pytest.approx(0.05)
    assert c.p_value(c.ci90[1], "less") == pytest.approx(0.05)
    assert c.p_two_sided(c.ci95[0]) == pytest.approx(0.05)
    t = c.gain / c.se
    assert c.p_two_sided() == pytest.approx(2 * stats.t.sf(abs(t), c.df))
    assert c.interval(0.95) == pytest.approx(c.ci95)


@pytest.mark.filterwarnings("error")
def test_identical_arms_give_a_zero_width_interval():
    values = (np.arange(40).reshape(2, 20) % 3 == 0).astype(float)
    c = binary(arm("A", values), arm("B", values))
    assert c.gain == 0 and c.se == 0 and c.df == math.inf
    assert c.ci95 == (0.0, 0.0) and c.ci90 == (0.0, 0.0) and c.mde80 == 0
    assert c.p_two_sided() == 1.0 and c.p_value(-0.01) == 0.0
    assert c.bootstrap_ci95 == (0.0, 0.0)
    assert all(p == 1.0 and b == c_ == 0 for _, b, c_, p in c.mcnemar)
    json.dumps(c.as_dict(), allow_nan=False)


# --- pairing -----------------------------------------------------------------------------------


def test_items_pair_by_id_and_runs_by_seed():
    rng = np.random.default_rng(9)
    A, B = rng.normal(size=(5, 30)), rng.normal(size=(5, 30))
    base = cont(arm("A", A), arm("B", B))
    cols, rows = rng.permutation(30), rng.permutation(5)
    shuffled = arm("B", B[rows][:, cols], seeds=np.arange(5)[rows], item_ids=np.array(ids(30))[cols])
    again = cont(arm("A", A), shuffled)
    for field in ("gain", "item_var", "run_var", "interaction_var", "df"):
        assert getattr(again, field) == pytest.approx(getattr(base, field))
    assert again.bootstrap_ci95 == pytest.approx(base.bootstrap_ci95)
    assert again.permutation_p == base.permutation_p


def test_mismatched_item_ids_raise_with_counts():
    a = arm("A", np.zeros((1, 5)), item_ids=["a", "b", "c", "d", "e"])
    b = arm("B", np.zeros((1, 5)), item_ids=["a", "b", "x", "y", "z"])
    with pytest.raises(ValueError, match=r"3 ids only in A \(e\.g\. 'c', 'd', 'e'\), 3 only in B"):
        cont(a, b)


def test_binary_values_must_be_zero_or_one():
    with pytest.raises(ValueError, match="0 or 1"):
        binary(arm("A", [[0, 1, 0.5]]), arm("B", [[0, 1, 1]]))


def test_paired_interval_is_narrower_on_correlated_items():
    # item difficulty shared by both arms dominates the per-item scores; the difference cancels it
    rng = np.random.default_rng(10)
    u = rng.normal(size=300)
    A = (rng.random((3, 300)) < expit(2 * u + 0.2)).astype(float)
    B = (rng.random((3, 300)) < expit(2 * u)).astype(float)
    a, b = arm("A", A), arm("B", B, seeds=[3, 4, 5])
    paired = binary(a, b, cross_checks=False)
    naive = unpaired(a, b, metric="exact_match", kind="binary", higher_is_better=True)
    assert paired.gain == pytest.approx(naive.gain)
    assert naive.item_var > 2 * paired.item_var
    assert naive.ci95[1] - naive.ci95[0] > 1.3 * (paired.ci95[1] - paired.ci95[0])
    assert not naive.paired_items and "unpaired" in naive.method


# --- coverage on simulated data with a known true gain -----------------------------------------

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(80)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def population_accuracy(effect: float, tau: float) -> float:
    """E[expit(u + effect + r)] with u ~ N(0, 1) and r ~ N(0, tau^2), by Gauss-Hermite quadrature."""
    return float(np.sum(_WEIGHTS * expit(effect + math.sqrt(1 + tau**2) * _NODES)))


def simulate_binary(rng, n, k, tau, shared_seeds, effects=(0.3, 0.0), shared_share=0.7):
    """Logistic items: u_i ~ N(0, 1) shared; run shifts r ~ N(0, tau^2), with `shared_share` of
    their variance common to both arms on the same seed; Bernoulli outcomes."""
    u = rng.normal(size=n)
    if shared_seeds:
        common = rng.normal(size=k) * tau * math.sqrt(shared_share)
        ra, rb = (common + rng.normal(size=k) * tau * math.sqrt(1 - shared_share) for _ in range(2))
    else:
        ra, rb = rng.normal(size=k) * tau, rng.normal(size=k) * tau
    A = (rng.random((k, n)) < expit(u + effects[0] + ra[:, None])).astype(float)
    B = (rng.random((k, n)) < expit(u + effects[1] + rb[:, None])).astype(float)
    b_seeds = range(k) if shared_seeds else range(100, 100 + k)
    return arm("A", A), arm("B", B, seeds=b_seeds)


def coverage(replicates, draw, truth, interval) -> float:
    hits = 0
    for _ in range(replicates):
        lo, hi = interval(*draw())
        hits += lo <= truth <= hi
    return hits / replicates


def t_interval(a, b):
    return binary(a, b, cross_checks=False).ci95


@pytest.mark.parametrize(
    "k, shared_seeds, tau, seed",
    [(3, False, 0.15, 11), (5, True, 0.15, 12)],
    ids=["pooled-k3", "paired-k5"],
)
def test_binary_interval_covers_the_true_gain(k, shared_seeds, tau, seed):
    rng = np.random.default_rng(seed)
    truth = population_accuracy(0.3, tau) - population_accuracy(0.0, tau)
    rate = coverage(400, lambda: simulate_binary(rng, 300, k, tau, shared_seeds), truth, t_interval)
    assert 0.91 <= rate <= 0.98, rate


def test_continuous_interval_covers_the_true_gain_against_a_constant_arm():
    # y = mu_X + u_i + v_Xi + r_s + e; B is one deterministic run (a base model). True gain 0.1.
    rng = np.random.default_rng(14)
    n, k = 200, 3

    def draw():
        u = rng.normal(size=n)
        a = 0.1 + u + 0.3 * rng.normal(size=n) + 0.05 * rng.normal(size=(k, 1)) + 0.5 * rng.normal(size=(k, n))
        b = u + 0.3 * rng.normal(size=n) + 0.5 * rng.normal(size=n)
        return arm("A", a), arm("B", b[None], seeds=[0])

    rate = coverage(400, draw, 0.1, lambda a, b: cont(a, b, cross_checks=False).ci95)
    assert 0.91 <= rate <= 0.98, rate


def uncorrected_interval(a: ArmScores, b: ArmScores) -> tuple[float, float]:
    """The item term plus the raw pooled run term (equal run counts), the interaction counted twice."""
    A, B = a.values, b.values
    n, k = A.shape[1], A.shape[0]
    item = np.var(A.mean(0) - B.mean(0), ddof=1) / n
    run = (np.var(A.mean(1), ddof=1) + np.var(B.mean(1), ddof=1)) / 2 * (2 / k)
    var = item + run
    df = var**2 / (item**2 / (n - 1) + run**2 / (2 * k - 2))
    q = stats.t.ppf(0.975, df) * math.sqrt(var)
    gain = A.mean() - B.mean()
    return gain - q, gain + q


def test_counting_the_interaction_twice_overcovers():
    # With small run shifts, most run-to-run variation of an arm's mean is item-by-run noise that the
    # item term already holds: adding the raw run term on top gives intervals that almost always
    # cover, which is why compare() subtracts the interaction once. Same 300 draws for both.
    rng = np.random.default_rng(15)
    truth = population_accuracy(0.3, 0.02) - population_accuracy(0.0, 0.02)
    draws = [simulate_binary(rng, 300, 3, 0.02, False) for _ in range(300)]
    corrected = coverage(300, iter(draws).__next__, truth, t_interval)
    uncorrected = coverage(300, iter(draws).__next__, truth, uncorrected_interval)
    assert 0.91 <= corrected <= 0.98, corrected
    assert uncorrected > 0.985, uncorrected


# --- cross-checks ------------------------------------------------------------------------------


def test_mcnemar_by_hand():
    # b = 2 (A right, B wrong), c = 9: p = 2 * sum_{j<=2} C(11, j) / 2^11 = 2 * (1 + 11 + 55) / 2048
    assert mcnemar_exact(2, 9) == pytest.approx(2 * (1 + 11 + 55) / 2048) == pytest.approx(0.0654296875)
    assert mcnemar_exact(9, 2) == mcnemar_exact(2, 9)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0  # 2 * P(X <= 5 | 10) > 1 is capped
    a = np.array([1] * 2 + [0] * 9 + [1] * 10 + [0] * 9)
    b = np.array([0] * 2 + [1] * 9 + [1] * 10 + [0] * 9)
    c = binary(arm("A", a[None], seeds=[4]), arm("B", b[None], seeds=[4]))
    assert c.mcnemar == ((4, 2, 9, pytest.approx(0.0654296875)),)
    assert c.permutation_p is None


def test_mcnemar_pairs_a_constant_arm_with_every_run():
    rng = np.random.default_rng(16)
    A = (rng.random((3, 50)) < 0.6).astype(float)
    base = (rng.random((1, 50)) < 0.4).astype(float)
    c = binary(arm("A", A, seeds=[1, 2, 3]), arm("base", base, seeds=[0]))
    assert [row[0] for row in c.mcnemar] == [1, 2, 3]
    for (_, b, c_, p), row in zip(c.mcnemar, A):
        assert (b, c_) == (int(np.sum((row == 1) & (base[0] == 0))), int(np.sum((row == 0) & (base[0] == 1))))
        assert p == mcnemar_exact(b, c_)


def test_sign_flip_test_matches_exact_enumeration():
    d = np.array([0.9, 0.4, -0.2, 0.7, 0.1, 0.5, -0.3, 0.8, 0.6, 0.2])
    signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * 10)).reshape(10, -1).T  # all 1024 sign vectors
    exact = np.mean(np.abs(signs @ d) >= abs(d.sum()) - 1e-12)
    c = cont(arm("A", d[None]), arm("B", np.zeros((1, 10))))
    assert c.permutation_p == pytest.approx(exact, abs=0.01)
    same = cont(arm("A", np.full((1, 20), 0.5)), arm("B", np.zeros((1, 20))))
    assert same.permutation_p == pytest.approx(1 / 10_001)  # only all-plus and all-minus reach it


def test_bootstrap_agrees_with_the_t_interval_and_is_reproducible():
    # well behaved: the variance is mostly items' differences; runs add a little
    rng = np.random.default_rng(17)
    n, k = 400, 5
    v = rng.normal(size=n)
    A = 0.2 + v + 0.05 * rng.normal(size=(k, 1)) + 0.2 * rng.normal(size=(k, n))
    B = 0.2 * rng.normal(size=(k, n))
    c = cont(arm("A", A), arm("B", B), rng_seed=3)
    width_t, width_b = c.ci95[1] - c.ci95[0], c.bootstrap_ci95[1] - c.bootstrap_ci95[0]
    assert abs(width_b / width_t - 1) < 0.25
    assert abs((c.bootstrap_ci95[0] + c.bootstrap_ci95[1]) / 2 - c.gain) < 0.1 * width_t
    assert c.bootstrap_resamples == 10_000
    again = cont(arm("A", A), arm("B", B), rng_seed=3)
    assert again.bootstrap_ci95 == c.bootstrap_ci95 and again.permutation_p == c.permutation_p
    other = cont(arm("A", A), arm("B", B), rng_seed=4)
    assert other.bootstrap_ci95 != c.bootstrap_ci95


def test_bootstrap_is_fast():
    rng = np.random.default_rng(18)
    A, B = (rng.random((5, 2000)) < 0.6).astype(float), (rng.random((5, 2000)) < 0.55).astype(float)
    start = time.process_time()
    c = binary(arm("A", A), arm("B", B))
    assert time.process_time() - start < 2.0  # about 0.3 s of one core; a loop per resample takes minutes
    assert c.bootstrap_ci95[0] < c.gain < c.bootstrap_ci95[1]


def test_as_dict_is_json():
    rng = np.random.default_rng(19)
    c = binary(arm("A", (rng.random((2, 30)) < 0.5)), arm("B", (rng.random((2, 30)) < 0.5)))
    d = json.loads(json.dumps(c.as_dict(), allow_nan=False))
    assert d["ci95"] == list(c.ci95) and d["mcnemar"][0][0] == 0 and d["a"] == "A"


# --- ratios and Holm ---------------------------------------------------------------------------


def test_ratio_exact():
    r = ratio([2.0, 4.0, 6.0], [1.0, 2.0, 3.0], [0, 1, 2], [0, 1, 2], a="lora", b="full", metric="seconds")
    assert r.paired and r.k == 3 and r.df == 2
    assert r.ratio == pytest.approx(2.0)
    assert r.ci95 == pytest.approx((2.0, 2.0)) and r.ci90 == pytest.approx((2.0, 2.0))
    # seeds in another order pair by seed, not position
    assert ratio([6.0, 2.0, 4.0], [1.0, 2.0, 3.0], [2, 0, 1], [0, 1, 2]).ratio == pytest.approx(2.0)


def test_ratio_intervals_by_hand():
    a, b = np.array([1.0, 1.2, 0.9, 1.1]), np.array([2.0, 2.1, 1.9, 2.3])
    r = ratio(a, b, [0, 1, 2, 3], [0, 1, 2, 3])
    logs = np.log(a / b)
    half = stats.t.ppf(0.975, 3) * np.std(logs, ddof=1) / 2
    assert r.ci95 == pytest.approx((math.exp(logs.mean() - half), math.exp(logs.mean() + half)))
    welch = ratio(a, b, [0, 1, 2, 3], [5, 6, 7, 8])
    ref = stats.ttest_ind(np.log(a), np.log(b), equal_var=False)
    assert not welch.paired and welch.df == pytest.approx(ref.df)
    assert welch.p_two_sided() == pytest.approx(ref.pvalue)
    lone = ratio([1.0], [2.0], [0], [0])
    assert lone.df == 0 and lone.ci95 == (0.0, math.inf) and lone.p_two_sided() == 1.0


@pytest.mark.parametrize("bad", [[1.0, 0.0], [1.0, -2.0], [1.0, math.nan]])
def test_ratio_refuses_non_positive_values(bad):
    with pytest.raises(ValueError, match="> 0"):
        ratio(bad, [1.0, 1.0], [0, 1], [0, 1])


def test_holm_by_hand():
    # sorted: a 0.01 x 3 = 0.03; c 0.03 x 2 = 0.06; b 0.04 x 1 = 0.04, raised to 0.06 (monotone)
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})
    assert holm({"x": 0.6, "y": 0.5}) == {"x": 1.0, "y": 1.0}  # 0.5 x 2 = 1; capped
    assert holm({"only": 0.02}) == {"only": 0.02}
    with pytest.raises(ValueError):
        holm({"bad": 1.5})
