"""The main table of bench.report: rows = method (x sparsity x setting), columns = tasks.

A cell is the primary metric's mean ± std over the seeds of one configuration, with n. The
"setting" names what tells two rows of the same method apart (e.g. `r=8` and `r=16` for the LoRA
references of a sparsity sweep): the config keys that differ between runs of that method on one
task. Keys that differ only between tasks (per-task sizes) do not split a row, so one row holds one
configuration across the task columns.

Rows with about the same trainable parameters form a parameter-matched group whose LoRA row is the
reference; every other row's cell is marked by the paired comparison of its runs with the
reference's on the same items (`with_marks`, bench.compare): see LEGEND.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from typing import Mapping

import pandas as pd

from bench import config as bench_config
from bench.compare import Source, compare_runs
from bench.config import REFERENCE_METHOD
from bench.report import stats as report_stats

ROW = ["model", "method", "sparsity", "setting"]

# What never tells two configurations apart in a table: the row keys themselves, the seed (averaged
# over), and what does not change what a run computes (left out of the run hash by bench.config).
_NOT_A_SETTING = (
    "seed",
    "method.name",
    "method.sparsity",
    "model.name",
    "task.name",
    *(".".join(k) for k in bench_config.HASH_EXCLUDE_KEYS),
)
_NOT_A_SETTING_PREFIX = tuple(f"{k}." for k in bench_config.HASH_EXCLUDE)


def _flatten(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def _settable(key: str) -> bool:
    return key not in _NOT_A_SETTING and not key.startswith(_NOT_A_SETTING_PREFIX)


def setting_labels(configs: list[dict]) -> list[str]:
    """One label per run: `key=value` for each key that varies between runs of its method on one
    task (of one model), `method.` left out of the key; "" where nothing varies."""
    flat = [{k: json.dumps(v, sort_keys=True) for k, v in _flatten(c).items() if _settable(k)} for c in configs]
    for f, c in zip(flat, configs):  # a run recorded before a key existed used its neutral value
        for (section, key), neutral in bench_config.neutral_defaults(c).items():
            f.setdefault(f"{section}.{key}", json.dumps(neutral))
    by_cell: dict[tuple, list[int]] = {}
    for i, c in enumerate(configs):
        by_cell.setdefault((c["model"]["name"], c["method"]["name"], c["task"]["name"]), []).append(i)
    varying: dict[tuple, set] = {}  # (model, method) -> keys
    for (model, method, _task), members in by_cell.items():
        keys = set().union(*(flat[i] for i in members))
        varying.setdefault((model, method), set()).update(
            k for k in keys if len({flat[i].get(k, "<absent>") for i in members}) > 1
        )
    labels = []
    for c, f in zip(configs, flat):
        keys = sorted(varying[(c["model"]["name"], c["method"]["name"])])
        labels.append(", ".join(f"{k.removeprefix('method.')}={json.loads(f[k]) if k in f else '–'}" for k in keys))
    return labels


def points(frame: pd.DataFrame) -> pd.DataFrame:
    """One line per configuration and task (successful runs): the metric over seeds and the costs,
    and `paths`, the result files of its runs (what the marks and error bars read items from)."""
    ok = frame[frame["status"] == "success"].copy()
    if ok.empty:
        return pd.DataFrame()
    ok["sparsity"] = ok["sparsity"].astype(object).where(ok["sparsity"].notna(), "–")
    if "path" not in ok:  # a frame built without result files: nothing to read items from
        ok["path"] = None
    return (
        ok.groupby(ROW + ["task", "metric"], dropna=False)
        .agg(
            mean=("score", "mean"),
            std=("score", lambda v: v.std(ddof=1) if v.count() > 1 else math.nan),
            n=("score", "count"),
            runs=("status", "size"),
            trainable_params=("trainable_params", "median"),
            params_end=("params_end", "median"),
            train_time_s=("train_time_s", "mean"),
            peak_memory_gb=("peak_memory_gb", "max"),
            paths=("path", lambda v: tuple(sorted(p for p in v if isinstance(p, str)))),
        )
        .reset_index()
    )


def _natural(text) -> tuple:
    """r=8 before r=16: digits compare as numbers (re.split alternates text and digits)."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(text)))


def _sort_key(column: pd.Series) -> pd.Series:
    if column.name == "sparsity":  # "–" (no sparsity) first, then the numbers in order
        return column.map(lambda v: -1.0 if v == "–" else float(v))
    return column.map(_natural)


