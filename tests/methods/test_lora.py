"""LoRA specifics; the properties every method shares are in test_matrix.py."""

from __future__ import annotations

import pytest

from bench.config import ConfigError
from methods.lora import LoRA
from tests.helpers.tiny import tiny_llama


def make(**kw) -> LoRA:
    return LoRA(
        name="lora", lr=1e-2, **{"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], **kw}
    )


def test_trainable_count_matches_closed_form():
    model = tiny_llama()
    method = make(target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    expected = method.expected_trainable_params(model)
    # by hand: per layer q,o are 32x32, k,v are 32x16 (2 kv heads of 8); r * (d_in + d_out)
    assert expected == 2 * 4 * ((32 + 32) * 2 + (32 + 16) * 2)
    peft_model = method.apply(model)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable == expected
    assert all("lora_" in n for n, p in peft_model.named_parameters() if p.requires_grad)


def test_report_names_rank_and_modules():
    method = make()
    model = method.apply(tiny_llama())
    report = method.report(model)
    assert report["r"] == 4 and report["adapted_modules"] == 4 and report["scaling"] == 2.0


@pytest.mark.parametrize(
    "kw,fragment",
    [
        ({"r": 0}, "method.r=0"),
        ({"alpha": -1.0}, "method.alpha"),
        ({"dropout": 1.0}, "method.dropout"),
        ({"target_modules": []}, "target_modules"),
        ({"r": "8"}, "method.r='8'"),
    ],
)
def test_bad_hyperparameters_are_rejected(kw, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.").replace("(", r"\(")):
        make(**kw)


def test_unknown_target_names_the_real_layers():
    with pytest.raises(ValueError, match="q_proj"):
        make(target_modules=["query"]).apply(tiny_llama())
