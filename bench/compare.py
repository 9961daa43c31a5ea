"""python -m bench.compare RUNS... --a KEY=V ... --b KEY=V ... --metric FIELD [--margin D]

Compares two arms on one per-item metric with the paired estimator of bench/paired.py. An arm is
the set of runs that its `--a` (or `--b`) filters keep, in the syntax of `bench.report --where`
(method=cla, method.r=16, ...); its runs must differ in nothing but the seed. Each run contributes
the items file of one evaluation (`--stage eval`, the tuned model, or `eval_base`, the model before
training; `--a-stage`/`--b-stage` set it per arm, e.g. tuned against base) and split (`--split
test` or `heldout`). Prints Δ, its 95 % and 90 % intervals, the estimator, n items, k seeds, the
minimum difference detectable at 80 % power and the cross-checks; with `--margin`, the
non-inferiority verdict at that margin, which must be declared before looking at the data.

Refused, with the difference named: arms of different tasks, test data or evaluation settings,
items files that do not hold the same items, and runs without per-item results.

A metric scored on some items only (null elsewhere: GSM8K's exact match with task.generate_limit,
bench/items.py) is compared on the items that every run of both arms scored; n says how many, and
a note how many the files hold.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bench import items as item_files
from bench import paired, verdicts

STAGES = ("eval", "eval_base")
SPLITS = ("test", "heldout")
# Evaluation settings that do not change what is scored: how many items run at once, what is logged,
# whether a base evaluation also ran and where its scores came from.
EVAL_NEUTRAL = ("batch_size", "log_samples", "enabled", "base", "base_cache", "allow_code_execution")


class CompareError(ValueError):
    """Arms that cannot be compared; the message names the difference."""


@dataclass(frozen=True)
class Source:
    """Where an arm's per-item values come from: evaluation stage, split and item field."""

    metric: str
    stage: str = "eval"
    split: str = "test"

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise CompareError(f"stage {self.stage!r} is not one of {', '.join(STAGES)}")
        if self.split not in SPLITS:
            raise CompareError(f"split {self.split!r} is not one of {', '.join(SPLITS)}")


def evaluation(result: dict, source: Source) -> dict:
    """The evaluation's result dict (metrics.<stage>, or its held-out part) a source reads."""
    ev = (result.get("metrics") or {}).get(source.stage) or {}
    return ev.get("heldout") or {} if source.split == "heldout" else ev


def item_record(result: dict, source: Source) -> tuple[Path, dict]:
    """(path of the items file, its record in result.json) for one run and source."""
    record = evaluation(result, source).get("items")
    if not isinstance(record, dict):
        raise CompareError(
            f"run {result.get('run_id')} ({result.get('_path')}) has no per-item results for "
            f"{source.stage}/{source.split}: it was evaluated before items.jsonl existed, or without this split"
        )
    return Path(result["_path"]).parent / source.stage / record["file"], record


def declaration(record: dict, metric: str, run: str) -> dict:
    declared = record.get("metrics") or {}
    if metric not in declared:
        raise CompareError(f"run {run}: its items do not hold {metric!r}; they hold {', '.join(sorted(declared))}")
    return declared[metric]


def per_item_values(rows: list[dict], metric: str, decl: dict) -> tuple[list[str], np.ndarray]:
    """(ids, values) of one items file. A token-weighted metric (one with `per`) becomes the
    per-item value whose plain mean is the aggregate: value_i * n / sum(per), which is exact
    because every arm scores the same items with the same token counts (checked by the caller)."""
    ids = [r["id"] for r in rows]
    values = np.array([float(r[metric]) for r in rows])
    per = decl.get("per")
    if per:
        counts = np.array([float(r[per]) for r in rows])
        total = counts.sum()
        if total <= 0:
            raise CompareError(f"{metric}: the items hold no {per} to average over")
        values = values * len(rows) / total
    return ids, values


def _weights(rows: list[dict], decl: dict) -> dict | None:
    per = decl.get("per")
    return None if not per else {r["id"]: r[per] for r in rows}


