"""Adapter target presets (`model.adapter_targets=all-linear | attention | mlp`), resolved from the
module tree: checked against PEFT's own all-linear, hand-listed layer names and hand-computed counts."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

from bench.config import ConfigError, validate
from bench.run import build
from methods import peft_common
from tests.conftest import compose
from tests.helpers.tiny import tiny_llama


def meta_model(model_type: str, cls=AutoModelForCausalLM, **arch):
    with torch.device("meta"):
        return cls.from_config(AutoConfig.for_model(model_type, vocab_size=100, pad_token_id=0, bos_token_id=1,
                                                    eos_token_id=2, **arch))


SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
MODELS = {
    "llama": lambda: meta_model("llama", num_key_value_heads=2, **SMALL),
    "phi3": lambda: meta_model("phi3", num_key_value_heads=4, **SMALL),
    "gemma2": lambda: meta_model("gemma2", num_key_value_heads=2, head_dim=8, **SMALL),
    "bert": lambda: meta_model("bert", AutoModelForSequenceClassification, **SMALL),
    "deberta-v2": lambda: meta_model("deberta-v2", AutoModelForSequenceClassification, relative_attention=True,
                                     pos_att_type=["p2c", "c2p"], share_att_key=True, **SMALL),
}


@pytest.mark.parametrize("family", MODELS)
def test_all_linear_is_peft_all_linear(family):
    from peft import LoraConfig
    from peft.tuners.tuners_utils import _maybe_include_all_linear_layers

    model = MODELS[family]()
    theirs = _maybe_include_all_linear_layers(
        LoraConfig(target_modules="all-linear", task_type=peft_common.task_type(model)), model).target_modules
    assert set(peft_common.target_linears(model, "all-linear")) == set(theirs)


def test_roberta_head_is_left_out_whole():
    """RoBERTa's head holds two linears of its own; it trains in full, so all-linear leaves it out
    (PEFT's all-linear would put LoRA inside it too)."""
    model = meta_model("roberta", AutoModelForSequenceClassification, **SMALL)
    chosen = peft_common.target_linears(model, "all-linear")
    assert len(chosen) == 2 * 6 and not any(n.startswith("classifier") for n in chosen)


@pytest.mark.parametrize("family, attention, mlp", [
    ("llama", ["q_proj", "k_proj", "v_proj", "o_proj"], ["gate_proj", "up_proj", "down_proj"]),
    ("gemma2", ["q_proj", "k_proj", "v_proj", "o_proj"], ["gate_proj", "up_proj", "down_proj"]),
    ("phi3", ["o_proj", "qkv_proj"], ["gate_up_proj", "down_proj"]),
])
def test_decoder_presets_name_the_projections(family, attention, mlp):
    model = MODELS[family]()
    assert peft_common.resolve_targets(model, "attention") == attention
    assert peft_common.resolve_targets(model, "mlp") == mlp
    assert set(peft_common.resolve_targets(model, "all-linear")) == set(attention + mlp)
    assert peft_common.resolve_targets(model, ["attention", "mlp"]) == attention + mlp


@pytest.mark.parametrize("family, pooler", [("bert", "bert.pooler.dense"), ("deberta-v2", "pooler.dense")])
def test_encoder_presets_split_the_shared_dense_name(family, pooler):
    """`dense` names both the attention output and the MLP output in BERT-style encoders: the
    presets resolve to full names so that each selects only its own layers."""
    model = MODELS[family]()
    attention = peft_common.target_linears(model, "attention")
    mlp = peft_common.target_linears(model, "mlp")
    everything = peft_common.target_linears(model, "all-linear")
    assert len(attention) == 2 * 4 and len(mlp) == 2 * 2
    assert all(".attention." in n for n in attention) and not any(".attention." in n for n in mlp)
    assert set(everything) - set(attention) - set(mlp) == {pooler}
    assert not any(n.startswith("classifier") for n in everything)


def test_lora_all_linear_count_and_peft_targets():
    """Tiny Llama (hidden 32, MLP 64, 4 heads, 2 KV heads of width 8): per layer q 32->32,
    k/v 32->16, o 32->32, gate/up 32->64, down 64->32; r=4."""
    per_layer = 4 * ((32 + 32) + 2 * (32 + 16) + (32 + 32) + 2 * (32 + 64) + (64 + 32))
    method = build(compose("model=tiny-llama", "method=lora", "method.r=4", "model.adapter_targets=all-linear").method)
    base = tiny_llama()
    assert method.expected_trainable_params(base) == 2 * per_layer
    model = method.apply(base)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 2 * per_layer
    assert set(model.peft_config["default"].target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj",
                                                                "gate_proj", "up_proj", "down_proj"}


def test_column_method_exports_the_layers_a_preset_chose(tmp_path):
    method = build(compose("model=tiny-llama", "method=cla", "method.r=4", "model.adapter_targets=mlp").method)
    base = tiny_llama()
    expected = method.expected_trainable_params(base)
    model = method.apply(base)
    assert expected == sum(p.numel() for p in model.parameters() if p.requires_grad) == 2 * 4 * (64 + 64 + 32)
    method.export(model, tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())["target_modules"]
    assert sorted(saved) == sorted(f"model.layers.{i}.mlp.{p}" for i in range(2)
                                   for p in ("gate_proj", "up_proj", "down_proj"))


@pytest.mark.parametrize("value", ["everything", "[]"])
def test_unknown_model_targets_are_a_config_error(value):
    with pytest.raises(ConfigError, match="all-linear"):
        validate(compose("model=tiny-llama", f"model.adapter_targets={value}"))


def test_unknown_method_preset_is_a_config_error():
    with pytest.raises(ConfigError, match="all-linear, attention, mlp"):
        build(compose("model=tiny-llama", "method=lora", "method.target_modules=linear").method)
