"""Dense references for adapted layers: a layer's output checked against x (W0 + delta)^T, the
factors of a LoRA layer, and the start values tests give them."""

from __future__ import annotations

import torch

from tests.helpers.methods import method_from_config, train_steps
from tests.helpers.tiny import fixed_batch, tiny_llama


def factors(layer) -> tuple[torch.Tensor, torch.Tensor]:
    return layer.lora_A["default"].weight, layer.lora_B["default"].weight


def randomise(*tensors: torch.Tensor, seed: int = 0) -> None:
    """Give factors that start at zero a value, so the update they carry is visible."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in tensors:
            t.copy_(torch.randn(t.shape, generator=g) * 0.1)


def assert_layer_adds(layer, delta: torch.Tensor, base=None) -> None:
    """layer(x) == x (W0 + delta)^T + bias, with W0 the frozen base weight, computed densely."""
    base = layer.get_base_layer() if base is None else base
    x = torch.randn(5, base.in_features, generator=torch.Generator().manual_seed(1))
    want = x @ (base.weight + delta).T + (0 if base.bias is None else base.bias)
    with torch.no_grad():
        got = layer.eval()(x)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def restore(method, model, state: dict, trained_model) -> None:
    """What a resume does: the method's state, then the checkpointed trainable tensors."""
    method.load_state_dict(model, state)
    trained = dict(trained_model.named_parameters())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(trained[name])


def snapshot(layers: dict) -> dict:
    return {name: tuple(f.detach().clone() for f in factors(layer)) for name, layer in layers.items()}


def assert_trains_one_factor(method_name: str, frozen: int, *overrides: str) -> None:
    """After a few steps factor `frozen` (0: A, 1: B) still holds its random start bit for bit,
    and the other has left its zero start."""
    method = method_from_config(method_name, "method.r=4", "method.lr=1e-2", *overrides)
    model = method.apply(tiny_llama())
    start = snapshot(method.layers)
    train_steps(method, model, fixed_batch(), steps=3)
    trained = 1 - frozen
    for name, layer in method.layers.items():
        now = factors(layer)
        assert not now[frozen].requires_grad and now[trained].requires_grad
        assert torch.equal(now[frozen], start[name][frozen]) and float(start[name][frozen].abs().max()) > 0
        assert float(start[name][trained].abs().max()) == 0 < float(now[trained].detach().abs().max())


def column_delta(layer, terms, scale: float) -> torch.Tensor:
    """Dense Delta W from (columns, B) terms, column by column, so overlapping windows add up."""
    delta = torch.zeros(layer.out_features, layer.in_features)
    for cols, b in terms:
        for k, c in enumerate(cols.tolist()):
            delta[:, c] += scale * b[:, k].detach()
    return delta


def assert_column_layer_adds(layer, terms, scale: float) -> None:
    assert_layer_adds(layer, column_delta(layer, terms, scale), base=layer)


def applied(name: str, *overrides: str):
    method = method_from_config(name, "method.r=4", "method.alpha=8", *overrides)
    model = method.apply(tiny_llama())
    for i, layer in enumerate(method.layers.values()):
        randomise(layer.lora_B, seed=i)
    return method, model
