"""The training loop: one function, readable top to bottom.

accelerate places the model and runs mixed precision and, under `accelerate launch` or
`torchrun`, data parallelism: every process draws the same global micro-batch and trains on its
slice, DDP averages the gradients, and the logged loss and token counts are reduced over processes.
Gradient accumulation is explicit: `grad_accum` micro-batches, then one optimizer step; every
metric counts optimizer steps. A step's loss is the mean over all loss tokens of its micro-batches
and processes (each micro-batch weighted by its share of them), so two micro-batches of 2 train as
one batch of 4 does; a method's `extra_loss` is added once per step. The batch order is a pure
function of (seed, epoch), so a resumed run sees exactly the batches an uninterrupted one would
have seen.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from bench.api import Change, Method, Task
from bench.checkpoint import CheckpointStore, LoopState
from bench.metrics import StepClock, current_memory
from bench.results import MetricsLog
from bench.stop import Cancelled, Stop
from bench.tensor_memory import TensorMemoryWindow
from bench.tracking import NoTracker


class Diverged(RuntimeError):
    """The loss became NaN or infinite."""


class NoGradient(RuntimeError):
    """An optimizer step in which no trainable parameter received a non-zero gradient."""


def optimizer_kwargs(impl: str, params: list) -> dict:
    """AdamW's implementation: one fused kernel on CUDA (no per-tensor launches), else foreach."""
    if impl == "auto":
        impl = "fused" if params and all(p.is_cuda and p.is_floating_point() for p in params) else "foreach"
    return {"fused": {"fused": True}, "foreach": {"foreach": True}, "for_loop": {"foreach": False}}[impl]


def make_accelerator(tcfg):
    """The accelerate state for `cfg.train`: device, mixed precision and torch.compile."""
    from accelerate import Accelerator

    return Accelerator(
        cpu=tcfg.device == "cpu",
        mixed_precision=tcfg.mixed_precision,
        dynamo_backend="inductor" if tcfg.compile else "no",
    )


def fresh_accelerator(tcfg):
    """An accelerator for one job. accelerate keeps one global state per process, and a sweep (or
    bench.perf) runs many jobs in one: a compile backend or mixed-precision setting of an earlier job
    would otherwise stay."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    return make_accelerator(tcfg)


def enable_checkpointing(model) -> None:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False  # a KV cache is of no use in training and conflicts with recomputation


class Observer:
    """A read-only watcher of the training loop (TrainContext.observers): the landscape's
    snapshots, bench.perf's change-event log. Every hook runs outside the step's clock."""

    def start(self, step: int, model) -> None:
        """Before the first step this call trains (`step` steps are done)."""

    def after_step(self, step: int, model) -> None:
        """After optimizer step `step`."""

    def on_change(self, step: int) -> None:
        """Step `step`'s method event reshaped or replaced trainable tensors (PrunedLoRA's compaction,
        a chain's new phase): the loop re-prepared the model and, unless carried, the optimizer."""


def build_optimizer(method, model, tcfg):
    groups = [g for g in method.param_groups(model, tcfg.weight_decay) if g["params"]]
    if not groups:
        raise RuntimeError(f"method '{method.name}' left no trainable parameters")
    if tcfg.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        # The fine-tuning setting (absolute learning rate, no parameter scaling): the group's lr
        # and the schedule mean what they mean for AdamW; the update's moments are what differ.
        return Adafactor(groups, lr=groups[0]["lr"], scale_parameter=False, relative_step=False, warmup_init=False)
    params = [p for g in groups for p in g["params"]]
    return torch.optim.AdamW(groups, eps=tcfg.adam_eps, **optimizer_kwargs(tcfg.optimizer_impl, params))


def release_optimizer(accelerator, optimizer) -> None:
    """Forget an optimizer that is being replaced: accelerate keeps every optimizer it prepared
    (`Accelerator._optimizers`), so a replaced one and its AdamW state would stay alive, and count
    in the run's peak memory, until the run ends."""
    accelerator._optimizers = [o for o in accelerator._optimizers if o is not optimizer]


def build_scheduler(optimizer, tcfg, total_steps: int, done_steps: int = 0):
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[tcfg.scheduler]
    warmup = math.ceil(tcfg.warmup_ratio * total_steps)
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    for i, group in enumerate(optimizer.param_groups):  # a method may keep a group's rate fixed (L1RA gates)
        if group.get("constant_lr"):
            scheduler.lr_lambdas[i] = _constant
            group["lr"] = scheduler.base_lrs[i]
    with warnings.catch_warnings():  # fast-forwarding before any optimizer.step() is intended here
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(done_steps):  # a rebuilt optimizer continues the schedule where it was
            scheduler.step()
    return scheduler


def _constant(_step: int) -> float:
    return 1.0


