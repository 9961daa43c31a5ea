"""Task conformance matrix (issue #18): every conf/task/*.yaml, composed through Hydra, on the tiny
models of its kind. Padding never counts in the loss, `loss_tokens` counts what the loss averages,
provenance is recorded, `evaluate` returns primary/n/data, and every evaluated split has an
items.jsonl whose items average to the declared aggregates, with ids that do not depend on the model."""

from __future__ import annotations

import math
import re

import pytest
import torch
from omegaconf import OmegaConf

from bench import items
from bench.models import loading
from bench.run import build
from tasks import glue
from tasks.glue import SUBSETS
from tests.conftest import CONF, compose
from tests.helpers.glue import fixture_records

TASKS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))

# Offline sources (the configs' defaults need the hub), and sizes that keep each case at seconds.
OFFLINE = {
    "gsm8k": ("task.train_source=asdiv", "task.test_source=package"),
    "asdiv": ("task.asdiv_test=4",),
    "humaneval": ("task.train_source=stdlib", "eval.allow_code_execution=true"),
}
# A held-out split where a task has one cheaply: its evaluation writes heldout/items.jsonl too.
HELDOUT = {
    "asdiv": ("task.asdiv_heldout=2",),
    "movie_review_sentiment": ("task.heldout_rows=3",),
    "movie_review_rating": ("task.heldout_rows=3",),
    "piqa": ("task.heldout_rows=3",),
}
# GLUE ships in no package: the hub loader is replaced by the fixture rows of tests/helpers/glue.py.
GLUE = {name for name in TASKS if name.startswith("glue_")}
# Cases that cannot run here, with why (none may be skipped silently).
NOT_RUN: dict[str, str] = {}


TINY_MODEL = {"causal_lm": "tiny-llama", "encoder": "tiny-bert"}


def cases():
    """(task, model) for every model kind the task accepts."""
    for name in TASKS:
        # HumanEval's evaluate (2 problems, 4 tokens, code run in the sandbox) takes ~3 s: not slow
        marks = [pytest.mark.skip(reason=NOT_RUN[name])] if name in NOT_RUN else []
        task = build(compose(f"task={name}", *OFFLINE.get(name, ())).task)
        for kind in task.model_kinds:
            yield pytest.param((name, TINY_MODEL[kind]), marks=marks, id=f"{name}-{TINY_MODEL[kind]}")


def varied_glue_rows(subset, split, revision=None):
    """tests/helpers/glue.py's fixture rows, made of different lengths so that a batch has padding."""
    rows = fixture_records(subset, 8)
    for i, row in enumerate(rows):
        for f in SUBSETS[subset].spec.fields:
            row[f] += " and more" * i
    return rows, {"fingerprint": "fixture"}


@pytest.fixture
def setup(request, monkeypatch):
    name, model_name = request.param
    if name in GLUE:
        monkeypatch.setattr(glue, "load_hub_rows", varied_glue_rows)
    cfg = compose(
        f"task={name}",
        f"model={model_name}",
        "task.train_limit=6",
        "eval.limit=2",
        "eval.max_gen_toks=4",
        "eval.batch_size=2",
        *OFFLINE.get(name, ()),
        *HELDOUT.get(name, ()),
    )
    task = build(cfg.task)
    task.check(cfg)
    model, tokenizer, _ = loading.load(cfg.model, head=task.model_head())
    return cfg, task, model.eval(), tokenizer


def _has_checksum(info) -> bool:
    if isinstance(info, dict):
        return any(
            ("sha256" in k and isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v)) or _has_checksum(v)
            for k, v in info.items()
        )
    return False


