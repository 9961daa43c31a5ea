"""The bench.run commands of a study, and running them.

Stage 1: each search trial is one sweep over its grid on the search seed, and each part's base job
(the untrained model, evaluated once). Stage 2: each main grid is one sweep over its lists and the
study's seeds at its method's chosen rate. Every command is an ordinary resumable sweep: run the
study again and finished jobs are skipped, so a study stopped on one machine resumes on another
from the runs it finds under its root. The overrides come from the YAML only, so no preset can
disagree with the study.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from bench.study.spec import Study


def value_text(value) -> str:
    if isinstance(value, list):
        return ",".join(value_text(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return "null" if value is None else str(value)


def job_count(overrides: dict) -> int:
    return len(expand(overrides))


def _command(overrides: dict, root: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.run",
        "-m",
        *(f"{k}={value_text(v)}" for k, v in overrides.items()),
        f"run.root={root}",
    ]


def split_extra(extra: list[str], parts) -> tuple[dict, dict]:
    """(overrides for every command, {part: overrides}) from KEY=VALUE and PART:KEY=VALUE."""
    common, per_part = {}, {p: {} for p in parts}
    for arg in extra:
        if "=" not in arg or arg.startswith("-"):
            raise ValueError(f"{arg!r}: extra arguments are bench.run overrides KEY=VALUE or PART:KEY=VALUE")
        key, value = arg.split("=", 1)
        target = common
        if ":" in key:
            part, key = key.split(":", 1)
            if part not in per_part:
                raise ValueError(f"{arg!r}: part {part!r} is not one of {', '.join(per_part)}")
            target = per_part[part]
        target[key] = value.split(",") if "," in value else value
    return common, per_part


def with_extra(study: Study, extra: list[str]) -> Study:
    """The study with command-line overrides folded into its parts, so that the commands run them and
    the selection of runs expects them (a smoke test: model=tiny-llama train.max_steps=2)."""
    from dataclasses import replace

    common, per_part = split_extra(list(extra), study.parts)
    parts = {
        name: replace(
            p, overrides={**p.overrides, **common, **per_part[name]}, base={**p.base, **common, **per_part[name]}
        )
        for name, p in study.parts.items()
    }
    return replace(study, parts=parts)


def expand(overrides: dict) -> list[dict]:
    """One set of overrides per job of a sweep (the product of its list values, in order)."""
    import itertools

    keys = list(overrides)
    values = [v if isinstance(v, list) else [v] for v in overrides.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def _commands(overrides: dict, root: Path, threads: int | None) -> list[list[str]]:
    """A sweep as one command, or, when jobs run side by side (`threads` set), one command per job:
    a sweep runs its jobs one after the other, so one long sweep would leave the other slot idle."""
    return [_command(o, root) for o in (expand(overrides) if threads else [overrides])]


def search_commands(study: Study, rates: dict, runs: list[dict] | None = None, threads: int | None = None):
    """Stage 1 as far as it can run now: each trial's grid points that have no run yet (all of them
    when `runs` is None), and each part's base job. A trial that takes its rate from another
    method waits for that method's choice; a grid that grows gets its new point on the next call."""
    from bench.study import select

    launch = {"train.threads": threads} if threads else {}
    out = []
    todo = select.pending(study, runs or [], rates)
    for t, points in todo:
        spec = select.trial_spec(study, t, rates)
        overrides = {**{k: v for k, v in spec.items() if k != "seed"}, t.key: list(points), "seed": study.search.seed}
        out += _commands({**overrides, **launch}, study.root, threads)
    bases = select.base_runs(study, runs or [], any_status=True)
    for name, part in study.parts.items():
        if runs is None or name not in bases:
            out.append(_command({**part.overrides, **part.base, "seed": study.search.seed, **launch}, study.root))
    return out


def main_commands(
    study: Study, rates: dict, threads: int | None = None, runs: list[dict] | None = None
) -> list[list[str]]:
    """Stage 2; a grid whose method has no chosen rate (its search has not finished) is left out.
    Split into single jobs (`threads` set), a job that already has a successful run among `runs`
    is left out too, so a resumed study starts no process only to skip it."""
    from bench.study import select

    launch = {"train.threads": threads} if threads else {}
    done = select.successful(runs or [])
    out = []
    for g in study.grids:
        rate = rates.get((g.part, g.method))
        if rate is None:
            print(f"no chosen rate for {g.part}/{g.method}: its main grid is left out", file=sys.stderr)
            continue
        overrides = {
            **study.parts[g.part].overrides,
            "method": g.method,
            **g.overrides,
            "method.lr": rate,
            "seed": list(study.seeds),
        }
        cmds = _commands({**overrides, **launch}, study.root, threads)
        if threads:
            cmds = [c for c, o in zip(cmds, expand(overrides)) if not any(select.matches(r, o) for r in done)]
        out += cmds
    return out


def run_all(cmds: list[list[str]], jobs: int, dry_run: bool = False) -> None:
    """Run one stage's commands, `jobs` at a time, the largest sweeps first; a command that exits
    non-zero (a broken command: a failed job is a result and the sweep goes on) stops the stage."""
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    if dry_run or jobs <= 1 or len(cmds) <= 1:
        for cmd in cmds:
            _call(cmd, dry_run)
        return
    # Hydra names a sweep's directory by the second it starts: commands started together get their own
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    root = next(a.split("=", 1)[1] for a in cmds[0] if a.startswith("run.root="))
    ordered = sorted(cmds, key=_sweep_size, reverse=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [
            pool.submit(_call, [*cmd, f"hydra.sweep.dir={root}/.sweeps/{stamp}_{i:02d}"], False)
            for i, cmd in enumerate(ordered)
        ]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        broken = [f for f in done if f.exception() is not None]
        if broken:
            pool.shutdown(wait=True, cancel_futures=True)
            raise broken[0].exception()


def _sweep_size(cmd: list[str]) -> int:
    count = 1
    for arg in cmd[4:]:
        if "=" in arg and not arg.startswith("hydra"):
            count *= len(arg.split("=", 1)[1].split(","))
    return count


def threads_per_job(jobs: int) -> int | None:
    return max(1, (os.cpu_count() or 2) // jobs) if jobs > 1 else None


def _call(cmd: list[str], dry_run: bool) -> None:
    print("+ " + " ".join(shlex.quote(c) for c in cmd[2:]), flush=True)
    if not dry_run:
        subprocess.run(cmd, check=True)
