"""The Beyond-LoRA family (asym_lora, cla, cla_random, c3la, c3la_shift, c3la_random, cola, rac,
paca): what each method's definition promises, beyond the shared method matrix."""

from __future__ import annotations

import json

import pytest
import torch

from bench.api import Change
from bench.config import ConfigError
from methods.base.gathered_columns import (
    ColumnAdapterLinear,
    dense_reference,
    gathered_forward,
)
from methods.base.lora_chain import merged_delta
from tests.helpers.chains import run_chain
from tests.helpers.methods import logits, method_from_config, train_steps
from tests.helpers.tiny import fixed_batch, tiny_llama

COLUMN_METHODS = ["cla", "cla_random", "c3la", "c3la_shift", "c3la_random", "c3la_offset", "c3la_offset_shift", "paca"]


def adapted_shapes(model):
    """(d_in, d_out) of q_proj and v_proj in every layer of the tiny Llama."""
    return [(m.in_features, m.out_features) for n, m in model.named_modules() if n.endswith(("q_proj", "v_proj"))]


# -- the gathered-columns kernel ------------------------------------------------------------------
def test_gathered_kernel_matches_the_dense_selector_in_float64():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 12, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 12, dtype=torch.float64)
    bias = torch.randn(7, dtype=torch.float64)
    lora_b = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    cols = torch.tensor([1, 4, 5, 11])
    got = gathered_forward(x, weight, bias, lora_b, cols, 0.5)
    want = dense_reference(x, weight, bias, lora_b, cols, 0.5)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(got)
    got_grads = torch.autograd.grad(got, (x, lora_b), g)
    want_grads = torch.autograd.grad(want, (x, lora_b), g)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x, b: gathered_forward(x, weight, bias, b, cols, 0.5), (x, lora_b))


def test_backward_keeps_only_the_gathered_columns_of_the_input():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32)
    layer = ColumnAdapterLinear(linear, torch.tensor([3, 9, 10, 40]), scale=2.0)
    x = torch.randn(2, 8, 64, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x).sum().backward()
    own = {t.data_ptr() for t in (*layer.parameters(), *layer.buffers())}  # weights, not activations
    activations = [t for t in saved if t.dtype.is_floating_point and t.data_ptr() not in own]
    assert all(t.untyped_storage().data_ptr() != x.untyped_storage().data_ptr() for t in saved)  # no view of x
    assert [tuple(t.shape) for t in activations] == [(2, 8, 4)]  # x[..., c]: r values per token
    assert layer.lora_B.grad is not None and x.grad is not None


