"""How long a study takes on this machine: re-time committed jobs, and project the whole schedule.

    python -m bench.study retime STUDY.yaml [--per-part 2] --out DIR
    python -m bench.study project STUDY.yaml [--retimed DIR]

`retime` runs a sample of the committed jobs again from their recorded command (result.json
`provenance.command`), `jobs` at a time as the study runs them, under DIR, and prints for each the
committed and the new wall time, whether the run hash is the same, and the largest difference of
its scores; it writes DIR/retime.json (per part: the ratio of new to committed time).

`project` walks the schedule `run` would follow from nothing (every stage-1 round of the rate
search, each waiting for the one before, then stage 2), takes each job's time from its committed
run, scaled by its part's ratio from DIR/retime.json when given, and packs the jobs into `jobs`
slots in the order the runner submits them. It prints the wall time from nothing and with the
search committed: a figure derived from measured per-job times, not a timed end-to-end run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.study import plan, select, spec

# result.json metrics that are times or throughputs: they may differ between two runs of one job
TIMING_KEYS = ("time", "tokens_per_s", "throughput", "mfu", "memory", "rss", "bytes_peak", "_s")


MODEL_TASK = ("model", "task")


def part_of(study: spec.Study, result: dict) -> str | None:
    """The part a run belongs to: by model and task, by all of a part's overrides where two parts
    share both."""
    found = [n for n, p in study.parts.items() if select.matches(result, {k: p.overrides[k] for k in MODEL_TASK})]
    if len(found) > 1:
        found = [n for n in found if select.matches(result, study.parts[n].overrides)]
    return found[0] if len(found) == 1 else None


def sample(study: spec.Study, runs: list[dict], per_part: int) -> list[dict]:
    """Per part, the first `per_part` successful trained runs by method, one per method, in a
    fixed order (so two calls pick the same jobs)."""
    picked = []
    for name in study.parts:
        seen, mine = set(), []
        for r in sorted(select.successful(runs), key=lambda r: (r["config"]["method"]["name"], r["run_id"])):
            method = r["config"]["method"]["name"]
            if part_of(study, r) == name and method not in seen and not r["config"]["eval"].get("base"):
                seen.add(method)
                mine.append(r)
        picked += mine[:per_part]
    return picked


def rerun_command(result: dict, root: Path) -> list[str]:
    """The recorded command of this one job: a sweep's list value (`seed=0,1,2`) becomes the value
    this run had."""
    kept = []
    for arg in result["provenance"]["command"][1:]:
        if arg == "-m" or arg.startswith(("run.root=", "hydra.sweep.dir=")):
            continue
        key, _, value = arg.partition("=")
        if "," in value:
            arg = f"{key}={select.lookup({}, result['config'], key)}"
        kept.append(arg)
    # the committed run's own logger too: its start-up and shutdown are inside total_time_s
    return [sys.executable, "-m", "bench.run", *kept, f"run.root={root}"]


def scores(result: dict) -> dict:
    """The run's numeric results, times and throughputs left out, flattened to dotted keys."""
    out = {}

    def walk(prefix: str, node) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            if not any(t in prefix.lower() for t in TIMING_KEYS):
                out[prefix] = float(node)

    walk("", result["metrics"].get("eval") or {})
    walk("final_loss", result["metrics"].get("final_loss"))
    return out


def largest_difference(a: dict, b: dict) -> tuple[str, float]:
    common = sorted(set(a) & set(b))
    if not common:
        return "", float("nan")
    key = max(common, key=lambda k: abs(a[k] - b[k]))
    return key, abs(a[key] - b[key])


