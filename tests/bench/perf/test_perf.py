"""bench.perf's arithmetic and the fairness of its per-method settings (no timing assertions)."""

from __future__ import annotations

import re
import statistics

import pytest

from bench.perf import cli, measure, table
from tests.helpers.methods import GPU_COMMAND_METHODS, method_from_config


def test_prunedlora_is_compacted_before_the_timed_steps():
    warmup, steps = 5, 20
    method = method_from_config("prunedlora", *measure.method_overrides("prunedlora", 8, warmup, steps))
    total = warmup + steps
    assert method.r_init == 16 and method.r_target == 8
    assert max(method.events(total)) < warmup
    assert method.target_rank(warmup - 1, total) == 8


def row(method, t, mem, ckpt=False, bare=False):
    return {
        "method": method,
        "checkpointing": ckpt,
        "bare": bare,
        "step_time_p50_s": t,
        "step_time_p90_s": t,
        "tokens_per_s": 512 / t,
        "peak_memory": {"kind": "cuda", "allocated_bytes": mem},
        "trainable_params": 10,
    }


def test_table_ratios_are_against_lora_with_the_same_checkpointing():
    text = table.table(
        [
            row("lora", 0.5, 1000),
            row("cla", 0.4, 800),
            row("lora", 1.0, 500, ckpt=True),
            row("cla", 0.9, 450, ckpt=True),
            row("lora", 0.4, 0, bare=True),
        ]
    )
    lines = {
        tuple(c.strip() for c in line.split("|")[1:3]): line for line in text.splitlines() if line.startswith("| ")
    }
    assert "| 0.800 | 0.800 |" in lines[("cla", "False")] and "(n=1)" in lines[("cla", "False")]
    assert "| 0.900 | 0.900 |" in lines[("cla", "True")]
    assert "suite step p50 0.5000 s / bare PEFT+torch loop 0.4000 s = **1.250×**" in text


def test_another_reference_method_is_the_base_of_the_ratios_and_the_overhead():
    rows = [row("lora", 0.5, 1000), row("cla", 0.4, 800), row("cla", 0.32, 0, bare=True)]
    text = table.table(rows, reference="cla")
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "| 1.250 | 1.250 |" in lines["lora"] and "| 1.000 | 1.000 |" in lines["cla"]
    assert "step vs cla | mem vs cla" in text and "Harness overhead (cla, checkpointing=False)" in text
    assert cli.parser().parse_args([]).reference == "lora"


def test_median_run_is_reported_with_the_spread():
    chosen = table.median_run([row("lora", 0.5, 1), row("lora", 0.7, 1), row("lora", 0.6, 1), {"error": "x"}])
    assert chosen["step_time_p50_s"] == 0.6 and chosen["runs"] == [0.5, 0.6, 0.7]


def test_table_shows_achieved_rate_and_mfu():
    r = {**row("lora", 0.5, 1000), "achieved_tflops": 346.29, "mfu": 0.35}
    text = table.table([r, row("cla", 0.4, 800)])
    lora_line = next(line for line in text.splitlines() if line.startswith("| lora "))
    assert lora_line.endswith("| 346.29 | 35.0% |")
    assert next(line for line in text.splitlines() if line.startswith("| cla ")).endswith("| n/a |")


def test_beyond_lora_methods_are_timed_at_the_same_rank_as_lora():
    for name in ("cla", "c3la", "paca", "asym_lora", "cola", "rac"):
        method = method_from_config(name, *measure.method_overrides(name, 8, 5, 20))
        assert method.r == 8, name


@pytest.mark.slow  # an end-to-end job (make test-slow)
def test_benchmark_runs_end_to_end_on_the_tiny_model(tmp_path):
    out = tmp_path / "perf.md"
    code = cli.main(
        [
            "--model",
            "tiny-llama",
            "--methods",
            "lora,cla",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--seq",
            "16",
            "--batch",
            "2",
            "--checkpointing",
            "false",
            "--out",
            str(out),
        ]
    )
    text = out.read_text()
    assert code == 0, text
    assert "| cla | False |" in text and "Harness overhead" in text and "error" not in text


