"""Paired comparisons of two arms scored on the same items: the estimate, its standard error, intervals,
power, and the cross-checks that a reader of a comparison can hold it against.

An arm is k training runs (seeds) of one method, each scored item by item on the same n evaluation
items (`ArmScores`). The quantity compared is the difference of the arms' means of one per-item
metric. Its sampling variance has two sources: which items the benchmark happens to contain, and
which runs (seeds) each arm happens to have. With the model

    y[X, s, i] = mu_X + u_i + v_Xi + r_Xs + e_Xsi

(item difficulty u_i, shared by both arms; the arm's item-specific deviation v_Xi; the run's shift
r_Xs; the item-by-run noise e_Xsi), the variance of mean(A) - mean(B) is

    var(v_A - v_B) / n  +  run variance / k  +  interaction variance / (n k).

Item difficulty u_i cancels because both arms score the same items: the item term is the variance of
the per-item differences d_i, not of each arm's scores (Miller 2024, section on paired differences).
Averaging each item over its runs before differencing makes var(d_i) / n estimate the first term
plus the interaction term; the variance of the per-run means over runs estimates the second term
plus the interaction term again. `compare` therefore subtracts the interaction, estimated by the
residual mean square of a two-way (runs x items) decomposition, once from the run term
(`interaction_var`); without that correction the interval is too wide whenever answers flip from
seed to seed more than the seeds' mean scores move, which is the usual case for fine-tuned models.
The degrees of freedom of the sum come from Welch-Satterthwaite.

The intervals are t intervals. Two cross-checks accompany them: a two-level paired bootstrap
(items and runs resampled; McCullagh 2000 shows that no bootstrap of a crossed array is unbiased
for the variance of its mean, and this one counts the interaction twice, so it is mildly
conservative), and the test by metric type recommended by Dror et al. 2018: McNemar's exact test
for binary outcomes, a paired sign-flip permutation test for continuous ones.

Sources:
- Dror, Baumer, Shlomov, Reichart (2018). The Hitchhiker's Guide to Testing Statistical
  Significance in Natural Language Processing. ACL. Choose the test by the metric's type; pair.
- Card, Henderson, Khandelwal, Jia, Mahowald, Jurafsky (2020). With Little Power Comes Great
  Responsibility. EMNLP. Report the minimum detectable effect at 80 % power (`mde80`).
- Miller (2024). Adding Error Bars to Evals: A Statistical Approach to Language Model
  Evaluations. arXiv:2411.00640. Paired differences over shared items; clustered and repeated
  measurements; the run (resampling) component of the variance.
- Dodge, Gururangan, Card, Schwartz, Smith (2019). Show Your Work: Improved Reporting of
  Experimental Results. EMNLP. Run-to-run variation is part of a method's result.
- Satterthwaite (1946), Welch (1947): degrees of freedom of a sum of variance estimates.
- McNemar (1947); Holm (1979). A Simple Sequentially Rejective Multiple Test Procedure.
- McCullagh (2000). Resampling and exchangeable arrays. Bernoulli 6(2).

Pure numpy/scipy: loading result files is bench.items' and its callers' job.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

KINDS = ("binary", "continuous")
PAIRED_MIN_SEEDS = 5  # fewer shared seeds than this: the run variance is pooled, not paired
BOOTSTRAP_CELLS = 2_000_000  # resamples x items drawn at once (16 MB of float64)


@dataclass(frozen=True, eq=False)
class ArmScores:
    """One arm's per-item values of one metric: row r is the run with seed `seeds[r]`, column j the
    item `item_ids[j]`. An arm with one run (an untrained base model, say) is a constant arm."""

    name: str
    seeds: tuple[int, ...]
    item_ids: tuple[str, ...]
    values: np.ndarray

    def __post_init__(self) -> None:
        seeds = tuple(int(s) for s in self.seeds)
        ids = tuple(str(i) for i in self.item_ids)
        values = np.array(self.values, dtype=float, copy=True)
        if values.ndim != 2 or values.shape != (len(seeds), len(ids)):
            raise ValueError(
                f"arm {self.name!r}: values have shape {values.shape}, expected (runs, items) = "
                f"({len(seeds)}, {len(ids)})"
            )
        if not seeds or not ids:
            raise ValueError(f"arm {self.name!r}: needs at least one run and one item")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"arm {self.name!r}: seeds repeat: {seeds}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"arm {self.name!r}: item ids repeat")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"arm {self.name!r}: values must be finite")
        values.setflags(write=False)
        object.__setattr__(self, "seeds", seeds)
        object.__setattr__(self, "item_ids", ids)
        object.__setattr__(self, "values", values)

    @property
    def k(self) -> int:
        return len(self.seeds)

    @property
    def n(self) -> int:
        return len(self.item_ids)


@dataclass(frozen=True)
class Comparison:
    """The comparison of arm `a` against arm `b` on one metric.

    `delta` is mean(A) - mean(B) in the metric's units; `gain` is delta oriented so that positive
    means A is better (-delta when lower is better). Everything below is on `gain`. The variance
    se**2 = item_var + run_var; `interaction_var` is the item-by-run part that item_var already holds
    and that was removed from the raw run term. `ci95`/`ci90` are the two-sided t intervals at
    `confidence[0]`/`confidence[1]` (so with the defaults ci90[0] is the one-sided 95 % lower bound);
    `interval(level)` gives any other. `mde80` is the gain a two-sided 5 % test detects with 80 %
    power (Card et al. 2020)."""

    a: str
    b: str
    metric: str
    kind: str
    higher_is_better: bool
    delta: float
    gain: float
    item_var: float
    run_var: float
    interaction_var: float
    se: float
    df: float
    run_variance: str  # paired | pooled | none
    ci95: tuple[float, float]
    ci90: tuple[float, float]
    mde80: float
    n_items: int
    k_a: int
    k_b: int
    method: str
    bootstrap_ci95: tuple[float, float] | None
    bootstrap_resamples: int
    mcnemar: tuple[tuple[int, int, int, float], ...] | None  # (seed, b, c, p) per run pair
    permutation_p: float | None
    notes: tuple[str, ...]
    confidence: tuple[float, float] = (0.95, 0.90)
    paired_items: bool = True

    def interval(self, level: float) -> tuple[float, float]:
        """The two-sided t interval of the gain at confidence `level`."""
        return _t_interval(self.gain, self.se, self.df, level)

    def p_value(self, threshold: float = 0.0, alternative: str = "greater") -> float:
        """One-sided t p-value. "greater": H0 gain <= threshold (evidence that A beats the threshold);
        "less": H0 gain >= threshold."""
        return _one_sided_p(self.gain - threshold, self.se, self.df, alternative)

    def p_two_sided(self, threshold: float = 0.0) -> float:
        """Two-sided t p-value of H0 gain == threshold."""
        return _two_sided_p(self.gain - threshold, self.se, self.df)

    def as_dict(self) -> dict:
        """A JSON-ready dict (tuples become lists, a non-finite float becomes None)."""
        return _jsonable(asdict(self))


@dataclass(frozen=True)
class RatioComparison:
    """A cost ratio a / b (time, memory): the geometric mean ratio over runs and its t interval,
    computed on the logs and exponentiated. `k` is the number of log ratios (paired seeds) or of
    runs in all (unpaired); `df == 0` means no variance could be estimated and the interval is
    (0, inf)."""

    a: str
    b: str
    metric: str
    ratio: float
    log_ratio: float
    se_log: float
    df: float
    ci95: tuple[float, float]
    ci90: tuple[float, float]
    k: int
    k_a: int
    k_b: int
    paired: bool
    method: str
    notes: tuple[str, ...]
    confidence: tuple[float, float] = (0.95, 0.90)

    def interval(self, level: float) -> tuple[float, float]:
        """The two-sided interval of the ratio at confidence `level`."""
        if self.df == 0:
            return (0.0, math.inf)
        lo, hi = _t_interval(self.log_ratio, self.se_log, self.df, level)
        return (math.exp(lo), math.exp(hi))

    def p_value(self, threshold: float = 1.0, alternative: str = "less") -> float:
        """One-sided p-value on the log scale. "less": H0 ratio >= threshold (evidence that A costs
        less than threshold x B); "greater": H0 ratio <= threshold."""
        if self.df == 0:
            return 1.0
        return _one_sided_p(self.log_ratio - math.log(threshold), self.se_log, self.df, alternative)

    def p_two_sided(self, threshold: float = 1.0) -> float:
        """Two-sided p-value of H0 ratio == threshold."""
        if self.df == 0:
            return 1.0
        return _two_sided_p(self.log_ratio - math.log(threshold), self.se_log, self.df)

    def as_dict(self) -> dict:
        return _jsonable(asdict(self))


# --- the estimate ------------------------------------------------------------------------------


def compare(
    a: ArmScores,
    b: ArmScores,
    *,
    metric: str,
    kind: str,
    higher_is_better: bool,
    confidence: tuple[float, float] = (0.95, 0.90),
    bootstrap: int = 10_000,
    permutations: int = 10_000,
    rng_seed: int = 0,
    cross_checks: bool = True,
) -> Comparison:
    """Compare arm `a` with arm `b` on the items both scored (paired by item id) and, where the
    arms share their seeds, on paired runs.

    Items: b's columns are put in a's order; differing id sets raise ValueError. Runs: with the
    same seed set in both arms, row s of A pairs with row s of B (the seed fixes the data order, so
    equal seeds share batches); with at least `PAIRED_MIN_SEEDS` of them the run variance is that of
    the per-seed mean differences (`run_variance="paired"`), otherwise it is pooled over the arms
    (`"pooled"`); with one run in each arm there is no run term (`"none"`). See the module
    docstring for the variance decomposition.

    Cross-checks (`cross_checks=True`): a two-level paired bootstrap with `bootstrap` resamples
    (`bootstrap_ci95`), and McNemar's exact test per run pair (binary) or a sign-flip permutation
    test with `permutations` flips (continuous), all drawn from `rng_seed`.
    """
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {KINDS}")
    design = _design(a, b, kind)
    out = _estimate(design, metric=metric, kind=kind, higher_is_better=higher_is_better, confidence=confidence)
    if not cross_checks:
        return out
    boot_rng, perm_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(rng_seed).spawn(2))
    sign = 1.0 if higher_is_better else -1.0
    boot = _bootstrap(design, sign, bootstrap, boot_rng)
    notes = list(out.notes)
    mcnemar = permutation_p = None
    if kind == "binary":
        mcnemar = _mcnemar(design)
        if mcnemar is None:
            notes.append("McNemar needs paired runs (shared seeds or a constant arm): not computed")
    else:
        permutation_p = _sign_flip_p(design.A.mean(0) - design.B.mean(0), permutations, perm_rng)
    return replace(
        out,
        bootstrap_ci95=boot,
        bootstrap_resamples=bootstrap,
        mcnemar=mcnemar,
        permutation_p=permutation_p,
        notes=tuple(notes),
    )


def unpaired(
    a: ArmScores,
    b: ArmScores,
    *,
    metric: str,
    kind: str,
    higher_is_better: bool,
    confidence: tuple[float, float] = (0.95, 0.90),
) -> Comparison:
    """The same estimate with the items treated as independent between the arms:
    item_var = var(mean_A_i) / n + var(mean_B_i) / n. This is the common but wrong estimator for two
    arms scored on the same items: it counts the variance of item difficulty, which the difference
    cancels, so its interval is too wide when items are positively correlated across arms. Kept to
    show that pairing matters; no cross-checks."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {KINDS}")
    design = _design(a, b, kind)
    return _estimate(
        design, metric=metric, kind=kind, higher_is_better=higher_is_better, confidence=confidence, paired_items=False
    )


