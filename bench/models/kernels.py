"""Fused training kernels (`train.kernels`): none, or liger (Liger-Kernel's Triton kernels).

liger replaces a decoder's RMSNorm, SwiGLU MLP and rotary embedding with fused kernels and the
causal LM's training forward with a fused linear cross-entropy that computes the loss chunk by
chunk and never materializes the logits. Its loss is the mean over the batch's loss tokens, as
transformers computes it, so the step's token weighting (bench/train.py) is unchanged.

The kernels go onto the base model after its evaluation and before the method is applied: the
base scores (and their cache entry) are those of the stock model; the tuned model trains and is
evaluated with the kernels in place. Triton kernels need a CUDA device, and Liger supports the
model types in its own table (`MODEL_TYPE_TO_APPLY_LIGER_FN`); anything else is refused before
training.

Liger also patches the model type's transformers module for the whole process (its rotary
function, its norm and MLP classes). The next job of the same process (a sweep's jobs share one)
starts with `restore_stock()`, which puts the stock definitions back.
"""

from __future__ import annotations

import sys

from bench.config import ConfigError

KERNELS = ("none", "liger")
INSTALL_HINT = "pip install liger-kernel (on a GPU machine: make device-wheels carries it)"


# (module, {name: stock value}) for every process-wide patch since the last restore_stock()
_PATCHED: list[tuple] = []


def restore_stock() -> None:
    """Undo the process-wide patches of earlier jobs (models built since then are stock again)."""
    while _PATCHED:
        module, stock = _PATCHED.pop()
        for name, value in stock.items():
            setattr(module, name, value)


def check_device(kernels: str, device_type: str) -> None:
    if kernels != "none" and device_type != "cuda":
        raise ConfigError(
            f"train.kernels={kernels} runs Triton kernels, which need a CUDA device; this run is on "
            f"'{device_type}': use train.kernels=none"
        )


def liger_table() -> dict:
    """Liger's model types and their patch functions; a clear error where it is not installed."""
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except ImportError as err:
        raise ConfigError(f"train.kernels=liger needs the liger-kernel package ({err}); {INSTALL_HINT}") from None
    return MODEL_TYPE_TO_APPLY_LIGER_FN


def apply(model, kernels: str, device_type: str) -> dict | None:
    """Put the fused kernels onto `model` (a transformers model, before any adapter wraps it);
    returns what was applied, for result.json, or None for train.kernels=none."""
    if kernels == "none":
        return None
    check_device(kernels, device_type)
    table = liger_table()
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in table:
        raise ConfigError(
            f"train.kernels=liger does not support model type '{model_type}'; Liger-Kernel patches: "
            f"{', '.join(sorted(table))}; use train.kernels=none"
        )
    module = sys.modules[type(model).__module__]
    stock = dict(vars(module))
    table[model_type](model=model)
    _PATCHED.append((module, {k: v for k, v in stock.items() if vars(module).get(k) is not v}))
    from bench.provenance import package_version

    version = package_version("liger-kernel") or "unknown: no distribution metadata"  # importable from a source tree
    return {"name": "liger", "version": version, "model_type": model_type}
