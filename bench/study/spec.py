"""A study's YAML, loaded into dataclasses and checked before anything runs.

Top level: `title`, `doc` (the Markdown page it writes, relative to the repository root), `prose`
(a Markdown file included in the page, relative to the YAML), `root` (where the runs go), `seeds`
(the main grids' seeds), `jobs` (sweep commands at once), `mechanism_min` (the share a method's
mechanism must reach before its arm is judged, bench.api.Mechanism), `parts`, `search`,
`grids`, `arms`, `claims`. Every key of every level is checked: an unknown one is an error that
lists the known ones, so a typo cannot silently drop a setting.

Overrides are bench.run's `key: value` pairs; a list value is a sweep over its items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

KINDS = ("better", "non_inferior", "cheaper")
COSTS = ("train_time_s", "peak_memory")  # the cost metrics a `cheaper` claim may name
STAGES = ("eval", "eval_base")
SPLITS = ("test", "heldout")
TIES = ("smaller_rate", "larger_rate")


class SpecError(ValueError):
    """A study file that cannot be run; the message names the key and what is valid."""


@dataclass(frozen=True)
class Part:
    name: str
    what: str  # one line: model, task, what is scored
    overrides: dict  # every job of the part
    base: dict  # the untrained-model job: overrides on top of the part's
    select: Optional[tuple] = None  # the part's search criteria (Criterion); None: the search's


@dataclass(frozen=True)
class Trial:
    """One method's search in one part: over its learning rate, or (`lr_from`) over another key at
    the rate chosen for another method of the part (L1RA's lambda at LoRA's rate, as its authors
    ran both at one rate). `grid` is the initial grid; the search extends it (select.resolve)."""

    part: str
    method: str
    grid: tuple[float, ...]
    overrides: dict
    key: str = "method.lr"
    lr_from: Optional[str] = None


@dataclass(frozen=True)
class Criterion:
    """A key of the held-out evaluation's result the search ranks by (`primary`: the evaluation's
    own primary metric); a run that lacks it ranks last on it."""

    key: str
    higher_is_better: bool


@dataclass(frozen=True)
class Search:
    seed: int
    select: tuple[Criterion, ...]
    ties: str
    trials: tuple[Trial, ...]
    # trials per search, initial grid included: a grid shorter than this grows one point at a time
    # toward the best value (select.extend) until it has `budget` points; None: the grids as written
    budget: Optional[int] = None

    def trial(self, part: str, method: str) -> Optional[Trial]:
        return next((t for t in self.trials if (t.part, t.method) == (part, method)), None)


@dataclass(frozen=True)
class Grid:
    part: str
    method: str
    overrides: dict  # list values: swept


@dataclass(frozen=True)
class Arm:
    name: str
    part: str
    method: Optional[str]  # None: the part's untrained base model
    where: dict

    @property
    def base(self) -> bool:
        return self.method is None


@dataclass(frozen=True)
class Claim:
    paper: str
    text: str
    kind: str  # better | non_inferior | cheaper
    arms: tuple[str, ...]  # (A, B): A is judged against B; one arm for a rank-share claim
    metric: Optional[str] = None  # a per-item field, or a cost (COSTS)
    stage: str = "eval"
    split: str = "test"
    margin: Optional[float] = None  # non_inferior: in the metric's units, declared before the run
    max_ratio: float = 1.0  # cheaper: the ratio A / B must lie below this
    family: Optional[str] = None  # Holm's correction runs over each family
    base: Optional[str] = None  # the base-model arm of the assay-sensitivity check
    rank_share: Optional[str] = None  # a regular expression of module names (see judge.rank_share)
    mechanism_min: Optional[float] = None  # overrides the study's


@dataclass(frozen=True)
class Study:
    path: Path
    title: str
    doc: Path
    prose: Optional[Path]
    root: Path
    seeds: tuple[int, ...]
    jobs: int
    mechanism_min: float
    parts: dict[str, Part]
    search: Search
    grids: tuple[Grid, ...]
    arms: dict[str, Arm]
    claims: tuple[Claim, ...]
    extra: dict = field(default_factory=dict)

    def criteria(self, part: str) -> tuple:
        """The search criteria of a part: its own `select`, else the search's."""
        return self.parts[part].select or self.search.select

    # {(part, method): (key, value)} chosen by the search, filled by select.resolve
    chosen: dict = field(default_factory=dict)