def test_backward_keeps_only_the_gathered_columns_after_a_merge():
    """A merged phase adds a frozen term M x[m]: it must not make the backward keep x either."""
    torch.manual_seed(0)
    layer = ColumnAdapterLinear(torch.nn.Linear(64, 32), torch.tensor([0, 1, 2, 3]), scale=2.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    layer.merge_and_reset()
    layer.cols.copy_(torch.tensor([4, 5, 6, 7]))
    x = torch.randn(2, 8, 64, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        layer(x).sum().backward()
    own = {t.data_ptr() for t in (*layer.parameters(), *layer.buffers())}
    assert [tuple(t.shape) for t in saved if t.dtype.is_floating_point and t.data_ptr() not in own] == [(2, 8, 4)]
    assert all(t.untyped_storage().data_ptr() != x.untyped_storage().data_ptr() for t in saved)


def test_dropout_acts_on_the_gathered_columns_in_training_only():
    linear = torch.nn.Linear(16, 8)
    layer = ColumnAdapterLinear(linear, torch.arange(4), scale=1.0, dropout=0.5)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 16)
    layer.eval()
    torch.testing.assert_close(layer(x), layer(x))
    layer.train()
    torch.manual_seed(0)
    assert not torch.allclose(layer(x), layer.eval()(x))


# -- what each method trains ----------------------------------------------------------------------
@pytest.mark.parametrize("name", COLUMN_METHODS + ["asym_lora", "rac", "cla_random_dense"])
def test_trainable_params_are_r_times_d_out(name):
    base = tiny_llama()
    method = method_from_config(name, "method.r=4")
    want = sum(4 * d_out for _, d_out in adapted_shapes(base))
    assert method.expected_trainable_params(base) == want
    model = method.apply(base)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == want


def test_asym_lora_b_trains_a_only_and_cola_both():
    base = tiny_llama()
    assert method_from_config("asym_lora_b", "method.r=4").expected_trainable_params(base) == sum(
        4 * d_in for d_in, _ in adapted_shapes(base)
    )
    assert method_from_config("cola", "method.r=4").expected_trainable_params(base) == sum(
        4 * (d_in + d_out) for d_in, d_out in adapted_shapes(base)
    )


@pytest.mark.parametrize("name", ["cla", "cla_random", "paca"])
def test_update_is_nonzero_only_in_the_selected_columns(name):
    method = method_from_config(name, "method.r=4", "method.lr=1e-2")
    model = method.apply(tiny_llama())
    train_steps(method, model, fixed_batch(), steps=3)
    for layer in method.layers.values():
        nonzero = layer.delta_weight().abs().sum(0).nonzero().flatten().tolist()
        assert nonzero == sorted(layer.cols.tolist()) and len(nonzero) == 4
    if name == "cla":
        assert all(layer.cols.tolist() == [0, 1, 2, 3] for layer in method.layers.values())


def test_random_columns_depend_on_seed_and_layer():
    def cols(seed):
        method = method_from_config("cla_random", "method.r=4", f"seed={seed}")
        method.apply(tiny_llama())
        return [layer.cols.tolist() for layer in method.layers.values()]

    first = cols(1)
    assert first == cols(1) and first != cols(2)
    assert len({tuple(c) for c in first}) > 1  # not the same columns in every matrix
    assert all(len(set(c)) == 4 for c in first)


@pytest.mark.parametrize("name", COLUMN_METHODS)
def test_merged_weight_gives_the_adapted_forward(name):
    method = method_from_config(name, "method.r=4", "method.lr=1e-2")
    model = method.apply(tiny_llama())
    train_steps(method, model, fixed_batch(), steps=2)
    x = torch.randn(3, 32)
    for layer in method.layers.values():
        layer.eval()
        merged = torch.nn.functional.linear(x[:, : layer.in_features], layer.weight + layer.delta_weight(), layer.bias)
        torch.testing.assert_close(layer(x[:, : layer.in_features]), merged, atol=1e-6, rtol=1e-5)


# -- chains -----------------------------------------------------------------------------------------
def window(start, r=4):
    return list(range(start, start + r))


def test_c3la_merges_each_window_and_restarts_b():
    method, model, before, events = run_chain("c3la", 8, "method.phases=4")
    assert [e[0] for e in events] == [2, 4, 6] and all(e[1] == Change.REBUILD_OPTIMIZER for e in events)
    for _, _, layers in events:  # right after a boundary B is zero again
        assert all(float(state["lora_B"].abs().max()) == 0 for state in layers.values())
    for name, layer in method.layers.items():
        assert layer.cols.tolist() == window(12)  # the 4th window of 4 columns
        total = layer.weight.detach() - before[name] + layer.delta_weight()
        nonzero = total.abs().sum(0).nonzero().flatten().tolist()
        assert nonzero == window(0) + window(4) + window(8) + window(12)  # exactly the visited windows
    assert method.report(model)["merges"] == 3


def test_c3la_windows_wrap_around_the_input():
    method, _, _, _ = run_chain("c3la", 10, "method.phases=10", "method.r=8")
    # d_in = 32 has 4 windows of 8: phase 9 (0-based) is window 9 mod 4 = 1
    assert all(layer.cols.tolist() == window(8, 8) for layer in method.layers.values())


def test_c3la_random_visits_windows_without_replacement():
    method, _, _, _ = run_chain("c3la_random", 8, "method.phases=4", "seed=3")
    for name, layer in method.layers.items():
        visited = [tuple(cols.tolist()) for cols in [m[name][0] for m in method.history] + [layer.cols]]
        assert len(set(visited)) == 4  # 4 of the 8 windows of 4 columns, none twice
        assert all(list(v) == window(v[0]) and v[0] % 4 == 0 for v in visited)
    orders = {tuple(m[n][0][0].item() for m in method.history) for n in method.layers}
    assert len(orders) > 1  # each matrix has its own order


def test_c3la_shift_moves_the_window_without_merging():
    method, _, before, events = run_chain("c3la_shift", 8, "method.phases=4")
    assert events == []  # nothing for the optimizer to rebuild
    for name, layer in method.layers.items():
        assert torch.equal(layer.weight, before[name])  # W0 untouched
        assert layer.cols.tolist() == window(12) and float(layer.lora_B.detach().abs().max()) > 0  # B kept
    assert method.history == []


@pytest.mark.parametrize("name", ["cola", "rac"])
def test_lora_chains_merge_and_restart(name):
    method, model, before, events = run_chain(name, 6, "method.phases=3")
    assert [e[0] for e in events] == [2, 4]
    a_seen = []
    for _, _, layers in events:
        state = next(iter(layers.values()))
        assert float(state["lora_B.default.weight"].abs().max()) == 0
        a_seen.append(state["lora_A.default.weight"])
    assert not torch.equal(a_seen[0], a_seen[1])  # a fresh random A each phase
    layer = next(iter(method.layers.values()))
    assert layer.lora_A["default"].weight.requires_grad == (name == "cola")
    name0 = next(iter(method.layers))
    assert torch.equal(layer.get_base_layer().weight, before[name0])  # merged beside W0, not into it
    want = sum(method.scale * b @ a for a, b in (m[name0] for m in method.history))
    torch.testing.assert_close(merged_delta(layer.get_base_layer()), want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["c3la", "c3la_random", "c3la_offset", "cola", "rac"])
def test_chain_state_restores_the_merged_weights_exactly(name):
    method, model, _, _ = run_chain(name, 6, "method.phases=3")
    state = method.state_dict(model)
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    fresh = method_from_config(name, "method.r=4", "method.lr=1e-2", "method.phases=3")
    again = fresh.apply(tiny_llama())
    fresh.load_state_dict(again, state)
    params = dict(again.named_parameters())
    with torch.no_grad():
        for n, value in trained.items():
            params[n].copy_(value)
    want, got = model.state_dict(), again.state_dict()
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key
    want, got = dict(model.named_buffers()), dict(again.named_buffers())  # the merged terms too
    assert want.keys() == got.keys() and any("merged" in k or "chain_" in k for k in want)
    for key in want:
        assert torch.equal(want[key], got[key]), key
    batch = fixed_batch()
    assert torch.equal(logits(model.eval(), batch), logits(again.eval(), batch))


@pytest.mark.parametrize("name,rank", [("c3la", 12), ("cola", 12), ("cla", 4), ("paca", 4)])
def test_export_is_a_standard_lora_with_one_term_per_phase(name, rank, tmp_path):
    method, model, _, _ = run_chain(name, 6, *(("method.phases=3",) if name in ("c3la", "cola") else ()))
    info = method.export(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == info["rank"] == rank
    if name in ("c3la", "cla", "paca"):
        from safetensors.torch import load_file

        a = next(v for k, v in load_file(tmp_path / "adapter_model.safetensors").items() if "lora_A" in k)
        assert torch.equal(a.sum(1), torch.ones(rank)) and set(a.unique().tolist()) == {0.0, 1.0}  # selectors


# -- bad settings ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,overrides,message",
    [
        ("c3la", ("method.phase_steps=5",), "set exactly one of method.phases"),
        ("cola", ("method.phases=null",), "set exactly one of method.phases"),
        ("c3la", ("method.phases=0",), "method.phases=0 is out of range; valid: x >= 1 or null"),
        ("cla_random", ("method.selector=diagonal",), "choose one of: random_cols, random_window"),
        ("asym_lora", ("method.random_init=zeros",), "choose one of: kaiming, normal"),
        ("cla", ("method.r=0",), "method.r=0 is out of range; valid: x >= 1"),
    ],
)
def test_bad_settings_are_refused(name, overrides, message):
    with pytest.raises(ConfigError, match=message):
        method_from_config(name, *overrides)


def test_rank_wider_than_the_input_is_refused():
    with pytest.raises(ConfigError, match="larger than the input width"):
        method_from_config("cla", "method.r=64").apply(tiny_llama())


def test_more_phases_than_steps_is_refused_before_loading(tmp_path):
    from bench.run import prepare
    from tests.conftest import TINY, compose

    cfg = compose(*TINY, "method=c3la", "method.phases=8", "train.max_steps=4", f"run.root={tmp_path}")
    with pytest.raises(ConfigError, match="does not fit in train.max_steps=4"):
        prepare(cfg)


def test_untrained_paca_is_the_base_model():
    base = tiny_llama()
    batch = fixed_batch()
    want = logits(base, batch)
    method = method_from_config("paca", "method.r=4")
    model = method.apply(base)
    torch.testing.assert_close(logits(model, batch), want)
    layer = next(iter(method.layers.values()))
    torch.testing.assert_close(layer.lora_B.detach(), layer.weight[:, layer.cols])  # P starts at W0[:, c]


@pytest.mark.parametrize("name", ["cla", "cola"])
def test_classifier_head_trains_and_exports_with_the_adapter(name, tmp_path):
    from peft import PeftModel

    from tests.helpers.tiny import tiny_bert_classifier

    def encoder():
        return tiny_bert_classifier(layers=2).eval()

    method = method_from_config(
        name,
        "method.r=4",
        "method.target_modules=[query,value]",
        "method.lr=1e-2",
        *(("method.phases=2",) if name == "cola" else ()),
    )
    base = encoder()
    head = sum(p.numel() for p in base.classifier.parameters())
    expected = method.expected_trainable_params(base)
    model = method.apply(base)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected
    assert expected - head == sum(4 * (32 if name == "cla" else 64) for _ in range(4))
    ids = torch.randint(0, 100, (4, 6))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 2, 1])}
    train_steps(method, model, batch, steps=4)
    model.eval()
    want = model(input_ids=ids).logits
    method.export(model, tmp_path)
    loaded = PeftModel.from_pretrained(encoder(), str(tmp_path)).eval()
    torch.testing.assert_close(loaded(input_ids=ids).logits, want, atol=1e-5, rtol=1e-4)