def wide(pts: pd.DataFrame, reference: str = REFERENCE_METHOD) -> pd.DataFrame:
    """Numbers: per task `<task>:<metric> mean/std/n`, then the row's costs over all its runs
    (params: median; train time: mean; peak memory: max)."""
    if pts.empty:
        return pd.DataFrame()
    pts = pts.assign(column=pts["task"] + ":" + pts["metric"].astype(str))
    cells = pts.set_index(ROW + ["column"])[["mean", "std", "n"]].unstack("column")
    cells.columns = [f"{task} {stat}" for stat, task in cells.columns]
    order = [f"{c} {s}" for c in sorted(pts["column"].unique()) for s in ("mean", "std", "n")]
    cells = cells.reindex(columns=order)
    # the row's mean train time over all of its runs: each task's mean weighted by its run count
    if "params_end" not in pts:  # points from before the column existed
        pts = pts.assign(params_end=pts["trainable_params"])
    costs = (
        pts.assign(time_sum=pts["train_time_s"] * pts["runs"])
        .groupby(ROW)
        .agg(
            trainable_params=("trainable_params", "median"),
            time_sum=("time_sum", "sum"),
            runs=("runs", "sum"),
            peak_memory_gb=("peak_memory_gb", "max"),
            params_end=("params_end", "median"),
        )
    )
    costs.insert(1, "train_time_s", costs.pop("time_sum") / costs.pop("runs"))
    table = cells.join(costs).reset_index().sort_values(ROW, key=_sort_key, ignore_index=True)
    table["matched"], table["reference"] = matched_groups(table, reference)
    return table


# Parameter-matched groups. Two rows of one model are matched when their trainable parameters at the
# end of training (a pruning method's final count) are within MATCH_TOLERANCE of the group's
# smallest; the group's reference row is its LoRA row (the plain baseline every claim is against;
# with several, the one with the fewest parameters). A cell of another row in the group is marked by
# the paired comparison of its runs with the reference row's runs on that task (bench.compare, on
# the primary metric's per-item field): the 95 % t interval of the gain (Comparison.ci95), row −
# reference with positive = better, lies above 0 (ABOVE), below 0 (BELOW) or contains 0 (WITHIN).
MATCH_TOLERANCE = 0.10
ABOVE, BELOW, WITHIN = "▲", "▼", "≈"


def legend(reference: str = REFERENCE_METHOD) -> str:
    """What the marks of the main table mean, for the reference method of this report."""
    return (
        f"Parameter-matched groups (column `matched`): rows of one model whose final trainable parameters are within "
        f"{MATCH_TOLERANCE:.0%} of each other share a label P1, P2, ...; `ref` marks the group's reference row "
        f"({reference.upper()}). A mark after a cell compares that row with its group's `ref` row on that "
        f"task: the gain (row − ref on the primary metric, oriented so that positive = better), paired over the n "
        f"items both scored and over the k seeds of each row, with its 95 % t interval (bench.compare; the "
        f"list under the table gives each gain, interval, n and k). `{ABOVE}`: the interval lies above 0, the row is "
        f"better; `{BELOW}`: below 0, worse; `{WITHIN}`: it contains 0, the data could not tell the two apart "
        f'(not "equal": see the interval\'s width). Each mark is one interval, not adjusted for the number of '
        f"cells. No mark: the `ref` row itself, a row outside a group or in a group without a "
        f"{reference.upper()} row, and cells whose runs have no per-item results (items.jsonl; results "
        f"from before they existed) or cannot be compared (other test data or evaluation settings); the list "
        f"says why."
    )


@dataclass(frozen=True)
class Mark:
    """The comparison behind one cell's mark: the row (method, sparsity, setting) against its
    group's reference row on one task column. `mark` is "" and `reason` says why when the runs
    could not be compared."""

    group: str
    model: str
    method: str
    sparsity: object
    setting: str
    column: str  # <task>:<metric>
    reference: str  # the reference row, "method (setting)"
    mark: str = ""
    gain: float = math.nan
    ci95: tuple[float, float] = (math.nan, math.nan)
    n_items: int = 0
    k: int = 0
    k_ref: int = 0
    run_variance: str = ""
    reason: str = ""


def mark_of(ci95: tuple[float, float]) -> str:
    """ABOVE, BELOW or WITHIN for an interval of the gain."""
    low, high = ci95
    return ABOVE if low > 0 else BELOW if high < 0 else WITHIN


def _label(method, sparsity, setting) -> str:
    """A row as text: `prunedlora s=0.5 (–)`, `lora (r=8)`."""
    shown = f" s={sparsity:.3g}" if isinstance(sparsity, float) else f" s={sparsity}" if sparsity != "–" else ""
    return f"{method}{shown} ({setting or '–'})"