def load(path: Path) -> Study:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SpecError(f"{path}: cannot be read as YAML: {err}") from err
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a study is a mapping of keys, got {type(data).__name__}")
    return _study(path, data)


def _keys(where: str, node: Any, required: tuple, optional: tuple = ()) -> dict:
    if not isinstance(node, dict):
        raise SpecError(f"{where} must be a mapping, got {node!r}")
    unknown = sorted(set(node) - set(required) - set(optional))
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {unknown}; known: {', '.join(required + optional)}")
    missing = [k for k in required if k not in node]
    if missing:
        raise SpecError(f"{where}: missing {missing}")
    return node


def _overrides(where: str, node: Any, study_keys: tuple = ("method.lr", "seed", "run.root")) -> dict:
    """bench.run overrides; `study_keys` are the study's to set (the search sets the rate, the study
    the seeds and the root), so a part or grid may not."""
    node = node or {}
    if not isinstance(node, dict) or not all(isinstance(k, str) for k in node):
        raise SpecError(f"{where} must map bench.run keys to values, got {node!r}")
    for key, value in node.items():
        if key in study_keys:
            raise SpecError(f"{where}: {key} is set by the study (search, seeds, root), not by overrides")
        if isinstance(value, (dict,)):
            raise SpecError(f"{where}.{key}: a value is a scalar or a list of scalars, got {value!r}")
    return dict(node)


def _study(path: Path, data: dict) -> Study:
    _keys(
        path.name,
        data,
        ("title", "doc", "root", "seeds", "parts", "search", "grids", "arms", "claims"),
        ("prose", "jobs", "mechanism_min"),
    )
    parts = {name: _part(name, node) for name, node in _mapping("parts", data["parts"]).items()}
    search = _search(data["search"], parts)
    grids = tuple(_grid(i, node, parts) for i, node in enumerate(_list("grids", data["grids"])))
    arms = {name: _arm(name, node, parts) for name, node in _mapping("arms", data["arms"]).items()}
    for arm in arms.values():
        if not arm.base and not any((g.part, g.method) == (arm.part, arm.method) for g in grids):
            raise SpecError(f"arm {arm.name!r}: no grid runs method {arm.method} in part {arm.part}")
        if not arm.base and search.trial(arm.part, arm.method) is None:
            raise SpecError(f"arm {arm.name!r}: method {arm.method} in part {arm.part} has no learning-rate search")
    claims = tuple(_claim(i, node, arms) for i, node in enumerate(_list("claims", data["claims"])))
    seeds = data["seeds"]
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and s >= 0 for s in seeds)):
        raise SpecError(f"seeds must be a non-empty list of integers >= 0, got {seeds!r}")
    jobs = data.get("jobs", 1)
    if not isinstance(jobs, int) or jobs < 1:
        raise SpecError(f"jobs must be an integer >= 1, got {jobs!r}")
    mech = float(data.get("mechanism_min", 0.0))
    if not 0.0 <= mech <= 1.0:
        raise SpecError(f"mechanism_min must lie in [0, 1], got {mech}")
    return Study(
        path=path,
        title=str(data["title"]),
        doc=Path(data["doc"]),
        prose=(path.parent / data["prose"]) if data.get("prose") else None,
        root=Path(data["root"]),
        seeds=tuple(seeds),
        jobs=jobs,
        mechanism_min=mech,
        parts=parts,
        search=search,
        grids=grids,
        arms=arms,
        claims=claims,
    )


def _mapping(where: str, node: Any) -> dict:
    if not isinstance(node, dict) or not node:
        raise SpecError(f"{where} must be a non-empty mapping")
    return node


def _list(where: str, node: Any) -> list:
    if not isinstance(node, list) or not node:
        raise SpecError(f"{where} must be a non-empty list")
    return node


def _criteria(where: str, node: Any) -> tuple:
    out = []
    for i, c in enumerate(_list(where, node)):
        _keys(f"{where}[{i}]", c, ("key", "higher_is_better"))
        out.append(Criterion(str(c["key"]), bool(c["higher_is_better"])))
    return tuple(out)


