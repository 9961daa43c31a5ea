"""One bench.perf configuration, measured in this process: the suite's training loop (or the bare
reference loop) on synthetic batches, and the checks that refuse a row as an invalid measurement."""

from __future__ import annotations

import json
import statistics
import time
from contextlib import nullcontext

from bench.api import Task
from bench.metrics import percentile


def method_overrides(method: str, r: int, warmup: int, steps: int) -> list[str]:
    """The overrides that make `method` comparable with LoRA at rank r: its own `perf_sizing`, of the
    class its composed config names (a method file may inherit `_target_` through its defaults)."""
    from hydra.utils import get_class

    from bench.config import compose_config

    target = compose_config([f"method={method}", "logger=none"]).method["_target_"]
    return get_class(target).perf_sizing(r, warmup, steps)


# The settings that change the work of one optimizer step; every row records them (`work`).
WORK_KEYS = (
    "grad_accum",
    "batch",
    "seq",
    "targets",
    "checkpointing",
    "compile",
    "kernels",
    "precision",
    "dtype",
    "optimizer",
)


def work_of(cfg, seq: int) -> dict:
    targets = cfg.method.get("target_modules")
    if targets and not isinstance(targets, str):  # a preset (all-linear) stays a name, a list joins
        targets = ",".join(targets)
    return {
        "grad_accum": int(cfg.train.grad_accum),
        "batch": int(cfg.train.batch_size),
        "seq": seq,
        "targets": targets or "none (the method's own parameters)",
        "checkpointing": bool(cfg.train.gradient_checkpointing),
        "compile": bool(cfg.train.compile),
        "kernels": cfg.train.kernels,
        "precision": cfg.train.mixed_precision,
        "dtype": cfg.model.get("dtype", "float32"),
        "optimizer": cfg.train.optimizer,
    }


def invalid_reasons(row: dict) -> list[str]:
    """Why a measured row is not a measurement of the work it reports (empty: it is)."""
    reasons = []
    if row.get("mfu") is not None and row["mfu"] > 1:
        reasons.append(f"MFU {100 * row['mfu']:.1f}% exceeds the device's peak: the step did not do the counted work")
    if row.get("tokens_processed") != row.get("tokens_counted"):
        reasons.append(
            f"the loop processed {row.get('tokens_processed')} tokens, the counts assume {row.get('tokens_counted')}"
        )
    if row.get("no_gradient"):
        reasons.append(f"trainable tensors without a gradient on the last step: {', '.join(row['no_gradient'])}")
    return reasons


def without_gradient(model, limit: int = 3) -> list[str]:
    """Trainable tensors whose gradient after the last step is missing or all zero (judged per
    tensor at the last step, when LoRA's A already has one)."""
    names = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not bool(p.grad.detach().abs().sum() > 0))
    ]
    return names[:limit] + ([f"... {len(names) - limit} more"] if len(names) > limit else [])


class _SyntheticTask(Task):
    """Fixed-length random token batches; nothing to evaluate."""

    def collate(self, examples, tokenizer=None):
        import torch

        ids = torch.tensor([e["input_ids"] for e in examples])
        return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}


def _compose(model: str, method: str, extra: list[str]):
    from bench.config import compose_config

    return compose_config([f"model={model}", f"method={method}", "logger=none", "run.checkpoint_every=null", *extra])


def step_overrides(args) -> list[str]:
    """The config of one measured row: the work keys pinned from the command line (over any model /
    task profile), then the method's sizing, then the user's overrides."""
    mem = memory_steps(args)
    return [
        f"train.max_steps={args.warmup + mem + args.steps}",
        f"train.batch_size={args.batch}",
        f"train.grad_accum={args.grad_accum}",
        f"train.compile={str(args.compile).lower()}",
        f"train.kernels={args.kernels}",
        f"train.gradient_checkpointing={str(args.checkpointing).lower()}",
        f"train.timing_warmup_steps={args.warmup + mem}",
        f"train.memory_profile_steps={mem}",
        f"train.device={args.device}",
        f"train.mixed_precision={args.precision}",
        "train.log_every=1",
        *method_overrides(base_method(args.method), args.rank, args.warmup, schedule_length(args) - args.warmup),
        *args.override,
    ]


def schedule_length(args) -> int:
    """The run length the method schedules its events for (`on_train_begin`): the window's own
    (warm-up + memory steps + timed steps) unless --cadence-steps names a realistic run. In a
    13-step window L1RA's rank update every 10 % of the run falls on every step; in a 1000-step
    run, every 100."""
    return args.cadence_steps or (args.warmup + memory_steps(args) + args.steps)


