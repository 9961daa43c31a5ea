"""The method x model matrix: every conf/method/*.yaml applies to the true layer shapes of every
model family the suite ships (grouped-query attention, tied embeddings, Gemma's and Phi's module
names, Phi's fused projections, DeBERTa's encoder), built on the meta device, and trains exactly
its closed-form parameter count; with the model's q/v default targets and with all-linear.

The default run covers every method on Phi-3.5 (fused qkv/gate_up, untied) and the suite's own and
PEFT's main methods on Gemma 2 and DeBERTa-v3, at two layers (each layer's shapes are the true
ones); the full matrix (every family, every layer, both target choices) is marked slow."""

from __future__ import annotations

import pytest

from bench.models import loading
from bench.run import build
from tests.conftest import CONF, compose

METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))
FAMILIES = [
    "llama3.1-8b",
    "llama3.2-1b",
    "llama3.2-3b",
    "qwen2.5-1.5b",
    "qwen2.5-7b",
    "qwen3-0.6b",
    "qwen3-8b",
    "mistral-7b-v0.3",
    "gemma2-2b",
    "gemma2-9b",
    "phi3.5-mini",
    "deberta-v3-large",
]
# PiSSA's initialisation is an SVD of each adapted weight: no values on the meta device. It runs on
# the CPU at the family's layer structure with every width divided by 16 (its count is LoRA's form).
NEEDS_VALUES = {"pissa"}


def scaled_down(model: str) -> list[str]:
    arch = compose(f"model={model}").model.arch
    keys = [k for k in ("hidden_size", "intermediate_size", "head_dim") if k in arch]
    tokens = [f"model.arch.{k}=0" for k in ("pad_token_id", "bos_token_id", "eos_token_id") if k in arch]
    return (
        [f"model.arch.{k}={arch[k] // 16}" for k in keys]
        + tokens
        + ["model.arch.num_hidden_layers=1", "model.arch.vocab_size=1000"]
    )


def check(method_name: str, model: str, targets: str | None, layers: int | None):
    overrides = [f"model={model}", f"method={method_name}", "model.init=random", "model.tokenizer=gpt2-offline"]
    if targets:
        overrides.append(f"model.adapter_targets={targets}")
    device = "meta"
    if method_name in NEEDS_VALUES:
        overrides += scaled_down(model)
        device = "cpu"
    elif layers:
        overrides.append(f"model.arch.num_hidden_layers={layers}")
    cfg = compose(*overrides)
    base, _, _ = loading.load(cfg.model, device=device, fit_vocab=False)
    method = build(cfg.method)
    expected = method.expected_trainable_params(base)
    model_ = method.apply(base)
    assert sum(p.numel() for p in model_.parameters() if p.requires_grad) == expected > 0


@pytest.mark.parametrize("method", [m for m in METHODS if m not in NEEDS_VALUES])  # PiSSA: the slow matrix
def test_every_method_on_phi_fused_projections(method):
    check(method, "phi3.5-mini", "all-linear", layers=2)


@pytest.mark.parametrize("model", ["gemma2-2b", "deberta-v3-large"])
@pytest.mark.parametrize("method", ["lora", "prunedlora", "l1ra", "adalora", "cla", "c3la", "vera"])
def test_methods_on_gemma_and_an_encoder(method, model):
    check(method, model, "all-linear", layers=2)


@pytest.mark.slow
@pytest.mark.parametrize("targets", [None, "all-linear"])
@pytest.mark.parametrize("model", FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_every_family_shape_full(method, model, targets):
    check(method, model, targets, layers=None)