@dataclass(frozen=True)
class _Design:
    """Two arms aligned: A (kA x n) and B (kB x n) with B's items in A's order and, when the seeds
    are shared, B's rows in A's seed order."""

    a: str
    b: str
    A: np.ndarray
    B: np.ndarray
    a_seeds: tuple[int, ...]
    b_seeds: tuple[int, ...]
    shared_seeds: bool  # same seed set, at least two runs: rows pair


def _design(a: ArmScores, b: ArmScores, kind: str) -> _Design:
    if a.n < 2:
        raise ValueError("a comparison needs at least 2 items")
    B = _align_items(a, b)
    for arm, values in ((a, a.values), (b, B)):
        if kind == "binary" and not np.all((values == 0) | (values == 1)):
            raise ValueError(f"arm {arm.name!r}: a binary metric's values must be 0 or 1")
    shared = a.k > 1 and set(a.seeds) == set(b.seeds)
    b_seeds = b.seeds
    if shared:
        row = {s: r for r, s in enumerate(b.seeds)}
        B = B[[row[s] for s in a.seeds]]
        b_seeds = a.seeds
    return _Design(a.name, b.name, a.values, B, a.seeds, b_seeds, shared)


def _align_items(a: ArmScores, b: ArmScores) -> np.ndarray:
    """b's values with columns in a's item order; ValueError when the id sets differ."""
    if a.item_ids == b.item_ids:
        return b.values
    in_a, in_b = set(a.item_ids), set(b.item_ids)
    only_a = [i for i in a.item_ids if i not in in_b]
    only_b = [i for i in b.item_ids if i not in in_a]
    if only_a or only_b:
        raise ValueError(
            f"arms {a.name!r} and {b.name!r} scored different items: {len(only_a)} ids only in A "
            f"{_examples(only_a)}, {len(only_b)} only in B {_examples(only_b)}"
        )
    column = {i: j for j, i in enumerate(b.item_ids)}
    return b.values[:, [column[i] for i in a.item_ids]]


