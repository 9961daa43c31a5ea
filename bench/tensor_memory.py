"""Peak live tensor bytes on the CPU: the CPU analogue of torch.cuda.max_memory_allocated.

The process's peak RSS depends on the allocator (two runs of the same LoRA job: 978 MB and
2,136 MB), not on the method. This counts what the method needs: the bytes of the tensors alive at
each moment of a short window of optimizer steps, with its peak split into parameters, gradients,
optimizer state, activations and other, and checked against a hand count of the first three.

How (`TensorMemoryWindow`, driven from the training loop, bench/train.py):

- torch.profiler (`profile_memory=True`, CPU activity only: no shapes, no stacks) records every
  allocation and free of the CPU allocator inside the window, in time order, with its address.
- The window opens right after `zero_grad` of its lead-in step (the first step the loop trains,
  unless a caller names another) and closes at the end of step lead-in + `train.memory_profile_steps`.
  The peak is taken over the steps after the lead-in only: the lead-in is profiled so that what is
  alive at the start of the measured steps (gradients, AdamW's state, which step 1 allocates, the
  previous step's outputs) was allocated under the profiler, whose frees are then seen too.
- The profiler sees nothing allocated before the window: the tensors alive at its start
  (parameters, buffers, gradients, optimizer state) are counted by hand from the model and the
  optimizer and added as a constant baseline. A free of such a tensor is not reported by torch's
  CPU allocator; one that leaves the model or the optimizer during the lead-in step (a method that
  replaced its parameters) is taken as freed at that step's end, one that leaves during a measured
  step makes the figure invalid.
- Each allocation is classified by what it is at the probes the loop makes: after backward (the
  `.grad` storages), at the end of each step (parameters, gradients, optimizer state, buffers).
  What is none of these is an activation if it was allocated between the start of the forward pass
  and the end of the backward pass (saved activations, outputs, their gradients, autograd
  temporaries), else other (input batches, the loss bookkeeping, clipping and optimizer-step
  temporaries, buffers).
- The garbage collector is off inside the window and runs at the end of each of its steps, so that
  a tensor in a reference cycle (an optimizer a method's change event replaced, with its state) is
  freed at the same point of every run, not when the collector's counters, which depend on the
  process's history, say: two identical runs give the same bytes.

Sanity check (physics): in every measured step the parameters must peak at the hand count of the
model's parameter bytes, the gradients at the trainable parameters' bytes, and the optimizer state,
for Adam/AdamW, at 2x (3x with amsgrad) the trainable bytes plus its `step` tensors (other
optimizers: the bytes of their state tensors, counted from the optimizer). A disagreement beyond
TOLERANCE marks the figure invalid (`bytes: null`, `invalid: [reasons]`): never a number in a table.
"""

from __future__ import annotations

import bisect
import gc
import logging
import time
from dataclasses import dataclass, field

log = logging.getLogger("bench.run")

CATEGORIES = ("parameters", "gradients", "optimizer_state", "activations", "other")
# relative disagreement with the hand count that makes the figure invalid (the CPU allocator reports
# the bytes asked for: a correct count agrees to the byte)
TOLERANCE = 1e-3
MARKER = "bench::memory_window::"
KIND = "cpu_live_tensors"
STALE_STATE = (
    "; the state of an optimizer replaced inside the window is still alive: accelerate keeps every "
    "optimizer it prepared (Accelerator._optimizers)"
)


def _storage(t) -> tuple[int, int] | None:
    """(address, bytes) of a CPU tensor's storage; None for another device or an empty storage."""
    if t is None or not hasattr(t, "untyped_storage") or t.device.type != "cpu":
        return None
    s = t.untyped_storage()
    return (s.data_ptr(), s.nbytes()) if s.data_ptr() and s.nbytes() else None


def unwrap_optimizer(optimizer):
    """The torch optimizer under accelerate's wrapper."""
    return getattr(optimizer, "optimizer", optimizer)


