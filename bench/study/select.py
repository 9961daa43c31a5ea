"""Which finished runs belong to what: a job's overrides, an arm, a search; and the chosen rates.

A run belongs to a set of overrides when its resolved config agrees with each of them: a config
group (`model: smollm2-135m`) by the group's `name`, any other key (`method.r`, `train.max_steps`)
by its path; a list value matches any of its items. The study never looks runs up by directory
name, so a run typed out by hand with the same overrides counts as the study's.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bench.report.where import _equal, lookup
from bench.study.spec import Arm, SpecError, Study, Trial


def load_runs(root: Path) -> list[dict]:
    """Every readable, schema-valid result under `root` (bench.report.load); none if it is absent."""
    from bench.report import load

    return load([root])[0] if root.exists() else []


def matches(result: dict, overrides: dict) -> bool:
    config = result["config"]
    for key, wanted in overrides.items():
        value = lookup({}, config, key)
        if isinstance(value, dict):  # a config group, chosen by its option's name
            value = value.get("name")
        options = wanted if isinstance(wanted, list) else [wanted]
        if not any(_equal(value, str(o)) for o in options):
            return False
    return True


def part_overrides(study: Study, part: str, base: bool = False) -> dict:
    p = study.parts[part]
    return {**p.overrides, **p.base} if base else dict(p.overrides)


def successful(runs: list[dict]) -> list[dict]:
    return [r for r in runs if r.get("status") == "success"]


# A job that ended with one of these has run; a cancelled one (stopped from outside) runs again.
FINAL = ("success", "failed", "oom", "diverged")


def trial_spec(study: Study, trial: Trial, rates: dict) -> Optional[dict]:
    """The overrides every job of a trial shares (its searched key aside); None while a trial that
    takes its rate from another method waits for that method's search."""
    spec = {**part_overrides(study, trial.part), "method": trial.method, **trial.overrides, "seed": study.search.seed}
    if trial.lr_from:
        rate = rates.get((trial.part, trial.lr_from))
        if rate is None:
            return None
        spec["method.lr"] = rate
    return spec


def trial_runs(study: Study, runs: list[dict], trial: Trial, rates: Optional[dict] = None) -> list[dict]:
    """The search jobs of one trial (any status), in order of the searched value. A main-grid run on
    the search seed can match the trial's overrides too (it sets a key the trial leaves at its
    default): of the configurations that match, the search's is the one that ran at the most points
    of its grid."""
    spec = trial_spec(study, trial, rates or {})
    if spec is None:
        return []
    mine = [r for r in runs if matches(r, spec) and _on_grid(value_of(r, trial.key), trial.grid)]
    groups: dict[str, list[dict]] = {}
    for r in mine:
        groups.setdefault(_without(r, trial.key), []).append(r)
    if not groups:
        return []
    swept = max(
        groups.values(),
        key=lambda g: (len({value_of(r, trial.key) for r in g}), -min(value_of(r, trial.key) for r in g)),
    )
    return sorted(swept, key=lambda r: value_of(r, trial.key))


def _on_grid(value: Optional[float], grid: tuple) -> bool:
    return value is not None and any(math.isclose(value, g, rel_tol=1e-9) for g in grid)


def _without(result: dict, key: str) -> str:
    config = json.loads(json.dumps(result["config"]))
    section, _, name = key.partition(".")
    (config.get(section) or {}).pop(name, None)
    config.pop("seed", None)
    return json.dumps(config, sort_keys=True, default=str)


def value_of(result: dict, key: str) -> Optional[float]:
    section, _, name = key.partition(".")
    value = (result["config"].get(section) or {}).get(name)
    return None if value is None else float(value)


def _rate(result: dict) -> float:
    return float(result["config"]["method"]["lr"])


@dataclass(frozen=True)
class SearchRow:
    part: str
    method: str
    key: str  # the searched key: method.lr, or another (the trial's lr_from)
    value: float
    status: str
    scores: tuple  # the search criteria's values, None where a run lacks one
    run: dict

    @property
    def lr(self) -> float:
        return _rate(self.run)


