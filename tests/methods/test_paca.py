"""PaCA specifics: the trained columns are W0's own, so weight decay pulls them towards zero (not
towards their start); the export is a scale-1 LoRA with A the selector and B = P - P0. Alpha's
reference parameterisation and the start P0 = W0[:, c]: test_beyond_lora.py."""

from __future__ import annotations

import json

import torch

from bench.run import build
from bench.train import build_optimizer
from tests.conftest import compose
from tests.helpers.adapters import applied, assert_layer_adds, column_delta
from tests.helpers.tiny import tiny_llama


def test_weight_decay_shrinks_the_trained_columns_towards_zero():
    lr, wd = 0.1, 0.5
    cfg = compose("model=tiny-llama", "method=paca", "method.r=4", f"method.lr={lr}", f"train.weight_decay={wd}")
    method = build(cfg.method)
    model = method.apply(tiny_llama())
    optimizer = build_optimizer(method, model, cfg.train)
    x = torch.randn(2, 32)
    sum((layer(x) * 0).sum() for layer in method.layers.values()).backward()  # zero gradients: decay alone
    optimizer.step()
    for layer in method.layers.values():
        w0_cols = layer.weight.detach()[:, layer.cols]
        assert_layer_adds(layer, column_delta(layer, [(layer.cols, -lr * wd * w0_cols)], 1.0), base=layer)


def test_export_is_a_scale_one_lora_of_the_columns_change(tmp_path):
    from safetensors.torch import load_file

    method, model = applied("paca", "method.alpha=null")  # lora_B := random: P moved away from P0
    method.export(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["lora_alpha"] == config["r"] == 4
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    for name, layer in method.layers.items():
        a = tensors[f"base_model.model.{name}.lora_A.weight"]
        b = tensors[f"base_model.model.{name}.lora_B.weight"]
        change = layer.lora_B.detach() - layer.weight.detach()[:, layer.cols]
        torch.testing.assert_close(b, change)
        assert torch.equal(a, torch.eye(layer.in_features)[layer.cols])