def state_tensors(optimizer):
    for state in unwrap_optimizer(optimizer).state.values():
        for value in state.values():
            if hasattr(value, "untyped_storage"):
                yield value


@dataclass
class Probe:
    """What the named tensors are at one moment: {address: bytes} per category."""

    parameters: dict = field(default_factory=dict)
    gradients: dict = field(default_factory=dict)
    optimizer_state: dict = field(default_factory=dict)
    buffers: dict = field(default_factory=dict)

    @classmethod
    def take(cls, model, optimizer=None, grads_only: bool = False) -> Probe:
        probe = cls()
        for p in model.parameters():
            for store, t in ((probe.gradients, p.grad), (None if grads_only else probe.parameters, p)):
                found = _storage(t) if store is not None else None
                if found:
                    store[found[0]] = found[1]
        if not grads_only:
            for b in model.buffers():
                found = _storage(b)
                if found:
                    probe.buffers[found[0]] = found[1]
            if optimizer is not None:
                for t in state_tensors(optimizer):
                    found = _storage(t)
                    if found:
                        probe.optimizer_state[found[0]] = found[1]
        return probe

    def addresses(self) -> set:
        return {*self.parameters, *self.gradients, *self.optimizer_state, *self.buffers}


def hand_count(model, optimizer) -> dict:
    """The bytes the physics says: parameters, gradients (the trainable parameters) and optimizer
    state, from numel x element size (not from storages, which the measurement uses)."""
    import torch

    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    trainable_bytes = sum(p.numel() * p.element_size() for p in trainable)
    opt = unwrap_optimizer(optimizer)
    if isinstance(opt, (torch.optim.Adam, torch.optim.AdamW)):
        moments = {id(p): 3 if g.get("amsgrad") else 2 for g in opt.param_groups for p in g["params"]}
        steps = sum(
            s["step"].numel() * s["step"].element_size()
            for s in opt.state.values()
            if torch.is_tensor(s.get("step")) and s["step"].device.type == "cpu"
        )
        state = sum(moments.get(id(p), 2) * p.numel() * p.element_size() for p in trainable) + steps
        rule = f"{type(opt).__name__}: 2x the trainable parameters' bytes (3x with amsgrad) + its step tensors"
    else:
        seen: dict = {}
        for t in state_tensors(opt):
            if t.device.type == "cpu":
                seen[id(t)] = t.numel() * t.element_size()
        state = sum(seen.values())
        rule = f"{type(opt).__name__}: the bytes of its state tensors"
    return {
        "parameters": sum(p.numel() * p.element_size() for p in params),
        "gradients": trainable_bytes,
        "optimizer_state": state,
        "optimizer_state_rule": rule,
    }


def invalid_result(reason: str) -> dict:
    log.warning("peak_tensor_bytes is invalid: %s", reason)
    return {"kind": KIND, "bytes": None, "valid": False, "invalid": [reason]}


