"""The gathered-columns op under torch.compile and autocast (issue #16: compiled cLA on CUDA
trained nothing while eager trained). Proof at two levels: the op itself (opcheck: schema,
autograd, fake tensors, AOT dispatch), and the column methods on the tiny Llama, whose
per-parameter gradients must be the same compiled and eager, in float32 and under bf16 autocast."""

from __future__ import annotations

import pytest
import torch

from methods.base.gathered_columns import gathered_columns_linear, gathered_forward
from tests.helpers.methods import method_from_config
from tests.helpers.tiny import fixed_batch, tiny_llama


def op_args(dtype=torch.float64, merged=3, bias=True):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 12, generator=g, dtype=dtype, requires_grad=True)
    cols, merged_cols = torch.tensor([1, 4, 5, 11]), torch.tensor([0, 2, 7])[:merged]
    xc = x.detach().index_select(-1, cols).requires_grad_()
    xm = x.detach().index_select(-1, merged_cols).requires_grad_()
    weight = torch.randn(7, 12, generator=g, dtype=dtype)
    lora_b = torch.randn(7, 4, generator=g, dtype=dtype, requires_grad=True)
    return (
        x,
        xc,
        xm,
        weight,
        torch.randn(7, generator=g, dtype=dtype) if bias else None,
        lora_b,
        torch.randn(7, merged, generator=g, dtype=dtype),
        0.5,
    )


@pytest.mark.parametrize("merged,bias", [(3, True), (0, False)])
def test_opcheck(merged, bias):
    result = torch.library.opcheck(gathered_columns_linear, op_args(merged=merged, bias=bias))
    assert set(result.values()) == {"SUCCESS"}, result


def test_merged_columns_term_matches_a_dense_update_in_float64():
    x, _, _, weight, bias, lora_b, merged, _ = op_args()
    cols, merged_cols = torch.tensor([1, 4, 5, 11]), torch.tensor([0, 2, 7])
    delta = torch.zeros(7, 12, dtype=torch.float64)
    delta[:, merged_cols] += merged
    delta[:, cols] += 0.5 * lora_b.detach()
    want = torch.nn.functional.linear(x, weight + delta, bias)
    got = gathered_forward(x, weight, bias, lora_b, cols, 0.5, merged, merged_cols)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda x, b: gathered_forward(x, weight, bias, b, cols, 0.5, merged, merged_cols), (x, lora_b)
    )


def test_dtypes_under_bf16_autocast_and_on_a_bf16_base():
    """The documented rule: under autocast the op computes and returns the autocast dtype, the
    adapter's gradient comes back in float32; without autocast on a bf16 base the adapter term is
    float32 and the output bf16."""
    x, _, _, weight, bias, lora_b, _, _ = op_args(torch.float32)
    b = lora_b.detach().clone().requires_grad_()
    cols = torch.tensor([1, 4, 5, 11])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = gathered_forward(x, weight, bias, b, cols, 0.5)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert b.grad.dtype == torch.float32 and x.grad.dtype == torch.float32
    xb = x.detach().bfloat16().requires_grad_()
    b.grad = None
    y = gathered_forward(xb, weight.bfloat16(), bias.bfloat16(), b, cols, 0.5)
    assert y.dtype == torch.bfloat16
    want = (
        torch.nn.functional.linear(xb, weight.bfloat16(), bias.bfloat16()).float()
        + 0.5 * xb.detach().float()[..., cols] @ b.detach().t()
    ).bfloat16()
    torch.testing.assert_close(y, want, rtol=0, atol=0)
    y.float().sum().backward()
    assert b.grad.dtype == torch.float32 and xb.grad.dtype == torch.bfloat16


def gradients(model, batch, autocast: bool, run=None):
    """{name: gradient} of model's trainable parameters after one backward of `run` (default: model)."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = (model if run is None else run)(**batch).loss
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def trained_method(name):
    """A column method with non-zero B (and, for c3la, one merged phase) so every gradient path counts."""
    method = method_from_config(
        name, "method.r=4", "method.dropout=0.0", *(["method.phases=2"] if name == "c3la" else [])
    )
    model = method.apply(tiny_llama())
    torch.manual_seed(1)
    with torch.no_grad():
        for layer in method.layers.values():
            layer.lora_B.normal_(std=0.05)
    if name == "c3la":
        method.on_train_begin(model, 2)
        method.after_step(model, 1, None)
        with torch.no_grad():
            for layer in method.layers.values():
                layer.lora_B.normal_(std=0.05)
    return model.train()


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("name", ["cla", "c3la"])
def test_compiled_gradients_equal_eager(name, autocast):
    torch._dynamo.reset()
    model, batch = trained_method(name), fixed_batch()
    eager = gradients(model, batch, autocast)
    compiled = gradients(model, batch, autocast, run=torch.compile(model, backend="aot_eager"))
    assert eager.keys() == compiled.keys() and any(n.endswith("lora_B") for n in eager)
    for n, g in eager.items():
        assert float(g.abs().max()) > 0, n
        # bf16: the compiled graph may round in another order; two bf16 steps at the largest entry
        tol = dict(rtol=2e-2, atol=2**-6 * float(g.abs().max())) if autocast else dict(rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(compiled[n], g, **tol, msg=n)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["cla", "c3la"])
def test_inductor_on_cuda_bf16_weights_and_autocast_trains(name):
    torch._dynamo.reset()
    model = trained_method(name).to(device="cuda", dtype=torch.bfloat16)
    for layer in model.modules():  # the adapter stays float32 beside a bf16 base, as apply() makes it
        if hasattr(layer, "lora_B"):
            layer.lora_B.data = layer.lora_B.data.float()
            layer.merged = layer.merged.float()
    batch = {k: v.cuda() for k, v in fixed_batch().items()}

    def grads(m):
        m.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            m(**batch).loss.backward()
        return {n: p.grad.float() for n, p in model.named_parameters() if p.requires_grad}

    eager = grads(model)
    compiled = grads(torch.compile(model))
    for n, g in eager.items():
        assert float(compiled[n].abs().max()) > 0, n
        torch.testing.assert_close(compiled[n], g, rtol=5e-2, atol=1e-3, msg=n)