def _examples(ids: list[str]) -> str:
    return "(e.g. " + ", ".join(repr(i) for i in ids[:3]) + ")" if ids else "()"


def _estimate(
    d: _Design,
    *,
    metric: str,
    kind: str,
    higher_is_better: bool,
    confidence: tuple[float, float],
    paired_items: bool = True,
) -> Comparison:
    n, k_a, k_b = d.A.shape[1], d.A.shape[0], d.B.shape[0]
    delta = float(d.A.mean() - d.B.mean())
    gain = delta if higher_is_better else -delta
    item_var, item_terms = _item_term(d.A, d.B, paired_items)
    run = _run_term(d)
    var = item_var + run.var
    terms = item_terms + run.terms
    df = _satterthwaite(var, terms)
    se = math.sqrt(var)
    notes = list(run.notes)
    if var == 0:
        notes.append("the arms agree on every item and run: the interval has zero width")
    items = "paired over items (per-item mean differences)" if paired_items else "unpaired over items (wrong here)"
    method = f"t interval, {items}, {n} items; {run.description}; Welch-Satterthwaite df"
    return Comparison(
        a=d.a,
        b=d.b,
        metric=metric,
        kind=kind,
        higher_is_better=higher_is_better,
        delta=delta,
        gain=gain,
        item_var=item_var,
        run_var=run.var,
        interaction_var=run.interaction,
        se=se,
        df=df,
        run_variance=run.mode,
        ci95=_t_interval(gain, se, df, confidence[0]),
        ci90=_t_interval(gain, se, df, confidence[1]),
        mde80=_mde80(se, df),
        n_items=n,
        k_a=k_a,
        k_b=k_b,
        method=method,
        bootstrap_ci95=None,
        bootstrap_resamples=0,
        mcnemar=None,
        permutation_p=None,
        notes=tuple(notes),
        confidence=tuple(confidence),
        paired_items=paired_items,
    )