def arm_scores(
    name: str, runs: list[dict], source: Source, only: frozenset | None = None
) -> tuple[paired.ArmScores, dict]:
    """One arm's ArmScores (a row per run, seeds from the configs) and the metric's declaration.

    The items are those that every run scored (the metric not null), and of those only the ids in
    `only` when it is given. The declaration comes with `_weights` (the `per` counts of those items),
    `_ids` (every item of the files, scored or not) and `_scored` (the ids kept)."""
    if not runs:
        raise CompareError(f"arm {name}: no successful run matches its filters")
    seeds, rows_by_run, decl = [], [], None
    for result in runs:
        path, record = item_record(result, source)
        this = declaration(record, source.metric, result["run_id"])
        if decl is not None and this != decl:
            raise CompareError(f"arm {name}: runs declare {source.metric} differently ({decl} against {this})")
        decl = this
        seeds.append(result["config"]["seed"])
        rows_by_run.append(item_files.read(path))
    all_ids = frozenset(r["id"] for r in rows_by_run[0])
    if any(frozenset(r["id"] for r in rows) != all_ids for rows in rows_by_run[1:]):
        raise CompareError(f"arm {name}: its runs scored different items")
    keep = frozenset.intersection(
        *(frozenset(r["id"] for r in item_files.scored(rows, source.metric)) for rows in rows_by_run)
    )
    if only is not None:
        keep &= only
    if not keep:
        raise CompareError(
            f"arm {name}: no item holds {source.metric} in every run"
            + (" and in the other arm" if only is not None else "")
            + " (not scored: e.g. nothing generated with task.generate_limit=0)"
        )
    rows_by_run = [[r for r in rows if r["id"] in keep] for rows in rows_by_run]
    weights = None
    for rows in rows_by_run:
        w = _weights(rows, decl)
        if weights is not None and w != weights:
            raise CompareError(f"arm {name}: runs count {decl['per']} differently per item (another tokenizer?)")
        weights = w
    ids, first = per_item_values(rows_by_run[0], source.metric, decl)
    matrix = [first]
    for rows in rows_by_run[1:]:
        these, values = per_item_values(rows, source.metric, decl)
        if these != ids:
            order = {i: k for k, i in enumerate(these)}
            values = values[[order[i] for i in ids]]
        matrix.append(values)
    scores = paired.ArmScores(name, tuple(seeds), tuple(ids), np.vstack(matrix))
    return scores, {**decl, "_weights": weights, "_ids": all_ids, "_scored": keep}


