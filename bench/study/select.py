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
from typing import Optional

from bench.report_where import _equal, lookup
from bench.study.spec import Arm, Study, Trial


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


def trial_runs(study: Study, runs: list[dict], trial: Trial) -> list[dict]:
    """The search jobs of one trial (any status), in rate order. A main-grid run on the search seed
    can match the trial's overrides too (it sets a key the trial leaves at its default): of the
    configurations that match, the search's is the one that ran at the most rates of its grid."""
    spec = {**part_overrides(study, trial.part), "method": trial.method, **trial.overrides, "seed": study.search.seed}
    mine = [r for r in runs if matches(r, spec) and _rate(r) in trial.grid]
    groups: dict[str, list[dict]] = {}
    for r in mine:
        groups.setdefault(_without_rate(r), []).append(r)
    if not groups:
        return []
    swept = max(groups.values(), key=lambda g: (len({_rate(r) for r in g}), -min(_rate(r) for r in g)))
    return sorted(swept, key=_rate)


def _without_rate(result: dict) -> str:
    config = json.loads(json.dumps(result["config"]))
    config["method"].pop("lr", None)
    config.pop("seed", None)
    return json.dumps(config, sort_keys=True, default=str)


def _rate(result: dict) -> float:
    return float(result["config"]["method"]["lr"])


@dataclass(frozen=True)
class SearchRow:
    part: str
    method: str
    lr: float
    status: str
    scores: tuple  # the search criteria's values, None where a run lacks one
    run: dict


def criteria_values(study: Study, result: dict) -> tuple:
    held = ((result.get("metrics") or {}).get("eval") or {}).get("heldout") or {}
    primary = ((result.get("metrics") or {}).get("eval") or {}).get("primary")
    out = []
    for c in study.search.select:
        value = held.get(primary if c.key == "primary" else c.key)
        out.append(None if value is None or not math.isfinite(float(value)) else float(value))
    return tuple(out)


def search_rows(study: Study, runs: list[dict]) -> list[SearchRow]:
    rows = []
    for trial in study.search.trials:
        for r in trial_runs(study, runs, trial):
            scores = criteria_values(study, r) if r["status"] == "success" else tuple(None for _ in study.search.select)
            rows.append(SearchRow(trial.part, trial.method, _rate(r), r["status"], scores, r))
    return rows


def chosen_rates(study: Study, rows: list[SearchRow]) -> dict[tuple[str, str], float]:
    """{(part, method): rate}: the best held-out criteria in their declared order, then the declared
    tie rule. A failed job, or one without the first criterion, never wins."""

    def key(row: SearchRow) -> tuple:
        ranked = tuple(
            -math.inf if v is None else (v if c.higher_is_better else -v)
            for c, v in zip(study.search.select, row.scores)
        )
        return ranked + ((-row.lr,) if study.search.ties == "smaller_rate" else (row.lr,))

    winners = {}
    for trial in study.search.trials:
        mine = [
            r for r in rows if (r.part, r.method) == (trial.part, trial.method) and r.scores and r.scores[0] is not None
        ]
        if mine:
            winners[(trial.part, trial.method)] = max(mine, key=key).lr
    return winners


def grid_end(study: Study, part: str, method: str, rate: float) -> Optional[str]:
    """'largest' / 'smallest' when a chosen rate sits at an end of its search grid, else None."""
    trial = study.search.trial(part, method)
    if trial is None or len(trial.grid) < 2:
        return None
    if rate == trial.grid[-1]:
        return "largest"
    if rate == trial.grid[0]:
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


def base_runs(study: Study, runs: list[dict]) -> dict[str, dict]:
    """{part: its base job's successful run}."""
    out = {}
    for part in study.parts:
        spec = part_overrides(study, part, base=True)
        found = [r for r in successful(runs) if matches(r, spec)]
        if found:
            out[part] = found[0]
    return out
