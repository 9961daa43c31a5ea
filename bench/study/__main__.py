"""python -m bench.study run|report|plan|verdict|retime|project STUDY.yaml [--root DIR] [--doc FILE]
                        [--jobs N] [--seeds 0,1] [--dry-run] [KEY=VALUE | PART:KEY=VALUE ...]

run      stage 1 (searches and base jobs), the chosen rates, stage 2 (main grids), then the report
report   the report from the finished runs under the root; runs nothing
plan     print the bench.run commands of stage 1 (and of stage 2 where rates are chosen)
verdict  print the verdict table of what has finished
retime   re-run a sample of the committed jobs (--per-part, --out DIR): their times now, and
         whether they reproduce (bench/study/timing.py)
project  the wall time of the whole study from nothing and with its search committed, from the
         committed jobs' times (scaled by a retime's, --retimed DIR)

KEY=VALUE arguments are appended to every bench.run command (a smoke test runs the whole chain
with model=tiny-llama and a few steps); PART:KEY=VALUE to that part's commands only.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from bench.study import judge, pack, plan, render, select, spec, timing
from bench.study.select import load_runs

# what a study may commit of its runs (result.json and compressed items files: bench/study/pack.py)
MAX_COMMITTED = 20_000_000


def state(study: spec.Study):
    """(the study as its search stands, its runs, the search rows, the chosen rates)."""
    runs = load_runs(study.root)
    resolved, rows, rates = select.resolve(study, runs)
    return resolved, runs, rows, rates


def run_search(study: spec.Study, threads, dry_run: bool) -> None:
    """Stage 1 until nothing is left to run: each round runs the grid points and base jobs that
    have no run yet; a grid grows (or a trial waiting on another method's rate starts) between
    rounds."""
    for _ in range(64):
        resolved, runs, _, rates = state(study)
        cmds = plan.search_commands(resolved, rates, runs, threads)
        if not cmds:
            return
        plan.run_all(cmds, study.jobs, dry_run)
        if dry_run:
            return
        pack.pack(study.root)


def write_report(study: spec.Study, argv: list[str]) -> Path:
    from bench import report

    size = pack.pack(study.root)
    if size > MAX_COMMITTED:
        print(
            f"warning: {study.root} commits {size / 1e6:.1f} MB of runs, over {MAX_COMMITTED / 1e6:.0f} MB",
            file=sys.stderr,
        )
    study, runs, rows, rates = state(study)
    judged = judge.judge_all(study, runs, rates)
    main = select.main_runs(study, runs, rates)
    figure_dir = study.doc.parent / study.doc.stem
    figure_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    for part in study.parts:
        mine = [r for r in main if select.matches(r, study.parts[part].overrides)]
        if not mine:
            continue
        info = report.write([Path(r["_path"]) for r in mine], study.root / "report" / part)
        parts.append(render.part_report_markdown(part, info, figure_dir, study.doc))
    study.doc.parent.mkdir(parents=True, exist_ok=True)
    study.doc.write_text(render.document(study, argv, runs, rows, rates, judged, parts))
    from bench.report import page as report_html

    page = report_html.study_page(study.title, judged, select.successful(runs), study.doc.name)
    (figure_dir / "report.html").write_text(page, encoding="utf-8")
    return study.doc


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m bench.study", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=("run", "report", "plan", "verdict", "retime", "project"))
    parser.add_argument("study", type=Path, help="the study's YAML, e.g. studies/three_papers.yaml")
    parser.add_argument("--root", type=Path, default=None, help="where the runs go (default: the YAML's root)")
    parser.add_argument("--doc", type=Path, default=None, help="the page written (default: the YAML's doc)")
    parser.add_argument("--jobs", type=int, default=None, help="sweep commands at once (default: the YAML's jobs)")
    parser.add_argument("--seeds", default=None, help="replace the main grids' seeds, e.g. 0 for a smoke test")
    parser.add_argument(
        "--parts",
        default=None,
        help="run (or report) only these parts, e.g. sentiment,rating: another machine runs the rest",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--per-part", type=int, default=2, help="retime: committed jobs re-run per part")
    parser.add_argument("--out", type=Path, default=None, help="retime: where the re-runs and retime.json go")
    parser.add_argument("--retimed", type=Path, default=None, help="project: a retime's DIR to scale the times by")
    args, extra = parser.parse_known_args(argv)
    try:
        study = plan.with_extra(spec.load(args.study), extra)
    except (spec.SpecError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.parts:
        try:
            study = spec.only_parts(study, args.parts.split(","))
        except spec.SpecError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else study.seeds
    study = replace(
        study,
        root=args.root or study.root,
        doc=args.doc or study.doc,
        jobs=args.jobs or study.jobs,
        seeds=seeds,
    )
    threads = plan.threads_per_job(study.jobs)
    if args.action == "plan":
        resolved, runs, _, rates = state(study)
        cmds = plan.search_commands(resolved, rates, runs, threads) + plan.main_commands(resolved, rates, threads, runs)
        for cmd in cmds:
            print(" ".join(cmd[2:]))
        return 0
    if args.action == "retime":
        if args.out is None:
            print("error: retime needs --out DIR (its re-runs and retime.json go there)", file=sys.stderr)
            return 2
        return timing.retime(study, load_runs(study.root), args.per_part, args.out)
    if args.action == "project":
        print(timing.projection_markdown(timing.project(study, load_runs(study.root), args.retimed)))
        return 0
    if args.action == "verdict":
        resolved, runs, _, rates = state(study)
        print(render.verdict_markdown(judge.judge_all(resolved, runs, rates)))
        return 0
    if args.action == "run":
        run_search(study, threads, args.dry_run)
        resolved, runs, _, rates = state(study)
        plan.run_all(plan.main_commands(resolved, rates, threads, runs), study.jobs, args.dry_run)
        if args.dry_run:
            return 0
    doc = write_report(study, argv)
    print(f"written: {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
