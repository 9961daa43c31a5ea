"""report.html: one self-contained page per report, opened from disk with no network.

Charts are plotly figures (plotly.py builds them; plotly.js, about 4.8 MB, is inlined once, so the
page works offline, on an air-gapped cluster too; docs/sweeps.md says why plotly). Tables are HTML
with a few lines of script to sort (click a heading) and filter (the box above a table: any cell;
a box under each heading: that column; `report.html#method=lora&task=sst2` opens with those
column filters set); no chart is drawn by hand. Sections:

- verdicts (a study): a forest plot per paper, one row per claim, the gain Δ with its 95 % (thin)
  and 90 % (thick) intervals, the declared margin as a dashed line at −margin, the verdict beside;
  hovering names the arms, n items, k seeds and the minimum detectable difference;
- the main table (mean and interval per configuration), Pareto fronts of the primary metric against
  trainable parameters, train time and peak memory (the front highlighted, error bars, a tooltip
  naming the configuration and its run directories), the analysis' spectra, its forgetting where
  measured, and its loss landscapes (trajectory plane with the path, random plane, line) where run;
- failures with their errors; provenance (commits, packages, machine) in a collapsed section.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import pandas as pd

VERDICT_COLOUR = {
    "better": "#1a9850",
    "non-inferior": "#66bd63",
    "worse": "#d73027",
    "inconclusive": "#878787",
    "not tested": "#bababa",
}

SCRIPT = """
function sortTable(th) {
  const table = th.closest('table'), body = table.tBodies[0];
  const i = Array.from(th.parentNode.children).indexOf(th), up = th.dataset.dir !== 'up';
  th.dataset.dir = up ? 'up' : 'down';
  const key = r => { const t = r.children[i].dataset.v ?? r.children[i].textContent;
                     const n = parseFloat(t); return isNaN(n) ? t : n; };
  Array.from(body.rows).sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (up ? 1 : -1))
       .forEach(r => body.appendChild(r));
}
function filterTable(input) {
  const id = input.dataset.table, table = document.getElementById(id);
  const q = document.querySelector(`input.filter[data-table="${id}"]`).value.toLowerCase();
  const cols = Array.from(table.querySelectorAll('input.colfilter'))
                    .map(c => [+c.dataset.col, c.value.toLowerCase()]).filter(c => c[1]);
  Array.from(table.tBodies[0].rows).forEach(r => {
    const shown = r.textContent.toLowerCase().includes(q) &&
                  cols.every(([i, v]) => r.children[i].textContent.toLowerCase().includes(v));
    r.style.display = shown ? '' : 'none'; });
}
// report.html#method=lora&task=sst2 opens with those column filters set (a link to a filtered view)
window.addEventListener('DOMContentLoaded', () => {
  new URLSearchParams(location.hash.slice(1)).forEach((value, column) => {
    document.querySelectorAll('table.data').forEach(table => {
      const heads = Array.from(table.tHead.rows[0].children).map(th => th.textContent);
      const box = table.querySelector(`input.colfilter[data-col="${heads.indexOf(column)}"]`);
      if (box) { box.value = value; filterTable(box); }
    });
  });
});
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; font-size: 13px; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; }
th { background: #f3f3f3; cursor: pointer; }
input.filter { margin: 0.3em 0; padding: 3px; width: 20em; }
input.colfilter { width: 100%; min-width: 4em; box-sizing: border-box; font-size: 12px; }
.verdict { font-weight: bold; }
details { margin: 1em 0; } pre { white-space: pre-wrap; font-size: 12px; }
"""


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def table_html(frame: pd.DataFrame, table_id: str) -> str:
    """A sortable, filterable HTML table of `frame` (numbers sort as numbers: data-v)."""
    head = "".join(f"<th onclick='sortTable(this)'>{html.escape(str(c))}</th>" for c in frame.columns)
    boxes = "".join(
        f"<th><input class='colfilter' data-table='{table_id}' data-col='{i}' placeholder='…' "
        f"aria-label='filter {html.escape(str(c))}' oninput='filterTable(this)'></th>"
        for i, c in enumerate(frame.columns)
    )
    rows = []
    for _, r in frame.iterrows():
        cells = []
        for v in r:
            number = isinstance(v, (int, float)) and not isinstance(v, bool) and not pd.isna(v)
            data = f" data-v='{v}'" if number else ""
            text = _fmt(v) if number else ("–" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v))
            cells.append(f"<td{data}>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f"<input class='filter' placeholder='filter rows…' data-table='{table_id}' oninput='filterTable(this)'>"
        f"<div style='overflow-x:auto'><table id='{table_id}' class='data'><thead><tr>{head}</tr>"
        f"<tr>{boxes}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def forest_figure(claims: list[dict], title: str):
    """claims: [{label, delta, ci95, ci90, margin, verdict, hover}] (delta None: drawn as text only)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    labels = [c["label"] for c in claims]
    for c in claims:
        y = c["label"]
        colour = VERDICT_COLOUR.get(c["verdict"], "#444")
        for ci, width in ((c.get("ci95"), 1.5), (c.get("ci90"), 5)):
            if ci:
                fig.add_trace(
                    go.Scatter(
                        x=list(ci),
                        y=[y, y],
                        mode="lines",
                        line={"color": colour, "width": width},
                        hoverinfo="skip",
                        showlegend=False,
                    )
                )
    shown = [c for c in claims if c.get("delta") is not None]
    fig.add_trace(
        go.Scatter(
            x=[c["delta"] for c in shown],
            y=[c["label"] for c in shown],
            mode="markers",
            marker={
                "size": 10,
                "color": [VERDICT_COLOUR.get(c["verdict"], "#444") for c in shown],
                "symbol": "diamond",
            },
            text=[c["hover"] for c in shown],
            hovertemplate="%{text}<extra></extra>",
            name="Δ",
            showlegend=False,
            meta="forest-points",
        )
    )
    for margin in sorted({c["margin"] for c in claims if c.get("margin")}):
        fig.add_vline(
            x=-margin,
            line={"dash": "dash", "color": "#555", "width": 1},
            annotation_text=f"−margin {margin:g}",
            annotation_position="top",
        )
    fig.add_vline(x=0, line={"color": "#000", "width": 1})
    for c in claims:
        fig.add_annotation(
            x=1.01,
            xref="paper",
            y=c["label"],
            text=c["verdict"],
            showarrow=False,
            xanchor="left",
            font={"color": VERDICT_COLOUR.get(c["verdict"], "#444")},
        )
    fig.update_layout(
        title=title,
        height=120 + 38 * len(labels),
        margin={"l": 20, "r": 130, "t": 60, "b": 40},
        xaxis_title="Δ: gain of the first arm (positive = better; thin: 95 % CI, thick: 90 % CI)",
        yaxis={"categoryorder": "array", "categoryarray": labels[::-1], "automargin": True},
        plot_bgcolor="white",
    )
    fig.update_xaxes(showgrid=True, gridcolor="#eee", zeroline=False)
    return fig


def front_trace(xs: list[float], ys: list[float], higher: bool):
    """The dashed line through the points no other beats on both cost (x, lower is better) and metric."""
    import plotly.graph_objects as go

    from bench.report import plots as RP

    keep = RP.front(xs, ys, higher)
    return go.Scatter(
        x=[xs[i] for i in keep],
        y=[ys[i] for i in keep],
        mode="lines",
        line={"dash": "dash", "color": "grey"},
        name="front",
        hoverinfo="skip",
    )


def pareto_figures(points: pd.DataFrame) -> list:
    """Per model, task and metric: the metric against each cost, the front joined, tooltips naming
    the configuration and its run directories."""
    import plotly.graph_objects as go

    from bench.report import plots as RP

    figs = []
    if points.empty:
        return figs
    for (model, task, metric), rows in points.groupby(["model", "task", "metric"], sort=True):
        higher = RP.higher_is_better(str(metric))
        for column, label, log in RP.COSTS:
            shown = rows[rows[column].notna() & rows["mean"].notna()]
            if shown.empty:
                continue
            fig = go.Figure()
            for method, of_method in shown.groupby("method", sort=True):
                err = None
                if "ci95_low" in of_method:
                    err = {
                        "type": "data",
                        "symmetric": False,
                        "array": (of_method["ci95_high"] - of_method["mean"]).tolist(),
                        "arrayminus": (of_method["mean"] - of_method["ci95_low"]).tolist(),
                    }
                hover = [
                    f"{method} {RP._variant(p.sparsity, p.setting)}<br>{metric}: {p.mean:.4g}"
                    f"<br>{label}: {getattr(p, column):.4g}"
                    f"<br>runs: {'<br>'.join(Path(x).parent.name for x in p.paths)}"
                    for p in of_method.itertuples()
                ]
                fig.add_trace(
                    go.Scatter(
                        x=of_method[column],
                        y=of_method["mean"],
                        mode="markers",
                        name=str(method),
                        error_y=err,
                        text=hover,
                        hovertemplate="%{text}<extra></extra>",
                        marker={"size": 9},
                    )
                )
            xs = shown[column].astype(float).tolist()
            fig.add_trace(front_trace(xs, shown["mean"].astype(float).tolist(), higher))
            wide = min(xs) > 0 and max(xs) / min(xs) >= 10
            fig.update_layout(
                title=f"{model} / {task}: {metric} against {label}",
                xaxis={"title": label, "type": "log" if log and wide else "linear"},
                yaxis_title=f"{metric} ({'higher' if higher else 'lower'} is better)",
                height=380,
                plot_bgcolor="white",
            )
            figs.append(fig)
    return figs


def rank_heatmaps(patterns: dict) -> list:
    """Per configuration with a final rank pattern: mean rank by module type (rows) and layer."""
    import plotly.graph_objects as go

    from bench.report import plots as RP

    figs = []
    for key, grid in RP.rank_grids(patterns).items():
        fig = go.Figure(
            go.Heatmap(
                z=grid.values,
                x=[str(c) for c in grid.columns],
                y=list(grid.index),
                colorbar={"title": "rank"},
                hovertemplate="layer %{x}, %{y}: rank %{z}<extra></extra>",
            )
        )
        fig.update_layout(
            title=" / ".join(str(k) for k in key if k not in ("–", "")) + ": final rank per layer",
            xaxis_title="layer",
            height=120 + 30 * len(grid.index),
        )
        figs.append(fig)
    return figs


def analysis_figures(rows: pd.DataFrame) -> list:
    """Spectra (normalised top singular values by layer type) and the metric against forgetting."""
    import numpy as np
    import plotly.graph_objects as go

    from bench.report import analysis as RA

    figs = []
    if rows is None or rows.empty:
        return figs
    for (model, task), of_task in rows.groupby(["model", "task"], sort=True):
        fig = go.Figure()
        for label, group in of_task.groupby(of_task.apply(RA._label, axis=1), sort=True):
            by_type: dict = {}
            for layers in group["_layers"]:
                for name, v in layers.items():
                    s = v.get("top_singular_values") or []
                    if s and s[0] > 0:
                        by_type.setdefault(RA._layer_type(name), []).append(np.asarray(s) / s[0])
            for kind, curves in sorted(by_type.items()):
                k = min(len(c) for c in curves)
                fig.add_trace(
                    go.Scatter(
                        x=list(range(1, k + 1)),
                        y=np.mean([c[:k] for c in curves], axis=0),
                        mode="lines+markers",
                        name=f"{label}: {kind} ({len(curves)} layers)",
                    )
                )
        fig.update_layout(
            title=f"{model} / {task}: normalised singular values of the update ΔW",
            xaxis_title="index i",
            yaxis={"title": "s_i / s_1", "type": "log"},
            height=420,
        )
        figs.append(fig)
        shown = of_task[of_task["forgetting"].notna() & of_task["score"].notna()]
        if not shown.empty:
            figs.append(forgetting_front(shown, f"{model} / {task}"))
    return figs


def forgetting_front(shown: pd.DataFrame, title: str):
    """The metric against forgetting, one point per configuration (mean over its seeds, the bars one
    standard deviation over them both ways), the configurations no other beats on both joined."""
    import plotly.graph_objects as go

    from bench.report import analysis as RA
    from bench.report import plots as RP

    metric = str(shown["metric"].iloc[0])
    higher = RP.higher_is_better(metric)
    fig = go.Figure()
    points = []
    for label, group in shown.groupby(shown.apply(RA._label, axis=1), sort=True):
        x, y = group["forgetting"].astype(float), group["score"].astype(float)
        points.append((x.mean(), y.mean()))
        runs = "<br>".join(Path(p).parent.name for p in group["_path"])
        fig.add_trace(
            go.Scatter(
                x=[x.mean()],
                y=[y.mean()],
                mode="markers",
                name=label,
                marker={"size": 10},
                error_x={"type": "data", "array": [x.std(ddof=1) if len(x) > 1 else 0.0]},
                error_y={"type": "data", "array": [y.std(ddof=1) if len(y) > 1 else 0.0]},
                text=[f"{label}<br>{metric}: {y.mean():.4g}<br>forgetting: {x.mean():+.4g}<br>runs:<br>{runs}"],
                hovertemplate="%{text}<extra></extra>",
            )
        )
    fig.add_trace(front_trace([p[0] for p in points], [p[1] for p in points], higher))
    fig.update_layout(
        title=f"{title}: {metric} against forgetting (mean ± std over seeds)",
        xaxis_title="forgetting: tuned − base NLL per token on general text (lower is better)",
        yaxis_title=f"{metric} ({'higher' if higher else 'lower'} is better)",
        height=380,
        plot_bgcolor="white",
    )
    return fig


def _surface(plane: dict, title: str, axes: tuple[str, str], marks: list[tuple]):
    """A loss surface as a filled contour, with marks: (name, xs, ys, mode, marker or line style)."""
    import plotly.graph_objects as go

    bar = {"title": {"text": "held-out loss", "side": "right"}}
    fig = go.Figure(go.Contour(x=plane["x"], y=plane["y"], z=plane["loss"], colorscale="Viridis", colorbar=bar))
    for name, xs, ys, mode, style in marks:
        fig.add_trace(go.Scatter(x=list(xs), y=list(ys), mode=mode, name=name, **style))
    fig.update_layout(
        title=title,
        xaxis_title=axes[0],
        yaxis_title=axes[1],
        height=480,
        legend={"orientation": "h", "y": -0.25},  # below: beside, it covers the colour bar
    )
    return fig


def landscape_figures(rows: pd.DataFrame) -> list:
    """Per run with a landscape (analysis=full; the first MAX_LANDSCAPES, as landscape.png): the
    trajectory plane with the training path, the random plane around w*, the line through w_0 and w*."""
    import plotly.graph_objects as go

    from bench.report import analysis as RA

    if rows is None or rows.empty or "_landscape" not in rows:
        return []
    star = {"marker": {"symbol": "star", "size": 14, "color": "red"}}
    figs = []
    for _, r in rows[rows["_landscape"].notna()].head(RA.MAX_LANDSCAPES).iterrows():
        land, name = r["_landscape"], f"{r['model']} / {r['task']} / {RA._label(r)} / seed {r['seed']}"
        t, sharp, line = land["trajectory"], land["sharpness"], land["line"]
        xs, ys = zip(*t["path"])
        path = [
            ("training path", xs, ys, "lines+markers", {"line": {"color": "white"}}),
            ("start (w_0)", xs[:1], ys[:1], "markers", {"marker": {"symbol": "square", "size": 10, "color": "white"}}),
            ("end (w*)", xs[-1:], ys[-1:], "markers", star),
        ]
        share = 100 * t["plane_energy_share"]
        figs.append(
            _surface(
                t,
                f"{name}: trajectory plane ({share:.0f} % of the path's energy)",
                ("PC 1 of the path's offsets", "PC 2"),
                path,
            )
        )
        figs.append(
            _surface(
                land["random"],
                f"{name}: random plane around w* (sharpness at r={sharp['radius']:g}: {sharp['mean_increase']:+.3g})",
                ("random direction 1 (filter-normalised)", "random direction 2"),
                [("w*", [0], [0], "markers", star)],
            )
        )
        fig = go.Figure(go.Scatter(x=line["alpha"], y=line["loss"], mode="lines+markers", name="held-out loss"))
        for alpha, label in ((0.0, "w_0"), (1.0, "w*")):
            fig.add_vline(x=alpha, line_dash="dash", line_color="grey", annotation_text=label)
        fig.update_layout(
            title=f"{name}: the line through the start and the end",
            xaxis_title="alpha in w_0 + alpha (w* − w_0)",
            yaxis_title="held-out loss",
            height=360,
        )
        figs.append(fig)
    return figs


def page(title: str, blocks: list[tuple[str, list]]) -> str:
    """blocks: (heading, [html strings or plotly figures]) in order; plotly.js inlined once."""
    from plotly.offline import get_plotlyjs

    parts, n = [], 0
    for heading, items in blocks:
        parts.append(f"<h2>{html.escape(heading)}</h2>" if heading else "")
        for item in items:
            if isinstance(item, str):
                parts.append(item)
            else:
                n += 1
                parts.append(
                    item.to_html(
                        full_html=False, include_plotlyjs=False, div_id=f"fig{n}", config={"displaylogo": False}
                    )
                )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style>"
        f"<script>{get_plotlyjs()}</script><script>{SCRIPT}</script></head>"
        f"<body><h1>{html.escape(title)}</h1>{''.join(parts)}</body></html>"
    )


