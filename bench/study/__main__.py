"""python -m bench.study run|report|plan|verdict STUDY.yaml [--root DIR] [--doc FILE] [--jobs N]
                        [--seeds 0,1] [--dry-run] [KEY=VALUE | PART:KEY=VALUE ...]

run      stage 1 (searches and base jobs), the chosen rates, stage 2 (main grids), then the report
report   the report from the finished runs under the root; runs nothing
plan     print the bench.run commands of stage 1 (and of stage 2 where rates are chosen)
verdict  print the verdict table of what has finished

KEY=VALUE arguments are appended to every bench.run command (a smoke test runs the whole chain
with model=tiny-llama and a few steps); PART:KEY=VALUE to that part's commands only.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from bench.study import judge, plan, render, select, spec


def load_runs(root: Path) -> list[dict]:
    from bench.report import load

    return load([root])[0] if root.exists() else []


def state(study: spec.Study):
    runs = load_runs(study.root)
    rows = select.search_rows(study, runs)
    return runs, rows, select.chosen_rates(study, rows)


def write_report(study: spec.Study, argv: list[str]) -> Path:
    from bench import report

    runs, rows, rates = state(study)
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
    return study.doc


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m bench.study", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=("run", "report", "plan", "verdict"))
    parser.add_argument("study", type=Path, help="the study's YAML, e.g. studies/small_offline.yaml")
    parser.add_argument("--root", type=Path, default=None, help="where the runs go (default: the YAML's root)")
    parser.add_argument("--doc", type=Path, default=None, help="the page written (default: the YAML's doc)")
    parser.add_argument("--jobs", type=int, default=None, help="sweep commands at once (default: the YAML's jobs)")
    parser.add_argument("--seeds", default=None, help="replace the main grids' seeds, e.g. 0 for a smoke test")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args, extra = parser.parse_known_args(argv)
    try:
        study = plan.with_extra(spec.load(args.study), extra)
    except (spec.SpecError, ValueError) as err:
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
        _, _, rates = state(study)
        for cmd in plan.search_commands(study, threads) + plan.main_commands(study, rates, threads):
            print(" ".join(cmd[2:]))
        return 0
    if args.action == "verdict":
        runs, _, rates = state(study)
        print(render.verdict_markdown(judge.judge_all(study, runs, rates)))
        return 0
    if args.action == "run":
        plan.run_all(plan.search_commands(study, threads), study.jobs, args.dry_run)
        _, _, rates = state(study)
        plan.run_all(plan.main_commands(study, rates, threads), study.jobs, args.dry_run)
        if args.dry_run:
            return 0
    doc = write_report(study, argv)
    print(f"written: {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