def test_overrides_for_one_method_only():
    assert cli.per_method_overrides(
        ["full:train.optimizer=adafactor", "full:train.batch_size=1"], ["lora", "full"]
    ) == {"full": ["train.optimizer=adafactor", "train.batch_size=1"]}
    with pytest.raises(SystemExit, match="method 'dora' is not in --methods"):
        cli.per_method_overrides(["dora:method.r=4"], ["lora", "full"])
    assert cli.per_method_overrides(["full@adafactor:train.optimizer=adafactor"], ["full", "full@adafactor"]) == {
        "full@adafactor": ["train.optimizer=adafactor"]
    }
    assert measure.base_method("full@adafactor") == "full" and measure.base_method("lora") == "lora"
    with pytest.raises(SystemExit, match="unknown method.s. lorra; known: .*lora"):
        cli.main(["--methods", "lora,lorra"])
    with pytest.raises(SystemExit, match="expected METHOD:KEY=VALUE"):
        cli.per_method_overrides(["train.optimizer=adafactor"], ["lora"])


def test_the_gpu_commands_methods_build_at_the_7b_shape():
    """Every method of the documented GPU command applies to the real Llama-2-7B shape (on the meta
    device: shapes only) with the trainable count of its closed form at the timed rank."""
    from bench import flops
    from bench.models import loading
    from bench.run import build
    from tests.conftest import compose

    counts = {}
    for name in GPU_COMMAND_METHODS:
        cfg = compose(
            "model=llama2-7b",
            "model.init=random",
            "model.tokenizer=gpt2-offline",
            f"method={name}",
            "task.train_source=asdiv",
            *measure.method_overrides(name, 16, 3, 10),
        )
        model, _, _ = loading.load(cfg.model, device="meta", fit_vocab=False)  # as bench.perf builds it
        method = build(cfg.method)
        expected = method.expected_trainable_params(model)
        model = method.apply(model)
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert trained == expected, name
        counts[name] = (trained, flops.training_flops(model, tokens=2048, seq_len=2048)["total"])
    d, layers = 4096, 32
    assert counts["lora"][0] == layers * 2 * 16 * (d + d)  # r = 16 on q and v
    assert counts["cla"][0] == counts["c3la"][0] == layers * 2 * 16 * d  # r columns: B only
    assert counts["prunedlora"][0] == 2 * counts["lora"][0]  # r_init = 2 r before compaction
    assert counts["full"][0] == 6_738_415_616
    # a frozen base skips its weight-gradient GEMM: LoRA costs ~2/3 of full fine-tuning per token
    assert 0.66 < counts["lora"][1] / counts["full"][1] < 0.70


def _one(*argv):
    args = cli.parser().parse_args(
        ["--one", "--model", "tiny-llama", "--steps", "2", "--warmup", "1", "--seq", "16", "--batch", "2", *argv]
    )
    args.checkpointing = args.checkpointing == "true"
    return args


def test_grad_accum_is_pinned_over_the_model_task_profile():
    """The 7B GSM8K profile sets grad_accum 4; bench.perf's row must do the one micro-batch it counts."""
    from bench.run import build

    assert measure._compose("llama2-7b", "lora", []).train.grad_accum == 4
    cfg = measure._compose("llama2-7b", "lora", measure.step_overrides(_one("--method", "lora")))
    assert cfg.train.grad_accum == 1 and cfg.train.compile is False and cfg.train.batch_size == 2
    assert build(cfg.method).r == 8  # the method's own sizing at --rank


def test_the_heading_names_a_target_preset_and_joins_a_list():
    """A preset such as all-linear is a string; joining it letter by letter once printed
    'targets a,l,l,-,l,i,n,e,a,r' in the GPU kit's heading."""
    preset = measure._compose("tiny-llama", "cla", ["model.adapter_targets=all-linear"])
    assert measure.work_of(preset, 16)["targets"] == "all-linear"
    listed = measure._compose("tiny-llama", "lora", ["model.adapter_targets=[q_proj,v_proj]"])
    assert measure.work_of(listed, 16)["targets"] == "q_proj,v_proj"
    assert measure.work_of(measure._compose("tiny-llama", "full", []), 16)["targets"].startswith("none")


