"""The committed study (studies/three_papers.yaml, its runs under studies/three_papers/runs): a primary
claim's Δ and interval recomputed from the committed items files with numpy alone, against
docs/study.md. Nothing here calls bench.paired: the estimator is written out again from its
definition (item term + run term - item-by-run interaction, Welch-Satterthwaite df)."""

from __future__ import annotations

import gzip
import json
import re

import numpy as np
import pytest
from scipy import stats

from bench.study import select, spec
from bench.study.__main__ import state
from tests.conftest import REPO

STUDY = REPO / "studies" / "three_papers.yaml"


def _items(run: dict, metric: str) -> dict[str, float]:
    folder = REPO / run["_path"].rsplit("/", 1)[0] / "eval"
    path = folder / "items.jsonl"
    text = path.read_text() if path.exists() else gzip.decompress((folder / "items.jsonl.gz").read_bytes()).decode()
    return {row["id"]: row[metric] for row in map(json.loads, text.splitlines()) if row.get(metric) is not None}


def _recompute(a_runs, b_runs, metric, higher_is_better, per=None):
    """(gain, 95 % interval) of arm A over arm B: runs x items matrices on the shared items. A
    token-weighted metric (`per`: summed NLL over its tokens) is scaled by n / sum(tokens), so that
    the plain mean over items is the per-token aggregate the page reports."""
    by_seed = lambda runs: [_items(r, metric) for r in sorted(runs, key=lambda r: r["config"]["seed"])]  # noqa: E731
    a_items, b_items = by_seed(a_runs), by_seed(b_runs)
    ids = sorted(set.intersection(*(set(x) for x in a_items + b_items)))
    A = np.array([[x[i] for i in ids] for x in a_items])
    B = np.array([[x[i] for i in ids] for x in b_items])
    if per is not None:
        counts = _items(a_runs[0], per)
        scale = len(ids) / sum(counts[i] for i in ids)
        A, B = A * scale, B * scale
    sign = 1.0 if higher_is_better else -1.0
    gain, n = sign * (A.mean() - B.mean()), len(ids)
    item = np.var(A.mean(0) - B.mean(0), ddof=1) / n
    ks = [X.shape[0] for X in (A, B)]  # fewer than 5 seeds: the run variance is pooled over the arms
    pooled = sum((k - 1) * np.var(X.mean(1), ddof=1) for k, X in zip(ks, (A, B))) / (sum(ks) - 2)
    raw = pooled * sum(1 / k for k in ks)

    def ms(X):  # residual mean square of the runs x items table: the interaction
        r = X - X.mean(1, keepdims=True) - X.mean(0, keepdims=True) + X.mean()
        return (r**2).sum() / ((X.shape[0] - 1) * (n - 1))

    inter = [(ms(X) / (n * X.shape[0]), (X.shape[0] - 1) * (n - 1)) for X in (A, B)]
    run = max(raw - sum(v for v, _ in inter), 0.0)
    terms = [(item, n - 1)] + ([(raw, sum(ks) - 2)] + [(-v, d) for v, d in inter] if run > 0 else [])
    var = item + run
    df = var**2 / sum(v * v / d for v, d in terms)
    half = stats.t.ppf(0.975, df) * np.sqrt(var)
    return gain, (gain - half, gain + half), n


def test_a_primary_claim_recomputed_from_the_committed_items_matches_the_page():
    study = spec.load(STUDY)
    resolved, runs, _, rates = state(study)
    page = (REPO / study.doc).read_text().split("## Verdicts", 1)[1]
    checked = 0
    for claim in (c for c in resolved.claims if c.family == "primary" and c.kind != "cheaper"):
        arms = [resolved.arms[name] for name in claim.arms]
        found = [select.arm_runs(resolved, runs, arm, rates) for arm in arms]
        if min(len(f) for f in found) < 2:
            continue  # not finished in the committed runs
        a_runs, b_runs = found
        record = a_runs[0]["metrics"]["eval"]["items"]["metrics"][claim.metric]
        gain, ci95, n = _recompute(a_runs, b_runs, claim.metric, record["higher_is_better"], record.get("per"))
        (row,) = [line for line in page.splitlines() if line.startswith(f"| {claim.paper} | {claim.text} |")]
        cells = [c.strip() for c in row.strip("|").split("|")]
        if "not tested" in cells[11]:
            continue  # a precondition failed (the page gives the reason): there is no interval to check
        assert float(cells[4]) == pytest.approx(gain, rel=1e-3, abs=1e-4)
        low, high = map(float, re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", cells[5]))
        assert (low, high) == (pytest.approx(ci95[0], rel=1e-3, abs=1e-4), pytest.approx(ci95[1], rel=1e-3, abs=1e-4))
        assert cells[9].startswith(f"{n},")  # n items
        print(f"{claim.text}: gain {gain:.5g}, 95 % CI [{ci95[0]:.5g}, {ci95[1]:.5g}], n {n}")
        checked += 1
    if not checked:
        pytest.skip("no primary claim has finished runs in studies/three_papers/runs yet")