def criteria_values(study: Study, result: dict, part: str) -> tuple:
    ev = (result.get("metrics") or {}).get("eval") or {}
    held = ev.get("heldout") or {}
    primary = ev.get("primary")
    out = []
    for c in study.criteria(part):
        # `primary` is declared with a direction; a run whose primary points the other way (GSM8K's
        # answer_nll with task.generate_limit=0) would be ranked backwards: refused, not ranked
        direction = ev.get("primary_higher_is_better")
        if c.key == "primary" and direction is not None and bool(direction) != c.higher_is_better:
            raise SpecError(
                f"search criterion `primary` is declared higher_is_better={str(c.higher_is_better).lower()}, "
                f"but run {result.get('run_id')}'s primary metric is {primary!r}, for which "
                f"{'higher' if direction else 'lower'} is better (task.generate_limit=0 scores no exact match?); "
                f"name the criterion by its key, e.g. "
                f"{{key: {primary}, higher_is_better: {str(bool(direction)).lower()}}}"
            )
        value = held.get(primary if c.key == "primary" else c.key)
        out.append(None if value is None or not math.isfinite(float(value)) else float(value))
    return tuple(out)


def search_rows(study: Study, runs: list[dict], rates: Optional[dict] = None) -> list[SearchRow]:
    """One row per search job that has run (FINAL): a cancelled job is not a trial yet."""
    rows = []
    for trial in study.search.trials:
        for r in trial_runs(study, runs, trial, rates):
            if r.get("status") not in FINAL:
                continue
            crit = study.criteria(trial.part)
            scores = criteria_values(study, r, trial.part) if r["status"] == "success" else tuple(None for _ in crit)
            rows.append(SearchRow(trial.part, trial.method, trial.key, value_of(r, trial.key), r["status"], scores, r))
    return rows


def _rank(study: Study, row: SearchRow) -> tuple:
    ranked = tuple(
        -math.inf if v is None else (v if c.higher_is_better else -v)
        for c, v in zip(study.criteria(row.part), row.scores)
    )
    return ranked + ((-row.value,) if study.search.ties == "smaller_rate" else (row.value,))


def _best(study: Study, rows: list[SearchRow], trial: Trial) -> Optional[SearchRow]:
    mine = [
        r for r in rows if (r.part, r.method) == (trial.part, trial.method) and r.scores and r.scores[0] is not None
    ]
    return max(mine, key=lambda r: _rank(study, r)) if mine else None


def chosen_values(study: Study, rows: list[SearchRow]) -> dict[tuple[str, str], float]:
    """{(part, method): value of the trial's key}: the best held-out criteria in their declared
    order, then the declared tie rule. A failed job, or one without the first criterion, never wins."""
    out = {}
    for trial in study.search.trials:
        best = _best(study, rows, trial)
        if best is not None:
            out[(trial.part, trial.method)] = best.value
    return out


def chosen_rates(study: Study, rows: list[SearchRow]) -> dict[tuple[str, str], float]:
    """{(part, method): learning rate}: a rate search's winner, or for a trial over another key, the
    rate it ran at (its lr_from's) once that trial has a winner."""
    values = chosen_values(study, rows)
    rates = {}
    for trial in study.search.trials:
        if (trial.part, trial.method) not in values:
            continue
        if trial.key == "method.lr":
            rates[(trial.part, trial.method)] = values[(trial.part, trial.method)]
        else:
            best = _best(study, rows, trial)
            rates[(trial.part, trial.method)] = best.lr
    return rates


def _round(value: float) -> float:
    return float(f"{value:.3g}")


