"""python -m bench.perf [--model M] [--methods a,b] [--steps N] ...   (make perf)

Times training steps of each method on one model shape with synthetic batches (fixed length, no
padding), each configuration in its own process so peak memory is its own, and reports step time
(median, p90, after warm-up), tokens/s, peak memory and the ratio to LoRA at the same rank, with
gradient checkpointing off and on. The step timed is the suite's own training loop
(bench.train.train); the harness overhead is that loop's median step against a bare hand-written
PEFT + torch loop doing the same work (`--bare`).

Peak memory is live tensor bytes: on CUDA torch.cuda.max_memory_allocated; on the CPU the peak over
`--memory-steps` steps (default: train.memory_profile_steps) placed between the warm-up and the
timed steps, led in by the last warm-up step, profiled and not timed (bench/tensor_memory.py: the
split into parameters, gradients, optimizer state, activations and other, checked against a hand
count). The CPU's peak RSS growth is shown beside it and never compared: it depends on the
allocator, not on the method.

Every key that changes the work of a step is pinned or recorded and printed in the table heading:
gradient accumulation (pinned to `--grad-accum`, default 1, over a model/task profile's own value
such as the 7B GSM8K profile's 4, so that the work timed is the work counted), batch, sequence
length, adapter targets, checkpointing, compile, kernels, precision and weight dtype.
FLOPs, tokens/s and the bare loop count the micro-batches actually run. A row is refused as an
invalid measurement, not printed as a result, when its MFU exceeds 1, when the tokens the loop
processed differ from those counted, or when a trainable tensor received no gradient.

Change events (a method's after_step reports reshaped or replaced tensors: PrunedLoRA compaction,
L1RA reassignment, c3LA phase switches) are timed apart: the row's step p50/p90 are the steady
steps', and a row below it gives the cost of one event (its step and the next over two steady
steps). Events that change nothing the loop sees (AdaLoRA's in-place budget masking) stay in the
steady steps. Methods schedule their events for the window's own length unless --cadence-steps N
names a realistic run, of which the window is then the start (L1RA updates ranks every 10 % of the
run: every step of a 13-step window, every 100 steps of a 1000-step run).

Each method states its own sizing against LoRA at the same rank (`Method.perf_sizing`); methods
that change size during training (PrunedLoRA) place the change inside the warm-up, so what is
timed is the steady state after it (PrunedLoRA: after compaction to r_target, compared with LoRA at
r_target).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

from bench.config import REFERENCE_METHOD, TrainConfig
from bench.metrics import percentile
from bench.protocols import Task

REPO = Path(__file__).resolve().parent.parent


def method_overrides(method: str, r: int, warmup: int, steps: int) -> list[str]:
    """The overrides that make `method` comparable with LoRA at rank r: its own `perf_sizing`."""
    import yaml
    from hydra.utils import get_class

    target = yaml.safe_load((REPO / "conf" / "method" / f"{method}.yaml").read_text())["_target_"]
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

    from bench import flops, kernels, models
    from bench import metrics as M
    from bench.config import build
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
    model, tokenizer, _ = models.load(cfg.model, device=models.build_device(cfg.model, device), fit_vocab=False)
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


def per_method_overrides(specs: list[str], methods: list[str]) -> dict[str, list[str]]:
    """`--only full:train.optimizer=adafactor` -> {"full": ["train.optimizer=adafactor"]}. A method
    may appear twice under labels (`--methods full,full@adafactor --only full@adafactor:...`)."""
    found: dict[str, list[str]] = {}
    for spec in specs:
        method, sep, override = spec.partition(":")
        if not sep or "=" not in override:
            raise SystemExit(f"--only {spec!r}: expected METHOD:KEY=VALUE, e.g. full:train.optimizer=adafactor")
        if method not in methods:
            raise SystemExit(f"--only {spec!r}: method '{method}' is not in --methods ({', '.join(methods)})")
        found.setdefault(method, []).append(override)
    return found


def _run_one(argv: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.perf", "--one", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr or out.stdout)[-800:], "argv": argv}
    return json.loads(lines[-1])


def median_run(found: list[dict]) -> dict:
    """The run with the median step time, with the spread of all runs attached."""
    ok = [r for r in found if "error" not in r and "invalid" not in r]
    if not ok:
        return found[0]
    ok.sort(key=lambda r: r["step_time_p50_s"])
    chosen = dict(ok[len(ok) // 2])
    chosen["runs"] = [r["step_time_p50_s"] for r in ok]
    return chosen


def _mem(row: dict) -> float | None:
    """The row's memory figure: live tensor bytes, CUDA's max_memory_allocated or, on the CPU, the
    peak over the memory-profiled steps (bench/tensor_memory.py); None where there is none (or the
    CPU figure failed its check). The RSS growth is never used in its place: it depends on the
    allocator (two runs of one LoRA configuration: 978 and 2,136 MB), not on the method."""
    m = row["peak_memory"]
    if m.get("kind") == "cuda":
        return float(m["allocated_bytes"]) if m.get("allocated_bytes") else None
    found = (row.get("peak_tensor_bytes") or {}).get("bytes")
    return float(found) if found else None


def _rss(row: dict) -> float | None:
    found = row["peak_memory"].get("train_delta_bytes")
    return None if found is None else float(found)


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 1e6:.0f}"


MEMORY_NOTE = (
    "peak mem: live tensor bytes (CUDA: torch.cuda.max_memory_allocated; CPU: the peak over the "
    "memory-profiled steps after the warm-up, split and checked in each row's peak_tensor_bytes); "
    "RSS Δ: the CPU process's peak RSS growth over training, which depends on the allocator, shown "
    "beside it and never compared"
)


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def heading(rows: list[dict]) -> tuple[str, dict]:
    """The work settings of the measured rows, as text, and where a row differs, per row index."""
    works = [r["work"] for r in rows if "work" in r]
    # the most common value of each key is the heading's; a row that differs names its own
    shared = {
        k: max(values, key=values.count)
        for k in WORK_KEYS
        if k != "checkpointing"
        for values in [[str(w[k]) for w in works if k in w]]  # rows written before a key existed lack it
        if values
    }
    differ = {
        i: {k: v for k, v in r["work"].items() if k in shared and str(v) != shared[k]}
        for i, r in enumerate(rows)
        if "work" in r
    }
    text = ", ".join(f"{k} {v}" for k, v in shared.items())
    return text, differ


def table(rows: list[dict], reference: str = REFERENCE_METHOD) -> str:
    _, differ = heading(rows)
    lines = [
        "| method | checkpointing | step p50 (s) | step p90 (s) | runs: step p50 min–max (s) | tokens/s | "
        f"peak mem (MB) | RSS Δ (MB) | step vs {reference} | mem vs {reference} | trainable | TFLOP/s | MFU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = {
        r["checkpointing"]: r
        for r in rows
        if r.get("method") == reference and not r.get("bare") and "error" not in r and "invalid" not in r
    }
    for i, r in enumerate(rows):
        if "error" in r:
            lines.append(
                f"| {' '.join(r['argv'])} | error | {r['error'].splitlines()[-1] if r['error'] else ''} |||||||||||"
            )
            continue
        name = (
            r["method"]
            + (" (bare loop)" if r["bare"] else "")
            + "".join(f" {k}={v}" for k, v in differ.get(i, {}).items())
        )
        if "invalid" in r:
            lines.append(
                f"| {name} | {r['checkpointing']} | invalid measurement, not a result: "
                f"{'; '.join(r['invalid'])} |||||||||||"
            )
            continue
        if r["bare"]:
            continue
        ref = base.get(r["checkpointing"])
        ratio_t = r["step_time_p50_s"] / ref["step_time_p50_s"] if ref else float("nan")
        ratio_m = _mem(r) / _mem(ref) if ref and _mem(ref) and _mem(r) else float("nan")
        spread = r.get("runs") or [r["step_time_p50_s"]]
        lines.append(
            f"| {name} | {r['checkpointing']} | {r['step_time_p50_s']:.4f} | "
            f"{r.get('step_time_p90_s') or float('nan'):.4f} | {min(spread):.4f}–{max(spread):.4f} "
            f"(n={len(spread)}) | {r['tokens_per_s']:.0f} | {_mb(_mem(r))} | {_mb(_rss(r))} | "
            f"{ratio_t:.3f} | {ratio_m:.3f} | {r['trainable_params']:,} | "
            f"{r.get('achieved_tflops', float('nan')):.2f} | {_pct(r.get('mfu'))} |"
        )
        if r.get("timed_events"):
            lines.append(
                f"| {name}: one change event | {r['checkpointing']} | +{r['event_cost_s']:.4f} "
                f"(its step and the next, over two steady steps; {r['timed_events']} in the timed "
                f"window, steps {', '.join(map(str, r['change_steps']))}) |||||||||||"
            )
        found = r.get("peak_tensor_bytes")
        if found and not found.get("valid"):
            lines.append(
                f"| {name}: peak tensor bytes | {r['checkpointing']} | invalid measurement, not a result: "
                f"{'; '.join(found.get('invalid', []))} |||||||||||"
            )
    if any("peak_memory" in r for r in rows):
        lines += ["", MEMORY_NOTE]
    bare = [r for r in rows if r.get("bare") and "invalid" not in r]
    for b in bare:
        ref = base.get(b["checkpointing"])
        if ref:
            lines.append("")
            lines.append(
                f"Harness overhead ({reference}, checkpointing={b['checkpointing']}): suite step p50 "
                f"{ref['step_time_p50_s']:.4f} s / bare PEFT+torch loop {b['step_time_p50_s']:.4f} s = "
                f"**{ref['step_time_p50_s'] / b['step_time_p50_s']:.3f}×**"
            )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-llama")
    p.add_argument(
        "--methods",
        default="lora,prunedlora,l1ra,adalora,dora,full",
        help="comma-separated; NAME@LABEL adds a labelled variant, configured with --only NAME@LABEL:...",
    )
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument(
        "--cadence-steps",
        type=int,
        default=None,
        metavar="N",
        help="methods schedule their periodic events (rank updates, phase switches, pruning) for a run of "
        "N steps, of which the window is the start (default: the window's own length)",
    )
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument(
        "--grad-accum",
        type=int,
        default=1,
        help="micro-batches per optimizer step (pinned: a model/task profile's own value is not used)",
    )
    p.add_argument("--compile", action="store_true", help="train.compile=true (torch.compile, inductor)")
    p.add_argument(
        "--kernels", default="none", choices=["none", "liger"], help="train.kernels (liger: fused kernels, CUDA)"
    )
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--checkpointing", default="both", choices=["both", "true", "false"])
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="no")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="trace a few steady steps of each row with torch.profiler into DIR/<method>.txt (slows those rows)",
    )
    p.add_argument(
        "--memory-steps",
        type=int,
        default=TrainConfig.memory_profile_steps,
        metavar="N",
        help="CPU: steps between the warm-up and the timed steps over which the peak of live tensor bytes is "
        "measured (train.memory_profile_steps; not timed); 0: off, the memory column is then n/a",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every configuration this many times, interleaved; report the median run",
    )
    p.add_argument("--out", type=Path, default=None, help="also write the table (Markdown) here")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", default=REFERENCE_METHOD, help=argparse.SUPPRESS)
    p.add_argument(
        "--reference",
        default=REFERENCE_METHOD,
        metavar="METHOD",
        help=f"the method the ratio columns and the bare-loop overhead compare with (default: {REFERENCE_METHOD})",
    )
    p.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-bare", action="store_true", help="skip the bare-loop reference (harness overhead)")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="METHOD:OVERRIDE",
        help="an override for one method only, e.g. full:train.optimizer=adafactor (repeatable)",
    )
    p.add_argument("override", nargs="*", help="extra config overrides, e.g. model.init=random")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.one:
        args.checkpointing = args.checkpointing == "true"
        print(json.dumps(measure(args)))
        return 0
    common = [
        "--model",
        args.model,
        "--rank",
        str(args.rank),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--batch",
        str(args.batch),
        "--grad-accum",
        str(args.grad_accum),
        "--seq",
        str(args.seq),
        *(["--compile"] if args.compile else []),
        "--kernels",
        args.kernels,
        "--device",
        args.device,
        "--precision",
        args.precision,
        *(["--threads", str(args.threads)] if args.threads else []),
        *(["--profile", str(args.profile)] if args.profile else []),
        *(["--cadence-steps", str(args.cadence_steps)] if args.cadence_steps else []),
        "--memory-steps",
        str(args.memory_steps),
    ]
    ckpts = ["false", "true"] if args.checkpointing == "both" else [args.checkpointing]
    methods = args.methods.split(",")
    unknown = [m for m in methods if not (REPO / "conf" / "method" / f"{base_method(m)}.yaml").is_file()]
    if unknown:
        raise SystemExit(
            f"--methods: unknown method(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(p.stem for p in (REPO / 'conf' / 'method').glob('*.yaml')))}"
        )
    only = per_method_overrides(args.only, methods)
    configs = [
        [*common, "--method", m, "--checkpointing", ckpt, *args.override, *only.get(m, [])]
        for ckpt in ckpts
        for m in methods
    ]
    if not args.no_bare:
        configs += [
            [*common, "--method", args.reference, "--checkpointing", ckpt, "--bare", *args.override] for ckpt in ckpts
        ]
    runs: dict = {i: [] for i in range(len(configs))}
    for _ in range(args.repeat):  # interleaved, so slow drifts of the machine hit every configuration alike
        for i, argv in enumerate(configs):
            runs[i].append(_run_one(argv))
            print(json.dumps(runs[i][-1]), flush=True)
    rows = [median_run(found) for found in runs.values()]
    mem = memory_steps(args)
    text = (
        f"{args.model}, rank {args.rank}; {heading(rows)[0]}; {args.steps} timed steps after "
        f"{args.warmup} warm-up"
        + (f" and {mem} memory-profiled steps" if mem else "")
        + f", median of {args.repeat} interleaved run(s) per row"
        + "".join(f"; {m}: {' '.join(o)}" for m, o in only.items())
        + "".join(f"; {' '.join(o)}" for o in [args.override] if o)
        + "\n\n"
        + table(rows, args.reference)
    )
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0 if all("error" not in r and "invalid" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