Terms = tuple[tuple[float, float], ...]  # (signed variance estimate, its df), for Satterthwaite


def _item_term(A: np.ndarray, B: np.ndarray, paired: bool) -> tuple[float, Terms]:
    """Variance of the gain from item sampling: var(d_i) / n with n - 1 df, d_i the difference of
    the arms' per-item means over their runs; unpaired, the sum of each arm's var(mean_i) / n."""
    n = A.shape[1]
    if paired:
        v = float(np.var(A.mean(0) - B.mean(0), ddof=1)) / n
        return v, ((v, n - 1),)
    va, vb = (float(np.var(X.mean(0), ddof=1)) / n for X in (A, B))
    return va + vb, ((va, n - 1), (vb, n - 1))


@dataclass(frozen=True)
class _RunTerm:
    mode: str
    var: float  # net of the interaction; never negative
    interaction: float
    terms: Terms
    description: str
    notes: tuple[str, ...]


def _run_term(d: _Design) -> _RunTerm:
    """Variance of the gain from run sampling.

    paired (>= PAIRED_MIN_SEEDS shared seeds): var over seeds of the per-seed mean difference / k,
    k - 1 df. pooled: s2_p (1/kA + 1/kB) with s2_p the pooled variance of the arms' per-run means,
    kA + kB - 2 df, counting only arms with more than one run (a single multi-run arm X gives
    s2_X / kX, kX - 1 df). none: both arms have one run. In every case the interaction variance
    MS_e / (n k), which the item term already holds, is subtracted; a negative result becomes 0."""
    A, B = d.A, d.B
    n, k_a, k_b = A.shape[1], A.shape[0], B.shape[0]
    notes = [
        f"arm {name!r} has one run: a constant arm, without run variance"
        for name, k in ((d.a, k_a), (d.b, k_b))
        if k == 1
    ]
    if d.shared_seeds and k_a >= PAIRED_MIN_SEEDS:
        D = A - B
        raw, raw_df = float(np.var(D.mean(1), ddof=1)) / k_a, k_a - 1
        inter = ((_residual_ms(D) / (n * k_a), (k_a - 1) * (n - 1)),)
        mode, description = "paired", f"run variance paired over {k_a} shared seeds"
    else:
        multi = [X for X in (A, B) if X.shape[0] > 1]
        if not multi:
            notes.append("one run per arm: the interval covers item sampling only, not run-to-run (seed) variation")
            return _RunTerm("none", 0.0, 0.0, (), "no run variance (one run per arm)", tuple(notes))
        s2 = [float(np.var(X.mean(1), ddof=1)) for X in multi]
        ks = [X.shape[0] for X in multi]
        raw_df = sum(ks) - len(ks)
        pooled = sum((k - 1) * s for k, s in zip(ks, s2)) / raw_df
        raw = pooled * sum(1 / k for k in ks)
        inter = tuple((_residual_ms(X) / (n * X.shape[0]), (X.shape[0] - 1) * (n - 1)) for X in multi)
        mode = "pooled"
        description = f"run variance pooled over {' + '.join(map(str, ks))} runs"
        if d.shared_seeds:
            notes.append(
                f"{k_a} shared seeds (fewer than {PAIRED_MIN_SEEDS}): "
                "the run variance is pooled over the arms, not paired"
            )
        elif len(multi) == 2:
            notes.append("the arms' seed sets differ: runs are unpaired and the run variance is pooled")
    interaction = sum(v for v, _ in inter)
    net = raw - interaction
    if net <= 0:
        if raw > 0:
            notes.append("the runs' means vary no more than the item-by-run noise explains: run term set to 0")
        return _RunTerm(mode, 0.0, interaction, (), description, tuple(notes))
    terms = ((raw, raw_df),) + tuple((-v, df) for v, df in inter)
    return _RunTerm(mode, net, interaction, terms, description, tuple(notes))