def test_flops_and_tokens_count_the_micro_batches_run():
    one = measure.measure(_one("--method", "lora", "--checkpointing", "false"))
    two = measure.measure(_one("--method", "lora", "--checkpointing", "false", "--grad-accum", "2"))
    assert "invalid" not in one and "invalid" not in two
    assert one["work"]["grad_accum"] == 1 and two["work"]["grad_accum"] == 2
    # 5 steps (1 warm-up + 2 memory-profiled + 2 timed) of batch 2 x seq 16 tokens, twice that with
    # two micro-batches a step; the bare loop has no memory steps
    assert one["memory_steps"] == two["memory_steps"] == 2
    assert one["tokens_processed"] == one["tokens_counted"] == 5 * 2 * 16
    assert two["tokens_processed"] == two["tokens_counted"] == 2 * 5 * 2 * 16
    assert two["flops_per_step"] == 2 * one["flops_per_step"]
    assert two["tokens_per_s"] == 2 * 2 * 16 / two["step_time_p50_s"]
    bare = measure.measure(_one("--method", "lora", "--checkpointing", "false", "--grad-accum", "2", "--bare"))
    assert bare["tokens_processed"] == bare["tokens_counted"] == 2 * 3 * 2 * 16 and "invalid" not in bare


def test_a_row_whose_parameters_get_no_gradient_is_refused():
    row = measure.measure(
        _one("--method", "lora", "--checkpointing", "false", "method._target_=tests.helpers.faults.Unreachable")
    )
    assert "no gradient reached the trainable parameters" in row.get("invalid", ["(none)"])[0], {
        k: row.get(k) for k in ("no_gradient", "trainable_params", "work", "step_times_s")
    }
    text = table.table([row])
    assert "invalid measurement, not a result" in text and "| 0." not in text


def test_invalid_measurements_are_named():
    good = {"mfu": 0.35, "tokens_processed": 64, "tokens_counted": 64, "no_gradient": []}
    assert measure.invalid_reasons(good) == []
    assert "MFU 108.7% exceeds" in measure.invalid_reasons({**good, "mfu": 1.087})[0]
    assert "processed 256 tokens, the counts assume 64" in measure.invalid_reasons({**good, "tokens_processed": 256})[0]
    assert "lora_B" in measure.invalid_reasons({**good, "no_gradient": ["x.lora_B.weight"]})[0]
    assert measure.invalid_reasons({**good, "mfu": None}) == []  # no known peak (CPU): nothing to compare


def test_without_gradient_judges_each_trainable_tensor():
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    model[0].bias.requires_grad_(False)
    model(torch.ones(2, 3)).sum().backward()
    assert measure.without_gradient(model) == []
    model[0].weight.grad.zero_()
    model[1].bias.grad = None
    assert measure.without_gradient(model) == ["0.weight", "1.bias"]


def test_the_heading_names_the_work_and_rows_that_differ():
    work = {
        "grad_accum": 1,
        "batch": 1,
        "seq": 2048,
        "targets": "q_proj,v_proj",
        "checkpointing": False,
        "compile": False,
        "kernels": "none",
        "precision": "bf16",
        "dtype": "bfloat16",
        "optimizer": "adamw",
    }
    rows = [
        {**row("lora", 0.2, 10), "work": work},
        {**row("cla", 0.2, 10), "work": work},
        {**row("full", 0.5, 30), "work": {**work, "targets": "none", "optimizer": "adafactor"}},
    ]
    text, differ = table.heading(rows)
    assert text == (
        "grad_accum 1, batch 1, seq 2048, targets q_proj,v_proj, compile False, kernels none, precision bf16, "
        "dtype bfloat16, optimizer adamw"
    )
    assert differ == {0: {}, 1: {}, 2: {"targets": "none", "optimizer": "adafactor"}}
    assert "| full targets=none optimizer=adafactor | False |" in table.table(rows)


