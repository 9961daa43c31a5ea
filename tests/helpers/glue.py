"""GLUE fixture rows, injected in place of the hub loader."""

from __future__ import annotations

from tasks.glue import SUBSETS


def fixture_records(subset: str, n: int = 6) -> list[dict]:
    """Rows with the hub's column names; labels cycle through the classes (or rise for STS-B)."""
    spec = SUBSETS[subset].spec
    rows = []
    for i in range(n):
        row = {f: f"{f} number {i} says something" for f in spec.fields}
        row["label"] = 0.8 * i if spec.regression else i % spec.num_labels
        row["idx"] = i
        rows.append(row)
    return rows
