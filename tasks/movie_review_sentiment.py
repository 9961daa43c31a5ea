"""Movie-review sentiment: real Rotten Tomatoes sentences, binary labels from human ratings. Offline.

Source: VADER's ground truth (Hutto & Gilbert, ICWSM 2014), `movieReviewSnippets_GroundTruth.txt`,
which ships only in the vaderSentiment==3.3.2 sdist (MIT); `make install` extracts it
(tasks/sdist_assets.py) and its sha256 is checked before use. 10,605 sentence-level snippets of
Rotten Tomatoes reviews (Pang & Lee; the first is the first sentence of the rt-polarity data that
SST was built from), each with the mean rating of 15 to 27 human raters on -4..4. Label: 1 if the
mean is above 0, 0 if below; the 37 sentences rated exactly 0 are dropped (counted in the provenance).

This is NOT GLUE SST-2: same source of sentences, different labels (mean ratings of whole
sentences, not SST's parse-tree annotation) and a different split. There is no official split, so
validation is a fixed one: a sentence is in validation when sha256(sentence) mod 100 is below
`validation_percent` (independent of seed, file order and library versions; duplicates stay
together). Rows are ordered by that hash too (the file lists positive sentences first), so the
first N rows (train_limit, eval.limit) are a fair sample. Both splits are recorded with their
sha256. Metrics: accuracy (primary) and F1 of the positive class.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from bench.api import bounded
from bench.provenance import rows_sha256
from tasks import sdist_assets
from tasks.classification import ClassificationTask, Spec, Split

ASSET = "vader-movie-reviews"
SPEC = Spec(("sentence",), 2, ("accuracy", "f1"), "accuracy", ("negative", "positive"))


def read_ratings(path) -> list[tuple[str, float]]:
    """(sentence, mean rating) per line of `ID \\t mean rating \\t sentence` (UTF-8, CRLF)."""
    rows = []
    text = path.read_bytes().decode("utf-8").replace("\r\n", "\n")
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"{path.name} line {number}: expected 3 tab-separated fields, got {len(parts)}")
        rows.append((parts[2], float(parts[1])))
    return rows


def _digest(sentence: str) -> str:
    return hashlib.sha256(sentence.encode("utf-8")).hexdigest()


def in_validation(sentence: str, percent: int) -> bool:
    return int(_digest(sentence), 16) % 100 < percent


@functools.lru_cache(maxsize=4)
def splits(path: str, validation_percent: int) -> tuple[Split, Split]:
    """(train, validation) of the checked file at `path` (read once per process: training and every
    evaluation ask for them)."""
    asset = sdist_assets.ASSETS[ASSET]
    ratings = read_ratings(Path(path))
    rated = [(s, r) for s, r in ratings if r != 0]
    # the file lists positive sentences first: a fixed pseudo-random order keeps `train_limit` and
    # `eval.limit` (the first N rows) balanced
    rated.sort(key=lambda pair: _digest(pair[0]))
    source = {
        "name": "movie_review_sentiment",
        "source": f"sdist:{asset.package}=={asset.version}",
        "file": "/".join(asset.members),
        "file_sha256": asset.sha256,
        "file_rows": len(ratings),
        "rows_dropped_zero_rating": len(ratings) - len(rated),
        "label": "1 if the mean human rating > 0, else 0",
        "split_rule": f"validation if sha256(sentence) mod 100 < {validation_percent}; "
        f"rows ordered by sha256(sentence)",
        "note": "Rotten Tomatoes sentences with VADER's human ratings; not GLUE SST-2",
    }
    found = {}
    for name, wanted in (("train", False), ("validation", True)):
        rows = [{"text": [s], "label": int(r > 0)} for s, r in rated if in_validation(s, validation_percent) == wanted]
        found[name] = Split(name, rows, {**source, "split": name, "rows": len(rows), "rows_sha256": rows_sha256(rows)})
    return found["train"], found["validation"]


@dataclass(kw_only=True)
class MovieReviewSentiment(ClassificationTask):
    validation_percent: int = bounded(1, 50, default=20)  # share of sentences in the fixed validation split

    def spec(self) -> Spec:
        return SPEC

    def _splits(self) -> tuple[Split, Split]:
        return splits(str(sdist_assets.installed(ASSET)), self.validation_percent)

    def train_split(self) -> Split:
        return self._splits()[0]

    def eval_splits(self) -> list[Split]:
        return [self._splits()[1]]

    def check_data(self) -> None:
        sdist_assets.installed(ASSET)
