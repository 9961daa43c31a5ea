"""methods/base/lora_surgery.py against dense references computed by hand: resizing a PEFT LoRA layer
keeps s * B A for the kept components, new components change nothing, an optimizer follows the
new tensors with its moments sliced, and the export patterns give PEFT back the trained scaling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from methods.base import lora_surgery


def lora_layer(r=4, d_in=6, d_out=5, alpha=8.0, use_rslora=False, seed=0):
    """A PEFT LoRA layer around one linear, with B random (PEFT starts it at zero) so every
    component counts."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = nn.Sequential()
    model.add_module("proj", nn.Linear(d_in, d_out))
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=["proj"], use_rslora=use_rslora)
    peft_model = get_peft_model(model, config)
    layer = peft_model.base_model.model.proj
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()
    return peft_model, layer


def factors(layer):
    return layer.lora_A["default"].weight.detach().clone(), layer.lora_B["default"].weight.detach().clone()


def test_keeping_components_keeps_their_product_and_the_layer_output():
    _, layer = lora_layer()
    a, b = factors(layer)
    keep = [3, 0, 2]
    x = torch.randn(7, 6)
    want_delta = sum(torch.outer(b[:, j], a[j]) for j in keep)  # sum of the kept rank-1 terms
    want_out = layer.base_layer(x) + layer.scaling["default"] * x @ want_delta.T
    lora_surgery.resize(layer, keep)
    new_a, new_b = factors(layer)
    assert new_a.shape == (3, 6) and new_b.shape == (5, 3) and lora_surgery.rank_of(layer) == 3
    torch.testing.assert_close(new_b @ new_a, want_delta)
    torch.testing.assert_close(new_a, a[keep])  # in the order given
    with torch.no_grad():
        torch.testing.assert_close(layer(x), want_out)
    assert layer.lora_A["default"].out_features == layer.lora_B["default"].in_features == 3


def test_appended_components_start_with_b_zero_so_the_update_is_unchanged():
    _, layer = lora_layer(r=2)
    a, b = factors(layer)
    fresh = torch.randn(3, 6)
    lora_surgery.resize(layer, [0, 1], fresh_a=fresh)
    new_a, new_b = factors(layer)
    assert lora_surgery.rank_of(layer) == 5
    torch.testing.assert_close(new_a[2:], fresh)
    assert float(new_b[:, 2:].abs().max()) == 0.0
    torch.testing.assert_close(new_b @ new_a, b @ a)


def test_an_optimizer_follows_the_new_tensors_with_its_moments_sliced():
    _, layer = lora_layer()
    params = [layer.lora_A["default"].weight, layer.lora_B["default"].weight]
    optimizer = torch.optim.AdamW(params, lr=0.1)
    layer(torch.randn(7, 6)).pow(2).sum().backward()
    optimizer.step()
    old_a, old_b = params
    moments_a, moments_b = (dict(optimizer.state[p]) for p in params)
    keep = torch.tensor([1, 3])
    lora_surgery.resize(layer, keep, optimizer=optimizer)
    new_a, new_b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    assert optimizer.param_groups[0]["params"] == [new_a, new_b]
    assert old_a not in optimizer.state and old_b not in optimizer.state
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(optimizer.state[new_a][key], moments_a[key][keep])
        torch.testing.assert_close(optimizer.state[new_b][key], moments_b[key][:, keep])
    assert optimizer.state[new_a]["step"] == moments_a["step"]
    optimizer.step()  # the sliced state fits the sliced tensors


def test_state_that_is_not_per_element_is_dropped():
    param = nn.Parameter(torch.zeros(4, 3))
    assert lora_surgery.per_element({"exp_avg": torch.zeros(4, 3), "step": torch.tensor(2.0)}, param)
    assert not lora_surgery.per_element({"exp_avg_sq_row": torch.zeros(4)}, param)  # Adafactor's factors


def test_appending_cannot_carry_optimizer_state():
    _, layer = lora_layer()
    optimizer = torch.optim.AdamW([layer.lora_A["default"].weight], lr=0.1)
    with pytest.raises(ValueError, match="rebuild the optimizer"):
        lora_surgery.resize(layer, [0], fresh_a=torch.zeros(1, 6), optimizer=optimizer)


@pytest.mark.parametrize("use_rslora", [False, True])
def test_export_patterns_reload_with_each_modules_rank_and_training_scaling(tmp_path, use_rslora):
    from peft import PeftModel

    peft_model, layer = lora_layer(r=4, alpha=8.0, use_rslora=use_rslora)
    trained_scaling = layer.scaling["default"]
    lora_surgery.resize(layer, [0, 2])
    x = torch.randn(3, 6)
    with torch.no_grad():
        want = peft_model(x)
    ranks = lora_surgery.ranks({"proj": layer})
    assert ranks == {"proj": 2}
    lora_surgery.set_export_patterns(peft_model.peft_config["default"], ranks, {"proj": trained_scaling}, use_rslora)
    peft_model.save_pretrained(str(tmp_path))
    base = nn.Sequential()
    base.add_module("proj", nn.Linear(6, 5))
    base.load_state_dict(
        {
            k.replace("base_layer.", ""): v
            for k, v in peft_model.base_model.model.state_dict().items()
            if "lora_" not in k
        }
    )
    loaded = PeftModel.from_pretrained(base, str(tmp_path))
    reloaded = loaded.base_model.model.proj
    assert lora_surgery.rank_of(reloaded) == 2
    assert reloaded.scaling["default"] == pytest.approx(trained_scaling)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), want)