def extend(study: Study, trial: Trial, rows: list[SearchRow]) -> Optional[float]:
    """The next point of a trial's grid, or None (the grid has its budget, or a point has not run).
    The best value at an end of the grid extends that end by the grid's own step; a failed run at an
    end bounds it (it diverged: the next point would too). A bracketed best spends the remaining
    budget on the nearer end, so every method gets the same number of trials."""
    budget = study.search.budget
    grid = trial.grid
    if budget is None or len(grid) >= budget:
        return None
    mine = {r.value: r for r in rows if (r.part, r.method) == (trial.part, trial.method)}
    done = [g for g in grid if any(math.isclose(g, v, rel_tol=1e-9) for v in mine)]
    if len(done) < len(grid):
        return None
    best = _best(study, rows, trial)
    if best is None:
        return None

    def failed(v: float) -> bool:
        row = next(r for k, r in mine.items() if math.isclose(k, v, rel_tol=1e-9))
        return row.status != "success"

    up, down = _round(grid[-1] * grid[-1] / grid[-2]), _round(grid[0] * grid[0] / grid[1])
    i = next(j for j, g in enumerate(grid) if math.isclose(g, best.value, rel_tol=1e-9))
    ends = []  # ends open to extension, nearer first
    if not failed(grid[-1]):
        ends.append((len(grid) - 1 - i, 0, up))
    if not failed(grid[0]) and down > 0:
        ends.append((i, 1, down))
    return min(ends)[2] if ends else None


def complete(study: Study, trial: Trial, rows: list[SearchRow]) -> bool:
    """Every point of the trial's grid has run and the grid will not grow."""
    ran = [r.value for r in rows if (r.part, r.method) == (trial.part, trial.method)]
    every = all(any(math.isclose(g, v, rel_tol=1e-9) for v in ran) for g in trial.grid)
    return every and extend(study, trial, rows) is None


def _settled(study: Study, rows: list[SearchRow]) -> dict:
    """The chosen rates of the searches that are complete: only these are used, so that no trial
    runs at (and no main grid uses) a rate a growing grid may still replace."""
    rates = chosen_rates(study, rows)
    done = {(t.part, t.method) for t in study.search.trials if complete(study, t, rows)}
    return {pm: v for pm, v in rates.items() if pm in done}


def resolve(study: Study, runs: list[dict]) -> tuple[Study, list[SearchRow], dict]:
    """The search as far as the finished runs take it: (the study with every trial's grid extended
    and the chosen values folded into the grids and arms that run its method, the search rows, the
    rates of the complete searches)."""
    from dataclasses import replace

    for _ in range(64):
        rates = _settled(study, search_rows(study, runs, {}))
        rows = search_rows(study, runs, rates)
        grown = []
        for trial in study.search.trials:
            nxt = extend(study, trial, rows)
            grown.append(trial if nxt is None else replace(trial, grid=tuple(sorted((*trial.grid, nxt)))))
        if grown == list(study.search.trials):
            break
        study = replace(study, search=replace(study.search, trials=tuple(grown)))
    rates = _settled(study, rows)
    values = chosen_values(study, rows)
    chosen = {
        (t.part, t.method): (t.key, values[(t.part, t.method)])
        for t in study.search.trials
        if (t.part, t.method) in rates
    }
    # a grid or arm that names the searched key itself keeps its declared value (a fixed-value arm)
    extra = {pm: {k: v} for pm, (k, v) in chosen.items() if k != "method.lr"}
    grids = tuple(
        replace(g, overrides=_unless_fixed(g.overrides, extra.get((g.part, g.method), {}))) for g in study.grids
    )
    arms = {
        n: (a if a.base else replace(a, where=_unless_fixed(a.where, extra.get((a.part, a.method), {}))))
        for n, a in study.arms.items()
    }
    return replace(study, grids=grids, arms=arms, chosen=chosen), rows, rates


def _unless_fixed(declared: dict, chosen: dict) -> dict:
    return {**declared, **{k: v for k, v in chosen.items() if k not in declared}}


def pending(study: Study, runs: list[dict], rates: dict) -> list[tuple[Trial, tuple]]:
    """(trial, the grid points it has not run) for every trial that can run now."""
    out = []
    for trial in study.search.trials:
        if trial_spec(study, trial, rates) is None:
            continue
        ran = {value_of(r, trial.key) for r in trial_runs(study, runs, trial, rates) if r.get("status") in FINAL}
        todo = tuple(g for g in trial.grid if not any(v is not None and math.isclose(g, v, rel_tol=1e-9) for v in ran))
        if todo:
            out.append((trial, todo))
    return out