def test_paca_alpha_is_the_reference_parameterisation():
    """method.alpha on PaCA = the Beyond-LoRA reference's PaCALinearAdapter: W[:, c] = (alpha / r) P
    with P starting at W0[:, c] / (alpha / r), so P's gradient is (alpha / r) times the column's.
    Transcribed here with autograd on a patched dense weight, AdamW with weight decay, float64."""
    r, alpha, lr, wd, steps = 4, 16.0, 1e-2, 0.1, 3
    method = method_from_config("paca", f"method.r={r}", f"method.alpha={alpha}")
    method.apply(tiny_llama().double())
    name, layer = next(iter(method.layers.items()))
    s = alpha / r
    cols, w0 = layer.cols.clone(), layer.weight.detach().clone()
    p = torch.nn.Parameter(w0[:, cols] / s)  # the reference's P ("from_base" init)
    theirs = torch.optim.AdamW([p], lr=lr, weight_decay=wd)
    ours = torch.optim.AdamW([layer.lora_B], lr=lr, weight_decay=wd)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(5, layer.in_features, generator=g, dtype=torch.float64)
        target = torch.randn(5, layer.out_features, generator=g, dtype=torch.float64)
        for opt, out in (
            (theirs, lambda: torch.nn.functional.linear(x, w0.index_copy(1, cols, s * p), layer.bias)),
            (ours, lambda: layer(x)),
        ):
            opt.zero_grad()
            ((out() - target) ** 2).sum().backward()
            opt.step()
    want = w0.index_copy(1, cols, s * p.detach())
    got = layer.weight + layer.delta_weight()
    assert float((want - w0).abs().max()) > 1e-3  # the columns moved
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert method.report(None)["scaling"] == s and method.report(None)["alpha"] == alpha
    default = method_from_config("paca", f"method.r={r}")  # alpha null: the columns trained as they are
    assert default.alpha is None and default.scale == 1.0


def test_paca_alpha_null_keeps_earlier_run_hashes():
    from bench.config import resolved, run_hash
    from tests.conftest import compose

    cfg = resolved(compose("model=tiny-llama", "method=paca"))
    assert cfg["method"]["alpha"] is None
    before_the_key = {**cfg, "method": {k: v for k, v in cfg["method"].items() if k != "alpha"}}
    assert run_hash(cfg) == run_hash(before_the_key)
    assert run_hash(resolved(compose("model=tiny-llama", "method=paca", "method.alpha=32"))) != run_hash(cfg)
    with pytest.raises(ConfigError, match="method.alpha=None"):
        method_from_config("cla", "method.alpha=null")
