"""A study's Markdown page: generated from the YAML, the finished runs and bench.report's sections.

What is not generated (what the data are, how to read the page, history) lives in the study's
prose file, included as it is.
"""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import subprocess
from collections import Counter
from datetime import datetime
from pathlib import Path

from bench.study import select
from bench.study.judge import Judged
from bench.study.plan import value_text
from bench.study.spec import Study


def _overrides(overrides: dict) -> str:
    return " ".join(f"{k}={value_text(v)}" for k, v in overrides.items()) or "–"


def _num(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def plan_markdown(study: Study) -> str:
    lines = ["## Plan", ""]
    for name, part in study.parts.items():
        lines.append(
            f"- part `{name}`: {part.what}. Every job: `{_overrides(part.overrides)}`. Search ranked on the "
            f"held-out split by {_criteria_text(study.criteria(name))}"
        )
    budget = (
        f"each grid grows one point at a time toward its best value until it has {study.search.budget} points, "
        "so every method gets the same number of trials"
        if study.search.budget
        else "every grid runs as written"
    )
    lines += [
        "",
        f"Search on seed {study.search.seed}; remaining ties go to the {study.search.ties.replace('_', ' ')}; "
        f"{budget}. A method searched over another key runs at the rate chosen for the method it names. "
        "Nothing is chosen on a test split.",
        "",
        "| part | method | searched | initial grid | search runs with |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {t.part} | {t.method} | {_key_label(t.key)}{f' (at the lr of {t.lr_from})' if t.lr_from else ''} "
        f"| {', '.join(f'{g:g}' for g in t.grid)} | `{_overrides(t.overrides)}` |"
        for t in study.search.trials
    ]
    lines += [
        "",
        f"Main grids (seeds {', '.join(map(str, study.seeds))}, each method at its chosen rate):",
        "",
        "| part | method | grid |",
        "|---|---|---|",
    ]
    lines += [f"| {g.part} | {g.method} | `{_overrides(g.overrides)}` |" for g in study.grids]
    lines += [
        "",
        "## Claims, declared before the runs",
        "",
        "| paper | claim | kind | arms | metric | margin | family |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in study.claims:
        margin = c.margin if c.kind == "non_inferior" else (f"ratio < {c.max_ratio:g}" if c.kind == "cheaper" else "–")
        metric = c.metric or f"rank share of `{c.rank_share}`"
        where = f"{c.stage}/{c.split}" if c.metric and c.kind != "cheaper" else ""
        lines.append(
            f"| {c.paper} | {c.text} | {c.kind} | {' vs '.join(c.arms)} | {metric}{f' ({where})' if where else ''} "
            f"| {margin} | {c.family or '–'} |"
        )
    return "\n".join(lines) + "\n"


def _criteria_text(criteria) -> str:
    return ", then ".join(
        f"{'the primary metric' if c.key == 'primary' else c.key} ({'higher' if c.higher_is_better else 'lower'} "
        "is better)"
        for c in criteria
    )


def _key_label(key: str) -> str:
    return "lr" if key == "method.lr" else key


def search_markdown(study: Study, rows: list[select.SearchRow], rates: dict, figure: str | None = None) -> str:
    budget = f"; {study.search.budget} trials per method" if study.search.budget else ""
    lines = [
        f"## Search (seed {study.search.seed}, held-out split{budget})",
        "",
        "| part | method | searched | value | lr | status | held-out criteria |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        chosen = study.chosen.get((r.part, r.method))
        mark = " **(chosen)**" if chosen and chosen[1] == r.value else ""
        crit = ", ".join(f"{c.key} {_num(v)}" for c, v in zip(study.criteria(r.part), r.scores))
        lines.append(
            f"| {r.part} | {r.method} | {_key_label(r.key)} | {r.value:g}{mark} | {r.lr:g} | {r.status} | {crit} |"
        )
    counts = Counter((r.part, r.method) for r in rows)
    edges = [
        f"{p}/{m} {_key_label(k)} ({end})"
        for (p, m), (k, v) in sorted(study.chosen.items())
        if (end := select.grid_end(study, p, m, v))
    ]
    lines += [
        "",
        "Chosen: "
        + (
            ", ".join(
                f"{p}/{m} {_key_label(k)} {v:g} ({counts[(p, m)]} trials)"
                for (p, m), (k, v) in sorted(study.chosen.items())
            )
            or "none yet"
        ),
        "",
        (
            "At an end of its grid (the search did not bracket the best value; verdicts on these arms are "
            "provisional): " + ", ".join(edges) + "."
            if edges
            else "Every chosen value lies inside its grid."
        ),
        "",
    ]
    if figure:
        lines += [f"![held-out score against the searched value]({figure})", ""]
    return "\n".join(lines)


def search_figure(study: Study, rows: list[select.SearchRow], path: Path) -> Path | None:
    """Each trial's first search criterion on the held-out split against its searched value (log
    scale), the chosen point ringed, one panel per part."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [p for p in study.parts if any(r.part == p for r in rows)]
    if not parts:
        return None
    fig, axes = plt.subplots(1, len(parts), figsize=(5.2 * len(parts), 3.8), squeeze=False)
    for ax, part in zip(axes[0], parts):
        for trial in [t for t in study.search.trials if t.part == part]:
            mine = [r for r in rows if (r.part, r.method) == (trial.part, trial.method) and r.scores[0] is not None]
            if not mine:
                continue
            label = trial.method + (
                "" if trial.key == "method.lr" else f" ({_key_label(trial.key)}, lr of {trial.lr_from})"
            )
            line = ax.plot([r.value for r in mine], [r.scores[0] for r in mine], marker="o", label=label)[0]
            chosen = study.chosen.get((trial.part, trial.method))
            if chosen:
                best = [r for r in mine if r.value == chosen[1]]
                ax.scatter(
                    [b.value for b in best],
                    [b.scores[0] for b in best],
                    s=140,
                    facecolors="none",
                    edgecolors=line.get_color(),
                    linewidths=1.8,
                )
        crit = study.criteria(part)[0]
        ax.set_xscale("log")
        ax.set_xlabel("searched value (lr, or the named key)")
        ax.set_ylabel(f"held-out {crit.key} ({'higher' if crit.higher_is_better else 'lower'} is better)")
        ax.set_title(f"part {part}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def base_markdown(study: Study, runs: list[dict], main: list[dict]) -> str:
    lines = [
        "## The base model, untrained, against the tuned runs",
        "",
        "| part | primary metric | base, test | tuned runs, test (min–max) | base, held-out "
        "| tuned, held-out (min–max) |",
        "|---|---|---|---|---|---|",
    ]
    bases = select.base_runs(study, runs)
    for part in study.parts:
        mine = [r for r in main if select.matches(r, study.parts[part].overrides)]
        tuned = [_primary(r["metrics"].get("eval")) for r in mine]
        held = [_primary((r["metrics"].get("eval") or {}).get("heldout"), r["metrics"].get("eval")) for r in mine]
        base = bases.get(part)
        ev = (base or {}).get("metrics", {}).get("eval_base") or {}
        lines.append(
            f"| {part} | {ev.get('primary', '–')} | {_num(_primary(ev)) if base else 'not run'} | {_span(tuned)} "
            f"| {_num(_primary(ev.get('heldout'), ev)) if base else '–'} | {_span(held)} |"
        )
    return "\n".join(lines) + "\n"


def _primary(ev, owner=None):
    if not isinstance(ev, dict):
        return None
    key = (owner or ev).get("primary")
    value = ev.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def _span(values) -> str:
    values = [v for v in values if v is not None]
    return f"{min(values):.3f}–{max(values):.3f} (n={len(values)})" if values else "–"


def _interval(ci) -> str:
    return "–" if ci is None else f"[{ci[0]:+.4g}, {ci[1]:+.4g}]"


def verdict_markdown(judged: list[Judged]) -> str:
    lines = [
        "| paper | claim | arms | metric | Δ (gain) | 95 % CI | 90 % CI | margin | MDE 80 % | n items, k seeds "
        "| SE from items / runs | verdict | p (Holm) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for j in judged:
        v, c = j.verdict, j.claim
        comp = v.comparison
        size = "–"
        mde = "–"
        terms = "–"
        if comp is not None and hasattr(comp, "n_items"):
            size, mde = f"{comp.n_items}, {comp.k_a}/{comp.k_b}", _num(comp.mde80)
            # the two variance terms as standard errors: which one a fifth seed would shrink
            terms = f"{_num(max(comp.item_var, 0) ** 0.5, 2)} / {_num(max(comp.run_var, 0) ** 0.5, 2)}"
        elif comp is not None:
            size = f"runs {comp.k_a}/{comp.k_b}"
        verdict = f"**{v.verdict}**" + (" (provisional)" if v.provisional else "")
        p = (
            "–"
            if v.p_value is None
            else f"{v.p_value:.3g}" + (f" ({v.p_adjusted:.3g})" if v.p_adjusted is not None else "")
        )
        declared = v.margin if v.margin is not None else c.margin  # shown even where nothing was tested
        margin = "–" if declared is None else f"{declared:g}"
        lines.append(
            f"| {c.paper} | {c.text} | {' vs '.join(c.arms)} | {v.metric} | {_num(v.delta)} | {_interval(v.ci95)} "
            f"| {_interval(v.ci90)} | {margin} | {mde} | {size} | {terms} | {verdict} | {p} |"
        )
    lines += ["", "Reasons and evidence, claim by claim:", ""]
    for i, j in enumerate(judged, 1):
        lines.append(f"{i}. *{j.claim.text}* — {j.verdict.verdict}: " + "; ".join(j.verdict.reasons or ("–",)))
        lines += [f"   - {e}" for e in j.evidence]
    return "\n".join(lines) + "\n"


def runs_commits(runs: list[dict]) -> str:
    counts = Counter(
        ((r.get("provenance") or {}).get("git_commit") or "unknown", bool((r.get("provenance") or {}).get("git_dirty")))
        for r in runs
    )
    return ", ".join(f"{c[:10]}{' (dirty)' if d else ''} ({n} runs)" for (c, d), n in counts.most_common()) or "no runs"


def _span_of(result: dict):
    try:
        return datetime.fromisoformat(result["started_at"]), datetime.fromisoformat(result["finished_at"])
    except (KeyError, TypeError, ValueError):  # a run without (or with an unreadable) start or end
        return None


def busy_minutes(runs: list[dict]) -> str:
    """The time with at least one job running (the union of the jobs' intervals), read from the runs."""
    spans = sorted(s for s in map(_span_of, runs) if s)
    if not spans:
        return "unknown (no run records its start and end)"
    busy, (start, end) = 0.0, spans[0]
    for s, e in spans[1:]:
        if s > end:
            busy += (end - start).total_seconds()
            start, end = s, e
        else:
            end = max(end, e)
    busy += (end - start).total_seconds()
    job = sum((e - s).total_seconds() for s, e in spans)
    return f"**{busy / 60:.1f} min** with at least one job running ({len(spans)} jobs, {job / 60:.1f} job-minutes)"


def timing_markdown(study: Study, runs: list[dict]) -> str:
    rows: dict[tuple, list] = {}
    for r in select.successful(runs):
        span = _span_of(r)
        if not span:
            continue
        part = next((p for p in study.parts if select.matches(r, study.parts[p].overrides)), None)
        if part is None:
            part = next((p for p in study.parts if select.matches(r, select.part_overrides(study, p, True))), "?")
            method = "base model job"
        else:
            method = r["config"]["method"]["name"]
        m = r["metrics"]
        rows.setdefault((part, method), []).append(
            ((span[1] - span[0]).total_seconds(), m.get("train_time_s"), m.get("eval_time_s"))
        )

    def mean(values) -> str:
        values = [v for v in values if v is not None]
        return f"{statistics.mean(values):.0f}" if values else "–"

    lines = [
        "| part | method | jobs | mean wall (s) | mean train (s) | mean evaluation (s) |",
        "|---|---|---|---|---|---|",
    ]
    for (part, method), got in sorted(rows.items()):
        walls, trains, evals = zip(*got)
        lines.append(f"| {part} | {method} | {len(got)} | {mean(walls)} | {mean(trains)} | {mean(evals)} |")
    return "\n".join(lines) + "\n"


def progress_line(study: Study, runs: list[dict], rates: dict) -> str:
    left = select.progress(study, runs, rates)
    parts = [
        f"{p}: {v['search']} search and base jobs, {v['main']} main jobs" for p, v in left.items() if any(v.values())
    ]
    if not parts:
        return "- progress: every job of the study has run"
    return (
        "- progress: **the study is not finished**; still to run (main jobs at most: a seed-0 job may be "
        "a search job already run): "
        + "; ".join(parts)
        + f" (`python -m bench.study run {study.path.as_posix()}` resumes from the committed runs)"
    )


def header(study: Study, argv: list[str], runs: list[dict], rates: dict | None = None) -> str:
    commit = _git("rev-parse", "--short=10", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return "\n".join(
        [
            f"# {study.title}",
            "",
            f"Generated from `{study.path.as_posix()}` by `python -m bench.study report {study.path.as_posix()}`; "
            "do not edit by hand.",
            "",
            f"- the same verdicts as a page to look at (forest plots, sortable tables; opens from disk, offline): "
            f"[{study.doc.stem}/report.html]({study.doc.stem}/report.html)",
            f"- command: `python -m bench.study {' '.join(shlex.quote(a) for a in argv)}`",
            f"- report written at commit: {commit or 'unknown'}{' (with uncommitted changes)' if dirty else ''}",
            f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}, Python "
            f"{platform.python_version()}",
            f"- code of the runs (result.json `provenance.git_commit`): {runs_commits(runs)}",
            f"- wall time: {busy_minutes(runs)}",
            progress_line(study, runs, rates or {}),
            "",
        ]
    )


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def part_report_markdown(part: str, info: dict, figure_dir: Path, doc: Path) -> str:
    """One part's bench.report sections (its main table with the paired marks, its figures, its
    failures) under the page's level-3 headings; the figures are copied next to the page."""
    prefix = f"{os.path.relpath(figure_dir, doc.parent)}/{part}_"
    for figure in info.get("figures", []):
        (figure_dir / f"{part}_{Path(figure).name}").write_bytes(Path(figure).read_bytes())
    keep = ("main_table", "figures", "rank_allocation", "failures")
    shown = [s.render(level=3, figure_prefix=prefix) for s in info.get("sections", []) if s.key in keep]
    return "\n\n".join([f"## Report, part {part} (bench.report)", *shown]) + "\n"


def document(
    study: Study,
    argv: list[str],
    runs: list[dict],
    rows: list[select.SearchRow],
    rates: dict,
    judged: list[Judged],
    part_reports: list[str],
) -> str:
    main = select.main_runs(study, runs, rates)
    prose = study.prose.read_text() if study.prose else ""
    figure_dir = study.doc.parent / study.doc.stem
    drawn = search_figure(study, rows, figure_dir / "search.png")
    figure = f"{os.path.relpath(drawn, study.doc.parent)}" if drawn else None
    return "\n".join(
        [
            header(study, argv, runs, rates),
            prose.strip() + "\n" if prose else "",
            plan_markdown(study),
            search_markdown(study, rows, rates, figure),
            base_markdown(study, runs, main),
            "## Verdicts",
            "",
            verdict_markdown(judged),
            *part_reports,
            "## Time, measured",
            "",
            timing_markdown(study, runs),
        ]
    )
