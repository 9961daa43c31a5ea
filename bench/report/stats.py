"""Statistics the report (bench/report/__init__.py) draws from the runs' per-item results (items.jsonl).

- `item_field`: the per-item field behind a run's primary metric (the declared field whose
  `aggregate` is `metrics.eval["primary"]`).
- `mean_interval`: the t interval of one configuration's mean over items and seeds, the Pareto
  figure's error bar (bench/report/plots.py).
- `with_intervals`: that interval for every configuration of `bench.report.table.points()` whose
  runs carry items files; the others keep the standard deviation over seeds.

The comparisons behind the main table's marks are bench.compare's (`compare_runs`); this module
only reads the same ArmScores for one arm at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from bench.compare import CompareError, Source, arm_scores
from bench.paired import ArmScores

LEVEL = 0.95


def item_field(result: dict, metric: str) -> str | None:
    """The field of the run's test items file (metrics.eval.items) whose declaration averages to
    `metric`; None when the run has no items file or none of its fields does."""
    record = ((result.get("metrics") or {}).get("eval") or {}).get("items")
    if not isinstance(record, dict):
        return None
    fields = [name for name, decl in (record.get("metrics") or {}).items() if (decl or {}).get("aggregate") == metric]
    return fields[0] if len(fields) == 1 else None


def arm_field(runs: Sequence[dict], metric: str) -> str:
    """The item field behind `metric` shared by all `runs`; CompareError when a run has none or the
    runs disagree (items written by different versions of a task)."""
    fields = {item_field(r, metric) for r in runs}
    if None in fields:
        missing = next(r for r in runs if item_field(r, metric) is None)
        raise CompareError(
            f"run {missing.get('run_id')} ({missing.get('_path')}) has no per-item field averaging to {metric!r}: "
            f"it was evaluated before items.jsonl existed, or its task declares none (or several)"
        )
    if len(fields) > 1:
        raise CompareError(f"the runs read {metric!r} from different item fields ({', '.join(sorted(fields))})")
    return fields.pop()


@dataclass(frozen=True)
class Interval:
    """The mean of one arm (all its runs and items) and its two-sided t interval at `level`.

    variance = item_var + run_var. item_var: the variance of the per-item means (over the runs) / n.
    run_var: the variance of the per-run means / k, net of the item-by-run interaction that item_var
    already holds (the residual mean square of the runs x items table / (n k)), never below 0; 0
    with one run. df: Welch-Satterthwaite over those terms. This is bench.paired's decomposition for
    one arm: compare(arm, a constant arm of zeros) gives the same interval."""

    mean: float
    low: float
    high: float
    df: float
    item_var: float
    run_var: float
    n: int
    k: int
    level: float = LEVEL


def mean_interval(scores: ArmScores, level: float = LEVEL) -> Interval:
    """The t interval of the arm's mean (see Interval). ValueError with fewer than 2 items."""
    X = np.asarray(scores.values, dtype=float)
    k, n = X.shape
    if n < 2:
        raise ValueError(f"arm {scores.name!r}: an interval over items needs at least 2 items, it has {n}")
    item_var = float(np.var(X.mean(0), ddof=1)) / n
    terms = [(item_var, n - 1)]  # (variance estimate, its df); a negative one is subtracted
    run_var = 0.0
    if k > 1:
        raw = float(np.var(X.mean(1), ddof=1)) / k
        resid = X - X.mean(1, keepdims=True) - X.mean(0, keepdims=True) + X.mean()
        interaction = float(np.sum(resid**2)) / ((k - 1) * (n - 1)) / (n * k)
        if raw > interaction:
            run_var = raw - interaction
            terms += [(raw, k - 1), (-interaction, (k - 1) * (n - 1))]
    var = item_var + run_var
    denom = sum(v * v / df for v, df in terms if v != 0)
    df = var * var / denom if var > 0 and denom > 0 else math.inf
    mean = float(X.mean())
    half = float(stats.t.ppf(0.5 + level / 2, df)) * math.sqrt(var) if var > 0 else 0.0
    return Interval(mean, mean - half, mean + half, df, item_var, run_var, n, k, level)


def runs_interval(runs: Sequence[dict], metric: str, level: float = LEVEL) -> Interval:
    """mean_interval of the runs' test items on the field behind `metric`; CompareError (or
    ValueError, OSError, KeyError for a malformed or missing items file) when there is none."""
    field = arm_field(runs, metric)
    scores, _ = arm_scores("configuration", list(runs), Source(field))
    return mean_interval(scores, level)


# what reading a run's items can raise: no or different items (CompareError is a ValueError), a
# file declared in result.json but missing (OSError), a line without the declared field (KeyError)
UNREADABLE = (ValueError, OSError, KeyError)


def with_intervals(pts: pd.DataFrame, runs: Mapping[str, dict]) -> pd.DataFrame:
    """pts (bench.report.table.points(), with its `paths`) plus `ci95_low`, `ci95_high` and
    `error_bar`: "ci95" where the configuration's runs carry items files (mean_interval of them),
    "std" where they do not (the bars stay the standard deviation over seeds)."""
    if pts.empty or "paths" not in pts:
        return pts
    bars = []
    for p in pts.itertuples():
        try:
            interval = runs_interval([runs[path] for path in p.paths], p.metric)
        except UNREADABLE:
            bars.append((math.nan, math.nan, "std"))
            continue
        bars.append((interval.low, interval.high, "ci95"))
    low, high, kind = zip(*bars)
    return pts.assign(ci95_low=list(low), ci95_high=list(high), error_bar=list(kind))
