"""What the analysis stage measured (result.json `analysis`, docs/analysis.md), in bench.report.

analysis table   per configuration (model, task, method, sparsity, setting): over the runs that
                 carry an analysis, the mean forgetting (nats per token), loss and accuracy gaps,
                 intruder dimensions per run, and the layer means of the update's stable rank,
                 effective rank and relative norm.
spectra.png      per model and task and per layer type (q_proj, v_proj, ...): the update's top
                 singular values normalised by the largest (s_i / s_1, averaged over the layers of
                 that type and the runs of a configuration), one line per configuration.
forgetting.png   per model and task: the primary metric against forgetting, one point per
                 configuration (mean over seeds, bars: std over seeds).
landscape.png    per run with a landscape (analysis=full; the first MAX_LANDSCAPES): the held-out loss
                 over the trajectory plane with the training path, the same over a filter-normalised
                 random plane, and the line from w_0 through w*.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

KEY = ["model", "task", "method", "sparsity", "setting"]
MAX_LANDSCAPES = 6


def _get(d, *path):
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def analysis_rows(runs: list[dict], frame: pd.DataFrame) -> pd.DataFrame:
    """One line per successful run with an analysis: the key columns and the analysis' numbers."""
    rows = []
    for r, (_, f) in zip(runs, frame.iterrows()):
        a = r.get("analysis")
        if r["status"] != "success" or not isinstance(a, dict):
            continue
        rows.append(
            {
                **{k: f[k] for k in KEY},
                "score": f["score"],
                "metric": f["metric"],
                "forgetting": _get(a, "forgetting", "forgetting"),
                "loss_gap": _get(a, "gap", "loss_gap"),
                "accuracy_gap": _get(a, "gap", "accuracy_gap"),
                "intruders": _get(a, "layers", "intruders_total"),
                "stable_rank": _get(a, "layers", "mean", "stable_rank"),
                "effective_rank": _get(a, "layers", "mean", "effective_rank"),
                "relative_norm": _get(a, "layers", "mean", "relative_norm"),
                "_layers": _get(a, "layers", "layers") or {},
                "_landscape": a.get("landscape"),
                "seed": f["seed"],
                "_path": r["_path"],
            }
        )
    out = pd.DataFrame(rows)
    if not out.empty:
        out["sparsity"] = out["sparsity"].astype(object).where(out["sparsity"].notna(), "–")
        out["setting"] = out["setting"].replace("", "–")
    return out


def table(rows: pd.DataFrame) -> pd.DataFrame:
    if rows.empty:
        return pd.DataFrame()
    numbers = ["forgetting", "loss_gap", "accuracy_gap", "intruders", "stable_rank", "effective_rank", "relative_norm"]
    grouped = rows.groupby(KEY, dropna=False)
    out = grouped[numbers].agg(lambda v: pd.to_numeric(v, errors="coerce").mean()).reset_index()
    out.insert(len(KEY), "runs", grouped.size().values)
    return out


def markdown(tab: pd.DataFrame) -> str:
    if tab.empty:
        return "no run carries an analysis (analysis=none, or runs from before the stage existed)"
    shown = tab.copy()
    formats = {"forgetting": "{:+.3g}", "loss_gap": "{:+.3g}", "accuracy_gap": "{:+.3g}", "relative_norm": "{:.3g}"}
    formats.update(intruders="{:.2f}", stable_rank="{:.2f}", effective_rank="{:.2f}")
    for column, fmt in formats.items():
        shown[column] = shown[column].map(lambda v, fmt=fmt: "–" if pd.isna(v) else fmt.format(v))
    legend = (
        "forgetting: tuned minus base NLL per token on the BoolQ Wikipedia passages (positive: worse); "
        "loss gap: unseen minus trained-on training loss; accuracy gap: trained-on minus unseen; "
        "intruders: intruder dimensions per run, all analysed layers; ranks and the update's norm "
        "relative to W0: means over layers ([docs/analysis.md](../docs/analysis.md)). Means over runs; "
        "– where a measurement does not apply."
    )
    return shown.to_markdown(index=False, disable_numparse=True) + "\n\n" + legend