# With length grouping, examples are sorted by length inside windows of this many batches.
LENGTH_WINDOW_BATCHES = 50


def epoch_order(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool, lengths=None) -> list[int]:
    """The example order of one epoch. With `lengths`: within windows of LENGTH_WINDOW_BATCHES
    batches of the shuffled order, sort by length (so a batch pads little), then shuffle the
    batches (so lengths do not trend over the epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = (torch.randperm(n, generator=g) if shuffle else torch.arange(n)).tolist()
    if lengths is None:
        return order
    window = batch_size * LENGTH_WINDOW_BATCHES
    order = [i for w in range(0, n, window) for i in sorted(order[w : w + window], key=lambda i: -lengths[i])]
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if shuffle:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
    return [i for b in batches for i in b]


def batch_indices(n: int, batch_size: int, seed: int, shuffle: bool, start: int = 0, lengths=None):
    """Endless micro-batches of example indices, from micro-batch number `start` on. Epoch e's
    order is a pure function of (seed, e), so any position is reachable directly (resume)."""
    per_epoch = math.ceil(n / batch_size)
    epoch, index = divmod(start, per_epoch)
    while True:
        order = epoch_order(n, batch_size, seed, epoch, shuffle, lengths)
        for i in range(index, per_epoch):
            yield order[i * batch_size : (i + 1) * batch_size]
        epoch, index = epoch + 1, 0


def draw_step(batches, examples, task, tokenizer, tcfg, rank: int, device) -> list[dict]:
    """The `grad_accum` micro-batches of one optimizer step, this process's slice of each, collated
    and on `device`: drawn together so that the step's loss tokens are counted before any backward."""
    out = []
    for _ in range(tcfg.grad_accum):
        mine = next(batches)[rank * tcfg.batch_size : (rank + 1) * tcfg.batch_size]
        collated = task.collate([examples[i] for i in mine], tokenizer=tokenizer)
        out.append({k: v.to(device) for k, v in collated.items()})
    return out


def _agree(accelerator, flag: bool) -> bool:
    """True on every process if it is True on any (so that all stop at the same step)."""
    if accelerator.num_processes == 1:
        return flag
    return bool(accelerator.reduce(torch.tensor(int(flag), device=accelerator.device), "sum").item())


@dataclass
class TrainContext:
    """What one training run needs. `model` is what the method hooks see (never a data-parallel
    wrapper). The defaults are what a caller without a run directory needs (bench.perf): no
    tracking, rows kept in memory, no signal handling and no checkpoints."""

    model: Any
    method: Method
    task: Task
    examples: list
    tokenizer: Any
    cfg: Any
    accelerator: Any
    tracker: Any = field(default_factory=NoTracker)
    metrics_log: MetricsLog = field(default_factory=lambda: MetricsLog(Path(os.devnull), write=False))
    stop: Stop = field(default_factory=Stop)
    checkpoints: CheckpointStore | None = None
    resume_from: Path | None = None
    # the run length the method schedules its events for; None: train.max_steps (bench.perf times
    # the start of a longer run with it, so periodic events come at their configured cadence)
    schedule_steps: int | None = None
    # the lead-in step of the CPU live-tensor window (bench/tensor_memory.py); None: the first step
    # this call trains (bench.perf names its last warm-up step)
    memory_lead_in: int | None = None
    # read-only watchers of the loop (Observer: the landscape's snapshots, bench.perf's event log)
    observers: list = field(default_factory=list)


@dataclass(kw_only=True)
class TrainResult:
    """The trained model and the loop's numbers. The fields after `model`, in their order, are the
    training metrics of result.json (`metrics()`)."""

    model: Any
    train_time_s: float
    step_time_p50_s: float | None
    step_time_p90_s: float | None
    step_time_warmup_steps_excluded: int
    tokens_per_s: float | None
    tokens_counted: str = "non-padding input tokens (attention_mask sum) of every micro-batch"
    train_tokens: int
    loss_tokens: int
    optimizer_steps: int
    final_loss: float | None
    resumed_from_step: int | None
    # steps profiled for peak_tensor_bytes, left out of the step-time percentiles (profiling slows them)
    step_time_profiled_steps_excluded: int = 0
    # CPU only, train.memory_profile_steps > 0: the live-tensor peak (bench/tensor_memory.py); None: not measured
    peak_tensor_bytes: dict | None = None

    def metrics(self) -> dict:
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "model" and not (f.name == "peak_tensor_bytes" and self.peak_tensor_bytes is None)
        }