def memory_steps(args) -> int:
    """Steps profiled for the live-tensor peak between the warm-up and the timed steps (the last
    warm-up step is their lead-in): --memory-steps on the CPU; none on CUDA (its peak is
    torch.cuda.max_memory_allocated), with --profile (one profiler at a time) or without a warm-up
    step to lead in."""
    if args.memory_steps <= 0 or args.profile or args.bare or args.warmup < 1:
        return 0
    if args.device == "cuda" or args.device == "auto" and _cuda_available():
        return 0
    return args.memory_steps


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def measure(args) -> dict:
    """One configuration, in this process."""
    import torch

    from bench import flops
    from bench import metrics as M
    from bench.config import build
    from bench.models import kernels, loading
    from bench.train import NoGradient, TrainContext, enable_checkpointing, fresh_accelerator, train

    cfg = _compose(args.model, base_method(args.method), step_overrides(args))
    kernels.restore_stock()
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    # dynamo could otherwise reuse graphs traced for another model (an earlier row, a test) without
    # this one's hooks
    torch._dynamo.reset()
    accelerator = fresh_accelerator(cfg.train)  # train.device is args.device (an override above)
    device = accelerator.device
    # synthetic token ids: a random-weight architecture keeps its own vocabulary (its true shape)
    model, tokenizer, _ = loading.load(cfg.model, device=loading.build_device(cfg.model, device), fit_vocab=False)
    model.to(device)
    if cfg.train.gradient_checkpointing:
        enable_checkpointing(model)
    kernels.apply(model, cfg.train.kernels, device.type)
    method = build(cfg.method)
    model = method.apply(model).to(device)
    work = work_of(cfg, args.seq)
    micro_tokens = work["batch"] * work["grad_accum"] * args.seq  # one optimizer step's tokens
    g = torch.Generator().manual_seed(1)
    vocab = model.config.vocab_size if hasattr(model, "config") else 1000
    n = work["batch"] * work["grad_accum"] * cfg.train.max_steps
    examples = [{"input_ids": torch.randint(0, vocab, (args.seq,), generator=g).tolist()} for _ in range(n)]
    for e in examples:
        e["labels"] = e["input_ids"]
    rss_before = M.peak_rss_bytes()
    M.reset_peak_memory(device.type)
    mem_steps = memory_steps(args)
    tensor_peak = None
    if args.bare:
        times, processed = _bare_loop(model, method, examples, cfg, device)
        step = {"step_time_p50_s": statistics.median(times[args.warmup :])}
    else:
        profiler = _step_profiler(args, device) if args.profile else None
        events = ChangeEvents(profiler)
        # no run directory: the context's defaults keep the rows in memory and write no checkpoint
        ctx = TrainContext(
            model,
            method,
            _SyntheticTask(name="synthetic"),
            examples,
            tokenizer,
            cfg,
            accelerator,
            schedule_steps=schedule_length(args),
            memory_lead_in=args.warmup,  # the last warm-up step leads in to the memory steps
            observers=[events],
        )
        try:
            with profiler or nullcontext():
                out = train(ctx)
            if profiler is not None:
                _write_profile(profiler, args, device)
        except NoGradient as err:
            return {
                "method": args.method,
                "checkpointing": work["checkpointing"],
                "bare": False,
                "work": work,
                "invalid": [str(err)],
            }
        model, processed, tensor_peak = out.model, out.train_tokens, out.peak_tensor_bytes
        step = {"step_time_p50_s": out.step_time_p50_s, "step_time_p90_s": out.step_time_p90_s}
        times = {r["step"]: r["step_time_s"] for r in ctx.metrics_log.rows}
        step.update(split_events(times, events.steps, args.warmup + mem_steps))
    # counted on the model as it was timed (PrunedLoRA after compaction)
    trainable, total = M.count_params(model)
    step_flops = flops.training_flops(model, tokens=micro_tokens, seq_len=args.seq)["total"]
    mem = M.peak_memory(device.type)
    if mem["kind"] == "cpu_rss":
        mem["train_delta_bytes"] = max(0, mem["rss_bytes"] - rss_before)
    peak = None
    if device.type == "cuda":
        peak = flops.peak_flops(torch.cuda.get_device_name(device), compute_dtype(cfg, model))
    achieved = step_flops / step["step_time_p50_s"]
    row = {
        "flops_per_step": step_flops,
        "achieved_tflops": achieved / 1e12,
        "mfu": flops.mfu(step_flops, step["step_time_p50_s"], peak),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "model": args.model,
        "method": args.method,
        "checkpointing": work["checkpointing"],
        "bare": args.bare,
        "rank": args.rank,
        "work": work,
        "sizing": method_overrides(base_method(args.method), args.rank, args.warmup, args.steps),
        **step,
        "tokens_per_s": micro_tokens / step["step_time_p50_s"],
        "peak_memory": mem,
        "memory_steps": mem_steps,
        **({"peak_tensor_bytes": tensor_peak} if tensor_peak is not None else {}),
        "tokens_counted": micro_tokens * cfg.train.max_steps,
        "tokens_processed": int(processed),
        "no_gradient": without_gradient(model),
        "trainable_params": trainable,
        "total_params": total,
        "device": device.type,
    }
    reasons = invalid_reasons(row)
    if reasons:
        row["invalid"] = reasons
    return row


class ChangeEvents:
    """The steps whose method event reshaped or replaced trainable tensors (timed apart from the
    steady steps: split_events); steps the profiler, if any, once per optimizer step."""

    def __init__(self, profiler=None):
        self.steps: list[int] = []
        self.profiler = profiler

    def start(self, step: int, model) -> None:
        pass

    def on_change(self, step: int) -> None:
        self.steps.append(step)

    def after_step(self, step: int, model) -> None:
        if self.profiler is not None:
            self.profiler.step()