def _part(name: str, node: Any) -> Part:
    _keys(f"parts.{name}", node, ("what", "overrides", "base"), ("select",))
    overrides = _overrides(f"parts.{name}.overrides", node["overrides"])
    for key in ("model", "task"):
        if key not in overrides:
            raise SpecError(f"parts.{name}.overrides must name the {key} (every job of a part shares it)")
    base = _overrides(f"parts.{name}.base", node["base"], study_keys=("seed", "run.root"))
    if "method" not in base:
        raise SpecError(f"parts.{name}.base needs a method (the one-step job that evaluates the untrained model)")
    select = _criteria(f"parts.{name}.select", node["select"]) if "select" in node else None
    return Part(name, str(node["what"]), overrides, base, select)


def _rates(where: str, node: Any) -> tuple[float, ...]:
    if not isinstance(node, list) or not node or not all(isinstance(v, (int, float)) and v > 0 for v in node):
        raise SpecError(f"{where} must be a non-empty list of positive learning rates, got {node!r}")
    grid = tuple(sorted(float(v) for v in node))
    if len(set(grid)) != len(grid):
        raise SpecError(f"{where} repeats a rate: {node!r}")
    return grid


def _search(node: Any, parts: dict) -> Search:
    _keys("search", node, ("seed", "select", "ties", "grids", "trials"), ("budget",))
    if node["ties"] not in TIES:
        raise SpecError(f"search.ties={node['ties']!r}; choose one of {', '.join(TIES)}")
    select = _criteria("search.select", node["select"])
    grids = {name: _rates(f"search.grids.{name}", g) for name, g in _mapping("search.grids", node["grids"]).items()}
    if "default" not in grids:
        raise SpecError("search.grids needs a `default` grid")
    trials = []
    for i, t in enumerate(_list("search.trials", node["trials"])):
        where = f"search.trials[{i}]"
        _keys(where, t, ("part", "method"), ("grid", "overrides", "key", "lr_from"))
        _known(where, "part", t["part"], parts)
        grid = t.get("grid", "default")
        _known(where, "grid", grid, grids)
        key = str(t.get("key", "method.lr"))
        if (key == "method.lr") == bool(t.get("lr_from")):
            raise SpecError(
                f"{where}: a search over another key than method.lr takes its rate from another method "
                f"(`lr_from: <method>`), and a rate search takes no lr_from; got key={key!r}, "
                f"lr_from={t.get('lr_from')!r}"
            )
        overrides = _overrides(f"{where}.overrides", t.get("overrides"))
        if key in overrides:
            raise SpecError(f"{where}: {key} is the searched key; it cannot also be an override")
        trials.append(Trial(t["part"], str(t["method"]), grids[grid], overrides, key, t.get("lr_from")))
    pairs = [(t.part, t.method) for t in trials]
    if len(set(pairs)) != len(pairs):
        raise SpecError("search.trials: a (part, method) pair appears twice; each method has one search per part")
    for t in trials:
        source = next((s for s in trials if (s.part, s.method) == (t.part, t.lr_from)), None)
        if t.lr_from and (source is None or source.key != "method.lr"):
            raise SpecError(
                f"search: {t.part}/{t.method} takes its rate from {t.lr_from!r}, which has no rate search in "
                f"part {t.part}"
            )
    budget = node.get("budget")
    if budget is not None:
        short = [f"{t.part}/{t.method}" for t in trials if not 2 <= len(t.grid) <= budget]
        if not isinstance(budget, int) or short:
            raise SpecError(
                f"search.budget={budget!r} must be an integer at least as long as every initial grid, and each "
                f"grid needs 2 points to extend from; check {', '.join(short) or 'the value'}"
            )
    return Search(int(node["seed"]), tuple(select), node["ties"], tuple(trials), budget)


def _known(where: str, what: str, value: Any, known: dict) -> None:
    if value not in known:
        raise SpecError(f"{where}: {what} {value!r} is not defined; defined: {', '.join(map(str, known))}")


def _grid(i: int, node: Any, parts: dict) -> Grid:
    where = f"grids[{i}]"
    _keys(where, node, ("part", "method"), ("overrides",))
    _known(where, "part", node["part"], parts)
    return Grid(node["part"], str(node["method"]), _overrides(f"{where}.overrides", node.get("overrides")))


