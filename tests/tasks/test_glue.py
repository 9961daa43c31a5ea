"""GLUE tasks on fixture data injected in place of the hub loader: inputs, labels, heads, metrics,
MNLI's two validation splits, the held-out slice, and the offline error."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bench import items
from bench.config import ConfigError
from bench.models.tokenizers import TOKENIZERS
from tasks import glue
from tasks.glue import SUBSETS, Glue
from tests.conftest import compose
from tests.helpers.glue import fixture_records


@pytest.fixture(scope="module")
def bert_tok():
    return TOKENIZERS["bert-uncased-offline"]()[0]


@pytest.fixture(scope="module")
def gpt2_tok():
    tok = TOKENIZERS["gpt2-offline"]()[0]
    tok.pad_token = tok.eos_token
    return tok


@pytest.fixture
def hub(monkeypatch):
    """Replace the hub loader; `hub.data[(subset, split)] = records` sets what it returns."""
    data: dict = {}
    calls: list = []

    def fake(subset, split, revision=None):
        calls.append((subset, split, revision))
        if (subset, split) not in data:
            raise ConfigError(f"fixture has no {subset}/{split}")
        return data[(subset, split)], {"fingerprint": "fixture"}

    monkeypatch.setattr(glue, "load_hub_rows", fake)
    return SimpleNamespace(data=data, calls=calls)


class KeywordModel(torch.nn.Module):
    """Predicts from the words it sees: the output for class c counts the token `keywords[c]`.
    With one keyword it is a regressor whose output is that count."""

    def __init__(self, keyword_ids: list[int]):
        super().__init__()
        self.keyword_ids = keyword_ids
        self.unused = torch.nn.Parameter(torch.zeros(1))  # gives the model a device

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        counts = [((input_ids == k) & (attention_mask == 1)).sum(1).float() for k in self.keyword_ids]
        return SimpleNamespace(logits=torch.stack(counts, 1) + self.unused)


def eval_cfg(limit=None, batch_size=3):
    return SimpleNamespace(limit=limit, batch_size=batch_size)


def test_table_covers_the_eight_glue_tasks_with_their_metrics():
    assert set(SUBSETS) == {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte"}
    primary = {name: s.spec.primary for name, s in SUBSETS.items()}
    assert primary == {
        "cola": "matthews_correlation",
        "sst2": "accuracy",
        "mrpc": "accuracy",
        "qqp": "accuracy",
        "stsb": "pearson",
        "mnli": "accuracy",
        "qnli": "accuracy",
        "rte": "accuracy",
    }
    assert "f1" in SUBSETS["mrpc"].spec.metrics and "f1" in SUBSETS["qqp"].spec.metrics
    assert "spearman" in SUBSETS["stsb"].spec.metrics
    assert SUBSETS["stsb"].spec.num_labels == 1 and SUBSETS["mnli"].spec.num_labels == 3
    assert [s for s, _ in SUBSETS["mnli"].eval_splits] == ["validation_matched", "validation_mismatched"]


def test_unknown_subset_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="cola, sst2, mrpc"):
        Glue(name="glue_wnli", subset="wnli")


@pytest.mark.parametrize("subset", sorted(SUBSETS))
def test_rows_become_model_inputs_with_their_label(subset, hub, bert_tok):
    hub.data[(subset, "train")] = fixture_records(subset)
    task = Glue(name=f"glue_{subset}", subset=subset)
    examples, info = task.train_examples(bert_tok, max_length=64)
    spec = SUBSETS[subset].spec
    assert len(examples) == 6 and info["rows"] == 6 and len(info["rows_sha256"]) == 64
    assert info["source"] == "hub:nyu-mll/glue" and info["config"] == subset and info["split"] == "train"
    for record, ex in zip(fixture_records(subset), examples):
        text = bert_tok.decode(ex["input_ids"])
        assert text.startswith("[CLS]") and text.endswith("[SEP]")
        for f in spec.fields:
            assert record[f].lower() in text
        assert ex["labels"] == [record["label"]]
        if len(spec.fields) == 2:  # the model's own pair template: a [SEP] b [SEP], b with token type 1
            assert text.count("[SEP]") == 2 and set(ex["token_type_ids"]) == {0, 1}
            second = [i for i, t in zip(ex["input_ids"], ex["token_type_ids"]) if t == 1]
            assert bert_tok.decode(second) == f"{record[spec.fields[1]].lower()} [SEP]"
        else:
            assert set(ex["token_type_ids"]) == {0}
    batch = task.collate(examples, bert_tok)
    assert batch["labels"].shape == (6, 1)
    assert batch["labels"].dtype == (torch.float32 if spec.regression else torch.long)
    head = task.model_head()
    assert head["num_labels"] == spec.num_labels
    assert head["problem_type"] == ("regression" if subset == "stsb" else "single_label_classification")


def test_pairs_for_a_decoder_tokenizer_name_their_fields_and_truncate_both(hub, gpt2_tok):
    hub.data[("rte", "train")] = [
        {"sentence1": "The cat sat.", "sentence2": "A cat sat.", "label": 0},
        {"sentence1": "word " * 200, "sentence2": "other " * 200, "label": 1},
    ]
    examples, _ = Glue(name="glue_rte", subset="rte").train_examples(gpt2_tok, max_length=32)
    assert gpt2_tok.decode(examples[0]["input_ids"]) == "sentence1: The cat sat.\nsentence2: A cat sat."
    long_one = gpt2_tok.decode(examples[1]["input_ids"])
    assert len(examples[1]["input_ids"]) == 32
    assert long_one.startswith("sentence1: word") and "\nsentence2: other" in long_one


def test_hidden_test_labels_are_skipped_and_counted(hub, bert_tok):
    records = fixture_records("sst2")
    records[2]["label"] = -1
    hub.data[("sst2", "validation")] = records
    (split,) = Glue(name="glue_sst2", subset="sst2").eval_splits()
    assert len(split.rows) == 5 and split.info["rows_unlabelled_skipped"] == 1


def test_missing_column_says_which_columns_exist(hub):
    hub.data[("qnli", "train")] = [{"question": "q", "text": "t", "label": 0}]
    with pytest.raises(RuntimeError, match="no column"):
        Glue(name="glue_qnli", subset="qnli").train_split()


def test_mnli_reports_matched_and_mismatched(hub, bert_tok, tmp_path):
    words = ["yes", "maybe", "no"]  # one WordPiece token each
    ids = bert_tok.convert_tokens_to_ids(words)
    assert bert_tok.unk_token_id not in ids

    def records(labels, said):  # the premise says a class word; the keyword model predicts that class
        return [
            {"premise": f"the answer is {words[s]}", "hypothesis": "fixed", "label": lab}
            for lab, s in zip(labels, said)
        ]

    hub.data[("mnli", "validation_matched")] = records([0, 1, 2, 0], [0, 1, 2, 2])  # 3 of 4 right
    hub.data[("mnli", "validation_mismatched")] = records([2, 1, 0], [2, 1, 0])  # all right
    hub.data[("mnli", "train")] = records([0, 1], [0, 1])
    task = Glue(name="glue_mnli", subset="mnli")
    result = task.evaluate(KeywordModel(ids), bert_tok, eval_cfg(), tmp_path)
    assert result["primary"] == "accuracy_matched"
    assert result["accuracy_matched"] == pytest.approx(0.75) and result["accuracy_mismatched"] == 1.0
    assert result["n"] == 7 and "accuracy" not in result
    assert set(result["data"]["splits"]) == {"validation_matched", "validation_mismatched"}
    lines = [json.loads(x) for x in (tmp_path / "predictions_validation_matched.jsonl").read_text().splitlines()]
    assert [x["prediction"] for x in lines] == [0, 1, 2, 2] and [x["label"] for x in lines] == [0, 1, 2, 0]
    assert (tmp_path / "predictions_validation_mismatched.jsonl").exists()
    # items: the primary split's in items.jsonl, the other's in its own folder, each with its suffixed aggregates
    assert result["items"]["file"] == "items.jsonl" and result["items"]["split"] == "validation_matched"
    (other,) = result["items_other_splits"]
    assert other["file"] == "validation_mismatched/items.jsonl" and other["n"] == 3
    assert result["items"]["metrics"]["correct"]["aggregate"] == "accuracy_matched"
    assert other["metrics"]["logloss"]["aggregate"] == "log_loss_mismatched"
    matched = items.read(tmp_path / "items.jsonl")
    right, wrong = math.log(math.e + 2) - 1, math.log(math.e + 2)  # logits: 1 for the word said, 0 for the others
    assert [r["correct"] for r in matched] == [1, 1, 1, 0]
    assert [r["logloss"] for r in matched] == pytest.approx([right, right, right, wrong], rel=1e-12)
    assert [r["p_gold"] for r in matched] == pytest.approx([math.exp(-x) for x in (right, right, right, wrong)])
    assert result["log_loss_matched"] == pytest.approx((3 * right + wrong) / 4, rel=1e-12)
    assert result["log_loss_mismatched"] == pytest.approx(right, rel=1e-12)
    assert len(items.read(tmp_path / other["file"])) == 3


def test_stsb_scores_the_raw_output_as_a_regression(hub, bert_tok, tmp_path):
    good = bert_tok.convert_tokens_to_ids("good")
    counts = [0, 1, 2, 3, 4]
    labels = [0.2, 1.5, 1.9, 3.6, 4.4]
    hub.data[("stsb", "validation")] = [
        {"sentence1": "x " + "good " * c, "sentence2": "y", "label": lab} for c, lab in zip(counts, labels)
    ]
    result = Glue(name="glue_stsb", subset="stsb").evaluate(KeywordModel([good]), bert_tok, eval_cfg(), tmp_path)
    assert result["primary"] == "pearson"
    assert result["pearson"] == pytest.approx(np.corrcoef(counts, labels)[0, 1])
    assert result["spearman"] == pytest.approx(1.0)  # same order
    preds = [json.loads(x)["prediction"] for x in (tmp_path / "predictions_validation.jsonl").read_text().splitlines()]
    assert preds == [float(c) for c in counts]
    rows = items.read(tmp_path / "items.jsonl")
    assert (
        set(result["items"]["metrics"]) == {"sq_error"} and result["items"]["metrics"]["sq_error"]["aggregate"] == "mse"
    )
    assert [(r["prediction"], r["label"]) for r in rows] == list(zip(map(float, counts), labels))
    assert [r["sq_error"] for r in rows] == pytest.approx([(c - lab) ** 2 for c, lab in zip(counts, labels)])
    assert result["mse"] == pytest.approx(sum((c - lab) ** 2 for c, lab in zip(counts, labels)) / 5)


def test_cola_with_one_class_predicted_scores_zero_mcc(hub, bert_tok, tmp_path):
    hub.data[("cola", "validation")] = fixture_records("cola")
    unused = bert_tok.convert_tokens_to_ids(["zebra", "giraffe"])  # never in the text: always class 0
    result = Glue(name="glue_cola", subset="cola").evaluate(KeywordModel(unused), bert_tok, eval_cfg(), tmp_path)
    assert result["matthews_correlation"] == 0.0 and result["accuracy"] == 0.5


def test_eval_limit_takes_the_first_rows_and_batches_keep_their_order(hub, bert_tok, tmp_path):
    words = ["no", "yes"]
    ids = bert_tok.convert_tokens_to_ids(words)
    lengths = [9, 1, 5, 3, 7, 2, 8]  # batches group similar lengths; outputs must return to row order
    said = [1, 0, 0, 1, 1, 0, 1]
    hub.data[("qnli", "validation")] = [
        {"question": "q " * n + words[s], "sentence": "s", "label": s} for n, s in zip(lengths, said)
    ]
    task = Glue(name="glue_qnli", subset="qnli")
    result = task.evaluate(KeywordModel(ids), bert_tok, eval_cfg(limit=6, batch_size=4), tmp_path)
    assert result["n"] == 6 and result["accuracy"] == 1.0
    rows = [json.loads(x) for x in (tmp_path / "predictions_validation.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in rows] == said[:6]


def test_heldout_slice_is_fixed_disjoint_and_scored(hub, bert_tok, tmp_path):
    hub.data[("sst2", "train")] = fixture_records("sst2", n=20)
    hub.data[("sst2", "validation")] = fixture_records("sst2", n=4)
    task = Glue(name="glue_sst2", subset="sst2", heldout_rows=5)
    train, held = task.split_train()
    assert len(train.rows) == 15 and len(held.rows) == 5
    assert not {tuple(r["text"]) for r in train.rows} & {tuple(r["text"]) for r in held.rows}
    # the slice depends on the rows' content, not on their order
    hub.data[("sst2", "train")] = list(reversed(fixture_records("sst2", n=20)))
    _, held_again = Glue(name="glue_sst2", subset="sst2", heldout_rows=5).split_train()
    assert sorted(map(str, held_again.rows)) == sorted(map(str, held.rows))
    examples, info = task.train_examples(bert_tok, 64)
    assert len(examples) == 15 and info["heldout_rows"] == 5
    result = task.evaluate(
        KeywordModel(bert_tok.convert_tokens_to_ids(["zebra", "giraffe"])), bert_tok, eval_cfg(), tmp_path
    )
    assert result["n"] == 4 and result["heldout"]["n"] == 5 and "accuracy" in result["heldout"]
    assert (tmp_path / "predictions_heldout.jsonl").exists()
    record = result["heldout"]["items"]
    assert record["file"] == "heldout/items.jsonl" and record["split"] == "heldout" and record["n"] == 5
    held_items = items.read(tmp_path / "heldout" / "items.jsonl")
    # ids hash the rows' content: the same whatever order the training rows came in
    assert sorted(r["id"] for r in held_items) == sorted(
        items.unique_ids({"text": r["text"], "label": r["label"]} for r in held.rows)
    )
    with pytest.raises(ConfigError, match="leaves no training rows"):
        Glue(name="glue_sst2", subset="sst2", heldout_rows=20).split_train()


def test_glue_loads_a_sequence_classification_head_on_an_encoder_and_a_decoder(hub):
    from bench.models import loading

    for model, kind in (("tiny-bert", "encoder"), ("tiny-llama", "causal_lm")):
        cfg = compose(f"model={model}")
        assert cfg.model.kind == kind
        net, tok, info = loading.load(cfg.model, head=Glue(name="glue_mnli", subset="mnli").model_head())
        assert type(net).__name__.endswith("ForSequenceClassification") and net.config.num_labels == 3
        assert info["head"]["num_labels"] == 3
        assert net.config.pad_token_id == tok.pad_token_id  # a decoder finds its last token with it


def test_offline_hub_fails_early_and_names_the_offline_tasks(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    glue.load_hub_rows.cache_clear()
    task = Glue(name="glue_rte", subset="rte")
    cfg = compose("model=tiny-bert", "task=glue_rte")
    with pytest.raises(ConfigError) as err:
        task.check(cfg)
    message = str(err.value)
    assert "nyu-mll/glue" in message and "HF_DATASETS_OFFLINE" in message
    assert "task=movie_review_sentiment" in message and "task=boolq" in message