def provenance_html(runs: list[dict]) -> str:
    commits = sorted({str(r["provenance"].get("git_commit"))[:10] for r in runs})
    packages = sorted({json.dumps(r["provenance"].get("packages", {}), sort_keys=True) for r in runs})
    machines = sorted({json.dumps(r["provenance"].get("device", {}), sort_keys=True) for r in runs})
    body = (
        f"<p>commits of the runs: {html.escape(', '.join(commits))}</p>"
        + "".join(f"<pre>packages: {html.escape(p)}</pre>" for p in packages)
        + "".join(f"<pre>machine: {html.escape(m)}</pre>" for m in machines)
    )
    return f"<details><summary>Provenance ({len(runs)} runs)</summary>{body}</details>"


def failures_html(runs: list[dict]) -> str:
    failed = [r for r in runs if r["status"] != "success"]
    if not failed:
        return "<p>none</p>"
    items = "".join(
        f"<li><code>{html.escape(r['_path'])}</code>: {html.escape(r['status'])} — "
        f"{html.escape(str((r.get('error') or {}).get('message', ''))[:300])}</li>"
        for r in failed
    )
    return f"<ul>{items}</ul>"


def report_page(
    title: str,
    runs: list[dict],
    main_table: pd.DataFrame,
    points: pd.DataFrame,
    analysis,
    patterns: dict | None = None,
    analysis_rows: pd.DataFrame | None = None,
) -> str:
    """bench.report's page: main table, Pareto fronts, the analysis, failures, provenance."""
    main = (
        main_table.drop(columns=[c for c in ("reference",) if c in main_table]) if not main_table.empty else main_table
    )
    ok = sum(r["status"] == "success" for r in runs)
    blocks = [
        ("", [f"<p>{len(runs)} runs, {ok} succeeded. Text version: report.md beside this file.</p>"]),
        (
            "Main table (one row per configuration; click a heading to sort)",
            [table_html(main, "main") if not main.empty else "<p>no successful runs</p>"],
        ),
        ("Metric against cost", pareto_figures(points) or ["<p>no metric to plot</p>"]),
    ]
    if patterns:
        blocks.append(
            ("Rank allocation (final rank per layer and module type, mean over seeds)", rank_heatmaps(patterns))
        )
    if analysis is not None and not analysis.empty:
        blocks.append(
            (
                "What fine-tuning did to the model (analysis stage)",
                [table_html(analysis, "analysis"), *analysis_figures(analysis_rows), *landscape_figures(analysis_rows)],
            )
        )
    blocks += [("Failures", [failures_html(runs)]), ("", [provenance_html(runs)])]
    return page(title, blocks)


