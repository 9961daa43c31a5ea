"""Movie-review rating: regression on the mean human rating of real Rotten Tomatoes sentences. Offline.

The sentences and ratings of task=movie_review_sentiment (tasks/movie_review_sentiment.py: VADER's
ground truth, `movieReviewSnippets_GroundTruth.txt` from the vaderSentiment==3.3.2 sdist, sha256
checked), with the mean rating of 15 to 27 raters as the target instead of its sign: a
single-sentence regression, an offline stand-in for the kind of task STS-B is (one real output,
MSE loss). It is not STS-B (not a sentence pair, not a similarity) and not SST.

Same split as the sentiment task, row for row: the 37 sentences rated exactly 0 are dropped there,
so they are here too; validation = sha256(sentence) mod 100 < `validation_percent`; rows ordered by
sha256(sentence); `heldout_rows` holds out the very sentences the sentiment task holds out (its
content hash is taken of the sentence with the sentiment label, `heldout_order`), and `train_limit`
then takes the same first N. Building the splits checks that their sentences equal the sentiment
task's, in order. A result here can so be set beside one on movie_review_sentiment.

Targets are used raw, in rating units (observed -3.875 .. +3.941): not standardised. The training
split's mean is 0.00 and its standard deviation 1.93 (recorded per split, `target`), so centring
would change nothing and scaling would only shrink the loss by a constant (3.7x), which AdamW's
update is nearly blind to; raw targets keep predictions, `sq_error` and `mse` in rating units, and
STS-B is trained on its raw 0-5 scores the same way. The bimodal distribution (few sentences near
0) means a constant prediction scores mse = variance = 3.7 and Pearson 0.

Metrics: Pearson (primary, as STS-B's), Spearman, and `mse`, the mean of the per-item `sq_error` in
items.jsonl, which paired comparisons (bench.compare, the study) read.
"""

from __future__ import annotations

import functools
import hashlib
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from bench.provenance import rows_sha256
from tasks import movie_review_sentiment, sdist_assets
from tasks.classification import Spec, Split, stable_order

ASSET = movie_review_sentiment.ASSET
SPEC = Spec(("sentence",), 1, ("pearson", "spearman"), "pearson")
TARGET_TRANSFORM = "none: the raw mean rating (rating units), neither centred nor scaled"


def target_stats(rows: Sequence[dict]) -> dict:
    """Range, mean and population standard deviation of a split's targets."""
    labels = [r["label"] for r in rows]
    return {
        "min": min(labels),
        "max": max(labels),
        "mean": statistics.fmean(labels),
        "std": statistics.pstdev(labels),
        "transform": TARGET_TRANSFORM,
    }


@functools.lru_cache(maxsize=4)
def splits(path: str, validation_percent: int) -> tuple[Split, Split]:
    """(train, validation) of the checked file at `path`, the sentiment task's split with ratings as
    labels (read once per process)."""
    asset = sdist_assets.ASSETS[ASSET]
    ratings = movie_review_sentiment.read_ratings(Path(path))
    rated = [(s, r) for s, r in ratings if r != 0]
    rated.sort(key=lambda pair: hashlib.sha256(pair[0].encode("utf-8")).hexdigest())  # stable: ties keep file order
    source = {
        "name": "movie_review_rating",
        "source": f"sdist:{asset.package}=={asset.version}",
        "file": "/".join(asset.members),
        "file_sha256": asset.sha256,
        "file_rows": len(ratings),
        "rows_dropped_zero_rating": len(ratings) - len(rated),
        "label": "the mean human rating of the sentence (scale -4..4), a regression target",
        "split_rule": f"validation if sha256(sentence) mod 100 < {validation_percent}; rows ordered by "
        f"sha256(sentence); the sentences of task=movie_review_sentiment in every split",
        "note": "Rotten Tomatoes sentences with VADER's human ratings; a regression stand-in, not STS-B or SST",
    }
    sentiment = movie_review_sentiment.splits(path, validation_percent)
    found = {}
    for (name, wanted), same in zip((("train", False), ("validation", True)), sentiment):
        rows = [
            {"text": [s], "label": r}
            for s, r in rated
            if movie_review_sentiment.in_validation(s, validation_percent) == wanted
        ]
        if [r["text"] for r in rows] != [r["text"] for r in same.rows]:
            raise RuntimeError(f"movie_review_rating's {name} split is not movie_review_sentiment's")
        found[name] = Split(
            name,
            rows,
            {
                **source,
                "split": name,
                "rows": len(rows),
                "rows_sha256": rows_sha256(rows),
                "target": target_stats(rows),
            },
        )
    return found["train"], found["validation"]


@dataclass(kw_only=True)
class MovieReviewRating(movie_review_sentiment.MovieReviewSentiment):
    """The sentiment task's sentences, splits and keys, with the mean rating as the target."""

    def spec(self) -> Spec:
        return SPEC

    def _splits(self) -> tuple[Split, Split]:
        return splits(str(sdist_assets.installed(ASSET)), self.validation_percent)

    def heldout_order(self, rows: Sequence[dict]) -> list[int]:
        """The sentiment task's order: the hash of each row as movie_review_sentiment writes it (the
        sentence, label 1 if the rating is above 0), so both hold out the same sentences."""
        return stable_order([{"text": r["text"], "label": int(r["label"] > 0)} for r in rows])

    def split_train(self) -> tuple[Split, Split | None]:
        train, heldout = super().split_train()
        train.info["target"] = target_stats(train.rows)
        if heldout is not None:
            heldout.info["target"] = target_stats(heldout.rows)
            heldout.info["selection"] = (
                "the rows task=movie_review_sentiment holds out: the first heldout_rows by sha256 of "
                "(sentence, label 1 if the rating > 0)"
            )
        return train, heldout