def retime(study: spec.Study, runs: list[dict], per_part: int, out: Path) -> int:
    """Re-run a sample of the committed jobs (module docstring); 0 when each reproduced its hash."""
    picked = sample(study, runs, per_part)
    roots = [out / f"job{i:02d}" for i in range(len(picked))]

    def one(i: int) -> float:
        t0 = time.perf_counter()
        subprocess.run(rerun_command(picked[i], roots[i]), stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=study.jobs) as pool:
        process_s = list(pool.map(one, range(len(picked))))
    wall = time.perf_counter() - t0
    rows, ratio, news = [], {}, []
    for old, root, spent in zip(picked, roots, process_s):
        found = select.load_runs(root)
        if len(found) != 1:
            raise RuntimeError(f"the re-run of {old['_path']} left {len(found)} results under {root}, not one")
        new = found[0]
        news.append(new)
        key, diff = largest_difference(scores(old), scores(new))
        part = part_of(study, old)
        t_old, t_new = old["metrics"]["total_time_s"], new["metrics"].get("total_time_s") or 0.0
        if new["status"] == "success":
            ratio.setdefault(part, [0.0, 0.0])
            ratio[part][0] += t_old
            ratio[part][1] += t_new
        rows.append(
            {
                "part": part,
                "method": old["config"]["method"]["name"],
                "run": Path(old["_path"]).parent.name,
                "committed_s": round(t_old, 1),
                "new_s": round(t_new, 1),
                "process_s": round(spent, 1),  # the job's process, start-up and exit included
                "same_hash": old["config_hash"] == new["config_hash"],
                "largest_score_difference": [key, diff],
                "status": new["status"],
            }
        )
    code = sorted({(n["provenance"]["git_commit"], n["provenance"]["git_dirty"]) for n in news})
    summary = {
        "command": f"python -m bench.study retime STUDY --per-part {per_part} --out DIR",
        "code": [{"git_commit": c, "git_dirty": d} for c, d in code],
        "wall_s": round(wall, 1),
        "jobs": rows,
        "ratio": {p: round(new / old, 4) for p, (old, new) in ratio.items()},
    }
    (out / "retime.json").write_text(json.dumps(summary, indent=1))
    print("| part | method | run | committed (s) | now (s) | same hash | largest score difference |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        k, d = r["largest_score_difference"]
        cells = (r["part"], r["method"], r["run"], r["committed_s"], r["new_s"], r["same_hash"], f"{k}: {d:.2g}")
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print(f"\nratio now / committed, by part: {summary['ratio']}; wall {wall / 60:.1f} min")
    return 0 if all(r["same_hash"] and r["status"] == "success" for r in rows) else 1


def job_overrides(cmd: list[str]) -> dict:
    """The overrides of one planned job that name what it computes (not where or how it runs)."""
    out = {}
    for arg in cmd[3:]:
        key, _, value = arg.partition("=")
        if value and not key.startswith(("run.root", "hydra.", "train.threads")):
            out[key] = value
    return out


def committed_run(runs: list[dict], cmd: list[str]) -> dict:
    wanted = job_overrides(cmd)
    found = sorted((r for r in runs if select.matches(r, wanted)), key=lambda r: r.get("status") != "success")
    if not found:
        raise ValueError(f"no committed run for the planned job {' '.join(cmd[3:])}: a projection needs every job")
    return found[0]


def makespan(durations: list[float], slots: int) -> float:
    """Wall time of jobs started in this order, each on the first free of `slots` (plan.run_all)."""
    free = [0.0] * max(1, slots)
    for d in durations:
        i = free.index(min(free))
        free[i] += d
    return max(free)


def project(study: spec.Study, committed: list[dict], retimed: Path | None = None) -> dict:
    """The stages as `run` would go through them from nothing; times in seconds (module docstring)."""
    ratio, overhead = {}, 0.0
    if retimed:
        retime = json.loads((retimed / "retime.json").read_text())
        ratio = retime["ratio"]
        gaps = [j["process_s"] - j["new_s"] for j in retime["jobs"]]
        overhead = sum(gaps) / len(gaps)
    missing = sorted(set(study.parts) - set(ratio)) if ratio else []
    if missing:
        raise ValueError(f"the retime in {retimed} has no ratio for the parts {missing}: re-time them too")
    # one command per job, as `run` plans them with two or more slots; with one slot a sweep runs
    # its jobs one after another, which takes the same time
    threads = plan.threads_per_job(study.jobs) or 1

    def seconds(cmd: list[str]) -> tuple[float, dict]:
        run = committed_run(committed, cmd)
        return run["metrics"]["total_time_s"] * (ratio[part_of(study, run)] if ratio else 1.0) + overhead, run

    done, stages = [], []
    for i in range(64):
        resolved, _, rates = select.resolve(study, done)
        cmds = plan.search_commands(resolved, rates, done, threads)
        if not cmds:
            break
        timed = [seconds(c) for c in cmds]
        stages.append(_stage(f"search round {i + 1}", [t for t, _ in timed], study.jobs))
        done += [r for _, r in timed]
    resolved, _, rates = select.resolve(study, done)
    main = [seconds(c)[0] for c in plan.main_commands(resolved, rates, threads, done)]
    stages.append(_stage("main grids", main, study.jobs))
    return {
        "ratio": ratio,
        "overhead_s": overhead,
        "jobs_at_a_time": study.jobs,
        "stages": stages,
        "from_nothing_s": sum(s["wall_s"] for s in stages),
        "search_committed_s": stages[-1]["wall_s"],
    }


def _stage(name: str, durations: list[float], slots: int) -> dict:
    return {"stage": name, "jobs": len(durations), "job_s": sum(durations), "wall_s": makespan(durations, slots)}


def projection_markdown(p: dict) -> str:
    source = (
        f"committed times x the re-timed ratio by part {p['ratio']}, plus {p['overhead_s']:.1f} s per process"
        if p["ratio"]
        else "the committed runs' own times"
    )
    lines = [f"times: {source}; {p['jobs_at_a_time']} jobs at a time", ""]
    lines += ["| stage | jobs | job-minutes | wall (min) |", "|---|---|---|---|"]
    lines += [f"| {s['stage']} | {s['jobs']} | {s['job_s'] / 60:.1f} | {s['wall_s'] / 60:.1f} |" for s in p["stages"]]
    lines.append(
        f"\nfrom nothing: {p['from_nothing_s'] / 60:.1f} min; with the search committed: "
        f"{p['search_committed_s'] / 60:.1f} min (derived from per-job times, not timed end to end)"
    )
    return "\n".join(lines)
