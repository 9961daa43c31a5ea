"""Per-item evaluation results: one `items.jsonl` per scored split, the raw material of every paired
comparison (bench/paired.py, `python -m bench.compare`).

A line is one scored item: `id` (a content hash of the item, the same in every run, model and
method that scores it), `split`, and the task's per-item quantities. Which quantities a file holds,
what kind they are and which aggregate of the evaluation they average to is declared by the task
with `ItemMetric`s and recorded in result.json beside the aggregates (`metrics.<eval>.items`), so a
reader of the run directory needs no task code to interpret the file.

Aggregation: a metric without `per` averages to its aggregate with equal weight per item; one with
`per` (a summed negative log-likelihood, say) is the ratio sum(value) / sum(per), a mean per token.

Not scored: a task may score a metric on some items of a split only (GSM8K's exact match with
`task.generate_limit`: the problems it did not generate for). The field is then `null` on the items
it was not scored on, the aggregate is taken over the items that hold a value, and the file's record
says how many do (`scored`: {metric: count}, for the metrics that lack a value somewhere). A paired
comparison (bench/compare.py) uses the items that every run of both arms scored.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

from bench.provenance import canonical_json

FILE = "items.jsonl"
KINDS = ("binary", "continuous")
ID_HEX = 16  # 64 bits of sha256: no collision among any benchmark's items


@dataclass(frozen=True)
class ItemMetric:
    """One per-item quantity of an items file."""

    name: str  # the field of each line
    kind: str  # binary (0/1: McNemar applies) | continuous
    higher_is_better: bool
    # the key of the evaluation's result that this field averages to (None: reported per item only)
    aggregate: Optional[str] = None
    # a count field: the aggregate is sum(name) / sum(per), e.g. a per-token NLL from summed NLLs
    per: Optional[str] = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"ItemMetric {self.name!r}: kind {self.kind!r} is not one of {KINDS}")


def item_id(content) -> str:
    """The id of an item: a hash of its content (prompt, reference, label), never of its position,
    so that the same item has the same id in every run that scores it."""
    return hashlib.sha256(canonical_json(content)).hexdigest()[:ID_HEX]


def unique_ids(contents: Iterable) -> list[str]:
    """Ids for the items of one split, in order. A split may repeat an item's content (ASDiv repeats
    some problems): the n-th repeat gets the suffix `~n`, which is the same in every run because the
    split's order is."""
    seen: dict[str, int] = {}
    out = []
    for content in contents:
        base = item_id(content)
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base}~{seen[base]}")
    return out


def write(out_dir: Path, rows: Sequence[dict], metrics: Sequence[ItemMetric], split: str, subdir: str = "") -> dict:
    """Write `<out_dir>/<subdir>/items.jsonl` and return its record for result.json: the file
    (relative to `out_dir`, the evaluation directory), the item count, the split and the metrics'
    declarations."""
    names = {m.name for m in metrics} | {m.per for m in metrics if m.per}
    for i, row in enumerate(rows):
        missing = sorted(names - row.keys())
        if "id" not in row or missing:
            raise ValueError(f"item {i} of split {split!r} lacks {['id', *missing] if 'id' not in row else missing}")
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"split {split!r}: item ids repeat; make them unique with bench.items.unique_ids")
    folder = Path(out_dir) / subdir
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / FILE, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({"id": row["id"], "split": split, **{k: v for k, v in row.items() if k != "id"}}) + "\n")
    file = f"{subdir.strip('/')}/{FILE}" if subdir else FILE
    record = {"file": file, "n": len(rows), "split": split, "metrics": {m.name: _declaration(m) for m in metrics}}
    counts = {m.name: sum(r[m.name] is not None for r in rows) for m in metrics}
    partial = {name: count for name, count in counts.items() if count < len(rows)}
    if partial:
        record["scored"] = partial
    return record


def _declaration(metric: ItemMetric) -> dict:
    return {k: v for k, v in asdict(metric).items() if k != "name"}


def read(path: Path) -> list[dict]:
    """The rows of an items file; `items.jsonl.gz` beside a missing `items.jsonl` is read in its
    place (committed studies keep their items compressed: bench/study/pack.py)."""
    path = Path(path)
    if not path.exists() and path.with_name(path.name + ".gz").exists():
        with gzip.open(path.with_name(path.name + ".gz"), "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def scored(rows: Sequence[dict], name: str) -> list[dict]:
    """The items that hold a value of `name` (not null: see "Not scored" above)."""
    return [r for r in rows if r.get(name) is not None]


def aggregate(rows: Sequence[dict], name: str, per: Optional[str] = None) -> float:
    """The aggregate a metric's items average to, over the items that scored it: the mean, or
    sum(name) / sum(per)."""
    rows = scored(rows, name)
    if not rows:
        return math.nan
    total = math.fsum(float(r[name]) for r in rows)
    if per is None:
        return total / len(rows)
    count = math.fsum(float(r[per]) for r in rows)
    return total / count if count else math.nan


def aggregates(rows: Sequence[dict], metrics: Sequence[ItemMetric]) -> dict[str, Optional[float]]:
    """{aggregate key: value} of every metric that declares one, computed from the items, so that a
    task's result holds exactly what its items average to; None where there is nothing to average
    (no items, none that scored the metric, or a `per` count of 0)."""
    out = {}
    for m in metrics:
        if m.aggregate is not None:
            value = aggregate(rows, m.name, m.per)
            out[m.aggregate] = None if math.isnan(value) else value
    return out


def records(evaluation: dict) -> list[tuple[str, dict]]:
    """(path inside the evaluation directory, record) of every items file an evaluation's result
    declares: its own (primary split), its other reported splits' and its held-out split's."""
    out = []
    if isinstance(evaluation.get("items"), dict):
        out.append((evaluation["items"]["file"], evaluation["items"]))
    for record in evaluation.get("items_other_splits") or []:
        if isinstance(record, dict):
            out.append((record["file"], record))
    held = evaluation.get("heldout")
    if isinstance(held, dict) and isinstance(held.get("items"), dict):
        out.append((held["items"]["file"], held["items"]))
    return out
