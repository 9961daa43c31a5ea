"""Model loading: random init from the config, offline tokenizers, clear errors for the hub."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from bench import assets
from bench.config import ConfigError
from bench.models import loading
from tests.conftest import compose


def test_tiny_llama_builds_from_its_architecture():
    cfg = compose("model=tiny-llama")
    model, tok, info = loading.load(cfg.model)
    assert info["init"] == "random" and info["architecture"] == "llama"
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert model.config.vocab_size == len(tok) == 50257  # taken from the tokenizer
    assert tok.pad_token is not None and tok.padding_side == "right"
    assert info["total_params"] == sum(p.numel() for p in model.parameters())


def test_random_init_is_seeded():
    cfg = compose("model=tiny-llama")
    torch.manual_seed(3)
    a = loading.load(cfg.model)[0].model.layers[0].self_attn.q_proj.weight
    torch.manual_seed(3)
    b = loading.load(cfg.model)[0].model.layers[0].self_attn.q_proj.weight
    torch.testing.assert_close(a, b)


def test_exact_shape_of_a_big_model_without_download():
    """llama2-7b's architecture, scaled down in depth/width only to fit a test, keeps its fields."""
    cfg = compose("model=llama2-7b", "model.init=random", "model.tokenizer=gpt2-offline", "model.dtype=float32")
    mcfg = OmegaConf.to_container(cfg.model)
    mcfg["arch"].update(
        hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4
    )
    model, tok, info = loading.load(OmegaConf.create(mcfg))
    # the GPT-2 tokenizer has more tokens than Llama-2's 32000: the change is recorded
    assert info["vocab_size_overridden"] == {
        "architecture": 32000,
        "used": 50257,
        "why": "the tokenizer has more tokens than the architecture",
    }
    assert model.config.rope_parameters["rope_theta"] == 10000.0
    assert model.config.max_position_embeddings == 4096 and model.config.num_key_value_heads == 4


def test_unreachable_hub_model_explains_the_offline_options():
    cfg = compose("model=qwen2.5-0.5b", "model.dtype=float32")
    with pytest.raises(ConfigError) as err:
        loading.load(cfg.model)
    message = str(err.value)
    assert "Qwen/Qwen2.5-0.5B" in message and "model.init=random" in message


def test_unknown_tokenizer_lists_the_known_ones():
    cfg = compose("model=tiny-llama", "model.tokenizer=bpe-9000")
    with pytest.raises(ConfigError, match="gpt2-offline"):
        loading.load(cfg.model)


def test_missing_asset_package_says_how_to_install():
    with pytest.raises(ConfigError, match="make install"):
        assets.package_file("no-such-package-xyz", "data/file")


@pytest.mark.slow
def test_smollm2_converts_once_and_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    cfg = compose("model=smollm2-135m")
    model, tok, info = loading.load(cfg.model)
    assert info["file_sha256"].startswith("b179c952")
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert len(list((tmp_path / "models").iterdir())) == 1
    again, _, info2 = loading.load(cfg.model)  # from the cache now
    torch.testing.assert_close(again.model.layers[3].mlp.up_proj.weight, model.model.layers[3].mlp.up_proj.weight)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    out = again.generate(ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tok.decode(out[0][ids.shape[1] :])
