"""`model=hub`: any hub model by its id; architecture and dtype from its own config.json (local
cache offline) or from the suite's model file for that id; offline and uncached, a clear error."""
from __future__ import annotations

import json

import pytest
import torch

from bench import models
from bench.config import ConfigError, resolved, validate
from bench.run import prepare
from tests.conftest import compose

GEMMA2 = {"model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"], "hidden_size": 48,
          "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
          "head_dim": 16, "vocab_size": 1000, "dtype": "bfloat16", "tie_word_embeddings": True,
          "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 1}


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A local hub cache holding only the config.json of `someorg/tiny-gemma2` (the layout
    huggingface_hub writes), with the hub disabled."""
    import huggingface_hub.constants

    repo = tmp_path / "models--someorg--tiny-gemma2"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(GEMMA2))
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
    cfg = hub("model.hub_id=someorg/tiny-gemma2", "model.init=random", "model.tokenizer=gpt2-offline",
              "model.adapter_targets=all-linear")
    models.check_available(cfg.model)
    model, _, info = models.load(cfg.model, fit_vocab=False)
    assert info["architecture"] == "gemma2" and info["architecture_from"] == "config.json of someorg/tiny-gemma2"
    assert info["dtype"] == "bfloat16" and next(model.parameters()).dtype == torch.bfloat16  # dtype=auto
    # 2 layers x (q 48->64, k/v 48->32, o 64->48, gate/up 48->96, down 96->48), tied embeddings
    linear = 2 * (48 * 64 + 2 * 48 * 32 + 64 * 48 + 3 * 48 * 96)
    norms = 2 * 4 * 48 + 48
    assert info["total_params"] == 1000 * 48 + linear + norms


def test_random_init_of_a_known_hub_id_uses_the_shipped_architecture(hub_cache):
    cfg = hub("model.hub_id=Qwen/Qwen3-8B-Base", "model.init=random", "model.tokenizer=gpt2-offline")
    models.check_available(cfg.model)
    model, _, info = models.load(cfg.model, device="meta", fit_vocab=False)
    assert info["architecture_from"] == "conf/model/qwen3-8b.yaml" and info["dtype"] == "bfloat16"
    assert round(info["total_params"] / 1e9, 1) == 8.2


@pytest.mark.parametrize("init", ["pretrained", "random"])
def test_uncached_hub_model_fails_before_training(hub_cache, init):
    cfg = hub("model.hub_id=someorg/not-cached", f"model.init={init}", "model.tokenizer=gpt2-offline")
    with pytest.raises(ConfigError, match="could not load 'someorg/not-cached'.*model.init=random"):
        prepare(cfg)
