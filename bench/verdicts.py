"""Verdicts on claims from paired comparisons (bench/paired.py): the rules that turn an interval into
"better", "non-inferior", "worse", "inconclusive" or "not tested", the preconditions without which a
claim is not tested, and Holm's correction within a family of claims. Rendering is another
module's job; a `Verdict` carries its reasons as text.

Claims and their rules, all on the gain (positive = A better, in the metric's units):

- better: the two-sided 95 % interval lies above 0 ("better") or below it ("worse"); otherwise
  "inconclusive", with the minimum difference the comparison could detect at 80 % power (Card et
  al. 2020), so that "no difference found" is not read as "no difference". Its p-value is the
  two-sided t p of gain = 0, tested at alpha = 0.05: p < 0.05 with a positive gain is exactly the
  interval lying above 0 (a one-sided test at 0.025 would be the same thing).
- non_inferior (margin delta > 0, declared before the data are seen): the one-sided 95 % lower
  bound (the lower end of the two-sided 90 % interval) lies above -delta ("non-inferior"), or the
  one-sided 95 % upper bound lies below -delta ("worse"); otherwise "inconclusive", with the margin
  the data could have established, delta* = -lower bound. Its p-value is the one-sided p of
  H0 gain <= -delta, alpha = 0.05 (the usual non-inferiority convention; ICH E9, E10).
- cheaper (a cost ratio A / B): the 95 % interval of the ratio lies below `max_ratio`; "worse"
  when it lies above it (the claim is refuted); otherwise "inconclusive". Its p-value is the
  two-sided p of ratio = max_ratio, alpha = 0.05, for the same reason as for "better".

Preconditions: assay sensitivity (ICH E10: a non-inferiority margin means nothing unless the
reference clearly beats doing nothing, here the untrained base model by at least 2 delta) and the
method's mechanism having acted are hard: failing one gives "not tested". A learning rate at an end
of its search grid is soft: the best rate may lie outside the grid (Dodge et al. 2019 on reporting
the tuning budget), so the verdict stands but is marked provisional.

Multiplicity: `apply_holm` adjusts the p-values of the claims of one family (Holm 1979) and
downgrades a positive verdict whose adjusted p is not below alpha.

Sources: Dror et al. 2018 (ACL), Card et al. 2020 (EMNLP), Miller 2024 (arXiv:2411.00640),
Dodge et al. 2019 (EMNLP), Holm 1979 (Scand. J. Statist.), ICH E9 (1998) and E10 (2000).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Iterable, Sequence

from bench.paired import Comparison, RatioComparison, holm

ALPHA = 0.05  # every claim's p-value is tested at this level, alone or after Holm
CLAIMS = ("better", "non_inferior", "cheaper")
VERDICTS = ("better", "non-inferior", "cheaper", "worse", "inconclusive", "not tested")
POSITIVE = ("better", "non-inferior", "cheaper")
ASSAY_FACTOR = 2.0  # the reference must beat the base model by this many margins


@dataclass(frozen=True)
class Verdict:
    """A claim's verdict. `delta` is the gain (for "cheaper": the ratio A / B), `ci95`/`ci90` its
    two-sided intervals, `margin` the non-inferiority margin (for "cheaper": `max_ratio`),
    `p_value` the p tested at `ALPHA`, `p_adjusted` its Holm-adjusted value within `family` (None
    until `apply_holm`)."""

    claim: str
    kind: str  # better | non_inferior | cheaper
    metric: str
    delta: float | None
    ci95: tuple[float, float] | None
    ci90: tuple[float, float] | None
    margin: float | None
    verdict: str
    reasons: tuple[str, ...]
    provisional: bool = False
    p_value: float | None = None
    p_adjusted: float | None = None
    family: str | None = None
    comparison: Comparison | RatioComparison | None = None

    def __post_init__(self) -> None:
        if self.kind not in CLAIMS:
            raise ValueError(f"claim kind {self.kind!r} is not one of {CLAIMS}")
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")

    def as_dict(self) -> dict:
        """A JSON-ready dict, the comparison included as its own dict."""
        out = {k: v for k, v in asdict(self).items() if k != "comparison"}
        out["ci95"] = list(self.ci95) if self.ci95 is not None else None
        out["ci90"] = list(self.ci90) if self.ci90 is not None else None
        out["reasons"] = list(self.reasons)
        out = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}
        out["comparison"] = self.comparison.as_dict() if self.comparison is not None else None
        return out


# --- rules -------------------------------------------------------------------------------------


def better(claim: str, comparison: Comparison, *, family: str | None = None) -> Verdict:
    """Is A better than B? "better" when the 95 % interval of the gain lies above 0, "worse" when
    it lies below 0, else "inconclusive" with the detectable difference. p: two-sided, alpha 0.05."""
    lo, hi = comparison.interval(0.95)
    interval = f"the 95 % interval of the gain is [{_f(lo)}, {_f(hi)}]"
    if lo > 0:
        verdict, reason = "better", f"{interval}, above 0"
    elif hi < 0:
        verdict, reason = "worse", f"{interval}, below 0"
    else:
        verdict = "inconclusive"
        reason = f"{interval}, which includes 0; the comparison could detect about {_f(comparison.mde80)} at 80 % power"
    return _verdict(claim, "better", comparison, verdict, (reason,), None, comparison.p_two_sided(0.0), family)


def non_inferior(claim: str, comparison: Comparison, margin: float, *, family: str | None = None) -> Verdict:
    """Is A no worse than B by more than `margin` (delta > 0, in the metric's units, declared in
    advance)? Decided by the one-sided 95 % bounds (the ends of the two-sided 90 % interval)
    against -delta. p: one-sided, H0 gain <= -delta, alpha 0.05."""
    if not margin > 0:
        raise ValueError(f"a non-inferiority margin must be > 0, got {margin}")
    lo, hi = comparison.interval(0.90)
    lower = f"the one-sided 95 % lower bound of the gain is {_f(lo)}"
    if lo > -margin:
        reasons = [f"{lower}, above -{_f(margin)} (the margin)"]
        if comparison.interval(0.95)[0] > 0:
            reasons.append("and better: the 95 % interval lies above 0")
        verdict = "non-inferior"
    elif hi < -margin:
        verdict = "worse"
        reasons = [f"the one-sided 95 % upper bound of the gain is {_f(hi)}, below -{_f(margin)} (the margin)"]
    else:
        verdict = "inconclusive"
        reasons = [
            f"{lower}, not above -{_f(margin)} (the margin), and the upper bound {_f(hi)} is not below it",
            f"the data could establish non-inferiority only at a margin of {_f(-lo)}",
        ]
    p = comparison.p_value(-margin, "greater")
    return _verdict(claim, "non_inferior", comparison, verdict, tuple(reasons), margin, p, family)


def cheaper(claim: str, ratio: RatioComparison, max_ratio: float = 1.0, *, family: str | None = None) -> Verdict:
    """Does A cost less than `max_ratio` times B? "cheaper" when the 95 % interval of the ratio lies
    below max_ratio, "worse" when it lies above it, else "inconclusive". p: two-sided, alpha 0.05."""
    if not max_ratio > 0:
        raise ValueError(f"max_ratio must be > 0, got {max_ratio}")
    lo, hi = ratio.interval(0.95)
    interval = f"the 95 % interval of the {ratio.metric} ratio A / B is [{_f(lo)}, {_f(hi)}]"
    if hi < max_ratio:
        verdict, reason = "cheaper", f"{interval}, below {_f(max_ratio)}"
    elif lo > max_ratio:
        verdict, reason = "worse", f"{interval}, above {_f(max_ratio)}"
    else:
        verdict, reason = "inconclusive", f"{interval}, which includes {_f(max_ratio)}"
    return Verdict(
        claim=claim,
        kind="cheaper",
        metric=ratio.metric,
        delta=ratio.ratio,
        ci95=(lo, hi),
        ci90=ratio.interval(0.90),
        margin=max_ratio,
        verdict=verdict,
        reasons=(reason,),
        p_value=ratio.p_two_sided(max_ratio),
        family=family,
        comparison=ratio,
    )


def not_tested(claim: str, kind: str, metric: str, reasons: Iterable[str], *, family: str | None = None) -> Verdict:
    """A claim whose preconditions failed: no interval is judged, no p-value enters a family."""
    reasons = tuple(reasons)
    if not reasons:
        raise ValueError("a claim that is not tested needs the reason why")
    return Verdict(
        claim=claim,
        kind=kind,
        metric=metric,
        delta=None,
        ci95=None,
        ci90=None,
        margin=None,
        verdict="not tested",
        reasons=reasons,
        family=family,
    )


def _verdict(
    claim: str,
    kind: str,
    comparison: Comparison,
    verdict: str,
    reasons: tuple[str, ...],
    margin: float | None,
    p_value: float,
    family: str | None,
) -> Verdict:
    return Verdict(
        claim=claim,
        kind=kind,
        metric=comparison.metric,
        delta=comparison.gain,
        ci95=comparison.interval(0.95),
        ci90=comparison.interval(0.90),
        margin=margin,
        verdict=verdict,
        reasons=reasons + tuple(comparison.notes),
        p_value=p_value,
        family=family,
        comparison=comparison,
    )


def _f(x: float) -> str:
    return f"{x:.4g}"


# --- preconditions -----------------------------------------------------------------------------


def assay_sensitivity(reference_vs_base: Comparison, margin: float) -> str | None:
    """None when the reference arm beats the untrained base model by at least 2 delta (the lower end
    of the 95 % interval of reference - base is >= 2 margin); otherwise the failure reason. Without
    it a method that learned nothing could be "non-inferior" to the reference within delta."""
    lo = reference_vs_base.interval(0.95)[0]
    need = ASSAY_FACTOR * margin
    if lo >= need:
        return None
    return (
        f"no assay sensitivity: the reference arm {reference_vs_base.a!r} beats the untrained base model "
        f"{reference_vs_base.b!r} on {reference_vs_base.metric} by at least {_f(lo)} (95 % lower bound), "
        f"less than 2 x the margin = {_f(need)}"
    )


def mechanism(acted: bool | None, evidence: str) -> str | None:
    """None when the method's mechanism demonstrably acted; otherwise the failure reason. Unknown
    (None) fails too: a claim about a method needs evidence that the method ran as itself."""
    if acted is True:
        return None
    if acted is None:
        return f"the method's mechanism could not be verified: {evidence}"
    return f"the method's mechanism did not act: {evidence}"


def inside_grid(chosen: float, grid: Sequence[float]) -> bool:
    """Whether `chosen` (a learning rate) lies strictly inside its search grid: above the grid's
    smallest value and below its largest (compared with a relative tolerance of 1e-9)."""
    if not grid:
        return False
    lo, hi = min(grid), max(grid)
    at_end = math.isclose(chosen, lo, rel_tol=1e-9) or math.isclose(chosen, hi, rel_tol=1e-9)
    return lo < chosen < hi and not at_end


def grid_reason(chosen: float, grid: Sequence[float], what: str = "learning rate") -> str | None:
    """The provisional-verdict reason for a value at (or outside) an end of its grid, or None."""
    if inside_grid(chosen, grid):
        return None
    values = ", ".join(_f(g) for g in sorted(grid))
    return (
        f"provisional: the chosen {what} {_f(chosen)} is not inside its search grid [{values}]; "
        "a better value may lie beyond the grid"
    )


# --- combining ---------------------------------------------------------------------------------


def judge(
    claim: str,
    kind: str,
    comparison: Comparison | RatioComparison | None,
    *,
    margin: float | None = None,
    max_ratio: float = 1.0,
    failures: Iterable[str | None] = (),
    provisional: Iterable[str | None] = (),
    family: str | None = None,
    metric: str | None = None,
) -> Verdict:
    """The verdict of one claim. `failures` are hard precondition results (None = passed, a string
    = the reason it failed: any failure gives "not tested"); `provisional` are soft ones (a reason
    marks the verdict provisional and is appended to its reasons). `metric` names the metric when
    there is no comparison."""
    if kind not in CLAIMS:
        raise ValueError(f"claim kind {kind!r} is not one of {CLAIMS}")
    failed = [f for f in failures if f is not None]
    if failed or comparison is None:
        if comparison is None and not failed:
            failed = ["no comparison was computed"]
        name = metric if metric is not None else getattr(comparison, "metric", "")
        return not_tested(claim, kind, name, failed, family=family)
    if kind == "better":
        verdict = better(claim, comparison, family=family)
    elif kind == "non_inferior":
        if margin is None:
            raise ValueError("a non-inferiority claim needs its margin")
        verdict = non_inferior(claim, comparison, margin, family=family)
    else:
        verdict = cheaper(claim, comparison, max_ratio, family=family)
    soft = tuple(p for p in provisional if p is not None)
    if soft:
        verdict = replace(verdict, provisional=True, reasons=verdict.reasons + soft)
    return verdict


def apply_holm(verdicts: Sequence[Verdict], alpha: float = ALPHA) -> list[Verdict]:
    """Holm's correction within each family: the verdicts sharing a non-None `family`, "not tested"
    ones excluded. Every member gets `p_adjusted`; a positive verdict whose adjusted p is not below
    `alpha` becomes "inconclusive" with the reason. The order of `verdicts` is kept."""
    out = list(verdicts)
    families: dict[str, list[int]] = {}
    for i, v in enumerate(out):
        if v.family is not None and v.verdict != "not tested":
            if v.p_value is None:
                raise ValueError(f"claim {v.claim!r} of family {v.family!r} has no p-value")
            families.setdefault(v.family, []).append(i)
    for name, members in families.items():
        adjusted = holm({str(i): out[i].p_value for i in members})
        for i in members:
            p = adjusted[str(i)]
            v = replace(out[i], p_adjusted=p)
            if v.verdict in POSITIVE and p >= alpha:
                reason = (
                    f"inconclusive after Holm's correction over the family {name} of {len(members)} claims "
                    f"(adjusted p = {p:.3g}, not below {alpha:g}; unadjusted it was {v.verdict})"
                )
                v = replace(v, verdict="inconclusive", reasons=v.reasons + (reason,))
            out[i] = v
    return out