def train(ctx: TrainContext) -> TrainResult:
    """One training run. `ctx.model` (`raw_model` below) is what the method hooks see; `model` (the
    same, or its data-parallel wrapper) is what runs forward and backward."""
    raw_model, method, task, cfg, accelerator = ctx.model, ctx.method, ctx.task, ctx.cfg, ctx.accelerator
    examples, tokenizer, metrics_log, stop = ctx.examples, ctx.tokenizer, ctx.metrics_log, ctx.stop
    tcfg = cfg.train
    main = accelerator.is_main_process
    world, rank = accelerator.num_processes, accelerator.process_index
    method.on_train_begin(raw_model, ctx.schedule_steps or tcfg.max_steps)
    loop, resumed_step = LoopState(), None
    if ctx.resume_from is not None:
        loop = CheckpointStore.loop_state(ctx.resume_from)
        resumed_step = loop.step
        CheckpointStore.restore_method(ctx.resume_from, raw_model, method)
    model = accelerator.prepare_model(raw_model)
    optimizer = accelerator.prepare_optimizer(build_optimizer(method, raw_model, tcfg))
    scheduler = build_scheduler(optimizer, tcfg, tcfg.max_steps)
    if ctx.resume_from is not None:
        CheckpointStore.restore_training(ctx.resume_from, raw_model, optimizer, scheduler)
        metrics_log.replace(loop.history)  # rows logged after the checkpoint are redone

    device = accelerator.device
    clock = StepClock(device.type)
    clock.times = list(loop.step_times)
    # Every process draws the same global micro-batch (batch_size x processes) and trains on its slice.
    lengths = [len(e["input_ids"]) for e in examples] if tcfg.group_by_length else None
    batches = batch_indices(
        len(examples),
        tcfg.batch_size * world,
        cfg.seed,
        tcfg.shuffle,
        start=loop.step * tcfg.grad_accum,
        lengths=lengths,
    )
    memory = TensorMemoryWindow.for_loop(tcfg, device.type, loop.step + 1, ctx.memory_lead_in, world)
    model.train()
    for observer in ctx.observers:
        observer.start(loop.step, raw_model)
    bar = tqdm(total=tcfg.max_steps, initial=loop.step, desc="train", unit="step", disable=not main, dynamic_ncols=True)
    prior_s = loop.elapsed_s  # training time of earlier attempts
    started = time.perf_counter()
    stop.deferred = True  # a signal now ends the run at the next step boundary, with a checkpoint
    try:
        for step in range(loop.step + 1, tcfg.max_steps + 1):
            clock.start()
            # Gradients are cleared here, not after the step, so that after_step can still read
            # them (AdaLoRA scores importance from them between optimizer.step and zero_grad).
            optimizer.zero_grad(set_to_none=True)
            if memory is not None:
                memory.begin_step(step, raw_model, optimizer)
            micro_batches = draw_step(batches, examples, task, tokenizer, tcfg, rank, device)
            # The step's loss is the mean over all of its loss tokens, on every process: each
            # micro-batch's mean loss is weighted by its share of the step's tokens, so that how the
            # batch is split (grad_accum, processes) does not change what is trained. DDP averages
            # gradients over processes, hence the factor `world`.
            counts = [torch.as_tensor(task.loss_tokens(b), device=device, dtype=torch.long) for b in micro_batches]
            step_loss_tokens = torch.stack(counts).sum()
            global_tokens = step_loss_tokens if world == 1 else accelerator.reduce(step_loss_tokens.clone(), "sum")
            shares = [c.float() * world / global_tokens.clamp(min=1).float() for c in counts]
            step_loss = torch.zeros((), device=device)
            step_extra = None
            step_tokens = torch.zeros((), device=device, dtype=torch.long)
            for micro, (batch, share) in enumerate(zip(micro_batches, shares)):
                last = micro == tcfg.grad_accum - 1
                if memory is not None:
                    memory.phase(step, "forward")
                # prepare() already wraps forward in autocast when mixed precision is on
                with accelerator.no_sync(model) if not last else nullcontext():
                    out = model(**batch)
                    loss = out.loss
                    # a regulariser keeps its per-step meaning: added once per step in all
                    extra = method.extra_loss(raw_model, step)
                    weighted = loss * share
                    if memory is not None:
                        memory.phase(step, "backward")
                    accelerator.backward(weighted if extra is None else weighted + extra / tcfg.grad_accum)
                step_loss += weighted.detach().float() / world
                if extra is not None:
                    step_extra = (step_extra or 0.0) + extra.detach().float() / tcfg.grad_accum
                step_tokens += batch["attention_mask"].sum()
            if memory is not None:  # the gradients are complete: which storages they are
                memory.phase(step, "optimizer", raw_model)
            method.after_backward(raw_model, step)
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), tcfg.max_grad_norm)
            method.before_optimizer_step(raw_model, step, optimizer)
            lr = scheduler.get_last_lr()[0]  # the rate this step uses
            optimizer.step()
            if memory is not None:  # every trainable tensor has its optimizer state now
                memory.phase(step, "after_step", raw_model, optimizer)
            scheduler.step()
            change = Change.reported(method.after_step(raw_model, step, optimizer), method.name)
            if change:  # the set or shapes of trainable tensors changed
                # accelerate marks a model it prepared and hands a marked one back as it is: on one
                # process that mark sits on raw_model itself, so without this the run went on
                # uncompiled after the first change event
                raw_model.__dict__.pop("_is_accelerate_prepared", None)
                model = accelerator.prepare_model(raw_model)  # a data-parallel wrapper must see the new ones
                if change != Change.PARAMETERS_REPLACED:  # the method did not carry the optimizer state itself
                    release_optimizer(accelerator, optimizer)
                    optimizer = accelerator.prepare_optimizer(build_optimizer(method, raw_model, tcfg))
                    scheduler = build_scheduler(optimizer, tcfg, tcfg.max_steps, done_steps=step)
            if world > 1:  # logged numbers are global: each process holds its tokens' share of the loss
                step_loss = accelerator.reduce(step_loss, "sum")
                step_tokens = accelerator.reduce(step_tokens, "sum")
                step_loss_tokens = global_tokens
            dt = clock.stop()
            if memory is not None:  # after the clock: the last profiled step's analysis is not timed
                memory.end_step(step, raw_model, optimizer, changed=bool(change))
            for observer in ctx.observers:
                if change:
                    observer.on_change(step)
                observer.after_step(step, raw_model)

            # The no-gradient guard rides on the step's one host sync. It judges the whole trainable
            # set (LoRA's A alone has a zero gradient on step 1, while B = 0), on every step.
            loss_value, norm_value = torch.stack([step_loss.float(), grad_norm.detach().float()]).tolist()
            if norm_value == 0.0:
                raise NoGradient(
                    f"no gradient reached the trainable parameters at optimizer step {step}: the gradient norm "
                    f"over all {sum(p.numel() for p in raw_model.parameters() if p.requires_grad):,} trainable "
                    f"parameters is exactly 0, so the step trained nothing (method '{method.name}'; a trainable "
                    f"tensor cut off from the loss, e.g. by a custom autograd op that torch.compile traced wrongly)"
                )
            loop.step, loop.last_loss = step, loss_value
            loop.train_tokens += int(step_tokens.item())
            loop.loss_tokens += int(step_loss_tokens.item())
            total_value = loss_value if step_extra is None else loss_value + float(step_extra)
            if not math.isfinite(total_value):
                raise Diverged(f"loss is {total_value} at optimizer step {step} (task loss {loss_value})")
            if step % tcfg.log_every == 0 or step == tcfg.max_steps:
                row = {
                    "step": step,
                    "loss": loss_value,
                    "extra_loss": None if step_extra is None else float(step_extra),
                    "lr": lr,
                    "grad_norm": norm_value,
                    "step_time_s": dt,
                    "tokens": int(step_tokens.item()),
                }
                metrics_log.append(row)
                if main:
                    ctx.tracker.log(row, step=step)
            elapsed = prior_s + time.perf_counter() - started
            bar.set_postfix(
                loss=f"{loss_value:.3f}",
                tok_s=f"{loop.train_tokens / elapsed:.0f}",
                mem=f"{current_memory(device.type):.1f}G",
                refresh=False,
            )
            bar.update(1)
            every = cfg.run.checkpoint_every
            stopping = _agree(accelerator, bool(stop.signal))
            if stopping or (every and step % every == 0 and step < tcfg.max_steps):
                loop.step_times, loop.history, loop.elapsed_s = list(clock.times), list(metrics_log.rows), elapsed
                if main and ctx.checkpoints is not None:
                    ctx.checkpoints.save(raw_model, method, optimizer, scheduler, loop)
                accelerator.wait_for_everyone()
                if stopping:
                    raise Cancelled(f"received signal {stop.signal or 'on another process'}")
    finally:
        stop.deferred = False
        bar.close()
        if memory is not None:
            memory.close()
    # the memory window's collections and analysis are not training time (its profiled steps are)
    train_time = prior_s + time.perf_counter() - started - (memory.overhead_s if memory is not None else 0.0)
    profiled = range(memory.lead_in, memory.last + 1) if memory is not None else range(0)
    return TrainResult(
        model=raw_model,
        train_time_s=train_time,
        **clock.summary(tcfg.timing_warmup_steps, skip=profiled),
        tokens_per_s=loop.train_tokens / train_time if train_time > 0 else None,
        train_tokens=loop.train_tokens,
        loss_tokens=loop.loss_tokens,
        optimizer_steps=tcfg.max_steps,
        final_loss=loop.last_loss,
        resumed_from_step=resumed_step,
        peak_tensor_bytes=memory.result() if memory is not None else None,
    )