def _step_profiler(args, device):
    """torch.profiler over PROFILE_STEPS steady steps after the warm-up (and one step of its own
    warm-up), stepped from after_step, so the trace holds whole optimizer steps."""
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    schedule_ = schedule(wait=max(0, args.warmup - 1), warmup=1, active=profiled_steps(args), repeat=1)
    return profile(activities=activities, schedule=schedule_)


def profiled_steps(args) -> int:
    return max(1, min(PROFILE_STEPS, args.steps - 1))


# Steps traced by --profile, and the names that stall the host on the device: each one in a
# steady step serialises the launch queue (counted per step in the profile's summary line).
PROFILE_STEPS = 3


HOST_STALLS = (
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
    "cudaMemcpy",
    "aten::_local_scalar_dense",
    "aten::item",
)


def _write_profile(profiler, args, device) -> None:
    """The operator table (self device time on a GPU, self CPU time otherwise) and a summary line of
    host stalls per profiled step, into <--profile>/<method>[-ckpt][-compile].txt."""
    events = profiler.key_averages()
    on_gpu = device.type == "cuda"
    table = events.table(sort_by="self_device_time_total" if on_gpu else "self_cpu_time_total", row_limit=40)
    active = profiled_steps(args)
    stalls = {e.key: e.count / active for e in events if any(e.key.startswith(n) for n in HOST_STALLS)}
    calls = sum(e.count for e in events if e.key.startswith("aten::")) / active
    label = args.method + ("-ckpt" if args.checkpointing else "") + ("-compile" if args.compile else "")
    args.profile.mkdir(parents=True, exist_ok=True)
    (args.profile / f"{label}.txt").write_text(
        f"{label}: {active} profiled steps after {args.warmup} warm-up; per step: {calls:.0f} aten calls; "
        f"host stalls {json.dumps(stalls) if stalls else 'none'}\n"
        "(the profiled steps are slower than unprofiled ones: take times from rows without --profile)\n\n"
        + table
        + "\n"
    )


def compute_dtype(cfg, model) -> str:
    """The dtype the matrix multiplies run in, for the peak-rate table."""
    import torch

    if cfg.train.mixed_precision in ("bf16", "fp16"):
        return cfg.train.mixed_precision
    dtype = next(model.parameters()).dtype
    if dtype in (torch.bfloat16, torch.float16):
        return "bf16" if dtype == torch.bfloat16 else "fp16"
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"


def split_events(times: dict, changes: list[int], warmup: int) -> dict:
    """Steady state and change events, apart. An event's cost lands in its own step (the method's
    work in after_step, an optimizer rebuild) and the next (lazy optimizer state, a recompilation):
    the steady p50/p90 leave both out, and one event costs their time over two steady steps."""
    timed = {s: t for s, t in times.items() if s > warmup}
    hit = {s for c in changes for s in (c, c + 1)}
    steady = [t for s, t in timed.items() if s not in hit]
    out = {"step_times_s": [times[s] for s in sorted(times)], "change_steps": list(changes)}
    if not any(c in timed or c + 1 in timed for c in changes) or not steady:
        return out
    base = statistics.median(steady)
    costs = [timed[c] + timed.get(c + 1, base) - 2 * base for c in changes if c in timed]
    return {
        **out,
        "step_time_p50_s": base,
        "step_time_p90_s": percentile(steady, 0.9),
        "event_cost_s": statistics.median(costs) if costs else None,
        "timed_events": len(costs),
    }


def _bare_loop(model, method, examples, cfg, device) -> tuple[list[float], int]:
    """The same work without the suite: grad_accum x (forward, backward), clip, AdamW step, with
    the suite's autocast, AdamW implementation and clipping set (the trainable tensors), so that
    the ratio to the suite's step measures the harness alone (a loop differing in those three was
    12 % slower on the H200: docs/performance.md). Returns the step times and the tokens processed."""
    import torch

    from bench.train import optimizer_kwargs

    task = _SyntheticTask(name="synthetic")
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, **optimizer_kwargs(cfg.train.optimizer_impl, trainable))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.mixed_precision)
    model.train()
    times, processed, bs, accum = [], 0, cfg.train.batch_size, cfg.train.grad_accum
    micro = iter(range(0, len(examples), bs))
    for _ in range(cfg.train.max_steps):
        batches = [
            {k: v.to(device) for k, v in task.collate(examples[i : i + bs]).items()}
            for i in (next(micro) for _ in range(accum))
        ]
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        for batch in batches:
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = model(**batch).loss
            (loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg.train.max_grad_norm)
        optimizer.step()
        loss.item()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        processed += sum(int(b["attention_mask"].sum()) for b in batches)
    return times, processed


def base_method(spec: str) -> str:
    """`full@adafactor` -> `full`: a labelled variant of a method, configured with `--only`."""
    return spec.split("@", 1)[0]
