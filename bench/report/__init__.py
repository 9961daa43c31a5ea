"""python -m bench.report [RUNS_DIR ...] [--out DIR] [--where KEY=V1,V2 | KEY!=V ...]

Reads every result.json under the given folders (default: runs/) and writes
  main.md / .csv / .tex      the main table: rows = method (x sparsity x setting), columns = tasks,
                             cells = primary metric mean ± std over seeds with n and a mark
                             (▲ ▼ ≈: the paired comparison with the row's parameter-matched LoRA
                             row); then trainable params, train time and peak memory
                             (bench/report/table.py)
  pareto.png                 metric vs peak memory, trainable params and train time, with 95 %
                             intervals of the mean (or the std over seeds) as error bars
  rank_allocation.png        final rank per layer and module type of the adaptive methods
  runs.csv / runs.md         one row per run, failures included
  summary.csv / .tex         successful runs grouped by model, task, method, sparsity and setting
  report.md                  all of the above, the failures (runs that did not succeed, with their
                             errors) and the result files that could not be read or break the schema
`--where` keeps only the runs that match (bench/report/where.py); it is parsed, never evaluated.
The inputs are result.json and the per-item results it declares (items.jsonl): the main table's
marks are paired comparisons with each parameter-matched group's LoRA row (bench.compare) and the
Pareto error bars intervals over items and seeds (bench/report/stats.py); runs without items files
get no mark and std error bars. A table that mixes devices or package versions says so, since
such numbers are not comparable.

`write()` returns the report's parts as data besides writing them: `sections` (a list of
`Section`, report.md is their rendering), `figures`, the main table's numbers and the comparisons
behind its marks, so that another document (bench/study/) can embed them.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.config import REFERENCE_METHOD, run_hash
from bench.report import stats as report_stats
from bench.report import table as report_table
from bench.report.where import WhereError, parse, select
from bench.results import validate_result

# Runs are averaged only with runs whose config differs in nothing but the seed ("variant").
GROUP = ["model", "task", "method", "sparsity", "setting", "variant"]


def find_results(roots: list[Path]) -> list[Path]:
    found = []
    for root in roots:
        root = Path(root)
        candidates = [root] if root.name == "result.json" else root.rglob("result.json")
        found += [p for p in candidates if "attempts" not in p.parts]
    return sorted(found)


def load(roots: list[Path]) -> tuple[list[dict], list[dict]]:
    """(results, problems): a file that is truncated, not JSON or off-schema is a problem, not a crash."""
    import jsonschema

    runs, problems = [], []
    for path in find_results(roots):
        try:
            result = json.loads(path.read_text())
            validate_result(result)
        except (OSError, json.JSONDecodeError) as err:
            problems.append({"path": str(path), "problem": f"unreadable: {type(err).__name__}: {err}"})
            continue
        except jsonschema.ValidationError as err:
            problems.append({"path": str(path), "problem": f"breaks the result schema: {err.message}"})
            continue
        result["_path"] = str(path)
        runs.append(result)
    return runs, problems


def row(result: dict) -> dict:
    cfg, m = result["config"], result["metrics"]
    ev, base = m.get("eval") or {}, m.get("eval_base") or {}
    primary = ev.get("primary") or base.get("primary")
    return {
        "run_id": result["run_id"],
        "status": result["status"],
        "model": cfg["model"]["name"],
        "task": cfg["task"]["name"],
        "method": cfg["method"]["name"],
        # the configured sparsity, else the one the method reports (e.g. from r_init and r_target)
        "sparsity": (
            cfg["method"].get("sparsity")
            if cfg["method"].get("sparsity") is not None
            else result["method_report"].get("sparsity")
        ),
        "seed": cfg["seed"],
        "variant": run_hash({k: v for k, v in cfg.items() if k != "seed"})[:8],
        "metric": primary,
        "score": ev.get(primary),
        "score_base": base.get(primary),
        "trainable_params": m.get("trainable_params"),
        # what a pruning or reallocating method ends with (its method_report), else the start count
        "params_end": (
            result["method_report"].get("params_end")
            or result["method_report"].get("trainable_params_final")
            or m.get("trainable_params")
        ),
        "train_time_s": m.get("train_time_s"),
        **memory_columns(m),
        "tokens_per_s": m.get("tokens_per_s"),
        "device": result["provenance"]["device"].get("name"),
        "stack": " ".join(
            f"{k}={v}"
            for k, v in sorted(result["provenance"]["packages"].items())
            if k in ("torch", "transformers", "peft")
        ),
        "error": (result["error"] or {}).get("message"),
        "error_type": (result["error"] or {}).get("type"),
        "stage": (result["error"] or {}).get("stage"),
        "path": result["_path"],
    }


def runs_frame(runs: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame([row(r) for r in runs])
    frame.insert(frame.columns.get_loc("seed"), "setting", report_table.setting_labels([r["config"] for r in runs]))
    return frame


def where(runs: list[dict], filters: list) -> list[dict]:
    """The runs every --where filter (bench.report.where.parse) keeps; an unknown key is a WhereError."""
    if not filters:
        return runs
    return [runs[i] for i in select([row(r) for r in runs], [r["config"] for r in runs], filters)]


def _mean_std(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "–"
    if len(values) == 1:
        return f"{values.iloc[0]:.4f}"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    ok = frame[frame["status"] == "success"].copy()
    if ok.empty:
        return pd.DataFrame()
    ok["sparsity"] = ok["sparsity"].astype(object).where(ok["sparsity"].notna(), "–")
    ok["setting"] = ok["setting"].replace("", "–")
    grouped = ok.groupby(GROUP + ["metric"], dropna=False)
    return grouped.agg(
        score=("score", _mean_std),
        n=("score", "count"),
        score_base=("score_base", _mean_std),
        trainable_params=("trainable_params", lambda v: int(v.median())),
        train_time_s=("train_time_s", "mean"),
        peak_memory_gb=("peak_memory_gb", "mean"),
    ).reset_index()


def memory_columns(m: dict) -> dict:
    """`peak_memory_gb` and which figure it is (`memory_kind`): CUDA's max_memory_allocated
    (`cuda`); on the CPU the peak of live tensor bytes (`cpu_live_tensors`, metrics.peak_tensor_bytes;
    none where it failed its check against the hand count, `cpu_live_tensors_invalid`), else, for a
    run without one, the peak RSS (`cpu_rss`), which depends on the allocator and is named so."""
    mem = m.get("peak_memory") or {}
    live = m.get("peak_tensor_bytes")
    if mem.get("kind") != "cuda" and live:
        if not live.get("valid") or not live.get("bytes"):
            return {"peak_memory_gb": None, "memory_kind": "cpu_live_tensors_invalid"}
        return {"peak_memory_gb": live["bytes"] / 1e9, "memory_kind": "cpu_live_tensors"}
    return {
        "peak_memory_gb": (mem.get("allocated_bytes") or mem.get("rss_bytes") or 0) / 1e9 or None,
        "memory_kind": mem.get("kind"),
    }


def warnings_for(frame: pd.DataFrame) -> list[str]:
    notes = []
    ok = frame[frame["status"] == "success"]
    for key, what in (("device", "devices"), ("stack", "software stacks")):
        if ok[key].nunique() > 1:
            notes.append(
                f"these runs mix {ok[key].nunique()} {what} ({'; '.join(sorted(ok[key].unique()))}): "
                f"their times and memory are not comparable"
            )
    kinds = ok["memory_kind"].dropna() if "memory_kind" in ok else pd.Series(dtype=object)
    rss = int((kinds == "cpu_rss").sum())
    if rss:
        notes.append(
            f"peak memory of {rss} CPU run(s) is the process's peak RSS (no live-tensor peak recorded: "
            "train.memory_profile_steps=0 or an older run), which depends on the allocator, not on the method"
        )
    if kinds.nunique() > 1:
        notes.append(f"peak memory mixes figures ({', '.join(sorted(kinds.unique()))}): its columns are not comparable")
    bad = int((kinds == "cpu_live_tensors_invalid").sum())
    if bad:
        notes.append(f"{bad} run(s) have no peak memory: their live-tensor peak disagreed with the hand count")
    return notes


def rank_patterns(runs: list[dict], frame: pd.DataFrame) -> dict[tuple, list[dict]]:
    """{(model, task, method, sparsity, setting): [rank_pattern, ...]} of the successful runs whose
    method reports one ({module name: rank}, e.g. AdaLoRA, PrunedLoRA, L1RA)."""
    groups: dict[tuple, list[dict]] = {}
    for result, r in zip(runs, frame.itertuples()):
        pattern = result["method_report"].get("rank_pattern")
        if (
            r.status == "success"
            and isinstance(pattern, dict)
            and pattern
            and all(isinstance(v, (int, float)) for v in pattern.values())
        ):
            sparsity = "–" if pd.isna(r.sparsity) else r.sparsity
            groups.setdefault((r.model, r.task, r.method, sparsity, r.setting), []).append(pattern)
    return groups


def _text(value) -> str:
    """ "" for a missing value: pandas turns None into NaN in string columns."""
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def _failure_line(r) -> str:
    what = (
        [f"{r.method} on {r.model}/{r.task}"]
        + ([f"sparsity {r.sparsity}"] if _text(r.sparsity) else [])
        + ([r.setting] if _text(r.setting) else [])
        + [f"seed {r.seed}"]
        + ([f"at stage {r.stage}"] if _text(r.stage) else [])
    )
    error = f"{r.error_type}: {r.error}" if _text(r.error_type) else _text(r.error)
    return f"- `{r.path}`: {r.status}: {error} ({', '.join(what)})"


def _write_tables(out: Path, frame: pd.DataFrame, table: pd.DataFrame, main_table: pd.DataFrame) -> str:
    """runs.csv/.md, summary.csv/.tex, main.csv/.md/.tex; returns the main table's Markdown."""
    frame.drop(columns=["path"], errors="ignore").to_csv(out / "runs.csv", index=False)
    columns = [
        c
        for c in (
            "run_id",
            "status",
            "model",
            "task",
            "method",
            "sparsity",
            "setting",
            "seed",
            "score",
            "score_base",
            "trainable_params",
            "train_time_s",
            "peak_memory_gb",
        )
        if c in frame
    ]
    shown = frame[columns].astype(object).where(frame[columns].notna(), "–")  # not "nan"
    (out / "runs.md").write_text(shown.to_markdown(index=False) + "\n" if len(frame) else "no runs\n")
    table.to_csv(out / "summary.csv", index=False)
    main_table.to_csv(out / "main.csv", index=False)
    main_md = report_table.markdown(main_table) if not main_table.empty else "no successful runs\n"
    (out / "main.md").write_text(main_md)
    if not table.empty:
        (out / "summary.tex").write_text(table.to_latex(index=False, escape=True))
        (out / "main.tex").write_text(report_table.latex(main_table))
    return main_md