def _layer_type(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _label(row) -> str:
    extra = [str(v) for v in (row["sparsity"], row["setting"]) if v not in ("–", "", None)]
    return row["method"] + (f" ({', '.join(extra)})" if extra else "")


def spectra(rows: pd.DataFrame, path: Path) -> Path | None:
    if rows.empty or not any(rows["_layers"].map(bool)):
        return None
    panels = []
    for (model, task), of_task in rows.groupby(["model", "task"], sort=True):
        types = sorted({_layer_type(n) for layers in of_task["_layers"] for n in layers})
        panels += [(model, task, t, of_task) for t in types]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (model, task, kind, of_task) in zip(axes[0], panels):
        for label, group in of_task.groupby(of_task.apply(_label, axis=1), sort=True):
            curves = [
                np.asarray(v["top_singular_values"]) / v["top_singular_values"][0]
                for layers in group["_layers"]
                for n, v in layers.items()
                if _layer_type(n) == kind and v.get("top_singular_values") and v["top_singular_values"][0] > 0
            ]
            if not curves:
                continue
            k = min(len(c) for c in curves)
            mean = np.mean([c[:k] for c in curves], axis=0)
            ax.plot(range(1, k + 1), mean, marker="o", markersize=3, label=f"{label} ({len(curves)} layers)")
        ax.set_yscale("log")
        ax.set_xlabel("singular value index i of ΔW")
        ax.set_ylabel("s_i / s_1 (mean over layers and runs)")
        ax.set_title(f"{model} / {task}: {kind}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return path


def _std(values: pd.Series) -> float:
    return values.std(ddof=1) if len(values) > 1 else math.nan


def forgetting_figure(rows: pd.DataFrame, path: Path) -> Path | None:
    shown = rows[rows["forgetting"].notna() & rows["score"].notna()] if not rows.empty else rows
    if shown.empty:
        return None
    panels = list(shown.groupby(["model", "task", "metric"], sort=True))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, ((model, task, metric), of_task) in zip(axes[0], panels):
        for label, group in of_task.groupby(of_task.apply(_label, axis=1), sort=True):
            f, s = group["forgetting"].astype(float), group["score"].astype(float)
            ax.errorbar(f.mean(), s.mean(), xerr=_std(f), yerr=_std(s), fmt="o", capsize=3, label=label)
        ax.axvline(0.0, color="grey", linewidth=1, linestyle="--")
        ax.set_xlabel("forgetting: tuned − base NLL per token on general text (nats; lower is better)")
        ax.set_ylabel(str(metric))
        ax.set_title(f"{model} / {task}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return path


def landscape_figure(rows: pd.DataFrame, path: Path) -> Path | None:
    shown = rows[rows["_landscape"].notna()].head(MAX_LANDSCAPES) if not rows.empty else rows
    if shown.empty:
        return None
    fig, axes = plt.subplots(len(shown), 3, figsize=(15, 4 * len(shown)), squeeze=False)
    for ax_row, (_, r) in zip(axes, shown.iterrows()):
        land, title = r["_landscape"], f"{r['model']} / {r['task']} / {_label(r)} / seed {r['seed']}"
        t = land["trajectory"]
        ax = ax_row[0]
        filled = ax.contourf(t["x"], t["y"], t["loss"], levels=20, cmap="viridis")
        fig.colorbar(filled, ax=ax, label="held-out loss")
        px, py = zip(*t["path"])
        ax.plot(px, py, "w.-", linewidth=1)
        ax.plot(px[0], py[0], "ws", label="start (w_0)")
        ax.plot(px[-1], py[-1], "r*", markersize=10, label="end (w*)")
        ax.set_xlabel("PC 1 of the path's offsets")
        ax.set_ylabel("PC 2")
        ax.set_title(
            f"{title}\ntrajectory plane ({100 * t['plane_energy_share']:.0f} % of the path's energy)", fontsize=8
        )
        ax.legend(fontsize=7)
        rnd = land["random"]
        ax = ax_row[1]
        filled = ax.contourf(rnd["x"], rnd["y"], rnd["loss"], levels=20, cmap="viridis")
        fig.colorbar(filled, ax=ax, label="held-out loss")
        ax.plot(0, 0, "r*", markersize=10)
        ax.set_xlabel("random direction 1 (filter-normalised)")
        ax.set_ylabel("random direction 2")
        sharp = land["sharpness"]["mean_increase"]
        ax.set_title(
            f"random plane around w*; sharpness at r={land['sharpness']['radius']:g}: {sharp:+.3g}", fontsize=8
        )
        ax = ax_row[2]
        ax.plot(land["line"]["alpha"], land["line"]["loss"], "o-", markersize=3)
        for a, name in ((0.0, "w_0"), (1.0, "w*")):
            ax.axvline(a, color="grey", linestyle="--", linewidth=1)
            ax.annotate(name, (a, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12), textcoords="offset points")
        ax.set_xlabel("alpha in w_0 + alpha (w* - w_0)")
        ax.set_ylabel("held-out loss")
        ax.set_title("the line through the start and the end", fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return path