def study_page(title: str, judged: list, runs: list[dict], doc_name: str) -> str:
    """A study's page: per paper a forest plot of its claims, the claims table, provenance."""
    by_paper: dict[str, list[dict]] = {}
    rows = []
    for j in judged:
        v, c, comp = j.verdict, j.claim, j.verdict.comparison
        n_items = getattr(comp, "n_items", None)
        mde = getattr(comp, "mde80", None)
        seeds = f"{getattr(comp, 'k_a', '–')}/{getattr(comp, 'k_b', '–')}" if comp is not None else "–"
        hover = (
            f"<b>{html.escape(c.text)}</b><br>arms: {html.escape(' vs '.join(c.arms))}<br>metric: {v.metric}"
            f"<br>Δ = {_fmt(v.delta)}<br>n items: {_fmt(n_items)}, k seeds: {seeds}<br>MDE (80 %): {_fmt(mde)}"
            f"<br>verdict: {v.verdict}" + (" (provisional)" if v.provisional else "")
        )
        label = c.text if len(c.text) <= 70 else c.text[:67] + "…"
        if v.kind != "cheaper":  # a cost ratio is not a gain: it stays in the table
            by_paper.setdefault(c.paper, []).append(
                {
                    "label": label,
                    "delta": v.delta,
                    "ci95": v.ci95,
                    "ci90": v.ci90,
                    "margin": v.margin,
                    "verdict": v.verdict,
                    "hover": hover,
                }
            )
        rows.append(
            {
                "paper": c.paper,
                "claim": c.text,
                "kind": v.kind,
                "metric": v.metric,
                "delta": v.delta,
                "ci95": _interval(v.ci95),
                "ci90": _interval(v.ci90),
                "margin": v.margin,
                "mde80": mde,
                "n items": n_items,
                "k seeds": seeds,
                "verdict": v.verdict + (" (provisional)" if v.provisional else ""),
                "reasons": "; ".join(v.reasons or ()),
            }
        )
    blocks = [("", [f"<p>The text version with every number and reason: <a href='../{doc_name}'>{doc_name}</a>.</p>"])]
    for paper, claims in by_paper.items():
        blocks.append((f"{paper}: verdicts", [forest_figure(claims, f"{paper}: the gain of each claim's first arm")]))
    blocks += [("Every claim", [table_html(pd.DataFrame(rows), "claims")]), ("", [provenance_html(runs)])]
    return page(title, blocks)


def _interval(ci) -> str:
    return "–" if not ci else f"[{ci[0]:.4g}, {ci[1]:.4g}]"
