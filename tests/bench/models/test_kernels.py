"""train.kernels (bench/kernels.py): refused where it cannot run, before any model is loaded;
the patch applied to the model through Liger's own table, recorded, undone for the next job of the
process, and part of the run hash only when it is not none. The numerics of Liger's kernels need
a CUDA device: the gpu-marked test compares their loss with the stock model's."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from bench.config import ConfigError, resolved, run_hash, validate
from bench.models import kernels
from tests.conftest import compose
from tests.helpers.tiny import fixed_batch, tiny_bert_classifier, tiny_llama


def test_cpu_runs_refuse_liger_at_config_time_with_the_valid_choice():
    with pytest.raises(ConfigError, match=r"train.kernels=liger .*CUDA.*none"):
        validate(compose("model=tiny-llama", "train.device=cpu", "train.kernels=liger"))
    with pytest.raises(ConfigError, match="train.kernels='fast' is not valid; choose one of: none, liger"):
        validate(compose("model=tiny-llama", "train.kernels=fast"))
    validate(compose("model=tiny-llama", "train.device=cpu"))  # none: nothing to refuse


def test_the_device_check_refuses_every_device_but_cuda():
    kernels.check_device("none", "cpu")
    kernels.check_device("liger", "cuda")
    with pytest.raises(ConfigError, match="run is on 'cpu'"):
        kernels.check_device("liger", "cpu")
    with pytest.raises(ConfigError, match="run is on 'mps'"):
        kernels.apply(tiny_llama(), "liger", "mps")


def test_none_is_hash_neutral_and_liger_is_a_different_run():
    cfg = resolved(compose("model=tiny-llama", "train.device=cpu"))
    without = {**cfg, "train": {k: v for k, v in cfg["train"].items() if k != "kernels"}}
    liger = {**cfg, "train": {**cfg["train"], "kernels": "liger"}}
    assert cfg["train"]["kernels"] == "none"
    assert run_hash(cfg) == run_hash(without)  # runs recorded before the key keep their identity
    assert run_hash(liger) != run_hash(cfg)


@pytest.fixture
def fake_liger(monkeypatch):
    """Liger's module layout with a table whose llama entry patches as Liger does: a module-wide
    function of modeling_llama and the instance's forward."""
    from transformers.models.llama import modeling_llama

    calls = []

    def apply_to_llama(model=None):
        calls.append(model)
        modeling_llama.apply_rotary_pos_emb = "liger rope"
        model.forward = types.MethodType(lambda self, **kw: "fused", model)

    patch = types.ModuleType("liger_kernel.transformers.monkey_patch")
    patch.MODEL_TYPE_TO_APPLY_LIGER_FN = {"llama": apply_to_llama, "qwen2": apply_to_llama}
    for name in ("liger_kernel", "liger_kernel.transformers"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers.monkey_patch", patch)
    stock = modeling_llama.apply_rotary_pos_emb
    yield calls, modeling_llama, stock
    kernels.restore_stock()
    modeling_llama.apply_rotary_pos_emb = stock


def test_liger_patches_the_model_through_its_own_table_and_the_next_job_starts_stock(fake_liger):
    calls, modeling_llama, stock = fake_liger
    model = tiny_llama()
    applied = kernels.apply(model, "liger", "cuda")
    assert calls == [model]
    assert applied["name"] == "liger" and applied["model_type"] == "llama" and applied["version"]
    assert model(input_ids=None) == "fused"
    assert modeling_llama.apply_rotary_pos_emb == "liger rope"
    kernels.restore_stock()
    assert modeling_llama.apply_rotary_pos_emb is stock  # a later model of this process is stock
    assert kernels.apply(tiny_llama(), "none", "cpu") is None and len(calls) == 1


def test_a_model_type_liger_does_not_patch_is_refused_naming_the_supported_ones(fake_liger):
    with pytest.raises(ConfigError, match=r"does not support model type 'bert'.*patches: llama, qwen2"):
        kernels.apply(tiny_bert_classifier(), "liger", "cuda")


def test_without_the_package_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "liger_kernel", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match="needs the liger-kernel package.*pip install liger-kernel"):
        kernels.apply(tiny_llama(), "liger", "cuda")


@pytest.mark.gpu
def test_cuda_liger_loss_equals_the_stock_loss_without_logits():
    pytest.importorskip("liger_kernel", reason="liger-kernel not installed")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    batch = {k: v.cuda() for k, v in fixed_batch(vocab=128, batch=4, length=32).items()}
    stock = tiny_llama(seed=3).cuda().train()
    fused = tiny_llama(seed=3).cuda().train()
    try:
        kernels.apply(fused, "liger", "cuda")
        want, got = stock(**batch), fused(**batch)
        assert got.logits is None  # the fused cross-entropy never materializes them
        assert torch.allclose(got.loss, want.loss, rtol=1e-4, atol=1e-5)
        got.loss.backward()
        want.loss.backward()
        g_stock = stock.model.layers[0].mlp.up_proj.weight.grad
        g_fused = fused.model.layers[0].mlp.up_proj.weight.grad
        assert torch.allclose(g_fused, g_stock, rtol=1e-3, atol=1e-5)
    finally:
        kernels.restore_stock()
