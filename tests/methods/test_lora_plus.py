"""LoRA+ specifics: B's learning rate is lr_ratio times A's, through the runner's optimizer.
The split into groups is checked in test_matrix.py; the count is LoRA's."""

from __future__ import annotations

import pytest
import torch

from bench.config import ConfigError
from bench.run import build
from bench.train import build_optimizer
from methods.base.peft_common import lora_layers
from tests.conftest import compose
from tests.helpers.methods import method_from_config
from tests.helpers.tiny import fixed_batch, tiny_llama


def test_first_adamw_step_moves_b_by_ratio_times_lr_and_a_not_at_all():
    """At step 1 B = 0, so A's gradient is 0, and AdamW's first step moves each B entry by
    lr_B * g / (|g| + eps), i.e. lr_B wherever |g| >> eps."""
    lr, ratio = 1e-3, 4.0
    cfg = compose("model=tiny-llama", "method=lora_plus", f"method.lr={lr}", f"method.lr_ratio={ratio}")
    method = build(cfg.method)
    model = method.apply(tiny_llama())
    layers = lora_layers(model)
    before = {
        n: (m.lora_A["default"].weight.detach().clone(), m.lora_B["default"].weight.detach().clone())
        for n, m in layers.items()
    }
    optimizer = build_optimizer(method, model, cfg.train)
    model(**fixed_batch()).loss.backward()
    optimizer.step()
    for name, layer in layers.items():
        a0, b0 = before[name]
        assert torch.equal(layer.lora_A["default"].weight, a0)
        step = (layer.lora_B["default"].weight.detach() - b0).abs()
        assert float(step.max()) <= ratio * lr * (1 + 1e-6)
        assert float(step.max()) > 0.99 * ratio * lr


def test_report_states_both_rates():
    method = method_from_config("lora_plus", "method.lr=2e-4", "method.lr_ratio=16")
    report = method.report(method.apply(tiny_llama()))
    assert report["lr_A"] == 2e-4 and report["lr_B"] == pytest.approx(3.2e-3) and report["lr_ratio"] == 16


@pytest.mark.parametrize("ratio", [0, -2])
def test_non_positive_ratio_is_refused(ratio):
    with pytest.raises(ConfigError, match=f"method.lr_ratio={ratio}(.0)? is out of range; valid: x > 0"):
        method_from_config("lora_plus", f"method.lr_ratio={ratio}")
