"""`eval.batch_size`: a number, or auto: the largest batch that fits on the CUDA device.

With auto on a CUDA device, lm-eval's requests use lm-eval's own detection (HFLM
`batch_size="auto"`), and the suite's own passes (teacher-forced answer losses, classification
heads, multiple-choice log-likelihoods) do what lm-eval does: one forward on the longest items at
AUTO_START, made smaller on every out-of-memory error by accelerate's `find_executable_batch_size`
(x 0.9, the rule lm-eval's detection uses too), then the whole pass at the size that fitted.
The CPU gives no out-of-memory signal (the OOM killer ends the process), so there auto means
CPU_SIZE, the default of eval.batch_size. Every size used under auto is recorded per pass, for
result.json's `eval_throughput.batch_sizes`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

AUTO = "auto"
AUTO_START = 64  # the first size tried: lm-eval's own default `max_batch_size`
CPU_SIZE = 8  # auto off CUDA: the size the CPU profiles evaluate at
PROBING_DEVICES = ("cuda",)  # where an out-of-memory error is raised, so that a size can be tried

_chosen: list[dict] = []  # the open recordings, innermost last


def valid(value) -> bool:
    return value == AUTO or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)


@contextmanager
def recording():
    """Collects {pass name: [sizes chosen]} of the evaluation run inside it."""
    chosen: dict = {}
    _chosen.append(chosen)
    try:
        yield chosen
    finally:
        _chosen.remove(chosen)


def record(name: str, size: int) -> None:
    for chosen in _chosen:
        chosen.setdefault(name, []).append(int(size))


def for_lm_eval(requested, device_type: str):
    """What HFLM gets: a number as it is; auto on CUDA (lm-eval detects); CPU_SIZE elsewhere."""
    if requested != AUTO or device_type in PROBING_DEVICES:
        return requested
    record("lm_eval", CPU_SIZE)
    return CPU_SIZE


def resolve(requested, probe: Callable[[int], object], n_items: int, name: str, device_type: str) -> int:
    """The batch size of a pass over `n_items`: `requested` itself; with auto on CUDA the largest
    size from min(AUTO_START, n_items) down, in steps of x 0.9, at which `probe(size)` (a forward
    on the `size` longest items) runs without an out-of-memory error; CPU_SIZE elsewhere."""
    if requested != AUTO:
        return int(requested)
    if device_type not in PROBING_DEVICES:
        record(name, CPU_SIZE)
        return CPU_SIZE
    from accelerate.utils import find_executable_batch_size

    def attempt(size: int) -> int:
        probe(size)
        return size

    size = find_executable_batch_size(attempt, starting_batch_size=max(1, min(AUTO_START, n_items)))()
    record(name, size)
    return size