def _residual_ms(X: np.ndarray) -> float:
    """Residual mean square of a two-way (runs x items) decomposition without replication: an
    unbiased estimate of the item-by-run interaction variance."""
    k, n = X.shape
    resid = X - X.mean(1, keepdims=True) - X.mean(0, keepdims=True) + X.mean()
    return float(np.sum(resid**2)) / ((k - 1) * (n - 1))


def _satterthwaite(var: float, terms: Terms) -> float:
    """Welch-Satterthwaite df of a sum of variance estimates; zero terms are skipped."""
    denom = sum(v * v / df for v, df in terms if v != 0 and df > 0)
    if var == 0 or denom == 0:
        return math.inf
    return var * var / denom


# --- t machinery -------------------------------------------------------------------------------


def _t_interval(center: float, se: float, df: float, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"confidence level {level} is not in (0, 1)")
    if se == 0:
        return (center, center)
    q = float(stats.t.ppf(0.5 + level / 2, df))
    return (center - q * se, center + q * se)


def _mde80(se: float, df: float) -> float:
    if se == 0:
        return 0.0
    return float(stats.t.ppf(0.975, df) + stats.t.ppf(0.80, df)) * se


def _one_sided_p(diff: float, se: float, df: float, alternative: str) -> float:
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative {alternative!r} is not 'greater' or 'less'")
    if alternative == "less":
        diff = -diff
    if se == 0:
        return 0.0 if diff > 0 else 1.0
    return float(stats.t.sf(diff / se, df))


def _two_sided_p(diff: float, se: float, df: float) -> float:
    if se == 0:
        return 1.0 if diff == 0 else 0.0
    return min(1.0, 2.0 * float(stats.t.sf(abs(diff) / se, df)))


# --- cross-checks ------------------------------------------------------------------------------