@dataclass(frozen=True)
class Section:
    """One part of report.md. `title` is the heading's text ("" for the lines under the document's
    title, key "overview"); `markdown` the body, written for a level-2 heading (its own sub-headings,
    the main table's models, are level 3); `figures` the files the body links to by file name."""

    key: str  # overview | main_table | figures | rank_allocation | analysis | summary | failures | unreadable
    title: str
    markdown: str
    figures: tuple[Path, ...] = ()

    def render(self, level: int = 2, figure_prefix: str = "") -> str:
        """The section under a heading of `level` (its sub-headings shifted with it), with its
        figure links prefixed by `figure_prefix` (e.g. "study/asdiv_" for copied figures)."""
        if not 2 <= level <= 5:  # 5: the main table's model headings stay within Markdown's 6 levels
            raise ValueError(f"a section renders under a heading of level 2 to 5, not {level}")
        body = self.markdown
        if level != 2:  # a body line that begins with "#" is a heading: bodies hold no code blocks
            body = "\n".join("#" * (level - 2) + line if line.startswith("#") else line for line in body.split("\n"))
        for figure in self.figures:
            body = body.replace(f"]({figure.name})", f"]({figure_prefix}{figure.name})")
        return (f"{'#' * level} {self.title}\n\n" if self.title else "") + body