def single_configuration(name: str, runs: list[dict]) -> None:
    """An arm averages seeds of one configuration only."""
    from bench import report

    variants = {report.row(r)["variant"] for r in runs}
    if len(variants) > 1:
        differing = sorted(_differing_keys([r["config"] for r in runs]))
        raise CompareError(
            f"arm {name} holds {len(variants)} configurations (they differ in {', '.join(differing) or 'their hash'}); "
            f"narrow it with more filters"
        )
    seeds = [r["config"]["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise CompareError(f"arm {name} holds two runs of one seed ({seeds}): pass one run directory per seed")


def _differing_keys(configs: list[dict]) -> set[str]:
    from bench.report.table import _flatten

    flat = [{k: json.dumps(v, sort_keys=True) for k, v in _flatten(c).items()} for c in configs]
    keys = set().union(*flat)
    return {k for k in keys if k != "seed" and len({f.get(k) for f in flat}) > 1}


def comparable(a_runs: list[dict], a: Source, b_runs: list[dict], b: Source) -> None:
    """Refuse arms scored on different tasks, test data or evaluation settings."""

    def facts(result: dict, source: Source) -> dict:
        cfg = result["config"]
        data = ((result.get("provenance") or {}).get("data") or {}).get("test") or {}
        if source.split == "heldout":
            data = data.get("heldout") or (data.get("splits") or {}).get("heldout") or {}
        return {
            "task": cfg["task"]["name"],
            "test data": {k: v for k, v in data.items() if k not in ("heldout", "rows_evaluated", "rows_generated")},
            "evaluation settings": {k: v for k, v in (cfg.get("eval") or {}).items() if k not in EVAL_NEUTRAL},
        }

    left, right = facts(a_runs[0], a), facts(b_runs[0], b)
    for what in left:
        if left[what] != right[what]:
            raise CompareError(
                f"the arms differ in their {what}: {_show(left[what])} against {_show(right[what])}; "
                f"a paired comparison needs both scored on the same items the same way"
            )


def _show(value) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) < 300 else text[:300] + "…"


def compare_runs(
    a_name: str,
    a_runs: list[dict],
    a: Source,
    b_name: str,
    b_runs: list[dict],
    b: Source,
    **options,
) -> paired.Comparison:
    """The paired comparison of two arms' runs (both on the same metric)."""
    if a.metric != b.metric:
        raise CompareError(f"the arms are read on different metrics ({a.metric} against {b.metric})")
    comparable(a_runs, a, b_runs, b)
    scores_a, decl_a = arm_scores(a_name, a_runs, a)
    scores_b, decl_b = arm_scores(b_name, b_runs, b)
    notes = []
    if decl_a["_ids"] == decl_b["_ids"] and decl_a["_scored"] != decl_b["_scored"]:
        # the same items, a metric scored on some of them only (task.generate_limit): the shared ones
        shared = decl_a["_scored"] & decl_b["_scored"]
        scores_a, decl_a = arm_scores(a_name, a_runs, a, only=shared)
        scores_b, decl_b = arm_scores(b_name, b_runs, b, only=shared)
    if len(decl_a["_scored"]) < len(decl_a["_ids"]):
        notes.append(
            f"{a.metric} is compared on the {len(decl_a['_scored'])} of {len(decl_a['_ids'])} items that every run "
            f"of both arms scored (the others hold no value, e.g. not generated with task.generate_limit)"
        )
    if decl_a["_weights"] is not None and decl_a["_weights"] != decl_b["_weights"]:
        raise CompareError(
            f"the arms count {decl_a.get('per')} differently on the same items (another tokenizer?): "
            f"a per-token mean of two vocabularies is not one quantity"
        )
    try:
        result = paired.compare(
            scores_a,
            scores_b,
            metric=a.metric,
            kind=decl_a["kind"],
            higher_is_better=bool(decl_a["higher_is_better"]),
            **options,
        )
    except ValueError as err:  # item ids that differ between the arms
        raise CompareError(str(err)) from None
    return replace(result, notes=(*result.notes, *notes)) if notes else result


def select_runs(runs: list[dict], filters: list[str]) -> list[dict]:
    from bench.report import where
    from bench.report.where import parse

    ok = [r for r in runs if r.get("status") == "success"]
    return where(ok, [parse(f) for f in filters]) if ok else []


def render(c: paired.Comparison, verdict: verdicts.Verdict | None = None) -> str:
    better = "higher" if c.higher_is_better else "lower"
    lines = [
        f"{c.a} against {c.b} on {c.metric} ({c.kind}; {better} is better)",
        f"  Δ = {c.delta:+.6g} (A − B in the metric's units); gain (positive: A better) {c.gain:+.6g}",
        f"  95 % CI of the gain [{c.ci95[0]:+.6g}, {c.ci95[1]:+.6g}]; 90 % CI [{c.ci90[0]:+.6g}, {c.ci90[1]:+.6g}]",
        f"  n = {c.n_items} items, k = {c.k_a} and {c.k_b} seeds; df {c.df:.1f}; run variance: {c.run_variance}",
        f"  variance: item term {c.item_var:.3g} + run term {c.run_var:.3g}; se {c.se:.4g}",
        f"  minimum difference detectable at 80 % power (two-sided 5 %): {c.mde80:.4g}",
        f"  method: {c.method}",
    ]
    if c.bootstrap_ci95 is not None:
        lines.append(
            f"  check, paired bootstrap ({c.bootstrap_resamples:,} resamples): 95 % CI "
            f"[{c.bootstrap_ci95[0]:+.6g}, {c.bootstrap_ci95[1]:+.6g}]"
        )
    for seed, b, c_, p in c.mcnemar or ():
        lines.append(f"  check, exact McNemar (seed {seed}): A-only {b}, B-only {c_}, p = {p:.4g}")
    if c.permutation_p is not None:
        lines.append(f"  check, paired sign-flip permutation: p = {c.permutation_p:.4g}")
    lines += [f"  note: {n}" for n in c.notes]
    if verdict is not None:
        lines.append(f"  verdict at margin {verdict.margin:g}: {verdict.verdict} — {'; '.join(verdict.reasons)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench.report import load
    from bench.report.where import WhereError

    parser = argparse.ArgumentParser(
        prog="python -m bench.compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("roots", nargs="*", type=Path, default=[Path("runs")], help="folders with run directories")
    parser.add_argument("--a", action="append", default=[], metavar="KEY=V", help="filter of arm A (repeat: AND)")
    parser.add_argument("--b", action="append", default=[], metavar="KEY=V", help="filter of arm B (repeat: AND)")
    parser.add_argument("--metric", required=True, help="a per-item field of the items files, e.g. correct, answer_nll")
    parser.add_argument("--stage", choices=STAGES, default="eval", help="the evaluation both arms are read from")
    parser.add_argument("--a-stage", choices=STAGES, default=None, help="arm A's evaluation (default: --stage)")
    parser.add_argument("--b-stage", choices=STAGES, default=None, help="arm B's evaluation (default: --stage)")
    parser.add_argument("--split", choices=SPLITS, default="test")
    parser.add_argument("--margin", type=float, default=None, help="non-inferiority margin, declared in advance")
    parser.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples (>= 10,000 advised)")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    args = parser.parse_args(argv)
    if not args.a or not args.b:
        parser.error("give each arm at least one filter: --a method=cla --b method=lora")
    if args.margin is not None and args.margin <= 0:
        parser.error(f"--margin {args.margin} must be > 0 (in the metric's units)")
    runs, _ = load(args.roots)
    try:
        a_runs, b_runs = select_runs(runs, args.a), select_runs(runs, args.b)
        for name, chosen in (("A", a_runs), ("B", b_runs)):
            if not chosen:
                raise CompareError(f"arm {name}: no successful run under {', '.join(map(str, args.roots))} matches")
            single_configuration(name, chosen)
        a = Source(args.metric, args.a_stage or args.stage, args.split)
        b = Source(args.metric, args.b_stage or args.stage, args.split)
        result = compare_runs(" ".join(args.a), a_runs, a, " ".join(args.b), b_runs, b, bootstrap=args.bootstrap)
    except (CompareError, WhereError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    verdict = verdicts.non_inferior("A is non-inferior to B", result, args.margin) if args.margin else None
    if args.json:
        print(json.dumps({"comparison": result.as_dict(), "verdict": verdict.as_dict() if verdict else None}, indent=1))
    else:
        print(render(result, verdict))
    return 0


if __name__ == "__main__":
    sys.exit(main())
