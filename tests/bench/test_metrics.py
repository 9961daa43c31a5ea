from __future__ import annotations

import pytest

from bench.metrics import StepClock, count_params, dir_bytes, percentile
from tests.helpers.tiny import tiny_llama


def test_percentile_interpolates():
    assert percentile([1, 2, 3, 4, 5], 0.5) == 3
    assert percentile([1, 2, 3, 4, 5], 0.9) == pytest.approx(4.6)
    assert percentile([], 0.5) is None


def test_step_clock_leaves_out_warmup():
    clock = StepClock("cpu")
    clock.times = [10.0, 9.0, 1.0, 2.0, 3.0]
    s = clock.summary(warmup=2)
    assert s["step_time_p50_s"] == 2.0 and s["step_time_p90_s"] == pytest.approx(2.8)
    assert s["step_time_warmup_steps_excluded"] == 2


def test_count_params_and_dir_bytes(tmp_path):
    model = tiny_llama()
    for n, p in model.named_parameters():
        p.requires_grad_(n.endswith("q_proj.weight"))
    trainable, total = count_params(model)
    assert trainable == 2 * 32 * 32 and total == sum(p.numel() for p in model.parameters())
    (tmp_path / "a").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"y" * 5)
    assert dir_bytes(tmp_path) == 15


def test_generation_counter_counts_new_positions_of_each_generate_call():
    import torch

    from bench import metrics as M
    from tests.helpers.tiny import tiny_llama

    model = tiny_llama()
    ids = torch.randint(3, 128, (2, 5))
    with M.GenerationCounter(model) as counter:
        model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=4,
            min_new_tokens=4,
            do_sample=False,
            pad_token_id=0,
        )
        model.generate(ids[:1], max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=0)
    assert counter.calls == 2 and counter.new_tokens == 2 * 4 + 1 * 3
    assert "generate" not in vars(model)  # the method is the class's again
    assert M.eval_throughput(10, 2.0, counter) == {
        "questions_per_s": 5.0,
        "new_tokens": 11,
        "new_tokens_per_s": 5.5,
        "generate_calls": 2,
    }
    assert M.eval_throughput(10, 2.0, M.GenerationCounter(model))["new_tokens"] is None  # no generation task


PEAK_PROBE = """
import json
from pathlib import Path

import numpy as np

from bench import metrics as M


def rss_now():
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS"))
    return int(line.split()[1]) * 1024


before = np.ones(400_000_000 // 8)
before[::512] = 2.0  # touch every page
del before
M.reset_peak_memory("cpu")
baseline = rss_now()
after = np.ones(100_000_000 // 8)
after[::512] = 3.0
print(json.dumps({"peak": M.peak_memory("cpu"), "baseline": baseline}))
"""


def test_the_cpu_peak_after_a_reset_leaves_out_what_came_before():
    """A 400 MB allocation before the reset (as model loading) is not in the training peak; a
    100 MB one after it is. Measured in a fresh process, as a run is: inside the test process the
    kernel's peak-RSS counter lags behind the allocations of the many threads earlier tests left."""
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    out = subprocess.run([sys.executable, "-c", PEAK_PROBE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    peak, baseline = got["peak"], got["baseline"]
    assert peak["scope"] == "training", "Linux resets the peak through /proc/self/clear_refs"
    assert 90_000_000 <= peak["rss_bytes"] - baseline < 250_000_000, (peak, baseline)
