"""Adapter target presets (`model.adapter_targets=all-linear | attention | mlp | auto`), resolved from the
module tree: checked against PEFT's own all-linear and default targets, hand-listed layer names and
hand-computed counts."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

from bench.config import ConfigError, validate
from bench.models.targets import auto_targets, resolve_targets, target_linears
from bench.run import build
from methods.base import peft_common
from tests.conftest import compose
from tests.helpers.tiny import LLAMA_LINEARS, tiny_llama


def meta_model(model_type: str, cls=AutoModelForCausalLM, device: str = "meta", **arch):
    with torch.device(device):
        return cls.from_config(
            AutoConfig.for_model(model_type, vocab_size=100, pad_token_id=0, bos_token_id=1, eos_token_id=2, **arch)
        )


SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
MODELS = {
    "llama": lambda **kw: meta_model("llama", num_key_value_heads=2, **SMALL, **kw),
    "phi3": lambda **kw: meta_model("phi3", num_key_value_heads=4, **SMALL, **kw),
    "gemma2": lambda **kw: meta_model("gemma2", num_key_value_heads=2, head_dim=8, **SMALL, **kw),
    "bert": lambda **kw: meta_model("bert", AutoModelForSequenceClassification, **SMALL, **kw),
    "deberta-v2": lambda **kw: meta_model(
        "deberta-v2",
        AutoModelForSequenceClassification,
        relative_attention=True,
        pos_att_type=["p2c", "c2p"],
        share_att_key=True,
        **SMALL,
        **kw,
    ),
}


@pytest.mark.parametrize("family", MODELS)
def test_all_linear_is_peft_all_linear(family):
    from peft import LoraConfig
    from peft.tuners.tuners_utils import _maybe_include_all_linear_layers

    model = MODELS[family]()
    theirs = _maybe_include_all_linear_layers(
        LoraConfig(target_modules="all-linear", task_type=peft_common.task_type(model)), model
    ).target_modules
    assert set(target_linears(model, "all-linear")) == set(theirs)


def test_roberta_head_is_left_out_whole():
    """RoBERTa's head holds two linears of its own; it trains in full, so all-linear leaves it out
    (PEFT's all-linear would put LoRA inside it too)."""
    model = meta_model("roberta", AutoModelForSequenceClassification, **SMALL)
    chosen = target_linears(model, "all-linear")
    assert len(chosen) == 2 * 6 and not any(n.startswith("classifier") for n in chosen)


@pytest.mark.parametrize(
    "family, attention, mlp",
    [
        ("llama", ["q_proj", "k_proj", "v_proj", "o_proj"], ["gate_proj", "up_proj", "down_proj"]),
        ("gemma2", ["q_proj", "k_proj", "v_proj", "o_proj"], ["gate_proj", "up_proj", "down_proj"]),
        ("phi3", ["o_proj", "qkv_proj"], ["gate_up_proj", "down_proj"]),
    ],
)
def test_decoder_presets_name_the_projections(family, attention, mlp):
    model = MODELS[family]()
    assert resolve_targets(model, "attention") == attention
    assert resolve_targets(model, "mlp") == mlp
    assert set(resolve_targets(model, "all-linear")) == set(attention + mlp)
    assert resolve_targets(model, ["attention", "mlp"]) == attention + mlp


@pytest.mark.parametrize("family, pooler", [("bert", "bert.pooler.dense"), ("deberta-v2", "pooler.dense")])
def test_encoder_presets_split_the_shared_dense_name(family, pooler):
    """`dense` names both the attention output and the MLP output in BERT-style encoders: the
    presets resolve to full names so that each selects only its own layers."""
    model = MODELS[family]()
    attention = target_linears(model, "attention")
    mlp = target_linears(model, "mlp")
    everything = target_linears(model, "all-linear")
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
    assert set(model.peft_config["default"].target_modules) == LLAMA_LINEARS


def test_column_method_exports_the_layers_a_preset_chose(tmp_path):
    method = build(compose("model=tiny-llama", "method=cla", "method.r=4", "model.adapter_targets=mlp").method)
    base = tiny_llama()
    expected = method.expected_trainable_params(base)
    model = method.apply(base)
    assert expected == sum(p.numel() for p in model.parameters() if p.requires_grad) == 2 * 4 * (64 + 64 + 32)
    method.export(model, tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())["target_modules"]
    assert sorted(saved) == sorted(
        f"model.layers.{i}.mlp.{p}" for i in range(2) for p in ("gate_proj", "up_proj", "down_proj")
    )


@pytest.mark.parametrize("value", ["everything", "[]"])
def test_unknown_model_targets_are_a_config_error(value):
    with pytest.raises(ConfigError, match="all-linear"):
        validate(compose("model=tiny-llama", f"model.adapter_targets={value}"))


def test_unknown_method_preset_is_a_config_error():
    with pytest.raises(ConfigError, match="all-linear, attention, mlp"):
        build(compose("model=tiny-llama", "method=lora", "method.target_modules=linear").method)


@pytest.mark.parametrize("family", ["llama", "gemma2", "bert", "deberta-v2"])
def test_auto_is_what_peft_adapts_when_given_no_targets(family):
    """`auto` = the layers PEFT itself wraps for LoraConfig(target_modules=None) (its per-model-type
    table), found by injecting PEFT's LoRA into the model."""
    from peft import LoraConfig, get_peft_model

    model = MODELS[family](device="cpu")
    ours = set(target_linears(model, "auto"))
    peft_model = get_peft_model(MODELS[family](device="cpu"), LoraConfig(r=2, task_type=peft_common.task_type(model)))
    assert ours == set(peft_common.lora_layers(peft_model)) and ours


def test_auto_on_a_type_peft_does_not_know_takes_the_fused_qkv():
    """PEFT 0.21.2 has no default targets for Phi-3 (it asks for target_modules); `auto` takes the
    attention's fused qkv_proj, the layer conf/model/phi3.5-mini.yaml names by hand."""
    from peft import LoraConfig, get_peft_model

    with pytest.raises(ValueError, match="specify `target_modules`"):
        get_peft_model(MODELS["phi3"](device="cpu"), LoraConfig(r=2, task_type="CAUSAL_LM"))
    targets, rule = auto_targets(MODELS["phi3"]())
    assert targets == list(compose("model=phi3.5-mini").model.adapter_targets) == ["qkv_proj"]
    assert "'phi3' is not in peft" in rule


def test_auto_lora_count_on_phi_is_the_hand_formula():
    """`model=hub` on Phi-3.5-mini (offline: the shipped arch) with its default targets: LoRA r=8 on
    the fused qkv_proj, 3072 -> 3 x 3072, in 32 layers."""
    from bench.models import loading

    cfg = compose(
        "model=hub",
        "size=3b",
        "model.hub_id=microsoft/Phi-3.5-mini-instruct",
        "model.init=random",
        "model.tokenizer=gpt2-offline",
        "method=lora",
        "method.r=8",
    )
    base, _, info = loading.load(cfg.model, device="meta", fit_vocab=False)
    assert info["adapter_targets_auto"]["targets"] == ["qkv_proj"]
    method = build(cfg.method)
    assert method.expected_trainable_params(base) == 32 * 8 * (3072 + 3 * 3072)
    model = method.apply(base)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 32 * 8 * (3072 + 3 * 3072)


def test_auto_without_a_known_attention_projection_is_a_config_error():
    """Mamba has no attention: PEFT's table does not list it and no query/value projection exists."""
    model = meta_model("mamba", hidden_size=32, num_hidden_layers=2, state_size=4)
    with pytest.raises(ConfigError, match="'mamba' is not in peft.*all-linear, attention, mlp"):
        resolve_targets(model, "auto")