def test_change_events_are_timed_apart_from_the_steady_state():
    # warm-up 1; an event at step 4 costs 0.5 s in its step and 0.25 s in the next
    times = {1: 9.0, 2: 1.0, 3: 1.2, 4: 1.5, 5: 1.35, 6: 1.1, 7: 0.9}
    out = measure.split_events(times, [4], warmup=1)
    assert out["step_time_p50_s"] == 1.05  # median of steps 2, 3, 6, 7
    assert out["event_cost_s"] == pytest.approx(1.5 + 1.35 - 2 * 1.05) and out["timed_events"] == 1
    assert out["step_times_s"] == [9.0, 1.0, 1.2, 1.5, 1.35, 1.1, 0.9] and out["change_steps"] == [4]
    assert "event_cost_s" not in measure.split_events(times, [], warmup=1)  # no event: the loop's own p50 stands
    in_warmup = measure.split_events(times, [1], warmup=1)  # not timed itself; its next step is left out
    assert in_warmup["timed_events"] == 0 and in_warmup["step_time_p50_s"] == 1.2


def test_c3las_phase_switches_get_their_own_row():
    row = measure.measure(_one("--method", "c3la", "--checkpointing", "false", "--steps", "5"))
    assert "invalid" not in row and row["change_steps"] and row["timed_events"] >= 1
    warm = 1 + row["memory_steps"]  # the warm-up, then the memory-profiled steps: neither is timed
    steady = [
        t
        for s, t in enumerate(row["step_times_s"], 1)
        if s > warm and s not in row["change_steps"] and s - 1 not in row["change_steps"]
    ]
    assert row["step_time_p50_s"] == statistics.median(steady)
    assert "c3la: one change event" in table.table([row])


@pytest.mark.slow  # an end-to-end job (make test-slow)
def test_periodic_events_come_at_the_configured_cadence_of_a_longer_run(monkeypatch):
    """L1RA updates ranks every 10 % of the run: every step of a 6-step window (the first H200 run's
    L1RA row paid a rank update, with its host sync, on every timed step), every 100 steps of a
    1000-step run, which --cadence-steps 1000 times the start of."""
    from methods.l1ra import L1RA

    calls = []
    real = L1RA.update_ranks
    monkeypatch.setattr(L1RA, "update_ranks", lambda self, step: calls.append(step) or real(self, step))
    window = ("--method", "l1ra", "--checkpointing", "false", "--steps", "5", "--warmup", "1")
    measure.measure(_one(*window))
    # 8 steps (1 warm-up, 2 memory-profiled, 5 timed): interval max(1, int(0.1 * 8)) = 1, none on the last
    assert calls == [1, 2, 3, 4, 5, 6, 7]
    calls.clear()
    row = measure.measure(_one(*window, "--cadence-steps", "1000"))
    assert calls == [] and "invalid" not in row

    # PrunedLoRA's sizing follows the longer schedule: it still prunes 2r -> r inside the warm-up
    pruned = measure.measure(
        _one("--method", "prunedlora", "--checkpointing", "false", "--warmup", "3", "--cadence-steps", "1000")
    )
    lora = measure.measure(_one("--method", "lora", "--checkpointing", "false", "--warmup", "3"))
    assert pruned["trainable_params"] == lora["trainable_params"]


def test_profile_traces_whole_steady_steps(tmp_path):
    """--profile traces min(3, steps - 1) steps after the warm-up; each holds a whole optimizer step
    (forward, backward, AdamW), not the tail of one: the first version of the schedule repeated and
    kept only the last partial step (6 aten calls)."""
    row = measure.measure(
        _one("--method", "lora", "--checkpointing", "false", "--steps", "4", "--profile", str(tmp_path))
    )
    assert "invalid" not in row
    head = (tmp_path / "lora.txt").read_text().splitlines()[0]
    steps, calls = re.match(r"lora: (\d+) profiled steps after 1 warm-up; per step: (\d+) aten calls", head).groups()
    assert int(steps) == 3 and int(calls) > 500