def render(sections: list[Section]) -> str:
    """report.md: the document's title, then every section."""
    return "\n\n".join(["# Report"] + [s.render().rstrip("\n") for s in sections]) + "\n"


def sections(runs, roots, filters, frame, table, main_md, marks, points, figures, problems, reference) -> list[Section]:
    pareto, ranks = figures
    failed = frame[frame["status"] != "success"] if runs else frame
    overview = [
        f"{len(runs)} runs read from {', '.join(map(str, roots))}"
        + (f" (--where {' '.join(filters)})" if filters else "")
        + f"; {int((frame['status'] == 'success').sum()) if runs else 0} succeeded."
    ]
    overview += [f"> warning: {note}" for note in (warnings_for(frame) if runs else [])]
    main = (
        main_md + "\n" + report_table.legend(reference) + ("\n\n" + report_table.marks_markdown(marks) if marks else "")
    )
    if pareto:
        from bench.report import plots as report_plots

        pareto_md = f"![metric against cost]({pareto.name})\n\n{report_plots.error_bar_caption(points)}"
    else:
        pareto_md = "no metric to plot"
    failures = [_failure_line(r) for r in failed.itertuples()] or ["none"]
    unreadable = [f"- `{p['path']}`: {p['problem']}" for p in problems] or ["none"]
    return [
        Section("overview", "", "\n\n".join(overview)),
        Section(
            "main_table",
            "Main table (primary metric, mean ± std over seeds, n runs per cell)",
            main,
        ),
        Section("figures", "Metric against cost", pareto_md, (pareto,) if pareto else ()),
        Section(
            "rank_allocation",
            "Rank allocation (final rank per layer and module)",
            f"![rank allocation]({ranks.name})" if ranks else "no run reports a rank pattern",
            (ranks,) if ranks else (),
        ),
        Section(
            "summary",
            "Summary (successful runs, mean ± std over seeds)",
            table.to_markdown(index=False) if not table.empty else "no successful runs",
        ),
        Section("failures", "Failures", "\n".join(failures)),
        Section("unreadable", "Unreadable result files", "\n".join(unreadable)),
    ]