def _bootstrap(d: _Design, sign: float, resamples: int, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile 95 % interval of the gain from a two-level bootstrap: each resample draws n items
    with replacement (the same items for both arms) and each arm's runs with replacement (the same
    seed indices for both arms when the seeds are shared; a constant arm keeps its run). Vectorised:
    a chunk of resamples is a matrix of item counts C, and the per-run sums are C @ values.T (the
    (m, n) @ (n, k) orientation, which BLAS runs well for few runs)."""
    if resamples < 1:
        raise ValueError("bootstrap needs at least one resample")
    A, B = d.A, d.B
    n = A.shape[1]
    chunk = max(1, min(resamples, BOOTSTRAP_CELLS // n))
    gains = np.empty(resamples)
    for start in range(0, resamples, chunk):
        m = min(chunk, resamples - start)
        counts = _counts(rng, n, m)  # (m, n): how often each item is drawn
        if d.shared_seeds:
            g = _runs_mean(counts @ (A - B).T, _counts(rng, A.shape[0], m))
        else:
            g = _arm_sums(A, counts, rng) - _arm_sums(B, counts, rng)
        gains[start : start + m] = g
    lo, hi = np.quantile(sign * gains / n, [0.025, 0.975])
    return (float(lo), float(hi))


def _arm_sums(X: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per resample: the arm's item sums averaged over its resampled runs."""
    per_run = counts @ X.T  # (m, k)
    if X.shape[0] == 1:
        return per_run[:, 0]
    return _runs_mean(per_run, _counts(rng, X.shape[0], per_run.shape[0]))


def _runs_mean(per_run: np.ndarray, run_counts: np.ndarray) -> np.ndarray:
    """Per resample r: sum_s run_counts[r, s] per_run[r, s] / k."""
    return np.sum(run_counts * per_run, axis=1) / per_run.shape[1]


def _counts(rng: np.random.Generator, size: int, m: int) -> np.ndarray:
    """m rows of multinomial(size; uniform) counts, as floats: how often each of `size` units is
    drawn when `size` are drawn with replacement."""
    idx = rng.integers(0, size, (m, size), dtype=np.int32)  # m * size <= BOOTSTRAP_CELLS fits
    idx += size * np.arange(m, dtype=np.int32)[:, None]
    return np.bincount(idx.ravel(), minlength=m * size).reshape(m, size).astype(float)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b = #(A=1, B=0) and
    c = #(A=0, B=1): min(1, 2 BinomCDF(min(b, c); b + c, 1/2)), and 1 when b + c = 0."""
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be non-negative")
    if b + c == 0:
        return 1.0
    return min(1.0, 2.0 * float(stats.binom.cdf(min(b, c), b + c, 0.5)))


def _mcnemar(d: _Design) -> tuple[tuple[int, int, int, float], ...] | None:
    """McNemar's exact test per run pair: per shared seed, or a constant arm against every run of
    the other (labelled with that run's seed). None when the runs cannot be paired."""
    k_a, k_b = d.A.shape[0], d.B.shape[0]
    if d.shared_seeds or (k_a == 1 and k_b == 1):
        pairs = [(s, d.A[r], d.B[r]) for r, s in enumerate(d.a_seeds)]
    elif k_b == 1:
        pairs = [(s, d.A[r], d.B[0]) for r, s in enumerate(d.a_seeds)]
    elif k_a == 1:
        pairs = [(s, d.A[0], d.B[r]) for r, s in enumerate(d.b_seeds)]
    else:
        return None
    out = []
    for seed, x, y in pairs:
        b, c = int(np.sum((x == 1) & (y == 0))), int(np.sum((x == 0) & (y == 1)))
        out.append((int(seed), b, c, mcnemar_exact(b, c)))
    return tuple(out)


