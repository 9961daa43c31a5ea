"""Methods built from their conf/method/*.yaml on the tiny Llama, and the short training loops the
method tests run them through."""

from __future__ import annotations

import torch

from bench.analysis import updates
from bench.run import build
from tests.conftest import CONF, compose
from tests.helpers.tiny import tiny_llama

METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))


def method_from_config(name: str, *overrides: str):
    return build(compose("model=tiny-llama", f"method={name}", *overrides).method)


def logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"]).logits


def train_steps(method, model, batch, steps=8):
    model.train()
    optimizer = torch.optim.AdamW(method.param_groups(model, 0.0))
    method.on_train_begin(model, steps)
    losses = []
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        loss = model(**batch).loss
        losses.append(loss.item())
        loss.backward()
        method.before_optimizer_step(model, step, optimizer)
        optimizer.step()
        method.after_step(model, step, optimizer)
    return losses


# The methods of the documented GPU perf command (scripts/gpu_session.sh's METHODS, docs/performance.md)
GPU_COMMAND_METHODS = ("lora", "cla", "c3la", "prunedlora", "l1ra", "adalora", "dora", "full")


def trained(name: str, *overrides: str, seed: int = 0):
    """(method, tuned model, W0 of the analysed layers): the method applied to a tiny Llama and every
    trainable tensor moved at random, as training would move it."""
    base = tiny_llama()
    method = method_from_config(name, *overrides)
    w0 = updates.snapshot(updates.analysed_layers(base, method, ["q_proj", "v_proj"]))
    model = method.apply(base)
    method.on_train_begin(model, total_steps=10)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return method, model, w0


# Method variants that are one YAML over their base method's class: the fields each sets away from
# the class default (declared choices), and the base method's YAML (tests/methods/test_variants.py)
VARIANTS = {
    "c3la_shift": ("methods.c3la.ChainedCheapLoRA", {"at_boundary": "shift"}, "c3la"),
    "c3la_offset_shift": ("methods.c3la_offset.RandomOffsetColumns", {"at_boundary": "shift"}, "c3la_offset"),
    "asym_lora_b": ("methods.asym_lora.AsymLoRA", {"frozen": "lora_B", "random_init": "normal"}, "asym_lora"),
}
