"""What a run needs to know when it spans several processes (accelerate launch / torchrun):
the batch layout it records, the checks it makes, and the numbers it reduces across processes.
Everything here is a no-op-shaped answer for a single process."""

from __future__ import annotations

import hashlib

from bench.config import ConfigError


def layout(accelerator, tcfg) -> dict:
    world = accelerator.num_processes
    return {
        "world_size": world,
        "distributed_type": str(accelerator.distributed_type).split(".")[-1],
        "per_device_batch_size": tcfg.batch_size,
        "grad_accum": tcfg.grad_accum,
        "global_batch_size": tcfg.batch_size * world * tcfg.grad_accum,
        "lr_scaling": "none (the learning rate is used as configured, whatever the world size)",
    }


def check(accelerator, method) -> None:
    kind = str(accelerator.distributed_type).split(".")[-1]
    if kind == "FSDP" and not getattr(method, "supports_fsdp", False):
        raise ConfigError(
            f"method '{method.name}' cannot run under FSDP: it replaces or reshapes parameters "
            f"during training, which FSDP's flattened shards do not allow; launch it with DDP "
            f"(accelerate launch --multi_gpu) instead"
        )


def _gather(accelerator, value) -> list:
    if accelerator.num_processes == 1:
        return [value]
    from accelerate.utils import gather_object

    return gather_object([value])


def peak_memory(accelerator, mine: dict) -> dict:
    """The main process's record, with every device's peak and the maximum over devices."""
    every = _gather(accelerator, mine)
    if len(every) == 1:
        return mine
    key = "allocated_bytes" if mine["kind"] == "cuda" else "rss_bytes"
    return {**mine, key: max(m[key] for m in every), "per_device": every}


def replica_check(accelerator, model) -> dict:
    """sha256 of every process's trainable weights: replicas that diverged show up here."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    digests = _gather(accelerator, h.hexdigest())
    return {"replica_weights_sha256": digests, "replicas_identical": len(set(digests)) == 1}