def _sign_flip_p(diffs: np.ndarray, permutations: int, rng: np.random.Generator) -> float:
    """Two-sided p of the paired sign-flip permutation test on the per-item differences:
    (1 + #{|mean(+-d)| >= |mean(d)|}) / (R + 1) over R random sign vectors."""
    if permutations < 1:
        raise ValueError("the permutation test needs at least one permutation")
    n = len(diffs)
    observed = abs(float(diffs.mean()))
    tol = 1e-12 * max(1.0, float(np.abs(diffs).max()))  # ties up to rounding count as extreme
    chunk = max(1, min(permutations, BOOTSTRAP_CELLS // n))
    total = float(diffs.sum())
    hits = 0
    for start in range(0, permutations, chunk):
        m = min(chunk, permutations - start)
        bits = np.unpackbits(rng.integers(0, 256, (m, (n + 7) // 8), dtype=np.uint8), axis=1, count=n)
        flipped = (2.0 * (bits @ diffs) - total) / n  # signs = 2 bits - 1
        hits += int(np.sum(np.abs(flipped) >= observed - tol))
    return (1 + hits) / (permutations + 1)


# --- cost ratios and multiplicity --------------------------------------------------------------


def ratio(
    a_values: Sequence[float],
    b_values: Sequence[float],
    a_seeds: Sequence[int],
    b_seeds: Sequence[int],
    confidence: tuple[float, float] = (0.95, 0.90),
    *,
    a: str = "A",
    b: str = "B",
    metric: str = "cost",
) -> RatioComparison:
    """The ratio a / b of a cost (time, memory) measured once per run, for claims such as "A is
    cheaper than B". With the same seeds in both arms: a t interval on the mean of the per-seed
    log ratios, k - 1 df; otherwise Welch's interval on the difference of the mean logs. The
    interval is exponentiated, so `ratio` is the geometric mean ratio. Values must be > 0."""
    xa, xb = (np.asarray(v, dtype=float) for v in (a_values, b_values))
    sa, sb = tuple(int(s) for s in a_seeds), tuple(int(s) for s in b_seeds)
    for name, x, s in ((a, xa, sa), (b, xb, sb)):
        if x.ndim != 1 or len(x) != len(s) or len(x) == 0:
            raise ValueError(f"arm {name!r}: needs one value per seed, at least one")
        if len(set(s)) != len(s):
            raise ValueError(f"arm {name!r}: seeds repeat: {s}")
        if not np.all(np.isfinite(x)) or not np.all(x > 0):
            raise ValueError(f"arm {name!r}: a cost ratio needs finite values > 0, got {x.tolist()}")
    la, lb = np.log(xa), np.log(xb)
    notes: list[str] = []
    if set(sa) == set(sb):
        order = {s: j for j, s in enumerate(sb)}
        logs = la - lb[[order[s] for s in sa]]
        k = len(logs)
        log_ratio = float(logs.mean())
        var, df = (float(np.var(logs, ddof=1)) / k, float(k - 1)) if k > 1 else (math.inf, 0.0)
        paired, method = True, f"t interval on the mean log ratio over {k} paired seeds"
    else:
        k = len(la) + len(lb)
        log_ratio = float(la.mean() - lb.mean())
        var, df, notes = _welch_logs(la, lb, a, b)
        paired, method = False, "Welch interval on the difference of mean logs (seeds differ)"
    if df == 0:
        notes.append("no run-to-run variance can be estimated: the interval is (0, inf)")
    se = math.sqrt(var)
    out = RatioComparison(
        a=a,
        b=b,
        metric=metric,
        ratio=math.exp(log_ratio),
        log_ratio=log_ratio,
        se_log=se,
        df=df,
        ci95=(0.0, 0.0),
        ci90=(0.0, 0.0),
        k=k,
        k_a=len(xa),
        k_b=len(xb),
        paired=paired,
        method=method,
        notes=tuple(notes),
        confidence=tuple(confidence),
    )
    return replace(out, ci95=out.interval(confidence[0]), ci90=out.interval(confidence[1]))


def _welch_logs(la: np.ndarray, lb: np.ndarray, a: str, b: str) -> tuple[float, float, list[str]]:
    """Welch variance and df of mean(la) - mean(lb); an arm with one value is taken as fixed."""
    terms = [(float(np.var(x, ddof=1)) / len(x), len(x) - 1) for x in (la, lb) if len(x) > 1]
    notes = [
        f"arm {name!r} has one measurement: its variance is not estimated"
        for name, x in ((a, la), (b, lb))
        if len(x) == 1
    ]
    if not terms:
        return math.inf, 0.0, notes
    var = sum(v for v, _ in terms)
    return var, _satterthwaite(var, tuple(terms)), notes


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values (Holm 1979): the j-th smallest of m p-values becomes
    max over i <= j of min(1, (m - i + 1) p_(i)), so the adjusted values keep the order and are at
    most 1. Rejecting those below alpha controls the family-wise error rate at alpha."""
    for name, p in pvalues.items():
        if not 0 <= p <= 1:
            raise ValueError(f"p-value of {name!r} is {p}, not in [0, 1]")
    ranked = sorted(pvalues.items(), key=lambda kv: kv[1])
    m = len(ranked)
    adjusted: dict[str, float] = {}
    running = 0.0
    for j, (name, p) in enumerate(ranked):
        running = max(running, min(1.0, (m - j) * p))
        adjusted[name] = running
    return {name: adjusted[name] for name in pvalues}


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value
