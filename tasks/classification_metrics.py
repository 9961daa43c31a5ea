"""Metrics of the classification and regression tasks (GLUE's definitions), with scikit-learn and scipy.

Each metric takes (labels, predictions) and returns a float. Degenerate inputs have a defined
value instead of NaN, so that every result.json holds numbers:
  matthews_correlation  0.0 when predictions (or labels) are all one class (scikit-learn's convention)
  f1                    of the positive class (label 1); 0.0 when nothing is predicted or labelled positive
  pearson, spearman     0.0 when predictions (or labels) are constant: no relation can be measured
"""

from __future__ import annotations

import math
from typing import Callable, Sequence


def accuracy(labels: Sequence[int], predictions: Sequence[int]) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(labels, predictions))


def f1(labels: Sequence[int], predictions: Sequence[int]) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(labels, predictions, pos_label=1, average="binary", zero_division=0.0))


def matthews_correlation(labels: Sequence[int], predictions: Sequence[int]) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(labels, predictions))


def _correlation(fn, labels: Sequence[float], predictions: Sequence[float]) -> float:
    if len(set(labels)) < 2 or len(set(predictions)) < 2:
        return 0.0  # undefined for a constant input (scipy returns NaN and warns)
    value = float(fn(labels, predictions).statistic)
    return 0.0 if math.isnan(value) else value


def pearson(labels: Sequence[float], predictions: Sequence[float]) -> float:
    from scipy.stats import pearsonr

    return _correlation(pearsonr, labels, predictions)


def spearman(labels: Sequence[float], predictions: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    return _correlation(spearmanr, labels, predictions)


METRICS: dict[str, Callable[[Sequence, Sequence], float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews_correlation": matthews_correlation,
    "pearson": pearson,
    "spearman": spearman,
}


def compute(names: Sequence[str], labels: Sequence, predictions: Sequence) -> dict[str, float]:
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    if not labels:
        raise ValueError("no examples to score")
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {', '.join(METRICS)}")
    return {name: METRICS[name](list(labels), list(predictions)) for name in names}