def compare_cell(group: str, row, ref, column: str, a_runs: list[dict], b_runs: list[dict]) -> Mark:
    """The paired comparison of one cell's runs (a) with its reference's (b) on the item field
    behind the column's metric; a Mark without a mark, with the reason, when they cannot be compared."""
    name, ref_name = _label(row["method"], row["sparsity"], row["setting"]), _label(*(ref[k] for k in ROW[1:]))
    base = Mark(group, row["model"], row["method"], row["sparsity"], row["setting"], column, ref_name)
    if not b_runs:
        return replace(base, reason="the reference row has no run on this task")
    try:
        field = report_stats.arm_field(a_runs + b_runs, column.split(":", 1)[1])
        c = compare_runs(name, a_runs, Source(field), ref_name, b_runs, Source(field), cross_checks=False)
    except report_stats.UNREADABLE as err:
        return replace(base, reason=f"not compared: {err}")
    return replace(
        base,
        mark=mark_of(c.ci95),
        gain=c.gain,
        ci95=c.ci95,
        n_items=c.n_items,
        k=c.k_a,
        k_ref=c.k_b,
        run_variance=c.run_variance,
    )


def with_marks(table: pd.DataFrame, pts: pd.DataFrame, runs: Mapping[str, dict]) -> tuple[pd.DataFrame, list[Mark]]:
    """The wide table plus, per task column, `<column> mark`, `gain`, `gain ci95 low/high` and
    `items` (the paired comparison with the group's reference, see LEGEND), and the comparisons
    themselves. `pts` must carry `paths` (points()), `runs` maps those paths to the results."""
    if table.empty:
        return table, []
    columns = [c[: -len(" mean")] for c in table.columns if c.endswith(" mean")]
    cell_paths = {}
    if "paths" in pts:
        for p in pts.itertuples():
            cell_paths[(p.model, p.method, p.sparsity, p.setting, f"{p.task}:{p.metric}")] = p.paths
    extra = {
        f"{c} {what}": [math.nan] * len(table)
        for c in columns
        for what in ("gain", "gain ci95 low", "gain ci95 high", "items")
    }
    extra.update({f"{c} mark": [""] * len(table) for c in columns})
    marks: list[Mark] = []
    for group, rows in table[table["matched"] != ""].groupby("matched", sort=False):
        refs = rows[rows["reference"]]
        if refs.empty:
            continue
        ref = refs.iloc[0]
        for i, row in rows.iterrows():
            if row["reference"]:
                continue
            for column in columns:
                mine = cell_paths.get((*(row[k] for k in ROW), column), ())
                if not mine:
                    continue
                theirs = cell_paths.get((*(ref[k] for k in ROW), column), ())
                m = compare_cell(group, row, ref, column, [runs[p] for p in mine], [runs[p] for p in theirs])
                marks.append(m)
                extra[f"{column} mark"][i] = m.mark
                extra[f"{column} gain"][i] = m.gain
                extra[f"{column} gain ci95 low"][i], extra[f"{column} gain ci95 high"][i] = m.ci95
                extra[f"{column} items"][i] = m.n_items or math.nan
    out = table.assign(**extra)
    order = []
    for c in out.columns:
        if c in extra:
            continue
        order.append(c)
        if c.endswith(" n") and c[: -len(" n")] in columns:
            base = c[: -len(" n")]
            order += [f"{base} {w}" for w in ("mark", "gain", "gain ci95 low", "gain ci95 high", "items")]
    return out[order], marks


# bench.paired's run_variance modes as the list under the table says them
_RUN_VARIANCE = {
    "paired": "paired over the shared seeds",
    "pooled": "pooled over the two rows' runs",
    "none": "none: one run each, the interval covers item sampling only, not seed-to-seed variation",
}


def marks_markdown(marks: list[Mark]) -> str:
    """One line per comparison behind a mark (or behind its absence)."""
    if not marks:
        return ""
    lines = [
        "Paired comparisons behind the marks (row against its group's `ref` row; gain > 0: the row is better):",
        "",
    ]
    for m in marks:
        what = f"- {m.group} {_label(m.method, m.sparsity, m.setting)} against {m.reference} on {m.column}: "
        if not m.mark:
            lines.append(what + f"no mark, {m.reason}")
            continue
        lines.append(
            what
            + f"gain {m.gain:+.4f}, 95 % CI [{m.ci95[0]:+.4f}, {m.ci95[1]:+.4f}], n = {m.n_items} items, "
            + f"k = {m.k} and {m.k_ref} seeds (run variance {_RUN_VARIANCE.get(m.run_variance, m.run_variance)}): "
            + m.mark
        )
    return "\n".join(lines) + "\n"


