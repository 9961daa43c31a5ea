"""Every efficiency metric of a run, defined once.

- train_time_s: wall time of the training loop (optimizer steps, their data loading and method
  hooks); evaluation and export are excluded.
- step_time_p50_s / step_time_p90_s: percentiles of optimizer-step wall time, leaving out the first
  `train.timing_warmup_steps` steps (allocator warm-up, lazy init) and the steps profiled for
  peak_tensor_bytes (profiling slows them).
- tokens_per_s: non-padding input tokens (sum of attention_mask) of every micro-batch trained on,
  divided by train_time_s. `loss_tokens` (tokens whose label counts in the loss) is reported too.
- peak_memory: on CUDA, torch.cuda.max_memory_allocated / max_memory_reserved since the peak
  statistics were reset just before training; on the CPU, the peak resident set size (VmHWM) since
  the reset before training where Linux allows it (`scope: training`), else the process's lifetime
  peak (`scope: process`). The CPU's RSS depends on the allocator, not on the method: a secondary
  figure beside peak_tensor_bytes.
- peak_tensor_bytes (CPU only): the peak of live tensor bytes over `train.memory_profile_steps`
  steps after a profiled lead-in step, split into parameters, gradients, optimizer state,
  activations and other and checked against a hand count (bench/tensor_memory.py).
- trainable_params / total_params: counted on the model being trained (adapters included).
- adapter_bytes: bytes on disk of what the method exported.
- eval_throughput / eval_base_throughput: questions (rows evaluated) per second of evaluation wall
  time, and for generation tasks the new token positions `generate` produced (rows x new length of
  every generate call: a row that stopped early still occupies its positions until its batch ends,
  so this is the decoding work done, not the length of the kept answers) per second.
"""

from __future__ import annotations

import resource
import statistics
import time
from pathlib import Path


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    # nearest-rank on the sorted values with linear interpolation between neighbours
    pos = (len(ordered) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


class StepClock:
    """Wall-clock times of optimizer steps (synchronised with the device on CUDA)."""

    def __init__(self, device_type: str):
        self.device_type = device_type
        self.times: list[float] = []
        self._t = None

    def _sync(self):
        if self.device_type == "cuda":
            import torch

            torch.cuda.synchronize()

    def start(self):
        self._sync()
        self._t = time.perf_counter()

    def stop(self) -> float:
        self._sync()
        dt = time.perf_counter() - self._t
        self.times.append(dt)
        return dt

    def summary(self, warmup: int, skip=()) -> dict:
        """Percentiles of the steps after the first `warmup`, without the steps (1-based) in `skip`
        (those profiled for peak_tensor_bytes), unless that leaves none."""
        kept = self.times[warmup:] if len(self.times) > warmup else self.times
        first = len(self.times) - len(kept) + 1  # the step number of kept[0]
        skip = set(skip)
        unprofiled = [t for i, t in enumerate(kept, first) if i not in skip]
        excluded = len(kept) - len(unprofiled) if unprofiled else 0
        kept = unprofiled or kept
        return {
            "step_time_p50_s": statistics.median(kept) if kept else None,
            "step_time_p90_s": percentile(kept, 0.9),
            "step_time_warmup_steps_excluded": min(warmup, max(len(self.times) - 1, 0)),
            "step_time_profiled_steps_excluded": excluded,
        }


_RSS_SCOPE = {"scope": "process"}  # what the CPU peak covers: "training" once reset, else "process"


def reset_peak_memory(device_type: str) -> None:
    if device_type == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()
        return
    # Linux resets the process's peak RSS (VmHWM) on "5" into clear_refs;
    # without it the CPU peak is the process's lifetime one, model loading included (SmolLM2-135M:
    # 6.1 GB for every LoRA rank, its loading peak, while training peaked near 4 GB)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _RSS_SCOPE["scope"] = "training"
    except OSError:
        _RSS_SCOPE["scope"] = "process"


def peak_memory(device_type: str) -> dict:
    if device_type == "cuda":
        import torch

        return {
            "kind": "cuda",
            "allocated_bytes": int(torch.cuda.max_memory_allocated()),
            "reserved_bytes": int(torch.cuda.max_memory_reserved()),
            "device_name": torch.cuda.get_device_name(),
        }
    return {"kind": "cpu_rss", "rss_bytes": peak_rss_bytes(), "scope": _RSS_SCOPE["scope"]}


def peak_rss_bytes() -> int:
    """This address space's peak RSS: VmHWM, which clear_refs resets. getrusage's ru_maxrss is not
    used where VmHWM exists: across fork and exec it keeps the parent's RSS at the fork (a job that
    a 1 GB sweep process starts reports at least 1 GB) and a reset does not lower it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def current_memory(device_type: str) -> float:
    """GiB now, for the progress bar."""
    if device_type == "cuda":
        import torch

        return torch.cuda.memory_allocated() / 2**30
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**30
    except OSError:
        return 0.0


def count_params(model) -> tuple[int, int]:
    trainable = total = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def dir_bytes(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class GenerationCounter:
    """Counts the new token positions of every `model.generate` call inside the `with` block (an
    instance attribute shadows the method while it runs, so nothing else is changed)."""

    def __init__(self, model):
        self.model, self.new_tokens, self.calls = model, 0, 0

    def __enter__(self):
        original = getattr(self.model, "generate", None)
        if original is None:  # a classification head (LlamaForSequenceClassification) never generates
            return self

        def counting(*args, **kwargs):
            out = original(*args, **kwargs)
            prompt = kwargs.get("input_ids", args[0] if args else None)
            ids = getattr(out, "sequences", out)
            if prompt is not None and hasattr(ids, "shape"):  # decoder-only: the prompt, then the new tokens
                self.new_tokens += int(ids.shape[0]) * (int(ids.shape[-1]) - int(prompt.shape[-1]))
            self.calls += 1
            return out

        self.model.generate = counting
        return self

    def __exit__(self, *exc):
        if "generate" in vars(self.model):
            del self.model.generate
        return False


def eval_throughput(rows: int, seconds: float, counter: GenerationCounter) -> dict:
    generated = counter.calls > 0
    return {
        "questions_per_s": rows / seconds if seconds > 0 else None,
        "new_tokens": counter.new_tokens if generated else None,
        "new_tokens_per_s": counter.new_tokens / seconds if generated and seconds > 0 else None,
        "generate_calls": counter.calls,
    }


def timed_evaluation(task, model, tokenizer, eval_cfg, out_dir: Path, seed: int) -> tuple[dict, float, dict]:
    """`task.evaluate` into `out_dir`: (scores, wall seconds, throughput). The throughput holds the
    generation counts, the batch sizes eval.batch_size=auto chose, and where the task times its
    parts (GSM8K: generation against the teacher-forced losses, per split): measurements, moved
    out of the scores that a rerun must reproduce."""
    from bench import eval_batch
    from bench.models.loading import unwrap

    t = time.perf_counter()
    with GenerationCounter(unwrap(model)) as generated, eval_batch.recording() as sizes:
        scores = task.evaluate(model, tokenizer, eval_cfg, out_dir, seed=seed)
    seconds = time.perf_counter() - t
    throughput = eval_throughput(scores["n"], seconds, generated)
    if sizes:
        throughput["batch_sizes"] = sizes
    split = {"test": scores.pop("time_s", None), "heldout": (scores.get("heldout") or {}).pop("time_s", None)}
    if any(split.values()):
        throughput["time_split_s"] = {k: v for k, v in split.items() if v}
    return scores, seconds, throughput
