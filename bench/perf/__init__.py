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