def analysis_section(runs: list[dict], frame: pd.DataFrame, out: Path) -> Section:
    """What the analysis stage measured (bench/report/analysis.py): its table and two figures."""
    from bench.report import analysis as RA

    rows = RA.analysis_rows(runs, frame) if runs else pd.DataFrame()
    figures = tuple(
        f
        for f in (
            RA.spectra(rows, out / "spectra.png"),
            RA.forgetting_figure(rows, out / "forgetting.png"),
            RA.landscape_figure(rows, out / "landscape.png"),
        )
        if f is not None
    )
    body = RA.markdown(RA.table(rows)) + "".join(f"\n\n![{f.stem}]({f.name})" for f in figures)
    return Section("analysis", "What fine-tuning did to the model (analysis stage)", body, figures)


def write(roots: list[Path], out: Path, filters: list[str] = (), reference: str = REFERENCE_METHOD) -> dict:
    """Write the report into `out`; returns {runs, problems, out, figures (paths written), sections
    (list of Section, what report.md renders), main_table (the numbers of main.csv), marks (the
    bench.report.table.Mark behind each mark)}."""
    parsed = [parse(f) for f in filters]  # a malformed filter fails before anything is read
    runs, problems = load(roots)
    runs = where(runs, parsed)
    out.mkdir(parents=True, exist_ok=True)
    for stale in (
        "summary.tex",
        "main.tex",
        "pareto.png",
        "rank_allocation.png",
        "spectra.png",
        "forgetting.png",
        "landscape.png",
    ):  # none left from an older report
        (out / stale).unlink(missing_ok=True)
    frame = runs_frame(runs) if runs else pd.DataFrame(columns=["status"])
    table = summary(frame) if runs else pd.DataFrame()
    by_path = {r["_path"]: r for r in runs}
    points = report_stats.with_intervals(report_table.points(frame), by_path) if runs else pd.DataFrame()
    main_table, marks = report_table.with_marks(report_table.wide(points, reference), points, by_path)
    main_md = _write_tables(out, frame, table, main_table)
    from bench.report import plots as report_plots  # matplotlib loads only when a report is written

    figures = (
        report_plots.pareto(points, out / "pareto.png"),
        report_plots.rank_allocation(rank_patterns(runs, frame) if runs else {}, out / "rank_allocation.png"),
    )
    parts = sections(runs, roots, filters, frame, table, main_md, marks, points, figures, problems, reference)
    analysis_part = analysis_section(runs, frame, out)
    parts.insert(next(i for i, s in enumerate(parts) if s.key == "summary"), analysis_part)
    (out / "report.md").write_text(render(parts))
    from bench.report import analysis as report_analysis
    from bench.report import page as report_html

    analysis_rows = report_analysis.analysis_rows(runs, frame) if runs else None
    analysis = report_analysis.table(analysis_rows) if runs else None
    page = report_html.report_page(
        f"Report: {', '.join(map(str, roots))}",
        runs,
        main_table,
        points,
        analysis,
        rank_patterns(runs, frame) if runs else {},
        analysis_rows,
    )
    (out / "report.html").write_text(page, encoding="utf-8")
    return {
        "runs": len(runs),
        "problems": problems,
        "out": out,
        "figures": [p for p in (*figures, *analysis_part.figures) if p],
        "sections": parts,
        "main_table": main_table,
        "marks": marks,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="*", type=Path, default=[Path("runs")], help="folders with run directories")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <first root>/report)")
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="keep only matching runs; KEY is a runs.csv column (model, task, method, sparsity, "
        "seed, status, ...) or a config path (method.r); KEY!=V drops; repeat to combine (AND)",
    )
    parser.add_argument(
        "--reference",
        default=REFERENCE_METHOD,
        metavar="METHOD",
        help=f"the method each parameter-matched group is compared with (default: {REFERENCE_METHOD})",
    )
    args = parser.parse_args(argv)
    out = args.out or args.roots[0] / "report"
    try:
        info = write(args.roots, out, args.where, args.reference)
    except WhereError as err:
        parser.error(str(err))
    print((out / "report.md").read_text())
    written = [f.name for f in sorted(out.iterdir()) if f.is_file()]
    print(f"written in {out}: {', '.join(written)}")
    return 1 if info["runs"] == 0 and not info["problems"] else 0
