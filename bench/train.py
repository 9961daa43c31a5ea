"""The training loop: one function, readable top to bottom.

accelerate places the model and batches, runs mixed precision and (under `accelerate launch`)
data parallelism. Gradient accumulation is explicit: `grad_accum` micro-batches, then one
optimizer step; every metric counts optimizer steps.
"""
from __future__ import annotations

import math
import time
import warnings
from contextlib import nullcontext
from functools import partial

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from bench.metrics import StepClock, current_memory


class Diverged(RuntimeError):
    """The loss became NaN or infinite."""


def build_optimizer(method, model, tcfg):
    groups = [g for g in method.param_groups(model, tcfg.weight_decay) if g["params"]]
    if not groups:
        raise RuntimeError(f"method '{method.name}' left no trainable parameters")
    return torch.optim.AdamW(groups)


def build_scheduler(optimizer, tcfg, total_steps: int, done_steps: int = 0):
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[tcfg.scheduler]
    warmup = math.ceil(tcfg.warmup_ratio * total_steps)
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    with warnings.catch_warnings():  # fast-forwarding before any optimizer.step() is intended here
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(done_steps):  # a rebuilt optimizer continues the schedule where it was
            scheduler.step()
    return scheduler


def _endless(loader):
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def train(model, method, task, examples, tokenizer, cfg, accelerator, tracker, metrics_log) -> dict:
    tcfg = cfg.train
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(examples, batch_size=tcfg.batch_size, shuffle=tcfg.shuffle, generator=generator,
                        collate_fn=partial(task.collate, tokenizer=tokenizer), drop_last=False)
    optimizer = build_optimizer(method, model, tcfg)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    scheduler = build_scheduler(optimizer, tcfg, tcfg.max_steps)
    method.on_train_begin(model, tcfg.max_steps)

    device_type = accelerator.device.type
    clock = StepClock(device_type)
    batches = _endless(loader)
    train_tokens = loss_tokens = 0
    loss_value = None
    model.train()
    bar = tqdm(total=tcfg.max_steps, desc="train", unit="step", disable=not accelerator.is_main_process,
               dynamic_ncols=True)
    started = time.perf_counter()
    try:
        for step in range(1, tcfg.max_steps + 1):
            clock.start()
            # Gradients are cleared here, not after the step, so that after_step can still read
            # them (AdaLoRA scores importance from them between optimizer.step and zero_grad).
            optimizer.zero_grad(set_to_none=True)
            step_loss = torch.zeros((), device=accelerator.device)
            step_extra = None
            step_tokens = torch.zeros((), device=accelerator.device, dtype=torch.long)
            step_loss_tokens = torch.zeros((), device=accelerator.device, dtype=torch.long)
            for micro in range(tcfg.grad_accum):
                batch = next(batches)
                last = micro == tcfg.grad_accum - 1
                # prepare() already wraps forward in autocast when mixed precision is on
                with accelerator.no_sync(model) if not last else nullcontext():
                    out = model(**batch)
                    loss = out.loss
                    extra = method.extra_loss(model, step)
                    total = loss if extra is None else loss + extra
                    accelerator.backward(total / tcfg.grad_accum)
                step_loss += loss.detach().float() / tcfg.grad_accum
                if extra is not None:
                    step_extra = (step_extra or 0.0) + extra.detach().float() / tcfg.grad_accum
                step_tokens += batch["attention_mask"].sum()
                step_loss_tokens += (batch["labels"][:, 1:] != -100).sum()
            method.after_backward(model, step)
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), tcfg.max_grad_norm)
            lr = scheduler.get_last_lr()[0]  # the rate this step uses
            optimizer.step()
            scheduler.step()
            if method.after_step(model, step, optimizer):
                optimizer = accelerator.prepare_optimizer(build_optimizer(method, model, tcfg))
                scheduler = build_scheduler(optimizer, tcfg, tcfg.max_steps, done_steps=step)
            dt = clock.stop()

            loss_value = step_loss.item()
            train_tokens += int(step_tokens.item())
            loss_tokens += int(step_loss_tokens.item())
            total_value = loss_value if step_extra is None else loss_value + float(step_extra)
            if not math.isfinite(total_value):
                raise Diverged(f"loss is {total_value} at optimizer step {step} (task loss {loss_value})")
            if step % tcfg.log_every == 0 or step == tcfg.max_steps:
                row = {
                    "step": step,
                    "loss": loss_value,
                    "extra_loss": None if step_extra is None else float(step_extra),
                    "lr": lr,
                    "grad_norm": float(grad_norm) if grad_norm is not None else None,
                    "step_time_s": dt,
                    "tokens": int(step_tokens.item()),
                }
                metrics_log.append(row)
                tracker.log(row, step=step)
            elapsed = time.perf_counter() - started
            bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{train_tokens / elapsed:.0f}",
                            mem=f"{current_memory(device_type):.1f}G", refresh=False)
            bar.update(1)
    finally:
        bar.close()
    train_time = time.perf_counter() - started
    return {
        "model": model,
        "train_time_s": train_time,
        **clock.summary(tcfg.timing_warmup_steps),
        "tokens_per_s": train_tokens / train_time if train_time > 0 else None,
        "tokens_counted": "non-padding input tokens (attention_mask sum) of every micro-batch",
        "train_tokens": train_tokens,
        "loss_tokens": loss_tokens,
        "optimizer_steps": tcfg.max_steps,
        "final_loss": loss_value,
    }

