"""Methods that fail on purpose, for fault-injection tests (selected with method._target_=...)."""

from __future__ import annotations

from dataclasses import dataclass

from methods.lora import LoRA


@dataclass(kw_only=True)
class NaNLoss(LoRA):
    """Adds a NaN loss term from optimizer step 2 on."""

    def extra_loss(self, model, step: int):
        import torch

        return torch.tensor(float("nan")) if step >= 2 else None


@dataclass(kw_only=True)
class RaisingHook(LoRA):
    def after_step(self, model, step: int, optimizer) -> bool:
        raise RuntimeError(f"hook failed at step {step}")


@dataclass(kw_only=True)
class OutOfMemory(LoRA):
    def after_backward(self, model, step: int) -> None:
        import torch

        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")


@dataclass(kw_only=True)
class RebuildOnce(LoRA):
    """Claims its parameters changed after step 2, so the runner rebuilds the optimizer."""

    def after_step(self, model, step: int, optimizer) -> bool:
        self.optimizers_seen = getattr(self, "optimizers_seen", []) + [id(optimizer)]
        return step == 2


@dataclass(kw_only=True)
class Unreachable(LoRA):
    """LoRA whose adapter output is multiplied by 0: the loss still has a graph, but no gradient
    reaches the trainable parameters, as when a compiled custom op loses its backward."""

    def apply(self, model):
        model = super().apply(model)
        for name, module in model.named_modules():
            if name.endswith("lora_B.default"):
                module.register_forward_hook(lambda _m, _i, out: out * 0.0)
        return model
