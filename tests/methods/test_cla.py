"""cLA specifics: the layer adds s B on the first r input columns (A = [I_r | 0]), written out
densely here; the export's A is that identity block. Count and column support: test_beyond_lora.py."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers.adapters import applied, assert_column_layer_adds


def test_layer_output_adds_s_b_on_the_first_r_columns():
    method, _ = applied("cla")
    assert method.scale == 2.0 and len(method.layers) == 4
    for layer in method.layers.values():
        assert_column_layer_adds(layer, [(torch.arange(4), layer.lora_B)], 2.0)


def test_export_a_is_the_identity_on_the_first_r_columns(tmp_path):
    from safetensors.torch import load_file

    method, model = applied("cla")
    method.export(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["lora_alpha"] / config["r"] == 2.0
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    for name, layer in method.layers.items():
        want_a = torch.eye(4, layer.in_features)
        assert torch.equal(tensors[f"base_model.model.{name}.lora_A.weight"], want_a)
        assert torch.equal(tensors[f"base_model.model.{name}.lora_B.weight"], layer.lora_B.detach())


def test_report_gives_the_column_sparsity():
    method, model = applied("cla")
    report = method.report(model)
    assert report["nonzero_columns_total"] == 4 * 4 and report["input_columns_total"] == 4 * 32
    assert report["column_sparsity"] == pytest.approx(1 - 16 / 128)
