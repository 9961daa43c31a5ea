"""The FLOP counter and the MFU arithmetic against hand-computed values."""

from __future__ import annotations

import pytest

from bench import flops
from tests.helpers.methods import method_from_config
from tests.helpers.tiny import tiny_llama

# tiny_llama: hidden 32, intermediate 64, 2 layers, 4 heads (head_dim 8), 2 kv heads, vocab 128
H, I, L, KV, V = 32, 64, 2, 16, 128
LINEAR = L * (H * H + H * KV + H * KV + H * H + 3 * H * I) + H * V  # q k v o, gate up down; lm_head


def test_frozen_base_skips_the_weight_gradient():
    model = tiny_llama()
    for p in model.parameters():
        p.requires_grad_(False)
    counts = flops.linear_flops_per_token(model)
    assert counts == {"forward": 2 * LINEAR, "backward_input": 2 * LINEAR, "backward_weight": 0}


def test_full_fine_tuning_pays_six_flops_per_linear_parameter():
    counts = flops.linear_flops_per_token(tiny_llama())
    assert sum(counts.values()) == 6 * LINEAR


def test_lora_adds_its_factors_and_their_gradients():
    model = method_from_config("lora", "method.r=4").apply(tiny_llama())
    adapter = L * 4 * ((H + H) + (H + KV))  # q: 32 -> 32, v: 32 -> 16, r (d_in + d_out) each
    counts = flops.linear_flops_per_token(model)
    assert counts == {
        "forward": 2 * (LINEAR + adapter),
        "backward_input": 2 * (LINEAR + adapter),
        "backward_weight": 2 * adapter,
    }


def test_asym_lora_skips_the_frozen_a_gradient():
    model = method_from_config("asym_lora", "method.r=4").apply(tiny_llama())
    counts = flops.linear_flops_per_token(model)
    assert counts["backward_weight"] == 2 * L * 4 * (H + KV)  # B only: r * d_out


def test_cla_counts_only_r_columns():
    model = method_from_config("cla", "method.r=4").apply(tiny_llama())
    adapter = L * 4 * (H + KV)  # r * d_out per matrix
    counts = flops.linear_flops_per_token(model)
    assert counts == {
        "forward": 2 * (LINEAR + adapter),
        "backward_input": 2 * (LINEAR + adapter),
        "backward_weight": 2 * adapter,
    }


def test_attention_and_totals_per_step():
    model = tiny_llama()
    for p in model.parameters():
        p.requires_grad_(False)
    seq, tokens = 16, 64
    attention = 12 * seq * 4 * 8 * L  # 3 x (QK^T + AV: 4 S h d_h) per layer
    assert flops.attention_flops_per_token(model.config, seq) == attention
    step = flops.training_flops(model, tokens=tokens, seq_len=seq)
    assert step["total"] == tokens * (4 * LINEAR + attention)
    assert step["attention"] == tokens * attention


@pytest.mark.parametrize(
    "name,key",
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA L4", "L4"),
        ("Tesla T4", None),
    ],
)
def test_device_names_map_to_the_peak_table(name, key):
    assert flops.device_key(name) == key


def test_mfu_arithmetic():
    peak = flops.peak_flops("NVIDIA H100 80GB HBM3", "bf16")
    assert peak == pytest.approx(989.4e12)
    # 7B-ish LoRA step: 6.0e15 FLOPs in 20 s on one H100 = 300 TFLOP/s = 30.3 %
    assert flops.mfu(6.0e15, 20.0, peak) == pytest.approx(300e12 / 989.4e12)
    assert flops.mfu(6.0e15, 20.0, peak, devices=2) == pytest.approx(150e12 / 989.4e12)
    assert flops.mfu(1.0, 1.0, None) is None
    assert flops.peak_flops("Tesla T4", "bf16") is None and flops.peak_flops("NVIDIA H200", "int8") is None


def test_counter_accepts_a_model_on_the_meta_device():
    from tests.helpers.tiny import meta_llama

    model = meta_llama(  # a 7B shape costs no memory
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
    )
    for p in model.parameters():
        p.requires_grad_(False)
    linear_params = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008) + 4096 * 32000
    assert flops.linear_flops_per_token(model)["forward"] == 2 * linear_params
