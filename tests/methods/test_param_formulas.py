"""Closed-form parameter counts against PEFT's published MetaMathQA benchmark counts
(Llama-3.2-3B, q_proj 3072x3072 and v_proj 1024x3072 in 28 layers; methods-spec §0)."""

from __future__ import annotations

import pytest

from tests.helpers.methods import method_from_config
from tests.helpers.tiny import meta_llama


@pytest.fixture(scope="module")
def llama32_3b():
    return meta_llama(
        hidden_size=3072,
        intermediate_size=8192,
        num_hidden_layers=28,
        num_attention_heads=24,
        num_key_value_heads=8,
        vocab_size=128256,
    )


@pytest.mark.parametrize(
    "name,overrides,count",
    [
        ("lora", ("method.r=32",), 9_175_040),
        ("lora_plus", ("method.r=32",), 9_175_040),
        ("pissa", ("method.r=32",), 9_175_040),
        ("dora", ("method.r=32",), 9_289_728),
        ("adalora", ("method.init_r=64", "method.target_r=32"), 18_353_664),
        ("vera", ("method.r=256",), 129_024),
        ("c3a", ("method.block_size=64",), 5_505_024),
        # results/lora--llama-3.2-3B-rank32-lorafa.json: num_trainable_params (B only, r * d_out)
        ("lora_fa", ("method.r=32", "method.alpha=64"), 3_670_016),
    ],
)
def test_formula_matches_peft_benchmark_count(llama32_3b, name, overrides, count):
    method = method_from_config(name, "method.target_modules=[q_proj,v_proj]", *overrides)
    assert method.expected_trainable_params(llama32_3b) == count


def test_c3a_matching_picks_the_papers_block_size_for_a_square_matrix():
    model = meta_llama(
        hidden_size=4096,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=16,
    )
    method = method_from_config("c3a", "method.target_modules=[q_proj]", "method.match_lora_rank=16")
    method.expected_trainable_params(model)
    assert method.block(model) == 128  # b = d / (2 r) for 4096 x 4096 at r = 16 (methods-spec §18)