@pytest.mark.parametrize("setup", list(cases()), indirect=True)
def test_padding_never_counts_and_loss_tokens_is_what_the_loss_averages(setup):
    cfg, task, model, tokenizer = setup
    examples, info = task.train_examples(tokenizer, cfg.train.max_length)
    assert examples and info
    assert ("source" in info or "name" in info) and any(k in info for k in ("rows", "examples", "size"))
    assert _has_checksum(info), info
    chosen = sorted(examples[:6], key=lambda e: len(e["input_ids"]))[-4:]
    lengths = [len(e["input_ids"]) for e in chosen]
    assert len(set(lengths)) > 1, "the matrix needs examples of different lengths to exercise padding"
    batch = task.collate(chosen, tokenizer)
    classification = task.model_head() is not None
    for i, n in enumerate(lengths):
        assert batch["attention_mask"][i, :n].eq(1).all() and batch["attention_mask"][i, n:].eq(0).all()
        if not classification:  # a classifier's labels are one per example: no padding positions
            assert batch["labels"][i, n:].eq(-100).all()
    if classification:
        assert batch["labels"].shape[0] == len(chosen) and batch["labels"].numel() == len(chosen)
    # what the loss averages: causal LM, the shifted targets that are not -100; a classifier, one per example
    if classification:
        weights = [1] * len(chosen)
    else:
        weights = [sum(t != -100 for t in e["labels"][1:]) for e in chosen]
    assert int(task.loss_tokens(batch)) == sum(weights)
    with torch.no_grad():
        padded = model(**batch).loss
        alone = [model(**task.collate([e], tokenizer)).loss for e in chosen]
    expected = sum(w * loss for w, loss in zip(weights, alone)) / sum(weights)
    torch.testing.assert_close(padded, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("setup", list(cases()), indirect=True)
def test_evaluate_returns_primary_n_data_and_items_with_stable_ids(setup, tmp_path):
    cfg, task, model, tokenizer = setup
    task.train_examples(tokenizer, cfg.train.max_length)
    result = task.evaluate(model, tokenizer, cfg.eval, tmp_path / "a", seed=0)
    assert result["primary"] in result, sorted(result)
    assert isinstance(result[result["primary"]], (int, float))
    assert result["n"] > 0
    assert isinstance(result["data"], dict) and result["data"]
    ids = check_items(result, tmp_path / "a", heldout=_has_heldout(cfg))
    # the same items scored by other weights: the same ids, in the same order; items do not need
    # lm-eval's samples file
    with torch.no_grad():
        generator = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.5)
    again = task.evaluate(model, tokenizer, OmegaConf.merge(cfg.eval, {"log_samples": False}), tmp_path / "b", seed=1)
    assert check_items(again, tmp_path / "b", heldout=_has_heldout(cfg)) == ids
    assert not list((tmp_path / "b").rglob("samples.jsonl"))


def _has_heldout(cfg) -> bool:
    return cfg.task.name in HELDOUT


def check_items(result: dict, out_dir, heldout: bool) -> dict[str, list[str]]:
    """Every items file the result declares: one line per scored item, unique ids, each declared
    aggregate equal to the items' mean (or sum/sum with `per`). Returns {file: ids}."""
    records = items.records(result)
    files = [path for path, _ in records]
    assert files[0] == items.FILE and len(set(files)) == len(files)
    assert ("heldout/items.jsonl" in files) == heldout, files
    test_records = [result["items"], *result.get("items_other_splits", [])]
    assert sum(r["n"] for r in test_records) == result["n"]
    splits = result["data"].get("splits") or {}  # classification: rows evaluated per split
    ids = {}
    for path, record in records:
        owner = result["heldout"] if record["split"] == "heldout" else result
        rows = items.read(out_dir / path)
        assert len(rows) == record["n"] > 0
        if record["split"] in splits:
            assert record["n"] == splits[record["split"]]["rows_evaluated"]
        if record["split"] == "heldout":
            assert record["n"] == owner["n"]
        assert all(r["split"] == record["split"] for r in rows)
        ids[path] = [r["id"] for r in rows]
        assert len(set(ids[path])) == len(rows)
        assert record["metrics"], record
        for name, declared in record["metrics"].items():
            assert declared["kind"] in items.KINDS
            values = [r[name] for r in rows]
            if declared["kind"] == "binary":
                assert set(values) <= {0, 1}, (name, values)
            key, per = declared["aggregate"], declared["per"]
            if key is None:
                continue
            assert key in owner, (key, sorted(owner))
            if per is not None and sum(r[per] for r in rows) == 0:
                assert owner[key] is None
                continue
            assert math.isclose(owner[key], items.aggregate(rows, name, per), rel_tol=1e-9, abs_tol=1e-12), name
    return ids
