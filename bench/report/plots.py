"""Figures of bench.report (matplotlib, Agg backend: no display needed).

pareto.png           per model and task: the primary metric (mean over seeds) against peak memory,
                     trainable parameters and train time, one point per configuration; the line
                     joins the points no other point beats on both axes. Error bar: the 95 %
                     interval of the configuration's mean over items and seeds where its runs
                     carry items files (bench.report.stats.with_intervals; filled marker), else
                     the std over seeds (open marker); `error_bar_caption` says which.
rank_allocation.png  for the methods whose report holds a final `rank_pattern` {module: rank}
                     (AdaLoRA, PrunedLoRA, L1RA): rank per layer (columns) and module type (rows),
                     averaged over seeds.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, also on machines without a display
import matplotlib.pyplot as plt
import pandas as pd

COSTS = [
    ("peak_memory_gb", "peak memory (GB)", False),
    ("trainable_params", "trainable parameters", True),
    ("train_time_s", "train time (s)", False),
]  # column, axis label, log scale
_LOWER_IS_BETTER = ("perplexity", "ppl", "loss", "error", "nll")  # nll: answer_nll, final_answer_nll
_LAYER = re.compile(r"\.(\d+)\.")


def higher_is_better(metric: str) -> bool:
    return not any(word in str(metric).lower() for word in _LOWER_IS_BETTER)


def front(xs: list[float], ys: list[float], higher: bool) -> list[int]:
    """Indices of the points that no other point beats: lower-or-equal cost and a better-or-equal
    metric, better in one of them. Sorted by cost."""
    sign = 1 if higher else -1
    order = sorted(range(len(xs)), key=lambda i: (xs[i], -sign * ys[i]))
    kept, best = [], -math.inf
    for i in order:
        if sign * ys[i] > best:
            kept.append(i)
            best = sign * ys[i]
    return kept


def _variant(sparsity, setting) -> str:
    """What tells points (or grids) of one method apart: s=0.75, r=16, ..."""
    shown = f"{sparsity:.3g}" if isinstance(sparsity, float) else sparsity
    return " ".join(([f"s={shown}"] if sparsity != "–" else []) + ([str(setting)] if setting else []))


def _order(key: tuple) -> tuple:
    """(model, task, method, sparsity, setting) in reading order: sparsities as numbers."""
    model, task, method, sparsity, setting = key
    return model, task, method, -1.0 if sparsity == "–" else float(sparsity), str(setting)


def _plotted(pts: pd.DataFrame) -> pd.DataFrame:
    return pts[pts["n"] > 0] if not pts.empty else pts


def error_bar_caption(pts: pd.DataFrame) -> str:
    """What the error bars of pareto(pts) are; "" when nothing is plotted."""
    pts = _plotted(pts)
    if pts.empty:
        return ""
    kinds = set(pts["error_bar"]) if "error_bar" in pts else {"std"}
    interval = "the 95 % t interval of the configuration's mean (item and seed variance, from its runs' items.jsonl)"
    std = "the standard deviation over seeds (none with one seed)"
    if kinds == {"ci95"}:
        return f"Error bars: {interval}."
    if kinds == {"std"}:
        return f"Error bars: {std}; the runs have no per-item results to draw an interval from."
    return f"Error bars: {interval} where the runs have per-item results (filled markers), else {std} (open markers)."


def _bars(rows: pd.DataFrame) -> tuple[list[float], list[float]]:
    """(below, above) the mean: the interval's ends where error_bar is "ci95", else ± std."""
    below, above = [], []
    for p in rows.itertuples():
        if getattr(p, "error_bar", "std") == "ci95":
            below.append(max(0.0, p.mean - p.ci95_low))
            above.append(max(0.0, p.ci95_high - p.mean))
        else:
            spread = 0.0 if pd.isna(p.std) else float(p.std)
            below.append(spread)
            above.append(spread)
    return below, above