def matched_groups(table: pd.DataFrame, reference: str = REFERENCE_METHOD) -> tuple[list[str], list[bool]]:
    """(group label or "", is the group's reference) per row of the wide table; a group's reference
    is its row of the `reference` method with the fewest parameters."""
    labels, refs = [""] * len(table), [False] * len(table)
    counter = 0
    for _model, rows in table.groupby("model", sort=True):
        params = rows["params_end"].where(rows["params_end"].notna(), rows["trainable_params"]).dropna()
        order = params.sort_values(kind="stable")
        groups: list[list[int]] = []
        for i, p in order.items():
            if groups and p <= params[groups[-1][0]] * (1 + MATCH_TOLERANCE):
                groups[-1].append(i)
            else:
                groups.append([i])
        for members in groups:
            if len(members) < 2:
                continue
            counter += 1
            for i in members:
                labels[i] = f"P{counter}"
            candidates = [i for i in members if table.at[i, "method"] == reference]
            if candidates:
                refs[min(candidates, key=lambda i: params[i])] = True
    return labels, refs


def _cell(mean, std, n) -> str:
    if not n or pd.isna(mean):
        return "–"
    if n == 1 or pd.isna(std):
        return f"{mean:.4f} (n={int(n)})"
    return f"{mean:.4f} ± {std:.4f} (n={int(n)})"


def display(table: pd.DataFrame, reference: str = REFERENCE_METHOD) -> pd.DataFrame:
    """The wide table as text cells: `mean ± std (n=k)` per task, costs rounded."""
    tasks = [c[: -len(" mean")] for c in table.columns if c.endswith(" mean")]
    out = table[ROW].copy()
    out["setting"] = out["setting"].replace("", "–")
    out["sparsity"] = out["sparsity"].map(lambda v: f"{v:.3g}" if isinstance(v, float) else str(v))
    if "matched" not in table:
        table = table.assign(**dict(zip(("matched", "reference"), matched_groups(table, reference))))
    for task in tasks:
        # with_marks' column; absent (no comparison made) or NaN (read back from main.csv): no mark
        marks = table[f"{task} mark"] if f"{task} mark" in table else [""] * len(table)
        out[task] = [
            _cell(m, s, n) + (f" {mark}" if isinstance(mark, str) and mark else "")
            for m, s, n, mark in zip(table[f"{task} mean"], table[f"{task} std"], table[f"{task} n"], marks)
        ]
    end = table["params_end"] if "params_end" in table else table["trainable_params"]
    # a pruning or reallocating method starts with one count and ends with another: show both, since
    # the parameter matching (column `matched`) uses the end
    out["trainable params"] = [_params(start, stop) for start, stop in zip(table["trainable_params"], end)]
    out["train time s (mean)"] = table["train_time_s"].map(lambda v: "–" if pd.isna(v) else f"{v:.1f}")
    out["peak memory GB (max)"] = table["peak_memory_gb"].map(lambda v: "–" if pd.isna(v) else f"{v:.2f}")
    out["matched"] = [(f"{g} ref" if ref else g) or "–" for g, ref in zip(table["matched"], table["reference"])]
    return out


def _params(start, end) -> str:
    if pd.isna(start):
        return "–"
    if pd.isna(end) or int(end) == int(start):
        return f"{int(start):,}"
    return f"{int(start):,} → {int(end):,}"


def markdown(table: pd.DataFrame) -> str:
    """One Markdown table per model (the model is the section heading)."""
    shown = display(table)
    parts = []
    for model, rows in shown.groupby("model", sort=True):
        # disable_numparse: tabulate would otherwise turn "2.0" into "2"
        parts += [f"### {model}", "", rows.drop(columns="model").to_markdown(index=False, disable_numparse=True), ""]
    return "\n".join(parts)


def latex(table: pd.DataFrame) -> str:
    text = display(table).to_latex(index=False, escape=True)
    # the marks as math symbols (\blacktriangle needs amssymb), so that pdflatex needs no Unicode font
    for glyph, tex in ((ABOVE, "$\\blacktriangle$"), (BELOW, "$\\blacktriangledown$"), (WITHIN, "$\\approx$")):
        text = text.replace(glyph, tex)
    return text.replace(" ± ", " $\\pm$ ").replace("–", "--")