class TensorMemoryWindow:
    """The profiled window of one training loop (see the module docstring). The loop calls
    `begin_step` right after zero_grad, `phase("forward")` / `phase("backward")` before each
    micro-batch's forward and backward, `phase("optimizer", model)` after the last backward,
    `phase("after_step", model, optimizer)` right after optimizer.step, `end_step` at the end of a
    step and `close` when it ends (normally or not); `result()` is result.json's
    `peak_tensor_bytes`. A failure of the measurement never fails the run: it is an invalid figure."""

    def __init__(self, steps: int, lead_in: int, last_step: int):
        self.lead_in = lead_in
        self.last = min(lead_in + steps, last_step)
        self.requested = steps
        self._prof = None
        self._gc_was_enabled = False
        self._markers: list[tuple[int, str]] = []  # (step, phase), in the order they were placed
        self._probes: dict[int, Probe] = {}  # marker index -> probe
        self._baseline: dict = {}  # address -> (bytes, category)
        self._expected: dict[int, dict] = {}  # step -> hand count right after its optimizer.step
        self._changed: set[int] = set()  # steps whose after_step reported a change event
        self._completed: list[int] = []  # steps whose end the loop reached
        self._result: dict | None = None
        self.done = False
        self.overhead_s = 0.0  # the window's collections, stopping the profiler, the analysis: not training

    @classmethod
    def for_loop(cls, tcfg, device_type: str, first_step: int, lead_in: int | None = None, world: int = 1):
        """The window of a loop that trains from `first_step`, or None: not on the CPU, switched off
        (`train.memory_profile_steps=0`), no step left after the lead-in, or several processes (DDP's
        gradient buckets, allocated when the model is wrapped, would be missed)."""
        steps = int(getattr(tcfg, "memory_profile_steps", 0) or 0)
        lead = first_step if lead_in is None else max(lead_in, first_step)
        if device_type != "cpu" or steps <= 0 or lead >= tcfg.max_steps or world > 1:
            return None
        return cls(steps, lead, tcfg.max_steps)

    @property
    def active(self) -> bool:
        return self._prof is not None

    # -- hooks of the loop ------------------------------------------------------------------------
    def begin_step(self, step: int, model, optimizer) -> None:
        if step == self.lead_in and not self.done:
            self._open(model, optimizer)
        if self.active:
            self._mark(step, "data")

    def phase(self, step: int, name: str, model=None, optimizer=None) -> None:
        """A phase starts; with `model`, which storages are gradients now; with `optimizer` too, all
        of it, and the hand count of the step (taken right after optimizer.step, when every
        trainable tensor has its gradient and its state, before a method's change event)."""
        if not self.active:
            return
        probe = None if model is None else Probe.take(model, optimizer, grads_only=optimizer is None)
        self._mark(step, name, probe)
        if optimizer is not None:
            self._expected[step] = hand_count(model, optimizer)

    def end_step(self, step: int, model, optimizer, changed: bool = False) -> None:
        if not self.active:
            return
        t = time.perf_counter()
        self._mark(step, "end", Probe.take(model, optimizer))
        self._completed.append(step)
        if changed:
            self._changed.add(step)
        # cyclic garbage (an optimizer a change event replaced, with its state) is freed here, at the
        # same point of every run, rather than whenever the collector's counters say
        gc.collect()
        self.overhead_s += time.perf_counter() - t
        if step >= self.last:
            self._close(analyse=True)

    def close(self) -> None:
        """The loop ended (its last step, an error, a signal): a window still open is analysed over
        the measured steps it completed."""
        if self.active:
            self._close(analyse=any(s > self.lead_in for s in self._completed))

    def result(self) -> dict | None:
        return self._result

    # -- internals --------------------------------------------------------------------------------
    def _open(self, model, optimizer) -> None:
        from torch.profiler import ProfilerActivity, profile

        # Alive before the window, so never seen allocated: counted by hand (parameters, buffers,
        # gradients zero_grad left, the optimizer state a resume restored or earlier steps built).
        start = Probe.take(model, optimizer)
        for category, found in (
            ("other", start.buffers),
            ("optimizer_state", start.optimizer_state),
            ("gradients", start.gradients),
            ("parameters", start.parameters),
        ):
            for ptr, nbytes in found.items():
                self._baseline[ptr] = (nbytes, category)
        prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        try:
            prof.start()
        except Exception as err:  # e.g. another profiler is running: no figure, the run goes on
            self.done = True
            self._result = invalid_result(f"the profiler did not start: {type(err).__name__}: {err}")
            return
        self._gc_was_enabled = gc.isenabled()
        gc.disable()
        self._prof = prof

    def _mark(self, step: int, phase: str, probe: Probe | None = None) -> None:
        from torch.profiler import record_function

        if probe is not None:
            self._probes[len(self._markers)] = probe
        self._markers.append((step, phase))
        with record_function(MARKER + f"{step}:{phase}"):
            pass

    def _close(self, analyse: bool) -> None:
        t = time.perf_counter()
        prof, self._prof = self._prof, None
        self.done = True
        try:
            prof.stop()
        finally:
            if self._gc_was_enabled:
                gc.enable()
        if analyse:
            try:
                self._result = self._analyse(prof.profiler.kineto_results.experimental_event_tree())
            except Exception as err:  # the measurement, not the run, failed
                self._result = invalid_result(f"the analysis failed: {type(err).__name__}: {err}")
        self.overhead_s += time.perf_counter() - t
        if self._result is not None:
            self._result["overhead_s"] = self.overhead_s

    def _analyse(self, roots) -> dict:
        from torch._C._profiler import _EventType

        # every allocation event and marker, in time order (the tree's depth-first order breaks ties)
        events, stack = [], list(reversed(roots))
        while stack:
            e = stack.pop()
            if e.typed[0] == _EventType.Allocation:
                a = e.typed[1]
                if a.device.type == "cpu":
                    events.append((e.start_time_ns, len(events), "alloc", a.ptr, a.alloc_size))
            elif e.name.startswith(MARKER):
                events.append((e.start_time_ns, len(events), "mark", None, None))
            stack.extend(reversed(e.children))
        events.sort()
        marks = [i for i, ev in enumerate(events) if ev[2] == "mark"]
        if len(marks) != len(self._markers):
            raise RuntimeError(f"memory window: {len(marks)} markers in the trace, {len(self._markers)} placed")

        # blocks: one allocation from its event to its free (None: alive when the window closed)
        blocks: list[list] = []  # [start index, end index | None, bytes, address, step, phase, category]
        live: dict[int, int] = {}
        by_ptr: dict[int, list[int]] = {}
        invalid: list[str] = []
        removals: list[tuple[int, int, str]] = []  # (event index, bytes, category) of baseline tensors
        baseline = dict(self._baseline)

        def gone(i: int, step: int, ptr: int, how: str) -> None:
            nbytes, category = baseline.pop(ptr)
            if step == self.lead_in:  # its free is not seen: taken as done by now, before the measured steps
                removals.append((i, nbytes, category))
            else:
                invalid.append(
                    f"step {step}: {category} allocated before the window ({nbytes} bytes) {how} inside the "
                    "measured steps; when it was freed is not seen"
                )

        step, phase, mark_no = self.lead_in, "data", 0
        for i, (_, _, kind, ptr, size) in enumerate(events):
            if kind == "mark":
                step, phase = self._markers[mark_no]
                mark_no += 1
            elif size > 0:
                if ptr in baseline:  # its address is reused: the tensor alive at the start was freed
                    gone(i, step, ptr, "was freed (its address reused)")
                if ptr in live:  # freed where the profiler did not see it (another thread)
                    blocks[live.pop(ptr)][1] = i
                live[ptr] = len(blocks)
                by_ptr.setdefault(ptr, []).append(len(blocks))
                blocks.append([i, None, size, ptr, step, phase, None])
            elif ptr in live:
                blocks[live.pop(ptr)][1] = i
            # else: the free of a tensor allocated before the window (not reported by torch's CPU
            # allocator in any case) or of a stale address: its bytes are in the baseline or nowhere

        def alive_at(ptr: int, i: int):
            found = by_ptr.get(ptr, [])
            k = bisect.bisect_left([blocks[b][0] for b in found], i) - 1
            if k >= 0:
                b = blocks[found[k]]
                if b[1] is None or b[1] > i:
                    return b
            return None

        for mark_no, probe in sorted(self._probes.items()):
            i = marks[mark_no]
            step, phase = self._markers[mark_no]
            for category, found in (
                ("parameters", probe.parameters),
                ("optimizer_state", probe.optimizer_state),
                ("gradients", probe.gradients),
                ("other", probe.buffers),
            ):
                for ptr, nbytes in found.items():
                    b = alive_at(ptr, i)
                    if b is not None:
                        if b[6] is None:
                            b[6] = category
                    elif ptr not in self._baseline:
                        invalid.append(
                            f"step {step}: a tensor of {category} ({nbytes} bytes) was neither allocated in the window "
                            "nor alive at its start"
                        )
            if phase == "end":  # a tensor alive at the start that is no longer the model's or the optimizer's
                now = probe.addresses()
                for ptr in [p for p in baseline if p not in now]:
                    gone(i, step, ptr, "left the model or the optimizer")
        for b in blocks:
            if b[6] is None:
                b[6] = "activations" if b[5] in ("forward", "backward") else "other"

        # the sweep: live bytes per category after every event
        deltas: dict[int, list[tuple[int, str]]] = {}
        for b in blocks:
            deltas.setdefault(b[0], []).append((b[2], b[6]))
            if b[1] is not None:
                deltas.setdefault(b[1], []).append((-b[2], b[6]))
        for i, nbytes, category in removals:
            deltas.setdefault(i, []).append((-nbytes, category))
        counted = {s for s in self._completed if s > self.lead_in}
        now = dict.fromkeys(CATEGORIES, 0)
        for nbytes, category in self._baseline.values():
            now[category] += nbytes
        at_start = dict(now)
        peak, split, peak_at = -1, None, None
        per_step: dict[int, int] = {}
        category_peaks: dict[int, dict] = {}
        step, phase, mark_no = self.lead_in, "data", 0
        for i, ev in enumerate(events):
            if ev[2] == "mark":
                step, phase = self._markers[mark_no]
                mark_no += 1
            for nbytes, category in deltas.get(i, ()):
                now[category] += nbytes
            if step not in counted:  # the lead-in, or a step the loop did not finish
                continue
            total = sum(now.values())
            per_step[step] = max(per_step.get(step, 0), total)
            tops = category_peaks.setdefault(step, dict.fromkeys(CATEGORIES, 0))
            for c in CATEGORIES:
                tops[c] = max(tops[c], now[c])
            if total > peak:
                peak, split, peak_at = total, dict(now), {"step": step, "phase": phase}

        measured = sorted(per_step)
        if not measured:
            return invalid_result("no measured step completed")
        invalid += self._check(category_peaks, split, peak_at)
        tops = {c: max(category_peaks[s][c] for s in measured) for c in CATEGORIES}
        out = {
            "kind": KIND,
            "bytes": None if invalid else peak,
            "valid": not invalid,
            "split": split,
            "category_peaks": tops,
            "expected": {k: v for k, v in self._expected[peak_at["step"]].items()},
            "peak_at": peak_at,
            "per_step_bytes": [per_step[s] for s in measured],
            "window": {
                "lead_in_step": self.lead_in,
                "measured_steps": [measured[0], measured[-1]],
                "memory_profile_steps": self.requested,
            },
            "baseline": at_start,
        }
        if invalid:
            out["measured_bytes"] = peak
            out["invalid"] = invalid
            log.warning("peak_tensor_bytes is invalid: %s", "; ".join(invalid))
        return out

    def _check(self, category_peaks: dict, split: dict, peak_at: dict) -> list[str]:
        """The physics: each measured step's category peaks against the hand count at its end."""
        problems = []

        def off(measured: int, expected: int) -> bool:
            return abs(measured - expected) > TOLERANCE * max(expected, 1)

        for step, tops in sorted(category_peaks.items()):
            expected = self._expected.get(step)
            if expected is None:
                continue
            for c in ("parameters", "gradients", "optimizer_state"):
                if off(tops[c], expected[c]):
                    problems.append(
                        f"step {step}: {c} peaked at {tops[c]} bytes, the hand count is {expected[c]}"
                        + (f" ({expected['optimizer_state_rule']})" if c == "optimizer_state" else "")
                        + (" (a change event replaced tensors in this step)" if step in self._changed else "")
                        + (STALE_STATE if c == "optimizer_state" and tops[c] > expected[c] and self._changed else "")
                    )
        expected = self._expected.get(peak_at["step"], {})
        if expected and off(split["parameters"], expected["parameters"]):
            problems.append(
                f"parameters at the peak: {split['parameters']} bytes, the hand count is {expected['parameters']}"
            )
        return problems
