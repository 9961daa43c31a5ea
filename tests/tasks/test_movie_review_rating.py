"""Movie-review rating (tasks/movie_review_rating.py): regression on the sentiment task's sentences,
split row for row as movie_review_sentiment is, raw rating targets, and mse/Pearson/Spearman
recomputed by hand from the items."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from scipy import stats

from bench import items
from bench.config import ConfigError
from bench.models import loading
from bench.run import build
from tasks import sdist_assets
from tasks.movie_review_rating import MovieReviewRating
from tasks.movie_review_sentiment import MovieReviewSentiment, read_ratings
from tests.conftest import compose


def _texts(split) -> list[list[str]]:
    return [r["text"] for r in split.rows]


def test_targets_are_the_raw_mean_ratings_and_their_range():
    train, validation = MovieReviewRating(name="movie_review_rating")._splits()
    labels = [r["label"] for r in train.rows + validation.rows]
    assert len(labels) == 10605 - 37 and all(isinstance(x, float) for x in labels)
    assert min(labels) == -3.875 and max(labels) == 3.94117647059  # about -3.9 .. +3.9 on the -4..4 scale
    assert 0 not in labels  # the 37 sentences rated exactly 0 are dropped, as in the sentiment task
    ratings = read_ratings(sdist_assets.installed("vader-movie-reviews"))
    assert sorted(labels) == sorted(r for _, r in ratings if r != 0)
    target = train.info["target"]  # recorded in result.json: not standardised
    assert target["transform"].startswith("none") and abs(target["mean"]) < 0.05 and 1.85 < target["std"] < 2.0
    assert train.info["name"] == "movie_review_rating" and "not STS-B" in train.info["note"]


@pytest.mark.parametrize("overrides", [{}, {"heldout_rows": 40, "train_limit": 60}, {"validation_percent": 10}])
def test_every_split_holds_the_sentiment_tasks_sentences(overrides):
    rating = MovieReviewRating(name="movie_review_rating", **overrides)
    sentiment = MovieReviewSentiment(name="movie_review_sentiment", **overrides)
    (rating_val,), (sentiment_val,) = rating.eval_splits(), sentiment.eval_splits()
    assert _texts(rating_val) == _texts(sentiment_val)
    (rating_train, rating_held), (sentiment_train, sentiment_held) = rating.split_train(), sentiment.split_train()
    assert _texts(rating_train) == _texts(sentiment_train)
    assert (rating_held is None) == (sentiment_held is None)
    if rating_held is not None:
        assert _texts(rating_held) == _texts(sentiment_held) and len(rating_held.rows) == 40
        assert "movie_review_sentiment holds out" in rating_held.info["selection"]
        assert not {t[0] for t in _texts(rating_held)} & {t[0] for t in _texts(rating_train)}
    # the labels are the ratings whose sign the sentiment task uses
    for a, b in zip(rating_train.rows + rating_val.rows, sentiment_train.rows + sentiment_val.rows):
        assert int(a["label"] > 0) == b["label"]


def test_regression_head_and_bad_config_values():
    task = build(compose("task=movie_review_rating").task)
    assert task.name == "movie_review_rating" and type(task) is not MovieReviewSentiment  # its own task, not the labels
    assert task.model_head() == {"type": "sequence_classification", "num_labels": 1, "problem_type": "regression"}
    with pytest.raises(ConfigError, match=r"task.validation_percent=0 is out of range; valid: 1 <= x <= 50"):
        build(compose("task=movie_review_rating", "task.validation_percent=0").task)
    with pytest.raises(ConfigError, match="task.heldout_rows=0 is out of range"):
        build(compose("task=movie_review_rating", "task.heldout_rows=0").task)
    with pytest.raises(ConfigError, match="leaves no training rows"):
        MovieReviewRating(name="movie_review_rating", heldout_rows=8501).split_train()


def test_aggregates_are_recomputed_by_hand_from_the_items(tmp_path):
    cfg = compose("model=tiny-bert", "task=movie_review_rating", "task.heldout_rows=5", "train.max_length=32")
    task = build(cfg.task)
    task.check(cfg)
    torch.manual_seed(0)
    model, tokenizer, _ = loading.load(cfg.model, head=task.model_head())
    model.eval()
    result = task.evaluate(model, tokenizer, SimpleNamespace(limit=12, batch_size=4), tmp_path)
    assert result["primary"] == "pearson" and result["n"] == 12
    rows = items.read(tmp_path / "items.jsonl")
    labels, predictions = [r["label"] for r in rows], [r["prediction"] for r in rows]
    assert all(r["sq_error"] == pytest.approx((r["prediction"] - r["label"]) ** 2) for r in rows)
    assert result["mse"] == pytest.approx(sum((p - y) ** 2 for p, y in zip(predictions, labels)) / 12)
    assert result["pearson"] == pytest.approx(stats.pearsonr(labels, predictions).statistic)
    assert result["spearman"] == pytest.approx(stats.spearmanr(labels, predictions).statistic)
    # the predictions are the head's raw output: the rating scale, nothing undone
    written = [json.loads(x) for x in (tmp_path / "predictions_validation.jsonl").read_text().splitlines()]
    assert [w["outputs"][0] for w in written] == predictions
    held = items.read(tmp_path / "heldout" / "items.jsonl")
    assert len(held) == result["heldout"]["n"] == 5
    assert math.isclose(result["heldout"]["mse"], sum(r["sq_error"] for r in held) / 5, rel_tol=1e-12)
    data = result["data"]["splits"]
    assert data["validation"]["name"] == "movie_review_rating" and data["validation"]["target"]["transform"]
    assert data["heldout"]["rows_evaluated"] == 5