def _arm(name: str, node: Any, parts: dict) -> Arm:
    where = f"arms.{name}"
    _keys(where, node, ("part",), ("method", "where", "base"))
    _known(where, "part", node["part"], parts)
    if bool(node.get("base")) == ("method" in node):
        raise SpecError(f"{where}: give either a method or `base: true` (the part's untrained model)")
    if node.get("base") and node.get("where"):
        raise SpecError(f"{where}: the base arm is the part's base job; it takes no filters")
    return Arm(name, node["part"], node.get("method"), _overrides(f"{where}.where", node.get("where")))


def _claim(i: int, node: Any, arms: dict) -> Claim:
    where = f"claims[{i}]"
    _keys(
        where,
        node,
        ("paper", "text", "kind", "arms"),
        ("metric", "stage", "split", "margin", "max_ratio", "family", "base", "rank_share", "mechanism_min"),
    )
    if node["kind"] not in KINDS:
        raise SpecError(f"{where}: kind {node['kind']!r}; choose one of {', '.join(KINDS)}")
    names = node["arms"]
    if not isinstance(names, list) or len(names) not in (1, 2):
        raise SpecError(f"{where}: arms is a list of one or two arm names, got {names!r}")
    for name in names + ([node["base"]] if node.get("base") else []):
        _known(where, "arm", name, arms)
    claim = Claim(
        paper=str(node["paper"]),
        text=str(node["text"]),
        kind=node["kind"],
        arms=tuple(names),
        metric=node.get("metric"),
        stage=node.get("stage", "eval"),
        split=node.get("split", "test"),
        margin=None if node.get("margin") is None else float(node["margin"]),
        max_ratio=float(node.get("max_ratio", 1.0)),
        family=node.get("family"),
        base=node.get("base"),
        rank_share=node.get("rank_share"),
        mechanism_min=None if node.get("mechanism_min") is None else float(node["mechanism_min"]),
    )
    if claim.stage not in STAGES or claim.split not in SPLITS:
        raise SpecError(f"{where}: stage must be one of {STAGES} and split one of {SPLITS}")
    if claim.rank_share is not None:
        if len(claim.arms) != 1 or claim.kind != "better":
            raise SpecError(f"{where}: a rank_share claim is `kind: better` on one arm")
    elif len(claim.arms) != 2 or not claim.metric:
        raise SpecError(f"{where}: a claim compares two arms on a metric (or one arm with rank_share)")
    if claim.kind == "non_inferior" and (claim.margin is None or claim.margin <= 0):
        raise SpecError(f"{where}: a non_inferior claim needs a margin > 0, declared before the run")
    if claim.kind != "non_inferior" and claim.margin is not None:
        raise SpecError(f"{where}: only non_inferior claims take a margin")
    if claim.kind == "cheaper" and claim.metric not in COSTS:
        raise SpecError(f"{where}: a cheaper claim's metric is one of {', '.join(COSTS)}")
    if claim.kind != "cheaper" and claim.metric in COSTS:
        raise SpecError(f"{where}: {claim.metric} is a cost: use kind cheaper")
    if claim.base is not None and not arms[claim.base].base:
        raise SpecError(f"{where}: base {claim.base!r} is not a base arm (`base: true`)")
    return claim


def only_parts(study: Study, names: list[str]) -> Study:
    """The study restricted to some of its parts: their searches, grids, arms and the claims whose
    arms all lie in them. The jobs are the full study's, so the full study finds their runs."""
    from dataclasses import replace

    unknown = sorted(set(names) - set(study.parts))
    if unknown:
        raise SpecError(f"--parts: {', '.join(unknown)} not in the study; its parts: {', '.join(study.parts)}")
    keep = set(names)
    arms = {n: a for n, a in study.arms.items() if a.part in keep}
    return replace(
        study,
        parts={n: p for n, p in study.parts.items() if n in keep},
        search=replace(study.search, trials=tuple(t for t in study.search.trials if t.part in keep)),
        grids=tuple(g for g in study.grids if g.part in keep),
        arms=arms,
        claims=tuple(c for c in study.claims if all(a in arms for a in c.arms) and (c.base is None or c.base in arms)),
    )