def pareto(pts: pd.DataFrame, path: Path) -> Path | None:
    """pts: bench.report.table.points(), with bench.report.stats.with_intervals' columns where the
    runs have items files. None when no configuration has a metric."""
    caption = error_bar_caption(pts)
    pts = _plotted(pts)
    if pts.empty:
        return None
    if "error_bar" not in pts:
        pts = pts.assign(error_bar="std")
    panels = list(pts.groupby(["model", "task", "metric"], sort=True))
    methods = sorted(pts["method"].unique())
    colour = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(len(panels), len(COSTS), figsize=(5 * len(COSTS), 4 * len(panels)), squeeze=False)
    for ax_row, ((model, task, metric), rows) in zip(axes, panels):
        higher = higher_is_better(metric)
        for ax, (column, label, log) in zip(ax_row, COSTS):
            shown = rows[rows[column].notna()]
            xs, ys = shown[column].astype(float).tolist(), shown["mean"].astype(float).tolist()
            for method, of_method in shown.groupby("method", sort=True):
                label = method
                for kind, rows_of_kind in of_method.groupby("error_bar", sort=True):  # "ci95" before "std"
                    ax.errorbar(
                        rows_of_kind[column].astype(float),
                        rows_of_kind["mean"].astype(float),
                        yerr=_bars(rows_of_kind),
                        fmt="o",
                        capsize=3,
                        color=colour[method],
                        markerfacecolor=colour[method] if kind == "ci95" else "none",
                        label=label,
                    )
                    label = None  # one legend entry per method
            for x, y, p in zip(xs, ys, shown.itertuples()):
                ax.annotate(
                    _variant(p.sparsity, p.setting), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7
                )
            if xs:
                keep = front(xs, ys, higher)
                ax.plot([xs[i] for i in keep], [ys[i] for i in keep], "--", color="grey", linewidth=1)
            # a log axis over less than a decade labels its minor ticks on top of each other
            wide = bool(xs) and min(xs) > 0 and max(xs) / min(xs) >= 10
            ax.set_xscale("log" if log and wide else "linear")
            ax.set_xlabel(label)
            ax.set_ylabel(f"{metric} ({'higher' if higher else 'lower'} is better)", fontsize=8)
            ax.set_title(f"{model} / {task}", fontsize=9)
            ax.grid(alpha=0.3)
        ax_row[0].legend(fontsize=7, loc="best")
    fig.text(0.5, 0.005, caption, ha="center", va="bottom", fontsize=8, wrap=True)
    fig.tight_layout(rect=(0, 0.35 / fig.get_figheight(), 1, 1))  # a third of an inch for the caption
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return path


def module_position(name: str) -> tuple[str, str]:
    """(module type, layer) from a module name: model.layers.3.self_attn.q_proj -> (q_proj, 3)."""
    layer = _LAYER.search(name)
    return name.rsplit(".", 1)[-1], layer.group(1) if layer else "–"


def rank_grids(patterns: dict[tuple, list[dict]]) -> dict[tuple, pd.DataFrame]:
    """{group: [rank_pattern per run]} -> {group: DataFrame (module type x layer) of mean ranks}."""
    grids = {}
    for key, runs in patterns.items():
        cells = pd.DataFrame(
            [(*module_position(name), rank) for pattern in runs for name, rank in pattern.items()],
            columns=["module", "layer", "rank"],
        )
        grid = cells.groupby(["module", "layer"], sort=False)["rank"].mean().unstack("layer")
        grids[key] = grid.reindex(
            columns=sorted(grid.columns, key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else c))
        )
    return grids


def rank_allocation(patterns: dict[tuple, list[dict]], path: Path) -> Path | None:
    """patterns: {(model, task, method, sparsity, setting): [rank_pattern of each run]}."""
    if not patterns:
        return None
    grids = dict(sorted(rank_grids(patterns).items(), key=lambda item: _order(item[0])))
    top = max(float(g.max().max()) for g in grids.values()) or 1.0
    cols = min(3, len(grids))
    rows = math.ceil(len(grids) / cols)
    height = max(len(g) for g in grids.values()) * 0.5 + 2
    width = max(5.5, 0.3 * max(g.shape[1] for g in grids.values()) + 2.5)  # ~0.3 inch per layer
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[len(grids) :]:
        ax.axis("off")
    for ax, ((model, task, method, sparsity, setting), grid) in zip(axes.flat, grids.items()):
        image = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap="viridis", vmin=0, vmax=top)
        ax.set_xticks(range(grid.shape[1]), grid.columns, fontsize=7)
        ax.set_yticks(range(grid.shape[0]), grid.index, fontsize=8)
        if grid.shape[1] <= 16:  # numbers stay legible
            for (i, j), value in pd.DataFrame(grid.to_numpy()).stack().items():
                ax.text(j, i, f"{value:.3g}", ha="center", va="center", fontsize=7, color="white")
        ax.set_title(
            f"{method} {_variant(sparsity, setting)}\n{model} / {task} "
            f"(runs: {len(patterns[(model, task, method, sparsity, setting)])})",
            fontsize=9,
        )
        ax.set_xlabel("layer")
        fig.colorbar(image, ax=ax, label="final rank")
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return path
