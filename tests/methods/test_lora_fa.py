"""LoRA-FA (methods/lora_fa.py): A frozen at its random start, B trained, and B's gradient
preconditioned before the optimizer step. Checked against a float64 hand computation of the
preconditioner and against the dense weight gradient it is meant to project: s g_B' A must equal
g_W A^T (A A^T)^-1 A, the full fine-tuning gradient of the adapted weight on A's row space."""

from __future__ import annotations

import numpy as np
import torch

from methods.lora_fa import DELTA
from tests.helpers.methods import method_from_config
from tests.helpers.tiny import fixed_batch, tiny_llama

LAYER = "model.layers.0.self_attn.q_proj"


def tuned(seed: int = 0):
    """LoRA-FA on a tiny Llama with B moved off zero (as after some steps) and one backward done."""
    method = method_from_config("lora_fa", "method.r=4", "method.alpha=8", "method.dropout=0.0")
    model = method.apply(tiny_llama(seed=seed))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in method.layers.values():
            layer.lora_B["default"].weight.copy_(0.05 * torch.randn(layer.lora_B["default"].weight.shape, generator=g))
    model.train()
    model(**fixed_batch()).loss.backward()
    return method, model


def test_only_b_trains_and_a_keeps_its_random_start():
    method, model = tuned()
    layer = method.layers[LAYER]
    assert not layer.lora_A["default"].weight.requires_grad and layer.lora_A["default"].weight.abs().sum() > 0
    assert layer.lora_B["default"].weight.requires_grad
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == method.expected_trainable_params(tiny_llama()) == 2 * 4 * (32 + 16)  # r (d_out_q + d_out_v)


def test_the_preconditioned_gradient_is_the_hand_formula():
    method, model = tuned()
    layer = method.layers[LAYER]
    a = layer.lora_A["default"].weight.detach().double().numpy()
    raw = layer.lora_B["default"].weight.grad.detach().double().numpy().copy()
    method.before_optimizer_step(model, 1, optimizer=None)
    s = 8 / 4
    want = raw @ np.linalg.pinv(a @ a.T + DELTA * np.eye(a.shape[0])) / s**2
    got = layer.lora_B["default"].weight.grad.double().numpy()
    assert np.allclose(got, want, rtol=1e-4, atol=1e-9)


def test_the_step_direction_on_delta_w_is_the_dense_gradient_projected_on_as_row_space():
    method, model = tuned()
    layer = method.layers[LAYER]
    a = layer.lora_A["default"].weight.detach().double()
    s = layer.scaling["default"]
    # the dense reference: the same forward with W = W0 + s B A as one trainable matrix
    dense = tiny_llama(seed=0)
    w = dense.get_submodule(LAYER).weight
    with torch.no_grad():
        for name, lora_layer in method.layers.items():
            delta = (
                lora_layer.scaling["default"]
                * lora_layer.lora_B["default"].weight
                @ lora_layer.lora_A["default"].weight
            )
            dense.get_submodule(name).weight.add_(delta)
    dense.train()
    dense(**fixed_batch()).loss.backward()
    g_w = w.grad.double()
    method.before_optimizer_step(model, 1, optimizer=None)
    g_b = layer.lora_B["default"].weight.grad.double()
    projected = g_w @ a.T @ torch.linalg.inv(a @ a.T) @ a
    assert torch.allclose(s * g_b @ a, projected, rtol=1e-3, atol=1e-7)
    assert not torch.allclose(projected, g_w, atol=1e-6)  # the projection is not the identity (r < d_in)