def grid_end(study: Study, part: str, method: str, value: float) -> Optional[str]:
    """'largest' / 'smallest' when a chosen value sits at an end of its search grid, else None."""
    trial = study.search.trial(part, method)
    if trial is None or len(trial.grid) < 2:
        return None
    if math.isclose(value, trial.grid[-1], rel_tol=1e-9):
        return "largest"
    if math.isclose(value, trial.grid[0], rel_tol=1e-9):
        return "smallest"
    return None


def arm_runs(study: Study, runs: list[dict], arm: Arm, rates: dict) -> list[dict]:
    """The successful runs of an arm: the part's base job (once), or the main-grid runs of its
    method and filters at the method's chosen rate, on the study's seeds."""
    ok = successful(runs)
    if arm.base:
        spec = part_overrides(study, arm.part, base=True)
        mine = [r for r in ok if matches(r, spec)]
        return mine[:1]
    rate = rates.get((arm.part, arm.method))
    if rate is None:
        return []
    spec = {**part_overrides(study, arm.part), "method": arm.method, **arm.where}
    return [r for r in ok if matches(r, spec) and math.isclose(_rate(r), rate) and r["config"]["seed"] in study.seeds]


def main_runs(study: Study, runs: list[dict], rates: dict) -> list[dict]:
    """Every main-grid run at its method's chosen rate, on the study's seeds."""
    keep = {}
    for grid in study.grids:
        rate = rates.get((grid.part, grid.method))
        if rate is None:
            continue
        spec = {**part_overrides(study, grid.part), "method": grid.method, **grid.overrides}
        for r in successful(runs):
            if matches(r, spec) and math.isclose(_rate(r), rate) and r["config"]["seed"] in study.seeds:
                keep[r["_path"]] = r
    return list(keep.values())


def base_runs(study: Study, runs: list[dict], any_status: bool = False) -> dict[str, dict]:
    """{part: its base job's successful run (or any run, `any_status`)}."""
    out = {}
    for part in study.parts:
        spec = part_overrides(study, part, base=True)
        found = [r for r in (runs if any_status else successful(runs)) if matches(r, spec)]
        if found:
            out[part] = found[0]
    return out


def progress(study: Study, runs: list[dict], rates: dict) -> dict[str, dict]:
    """{part: {"search": search jobs still to run, "main": main-grid jobs still to run}}: what a
    stopped study has left, counted from the runs under its root. A search's count is its budget
    (or grid) less the points it has run; a main grid whose search is not complete counts all its
    jobs (its seed-0 job may turn out to be a search job already run, so this is an upper bound)."""
    from bench.study.plan import job_count

    out = {p: {"search": 0, "main": 0} for p in study.parts}
    rows = search_rows(study, runs, rates)
    for trial in study.search.trials:
        size = study.search.budget or len(trial.grid)
        ran = sum(1 for r in rows if (r.part, r.method) == (trial.part, trial.method))
        out[trial.part]["search"] += max(0, size - ran)
    ok = successful(runs)
    for g in study.grids:
        jobs = job_count(g.overrides) * len(study.seeds)
        rate = rates.get((g.part, g.method))
        if rate is None:
            out[g.part]["main"] += jobs
            continue
        spec = {**part_overrides(study, g.part), "method": g.method, **g.overrides}
        found = {
            (r["config"]["seed"], _without(r, "method.lr"))
            for r in ok
            if matches(r, spec) and math.isclose(_rate(r), rate) and r["config"]["seed"] in study.seeds
        }
        out[g.part]["main"] += max(0, jobs - len(found))
    bases = base_runs(study, runs, any_status=True)
    for part in study.parts:
        if part not in bases:
            out[part]["search"] += 1  # the base job
    return out
