"""The CPU's peak of live tensor bytes (bench/tensor_memory.py): its split against a hand count,
its repeatability, its switch, and how the readers of result.json use it."""

from __future__ import annotations

import pytest

from bench import tensor_memory as TM
from bench.perf import cli, measure, table
from tests.conftest import TINY, compose
from tests.helpers.jobs import run_tiny

FAST = ("run.save_model=false", "train.max_steps=3")


def hand_count(method: str) -> dict:
    """The model the runner trains, built again here: its parameter bytes, trainable bytes and
    trainable tensors (AdamW keeps a 4-byte float32 step tensor per trainable tensor on the CPU)."""
    from bench.models import loading
    from bench.run import build

    cfg = compose(*TINY, f"method={method}")
    task = build(cfg.task)
    model, _, _ = loading.load(cfg.model, device="cpu", head=task.model_head())
    model = build(cfg.method).apply(model)
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    assert all(p.dtype.itemsize == 4 for p in params)  # float32: 4 bytes per element
    return {
        "parameters": 4 * sum(p.numel() for p in params),
        "trainable": 4 * sum(p.numel() for p in trainable),
        "tensors": len(trainable),
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """LoRA twice (identical), full fine-tuning once, LoRA with the key at 0: 3 steps each."""
    out = {}
    for name, overrides in {
        "lora": ("method=lora",),
        "lora_again": ("method=lora",),
        "full": ("method=full",),
        "off": ("method=lora", "train.memory_profile_steps=0"),
    }.items():
        status, _, result = run_tiny(tmp_path_factory.mktemp(name), *FAST, *overrides)
        assert status == "success", result["error"]
        out[name] = result
    return out


@pytest.mark.parametrize("method", ["lora", "full"])
def test_the_split_is_the_hand_count_of_parameters_gradients_and_adamw_state(runs, method):
    peak = runs[method]["metrics"]["peak_tensor_bytes"]
    hand = hand_count(method)
    adamw = 2 * hand["trainable"] + 4 * hand["tensors"]  # exp_avg, exp_avg_sq; one step tensor each
    assert peak["valid"] and "invalid" not in peak, peak.get("invalid")
    assert peak["bytes"] == sum(peak["split"].values()) == max(peak["per_step_bytes"])
    assert peak["window"] == {"lead_in_step": 1, "measured_steps": [2, 3], "memory_profile_steps": 2}
    # at the peak: every parameter and all of AdamW's state (step 1 built it), gradients as far as backward got
    assert peak["split"]["parameters"] == hand["parameters"]
    assert peak["split"]["optimizer_state"] == adamw
    assert 0 <= peak["split"]["gradients"] <= hand["trainable"]
    # each category's own maximum over the measured steps: all gradients exist after backward
    tops = peak["category_peaks"]
    assert (tops["parameters"], tops["gradients"], tops["optimizer_state"]) == (
        hand["parameters"],
        hand["trainable"],
        adamw,
    )
    assert peak["expected"]["gradients"] == hand["trainable"] and peak["expected"]["optimizer_state"] == adamw
    assert peak["split"]["activations"] > 0
    # alive before the window: the parameters (and the rotary buffers), counted by hand
    assert peak["baseline"]["parameters"] == hand["parameters"] and peak["baseline"]["gradients"] == 0
    m = runs[method]["metrics"]
    assert m["trainable_params"] * 4 == hand["trainable"] and m["peak_memory"]["kind"] == "cpu_rss"
    # steps 1-2 are the timing warm-up; step 3, profiled, is the only other one: kept rather than none
    assert m["step_time_profiled_steps_excluded"] == 0


def test_profiled_steps_are_left_out_of_the_step_time_percentiles():
    from bench.metrics import StepClock

    clock = StepClock("cpu")
    clock.times = [9.0, 8.0, 5.0, 1.0, 2.0]  # warm-up 2; step 3 profiled (slow)
    s = clock.summary(warmup=2, skip=range(1, 4))
    assert s["step_time_p50_s"] == 1.5 and s["step_time_profiled_steps_excluded"] == 1
    assert clock.summary(warmup=2)["step_time_p50_s"] == 2.0
    assert clock.summary(warmup=4, skip=[5])["step_time_p50_s"] == 2.0  # nothing else left: kept


def test_full_fine_tuning_needs_more_than_lora_by_its_gradients_and_state(runs):
    lora, full = (runs[k]["metrics"]["peak_tensor_bytes"] for k in ("lora", "full"))
    assert full["category_peaks"]["gradients"] > 100 * lora["category_peaks"]["gradients"]
    assert full["split"]["optimizer_state"] > 100 * lora["split"]["optimizer_state"]
    assert full["bytes"] > lora["bytes"]


def test_two_identical_runs_give_the_same_peak_to_the_byte(runs):
    a, b = (runs[k]["metrics"]["peak_tensor_bytes"] for k in ("lora", "lora_again"))
    assert a.pop("overhead_s") >= 0 and b.pop("overhead_s") >= 0
    assert a == b


def test_the_key_at_zero_records_nothing_and_keeps_the_run_hash(runs):
    off, on = runs["off"], runs["lora"]
    assert "peak_tensor_bytes" not in off["metrics"] and off["metrics"]["step_time_profiled_steps_excluded"] == 0
    assert off["config"]["train"]["memory_profile_steps"] == 0 and on["config"]["train"]["memory_profile_steps"] == 2
    assert off["config_hash"] == on["config_hash"]  # a measurement, not a setting
    assert off["metrics"]["peak_memory"]["rss_bytes"] > 0  # RSS stays, as a secondary figure


def test_the_window_is_cpu_only_and_needs_a_step_after_its_lead_in():
    tcfg = compose(*TINY, "train.max_steps=3").train
    assert TM.TensorMemoryWindow.for_loop(tcfg, "cuda", 1) is None  # CUDA: max_memory_allocated
    assert TM.TensorMemoryWindow.for_loop(tcfg, "cpu", 3) is None  # the last step leads in to nothing
    window = TM.TensorMemoryWindow.for_loop(tcfg, "cpu", 1)
    assert (window.lead_in, window.last) == (1, 3)
    assert TM.TensorMemoryWindow.for_loop(compose(*TINY, "train.max_steps=2").train, "cpu", 1).last == 2
    with pytest.raises(Exception, match="memory_profile_steps=-1 is out of range"):
        from bench.config import validate

        validate(compose(*TINY, "train.memory_profile_steps=-1"))


def _perf_row(batch: int, *extra: str) -> dict:
    # warm-up 2: the memory steps' lead-in is step 2, so AdamW's state is alive before the window
    args = cli.parser().parse_args(
        ["--one", "--model", "tiny-llama", "--steps", "1", "--warmup", "2", "--seq", "16", "--batch", str(batch)]
        + ["--method", "lora", "--checkpointing", "false", *extra]
    )
    args.checkpointing = False
    return measure.measure(args)


def test_a_larger_batch_raises_the_activation_share_and_only_it():
    one, four = _perf_row(1), _perf_row(4)
    a, b = one["peak_tensor_bytes"], four["peak_tensor_bytes"]
    assert a["valid"] and b["valid"], (a.get("invalid"), b.get("invalid"))
    assert a["window"]["lead_in_step"] == 2 and a["window"]["measured_steps"] == [3, 4]
    assert a["baseline"]["optimizer_state"] == a["split"]["optimizer_state"] > 0  # counted by hand at the start
    assert b["split"]["activations"] > 3 * a["split"]["activations"]
    for c in ("parameters", "optimizer_state"):
        assert a["split"][c] == b["split"][c]
    assert a["category_peaks"]["gradients"] == b["category_peaks"]["gradients"]
    # bench.perf's memory column and ratio are the live-tensor peak; RSS stands beside it
    text = table.table([{**one, "method": "lora"}, {**four, "method": "lora-b4"}])
    line = next(x for x in text.splitlines() if x.startswith("| lora-b4"))
    assert f"| {b['bytes'] / 1e6:.0f} |" in line and f"| {b['bytes'] / a['bytes']:.3f} |" in line
    assert "RSS Δ" in text and "never compared" in text


def test_a_split_that_disagrees_with_the_hand_count_is_no_figure(tmp_path, monkeypatch):
    real = TM.hand_count

    def off_by_a_kilobyte(model, optimizer):
        return {**real(model, optimizer), "gradients": real(model, optimizer)["gradients"] + 1024}

    monkeypatch.setattr(TM, "hand_count", off_by_a_kilobyte)
    status, _, result = run_tiny(tmp_path, *FAST, "method=lora")
    assert status == "success"  # the run stands; its memory figure does not
    peak = result["metrics"]["peak_tensor_bytes"]
    assert peak["bytes"] is None and not peak["valid"] and peak["measured_bytes"] > 0
    assert any("gradients peaked at" in r and "the hand count is" in r for r in peak["invalid"]), peak["invalid"]

    from bench.report import memory_columns
    from bench.study.judge import NotTested, memory_figure

    assert memory_columns(result["metrics"]) == {"peak_memory_gb": None, "memory_kind": "cpu_live_tensors_invalid"}
    with pytest.raises(NotTested, match="is invalid .*the hand count is"):
        memory_figure(result)
    row = {"peak_memory": result["metrics"]["peak_memory"], "peak_tensor_bytes": peak}
    assert table._mem(row) is None  # not the RSS in its place


def test_memory_claims_use_live_tensors_and_say_so():
    from bench.study.judge import NotTested, cost_ratio, memory_figure
    from bench.study.spec import Arm, Claim

    def run(run_id, seed, live=None, cuda=None):
        mem = {"kind": "cuda", "allocated_bytes": cuda} if cuda else {"kind": "cpu_rss", "rss_bytes": 10**9}
        m = {"peak_memory": mem}
        if live:
            window = {"lead_in_step": 1, "measured_steps": [2, 3], "memory_profile_steps": 2}
            m["peak_tensor_bytes"] = {"kind": TM.KIND, "bytes": live, "valid": True, "window": window}
        return {"run_id": run_id, "metrics": m, "config": {"seed": seed}}

    assert memory_figure(run("a", 1, cuda=5)) == (5.0, "torch.cuda.max_memory_allocated")
    assert memory_figure(run("b", 1, live=7)) == (7.0, "peak live tensor bytes on the CPU (steps 2-3)")
    with pytest.raises(NotTested, match="peak RSS, depends on the allocator"):
        memory_figure(run("c", 1))  # never the RSS, with the reason
    claim = Claim("p", "A needs less memory than B", "cheaper", ("A", "B"), metric="peak_memory")
    arms = [Arm("A", "p", "cla", {}), Arm("B", "p", "lora", {})]
    evidence: list = []
    chosen = {"A": [run("a1", 1, live=80), run("a2", 2, live=81)], "B": [run("b1", 1, live=100), run("b2", 2, live=99)]}
    ratio = cost_ratio(claim, arms, chosen, evidence)
    assert evidence == ["peak_memory: peak live tensor bytes on the CPU, in every run of both arms"]
    assert ratio is not None
    chosen["B"][1] = run("b2", 2, cuda=99)
    with pytest.raises(NotTested, match="figures differ"):
        cost_ratio(claim, arms, chosen, [])


def test_a_method_that_rebuilds_its_optimizer_keeps_one_optimizers_state_alive(tmp_path):
    """c3LA restarts its optimizer at every chain boundary; the replaced AdamW state must be freed, so
    the live-tensor peak holds one optimizer's state (2 x trainable + step tensors), not one per phase."""
    status, _, result = run_tiny(
        tmp_path, "run.save_model=false", "train.max_steps=5", "method=c3la", "method.phases=4"
    )
    assert status == "success", result["error"]
    peak = result["metrics"]["peak_tensor_bytes"]
    assert peak["valid"], peak.get("invalid")
    hand = hand_count("c3la")
    assert peak["category_peaks"]["optimizer_state"] <= 2 * hand["trainable"] + 4 * hand["tensors"]
