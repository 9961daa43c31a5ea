"""The main table of bench.report: rows = method (x sparsity x setting), columns = tasks.

A cell is the primary metric's mean ± std over the seeds of one configuration, with n. The
"setting" names what tells two rows of the same method apart (e.g. `r=8` and `r=16` for the LoRA
references of a sparsity sweep): the config keys that differ between runs of that method on one
task. Keys that differ only between tasks (per-task sizes) do not split a row, so one row holds one
configuration across the task columns.
"""

from __future__ import annotations

import json
import math
import re

import pandas as pd

from bench import config as bench_config

ROW = ["model", "method", "sparsity", "setting"]

# What never tells two configurations apart in a table: the row keys themselves, the seed (averaged
# over), and what does not change what a run computes (left out of the run hash by bench.config).
_NOT_A_SETTING = (
    "seed",
    "method.name",
    "method.sparsity",
    "model.name",
    "task.name",
    *(".".join(k) for k in getattr(bench_config, "HASH_EXCLUDE_KEYS", ())),
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
    for f in flat:  # a run recorded before a key existed used the key's neutral value (bench.config)
        for (section, key), neutral in bench_config.HASH_NEUTRAL_DEFAULTS.items():
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
    """One line per configuration and task (successful runs): the metric over seeds and the costs."""
    ok = frame[frame["status"] == "success"].copy()
    if ok.empty:
        return pd.DataFrame()
    ok["sparsity"] = ok["sparsity"].astype(object).where(ok["sparsity"].notna(), "–")
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


def wide(pts: pd.DataFrame) -> pd.DataFrame:
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
    table["matched"], table["reference"] = matched_groups(table)
    return table


# Parameter-matched groups. Two rows of one model are matched when their trainable parameters at the
# end of training (a pruning method's final count) are within MATCH_TOLERANCE of the group's
# smallest; the group's reference row is its LoRA row (the plain baseline every claim is against;
# with several, the one with the fewest parameters). A cell of another row in the group is marked
# WITHIN_MARK when its mean differs from the reference's by no more than one standard deviation
# over seeds (the larger of the two rows' std, ddof=1): a difference the seeds alone could make.
MATCH_TOLERANCE = 0.10
REFERENCE_METHOD = "lora"
WITHIN_MARK = "≈"
LEGEND = (
    f"Parameter-matched groups (column `matched`): rows of one model whose final trainable parameters are within "
    f"{MATCH_TOLERANCE:.0%} of each other share a label P1, P2, ...; `ref` marks the group's reference row "
    f"({REFERENCE_METHOD.upper()}). `{WITHIN_MARK}` after a cell: its mean is within one standard deviation "
    f"(over seeds, the larger of the two rows') of the reference row's mean on that task, a difference the "
    f"seed-to-seed spread can explain; no mark: the difference exceeds it, or the group has no reference, "
    f"or a row has one seed only."
)


def matched_groups(table: pd.DataFrame) -> tuple[list[str], list[bool]]:
    """(group label or "", is the group's reference) per row of the wide table."""
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
            lora = [i for i in members if table.at[i, "method"] == REFERENCE_METHOD]
            if lora:
                refs[min(lora, key=lambda i: params[i])] = True
    return labels, refs


def within_spread(table: pd.DataFrame, task: str) -> list[bool]:
    """Per row: is its mean on `task` within one std of its group's reference row (see LEGEND)?"""
    out = [False] * len(table)
    for _label, rows in table[table["matched"] != ""].groupby("matched"):
        ref = rows[rows["reference"]]
        if ref.empty:
            continue
        r = ref.iloc[0]
        for i, row in rows.iterrows():
            if row["reference"] or pd.isna(row[f"{task} mean"]) or pd.isna(r[f"{task} mean"]):
                continue
            spread = max(row[f"{task} std"], r[f"{task} std"])  # NaN (one seed) on either side: no mark
            if not pd.isna(spread) and abs(row[f"{task} mean"] - r[f"{task} mean"]) <= spread:
                out[i] = True
    return out


def _cell(mean, std, n) -> str:
    if not n or pd.isna(mean):
        return "–"
    if n == 1 or pd.isna(std):
        return f"{mean:.4f} (n={int(n)})"
    return f"{mean:.4f} ± {std:.4f} (n={int(n)})"


def display(table: pd.DataFrame) -> pd.DataFrame:
    """The wide table as text cells: `mean ± std (n=k)` per task, costs rounded."""
    tasks = [c[: -len(" mean")] for c in table.columns if c.endswith(" mean")]
    out = table[ROW].copy()
    out["setting"] = out["setting"].replace("", "–")
    out["sparsity"] = out["sparsity"].map(lambda v: f"{v:.3g}" if isinstance(v, float) else str(v))
    if "matched" not in table:
        table = table.assign(**dict(zip(("matched", "reference"), matched_groups(table))))
    for task in tasks:
        marks = within_spread(table, task)
        out[task] = [
            _cell(m, s, n) + (f" {WITHIN_MARK}" if mark else "")
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
    return text.replace(" ± ", " $\\pm$ ").replace("–", "--")
