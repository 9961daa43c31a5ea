"""The study (bench/report_study.py): verdicts on synthetic result files with known numbers, the
learning-rate pick on the held-out split, and the whole chain on the tiny model (slow)."""

from __future__ import annotations

import copy
import json
import statistics
from pathlib import Path

import pytest

from bench import report_study, results
from bench.report_study import ARMS, CLAIMS
from tests.bench.test_results import minimal_result

BASE = minimal_result()
TASK = {"asdiv": "asdiv", "sentiment": "movie_review_sentiment"}


def write(
    root,
    arm: str,
    seed: int,
    score: float,
    lr: float,
    *,
    heldout=None,
    time_s=1.0,
    memory_gb=1.0,
    rank_pattern=None,
    status="success",
    items=10**6,
    memory_scope="training",
):
    """A result of one arm of the study (its --where filters turned into config values). `items`:
    the test split's size; a million keeps the test-set error out of the seed-spread tests."""
    a = ARMS[arm]
    r = copy.deepcopy(BASE)
    r["config"]["seed"] = seed
    r["config"]["task"]["name"] = TASK[a.part]
    method = {"lr": lr}
    for f in a.where:
        key, value = f.split("=", 1)
        if key == "method":
            method["name"] = value
        else:
            method[key.removeprefix("method.")] = (
                float(value) if "." in value else (int(value) if value.isdigit() else value)
            )
    r["config"]["method"] = method
    r["config"]["eval"]["base"] = False  # as the study's presets: only its base jobs evaluate the base model
    r["metrics"].update(
        train_time_s=time_s, peak_memory={"kind": "cpu_rss", "rss_bytes": memory_gb * 1e9, "scope": memory_scope}
    )
    r["metrics"]["eval"] = {
        "primary": "acc",
        "acc": score,
        "n": items,
        **({"heldout": {"acc": heldout, "n": 5}} if heldout is not None else {}),
    }
    r["method_report"] = {"rank_pattern": rank_pattern} if rank_pattern else {}
    d = root / f"{arm}-{seed}-{lr}".replace(" ", "_").replace(">", "")
    results.write_result(d, r)


def verdicts(root, winners) -> dict[str, tuple[str, str]]:
    runs = report_study.load_runs(root)
    out = {}
    for line in report_study.verdict_markdown(runs, winners).splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[cells[1]] = (cells[3], cells[4])
    return out


CLA_SCORES, LORA6 = (0.30, 0.32, 0.34), (0.20, 0.21, 0.22)
LORA8, PL16, PL32 = (0.10, 0.20, 0.30), (0.25, 0.26, 0.27), (0.35, 0.36, 0.37)


def test_verdicts_follow_the_difference_against_the_seed_spread(tmp_path):
    lr = 3e-4
    for seed in range(3):
        write(tmp_path, "cLA r=16", seed, CLA_SCORES[seed], lr, time_s=5.0 + seed / 10, memory_gb=1.0)
        write(tmp_path, "LoRA r=6", seed, LORA6[seed], lr)
        write(tmp_path, "LoRA r=8", seed, LORA8[seed], lr)
        write(tmp_path, "LoRA r=16", seed, 0.30 + seed / 100, lr, time_s=10.0 + seed / 10, memory_gb=2.0)
        write(tmp_path, "full FT", seed, 0.01 * seed, 1e-5)
        write(tmp_path, "PrunedLoRA obs_gradient 16->8", seed, PL16[seed], lr)
        write(tmp_path, "PrunedLoRA obs_gradient 32->8", seed, PL32[seed], lr)
    write(tmp_path, "LoRA r=6", 0, 0.99, 1e-3)  # another rate than the chosen one: never counted
    winners = {("asdiv", "lora"): 3e-4, ("asdiv", "cla"): 3e-4, ("asdiv", "full"): 1e-5, ("asdiv", "prunedlora"): 3e-4}
    v = verdicts(tmp_path, winners)
    # hand computation: cLA 0.32 ± 0.02 vs LoRA r=6 0.21 ± 0.01: +0.11 beyond the spread 0.02
    numbers, verdict = v["cLA is competitive with LoRA at matched trainable parameters"]
    assert numbers.startswith("0.3200 ± 0.0200 (n=3) vs 0.2100 ± 0.0100 (n=3); Δ +0.1100, spread 0.0200")
    assert verdict == "supported (not worse beyond the spread) and better"
    # PrunedLoRA 16->8 vs LoRA r=8: +0.06 within std(LoRA r=8) = 0.1 -> not supported
    numbers, verdict = v["PrunedLoRA 16->8 is better than LoRA at r_target"]
    assert f"spread {statistics.stdev(LORA8):.4f}" in numbers
    assert verdict == "not supported by the data (within the spread)"
    assert v["PrunedLoRA 32->8 is better than LoRA at r_target"][1] == "supported (the difference exceeds the spread)"
    assert (
        v["full fine-tuning is the ceiling (better than LoRA r=16)"][1]
        == "not supported by the data (worse beyond the spread)"
    )
    assert v["cLA trains in less time and memory than LoRA at the same rank"][1] == "supported"
    assert v["c3LA is competitive with LoRA at matched trainable parameters"] == ("–", "not run")
    assert v["PrunedLoRA 32->8 is competitive with LoRA at r_init"] == ("–", "not run")


def test_a_single_seed_gives_no_verdict(tmp_path):
    write(tmp_path, "cLA r=16", 0, 0.5, 3e-4)
    write(tmp_path, "LoRA r=6", 0, 0.1, 3e-4)
    v = verdicts(tmp_path, {("asdiv", "lora"): 3e-4, ("asdiv", "cla"): 3e-4})
    assert v["cLA is competitive with LoRA at matched trainable parameters"][1] == "no spread with one seed"


def test_rank_allocation_claim_compares_the_final_share_with_the_uniform_start(tmp_path):
    modules = [
        f"model.layers.{i}.{m}"
        for i in range(2)
        for m in ("self_attn.q_proj", "self_attn.o_proj", "mlp.up_proj", "self_attn.k_proj")
    ]
    moved = [
        {m: (12 if ("o_proj" in m or "up_proj" in m) else 4) + (s if "up_proj" in m else 0) for m in modules}
        for s in range(3)
    ]
    for seed, pattern in enumerate(moved):
        write(tmp_path, "L1RA r=8 all-linear", seed, 0.8, 3e-4, rank_pattern=pattern)
    numbers, verdict = verdicts(tmp_path, {("sentiment", "l1ra"): 3e-4})[
        "the freed ranks move to the feed-forward layers and the attention output projection"
    ]
    shares = [sum(v for k, v in p.items() if "o_proj" in k or "up_proj" in k) / sum(p.values()) for p in moved]
    assert numbers.startswith(
        f"final share {statistics.mean(shares):.3f} ± {statistics.stdev(shares):.3f} (n=3) vs 0.500 at the start"
    )
    assert verdict == "supported"
    flat = tmp_path / "flat"
    for seed in range(3):
        write(flat, "L1RA r=8 all-linear", seed, 0.8, 3e-4, rank_pattern={m: 8 for m in modules})
    assert (
        verdicts(flat, {("sentiment", "l1ra"): 3e-4})[
            "the freed ranks move to the feed-forward layers and the attention output projection"
        ][1]
        == "not supported by the data"
    )


def test_the_rate_is_picked_on_the_heldout_split_ties_to_the_smaller(tmp_path):
    # the test score would pick 1e-3; the held-out score ties 3e-4 and 1e-3 -> 3e-4
    for lr, test, held in ((1e-4, 0.1, 0.2), (3e-4, 0.2, 0.4), (1e-3, 0.9, 0.4)):
        write(tmp_path, "LoRA r=16", 0, test, lr, heldout=held)
    write(tmp_path, "cLA r=16", 0, 0.9, 1e-3, heldout=None, status="success")  # no held-out score: no winner
    winners, rows = report_study.pick_rates(report_study.load_runs(tmp_path))
    assert winners == {("asdiv", "lora"): 3e-4}
    assert sorted((r[2], r[4]) for r in rows if r[1] == "lora" and r[0] == "asdiv") == [
        (1e-4, 0.2),
        (3e-4, 0.4),
        (1e-3, 0.4),
    ]


def test_a_heldout_tie_goes_to_the_lower_answer_loss_before_the_smaller_rate(tmp_path):
    """Exact match on 50 held-out problems ties often; the answer loss still tells rates apart."""
    for lr, nll in ((1e-4, 1.9), (3e-4, 1.2), (1e-3, 0.7)):
        write(tmp_path, "LoRA r=16", 0, 0.1, lr, heldout=0.02)
        found = next(tmp_path.glob(f"*-{lr}/result.json"))
        r = json.loads(found.read_text())
        r["metrics"]["eval"]["heldout"]["answer_nll"] = nll
        found.write_text(json.dumps(r))
    write(tmp_path, "cLA r=16", 0, 0.1, 1e-4, heldout=0.02)  # no answer loss: the smaller rate wins
    write(tmp_path, "cLA r=16", 0, 0.1, 1e-3, heldout=0.02)
    winners, _ = report_study.pick_rates(report_study.load_runs(tmp_path))
    assert winners == {("asdiv", "lora"): 1e-3, ("asdiv", "cla"): 1e-4}


def test_every_claim_names_arms_that_the_main_grids_run():
    """Each arm's filters are met by a job of a MAIN command (one value of each swept key)."""
    for claim in CLAIMS:
        for name in filter(None, (claim.a, claim.b)):
            arm = ARMS[name]
            grids = [
                dict(kv.split("=", 1) for kv in o) for p, m, o in report_study.MAIN if p == arm.part and m == arm.method
            ]
            assert any(
                all(f.split("=", 1)[1] in g.get(f.split("=", 1)[0], "").split(",") for f in arm.where) for g in grids
            ), f"no main grid runs {name} ({arm.where})"


def test_the_reported_runs_are_the_main_grids_at_the_chosen_rates(tmp_path):
    for seed in range(3):
        write(tmp_path, "LoRA r=16", seed, 0.3, 3e-4)
        write(tmp_path, "LoRA r=16", seed, 0.3, 1e-3)
        write(tmp_path, "cLA r=16", seed, 0.3, 1e-3)
    runs = report_study.load_runs(tmp_path)
    r = copy.deepcopy(runs[0])  # LoRA at a rank outside the main grid, at the chosen rate
    r["config"]["method"]["r"] = 64
    results.write_result(tmp_path / "lora-64", {k: v for k, v in r.items() if k != "_path"})
    got = report_study.chosen(report_study.load_runs(tmp_path), {("asdiv", "lora"): 3e-4, ("asdiv", "cla"): 1e-3})
    assert (
        sorted((g["config"]["method"]["name"], g["config"]["method"]["lr"], g["config"]["method"]["r"]) for g in got)
        == [("cla", 1e-3, 16)] * 3 + [("lora", 3e-4, 16)] * 3
    )


@pytest.mark.slow
def test_the_whole_chain_runs_on_the_tiny_model(tmp_path):
    """Stages 1-4 end to end with model=tiny-llama, a few steps, one rate and one seed."""
    import subprocess
    import sys

    from tests.conftest import REPO

    doc = tmp_path / "study.md"
    cmd = [
        sys.executable,
        "-m",
        "bench.report_study",
        "run",
        "--root",
        str(tmp_path / "runs"),
        "--jobs",
        "1",
        "--doc",
        str(doc),
        "--seeds",
        "0",
        "--lr-grid",
        "1e-3",
        "model=tiny-llama",
        "train.max_steps=4",
        "train.batch_size=2",
        "asdiv:task.asdiv_heldout=4",
        "asdiv:task.asdiv_test=4",
        "sentiment:task.heldout_rows=8",
        "eval.limit=8",
        "eval.batch_size=8",
        "train.max_length=64",
    ]
    out = subprocess.run(
        cmd,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1500,
        env={
            **__import__("os").environ,
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        },
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = doc.read_text()
    every = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("result.json") if "attempts" not in p.parts]
    assert all(r["status"] == "success" for r in every), [r["error"] for r in every if r["error"]]
    # one rate: each search job is also seed 0 of its main grid, so the main grids are all there is
    assert len(every) == 4 + 1 + 1 + 1 + 3 + 1 + 3 + 2, (
        "every arm of the main grids once (one seed), a base job per part"
    )
    assert sum(report_study.is_base_run(r) for r in every) == 2 and "## The base model, untrained" in text
    runs = report_study.load_runs(tmp_path / "runs")
    winners, _ = report_study.pick_rates(runs)
    assert set(winners) == {(p, m) for p, m, _ in report_study.LR_SEARCH} and set(winners.values()) == {1e-3}
    assert len(report_study.chosen(runs, winners)) == len(every) - 2, "the base jobs are in no grid"
    for claim in CLAIMS:
        assert claim.text in text
    assert "no spread with one seed" in text and "## Learning-rate search" in text
    assert (tmp_path / "study" / "asdiv_pareto.png").exists() and (tmp_path / "study" / "sentiment_pareto.png").exists()
    assert "## Report, part asdiv" in text and "## Report, part sentiment" in text
    assert "](study/asdiv_pareto.png)" in text and "11 runs (part asdiv" in text


def test_cost_claims_need_a_spread_too(tmp_path):
    write(tmp_path, "cLA r=16", 0, 0.3, 3e-4, time_s=1.0)
    write(tmp_path, "LoRA r=16", 0, 0.3, 3e-4, time_s=9.0, memory_gb=9.0)
    v = verdicts(tmp_path, {("asdiv", "lora"): 3e-4, ("asdiv", "cla"): 3e-4})
    assert v["cLA trains in less time and memory than LoRA at the same rank"][1] == "no spread with one seed"


def test_run_all_runs_commands_side_by_side_longest_first_each_in_its_own_sweep_dir(monkeypatch):
    """Two commands at a time (a third waits for a free slot), the biggest grid first, and no two
    commands share Hydra's sweep directory (it is named by the second a sweep starts)."""
    import threading
    import time

    running, peak, calls, lock = [0], [0], [], threading.Lock()

    def fake_call(cmd, dry_run):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            calls.append(cmd)
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    monkeypatch.setattr(report_study, "_call", fake_call)
    cmds = [
        ["py", "-m", "bench.run", "method=cla", "method.lr=1e-3", "run.root=r"],
        ["py", "-m", "bench.run", "method=lora", "method.r=6,8,16,32", "run.root=r"],
        ["py", "-m", "bench.run", "method=full", "method.lr=1e-5,1e-4", "run.root=r"],
    ]
    report_study.run_all(cmds, jobs=2, dry_run=False)
    assert peak[0] == 2 and len(calls) == 3
    first = next(c for c in calls if c[-1].endswith("_00"))
    assert first[3] == "method=lora", "the 4-job grid is the first in line"
    dirs = [c[-1] for c in calls]
    assert all(d.startswith("hydra.sweep.dir=r/.sweeps/") for d in dirs) and len(set(dirs)) == 3
    calls.clear()
    report_study.run_all(cmds, jobs=1, dry_run=False)
    assert [c[3] for c in calls] == ["method=cla", "method=lora", "method=full"], "in order, one at a time"
    assert all(not c[-1].startswith("hydra.sweep.dir") for c in calls)


def test_the_study_time_is_read_from_the_runs_first_start_to_last_end():
    """Three jobs, two overlapping: the span is first start -> last end (25 min), the job time the sum
    of each job's own wall (10 + 10 + 5 = 25 min); a run from another commit is named with its count."""

    def run(start, end, commit, method="lora"):
        return {
            "status": "success",
            "started_at": f"2026-11-26T{start}:00+00:00",
            "finished_at": f"2026-11-26T{end}:00+00:00",
            "provenance": {"git_commit": commit, "git_dirty": False},
            "config": {"task": {"name": "asdiv"}, "method": {"name": method}},
            "metrics": {"train_time_s": 100.0, "eval_time_s": 20.0, "step_time_p50_s": 3.0},
        }

    runs = [run("01:00", "01:10", "a" * 40), run("01:05", "01:15", "a" * 40), run("01:25", "01:30", "b" * 40, "cla")]
    span = report_study.study_span_markdown(runs)
    # busy 01:00-01:15 and 01:25-01:30 = 20 min (the 10-minute gap is not counted), job time 25, span 30
    assert "**20.0 min** with at least one job running (3 jobs, 25.0 job-minutes" in span
    assert "30.0 min to the last job's end" in span
    assert report_study.runs_commits(runs) == "aaaaaaaaaa (2 runs), bbbbbbbbbb (1 runs)"
    base = run("00:50", "00:52", "a" * 40)
    base["config"]["eval"] = {"base": True}
    failed = {**run("01:40", "01:41", None), "status": "failed"}
    table = report_study.timing_markdown([*runs, base, failed])
    assert "| asdiv | lora | 2 | 600 | 100 | 3.00 | 20 |" in table and "| asdiv | cla | 1 | 300 |" in table
    assert "| asdiv | base model (1 step) | 1 | 120 |" in table, "the base job is not a LoRA job"
    assert "1 run(s) that did not succeed" in table
    assert report_study.runs_commits([failed]) == "unknown (1 runs)"


def test_stage_one_scores_the_base_model_once_per_part_and_the_base_runs_join_no_grid():
    """One eval.base=true command per part in stage 1 (none in stage 3), and a base run at a grid
    rate is neither a search row nor a main-grid run."""
    stage1 = report_study.commands(Path("r"), [], 1, None, None, None)
    base = [c for c in stage1 if "eval.base=true" in c]
    assert len(base) == len(report_study.PARTS) == 2
    assert sorted(a.split("=", 1)[1] for c in base for a in c if a.startswith("task=")) == sorted(
        report_study.TASKS.values()
    )
    stage3 = report_study.commands(Path("r"), [], 1, None, None, {("asdiv", "lora"): 1e-4})
    assert not any("eval.base=true" in c for c in stage3)
    lora = {
        "status": "success",
        "config": {"task": {"name": "asdiv"}, "method": {"name": "lora", "lr": 1e-4, "r": 16}, "eval": {"base": False}},
        "metrics": {"eval": {"primary": "em", "heldout": {"em": 0.1}}},
        "_path": "a",
    }
    base_run = {**lora, "config": {**lora["config"], "eval": {"base": True}}, "_path": "b"}
    assert report_study._select([lora, base_run], "asdiv", "lora", []) == [lora]


def test_a_broken_command_stops_the_stage_and_queued_commands_never_start(monkeypatch):
    import subprocess
    import time

    started = []

    def fake_call(cmd, dry_run):
        started.append(cmd[3])
        if cmd[3] == "method=bad":
            raise subprocess.CalledProcessError(2, cmd)
        time.sleep(0.2)

    monkeypatch.setattr(report_study, "_call", fake_call)
    cmds = [["py", "-m", "bench.run", f"method={m}", "run.root=r"] for m in ("slow", "bad", "c", "d", "e")]
    with pytest.raises(subprocess.CalledProcessError):
        report_study.run_all(cmds, jobs=2, dry_run=False)
    assert "method=bad" in started and len(started) < 5, started


def test_the_search_reads_seed_0_of_the_searched_criterion_only(tmp_path):
    """Main-grid runs at the chosen rate (other seeds, other pruning criteria) share the search's
    overrides; they must not enter the search table or move its winner."""
    arm, other = "PrunedLoRA obs_gradient 16->8", "PrunedLoRA magnitude 16->8"
    write(tmp_path, arm, 0, 0.1, 1e-4, heldout=0.30)
    write(tmp_path, arm, 0, 0.1, 1e-3, heldout=0.20)
    write(tmp_path, arm, 1, 0.1, 1e-3, heldout=0.90)  # seed 1 of the main grid
    write(tmp_path, other, 0, 0.1, 1e-3, heldout=0.90)  # another criterion of the main grid
    winners, rows = report_study.pick_rates(report_study.load_runs(tmp_path))
    assert [(r[1], r[2], r[4]) for r in rows] == [("prunedlora", 1e-4, 0.30), ("prunedlora", 1e-3, 0.20)]
    assert winners == {("asdiv", "prunedlora"): 1e-4}
    assert "asdiv/prunedlora (smallest)" in report_study.edge_note(rows, winners)
    assert report_study.edge_note(rows + [("asdiv", "prunedlora", 1e-5, "success", 0.1)], winners).startswith(
        "Every chosen rate lies inside"
    )


def test_a_difference_within_the_test_sets_sampling_error_is_not_a_verdict(tmp_path):
    """0.02 against 0.04 on 100 problems (2 against 4 answers): the seed spread (0.01) would call
    it worse; the standard error of the difference on 100 shared items,
    sqrt((0.02*0.98 + 0.04*0.96) / 100) = 0.0241, does not."""
    claim = next(c for c in CLAIMS if c.text == "the OBS-gradient criterion beats magnitude pruning at 16->8")
    for seed, a in enumerate([0.02, 0.03, 0.01]):
        write(tmp_path, "PrunedLoRA obs_gradient 16->8", seed, a, 1e-3, items=100)
        write(tmp_path, "PrunedLoRA magnitude 16->8", seed, 0.04, 1e-3, items=100)
    runs = report_study.load_runs(tmp_path)
    arm = lambda name: [r for r in runs if r["config"]["method"]["criterion"] == name]  # noqa: E731
    numbers, verdict = report_study.judge(claim, arm("obs_gradient"), arm("magnitude"))
    assert "Δ -0.0200, spread 0.0241 (seeds 0.0100, test-set SE of Δ 0.0241 at n=100)" in numbers, numbers
    assert verdict == "not supported by the data (within the spread)"
    # the same runs scored on a million items: the seed spread decides, and -0.02 is beyond it
    many = copy.deepcopy(runs)
    for r in many:
        r["metrics"]["eval"]["n"] = 10**6
    arm = lambda name: [r for r in many if r["config"]["method"]["criterion"] == name]  # noqa: E731
    assert report_study.judge(claim, arm("obs_gradient"), arm("magnitude"))[1].endswith("(worse beyond the spread)")


def test_allocation_is_not_tested_when_no_rank_moved(tmp_path):
    """L1RA runs whose rank-update events pruned nothing end with the uniform pattern they started
    with: that says nothing about where freed ranks go, so the verdict is "not tested", not "not
    supported"; one event that moved ranks brings the ordinary rule back."""
    claim = next(c for c in CLAIMS if c.kind == "allocation")
    modules = [f"model.layers.{i}.{m}" for i in range(2) for m in ("self_attn.q_proj", "mlp.up_proj")]
    for seed in range(3):
        write(tmp_path, "L1RA r=8 all-linear", seed, 0.8, 1e-3, rank_pattern={m: 8 for m in modules})
    runs = report_study.load_runs(tmp_path)
    for r in runs:
        r["method_report"]["events"] = [{"step": 6, "pruned": {}, "reassigned": {}}] * 9
    numbers, verdict = report_study.judge(claim, runs, [])
    assert verdict.startswith("not tested: no rank moved") and "27 rank-update events" in numbers
    runs[0]["method_report"]["events"] = [{"step": 6, "pruned": {modules[0]: 2}, "reassigned": {modules[1]: 2}}]
    assert report_study.rank_moves(runs[0]["method_report"]) == (2, 2)
    assert not report_study.judge(claim, runs, [])[1].startswith("not tested")


def test_cost_claims_do_not_compare_a_process_lifetime_cpu_peak(tmp_path):
    """Runs whose CPU peak RSS covers the whole process (model loading included) say nothing about
    training memory: the claim is judged on time and says memory was not tested."""
    claim = next(c for c in CLAIMS if c.text == "cLA trains in less time and memory than LoRA at the same rank")
    for seed in range(3):
        write(tmp_path, "cLA r=16", seed, 0.3, 1e-3, time_s=5.0 + seed / 10, memory_gb=1.0, memory_scope="process")
        write(tmp_path, "LoRA r=16", seed, 0.3, 1e-3, time_s=9.0 + seed / 10, memory_gb=1.0, memory_scope="process")
    runs = report_study.load_runs(tmp_path)
    a = [r for r in runs if r["config"]["method"]["name"] == "cla"]
    b = [r for r in runs if r["config"]["method"]["name"] == "lora"]
    numbers, verdict = report_study.judge(claim, a, b)
    assert verdict == "time: supported; memory: not tested here" and "peak_memory not compared" in numbers


def test_caveats_name_an_idle_dynamic_rank_arm_an_edge_rate_and_a_marginal_difference(tmp_path):
    claim = next(c for c in CLAIMS if c.text == "L1RA scores the same or better than LoRA at the same total rank")
    for seed in range(3):
        write(tmp_path, "L1RA r=8 all-linear", seed, 0.86 + seed / 100, 1e-3)
        write(tmp_path, "LoRA r=8 all-linear", seed, 0.85 + seed / 100, 1e-3)
    runs = report_study.load_runs(tmp_path)
    l1ra = [r for r in runs if r["config"]["method"]["name"] == "l1ra"]
    lora = [r for r in runs if r["config"]["method"]["name"] == "lora"]
    for r in l1ra:
        r["method_report"]["events"] = [{"step": 6, "pruned": {}, "reassigned": {}}]
    a, b = ARMS[claim.a], ARMS[claim.b]
    numbers, verdict = report_study.judge(claim, l1ra, lora)
    notes = report_study.caveats(claim, verdict, numbers, [(a, l1ra), (b, lora)], {("sentiment", "l1ra"): "largest"})
    assert "L1RA r=8 all-linear moved no rank: it trained as gated LoRA, not as its method" in notes
    assert "L1RA r=8 all-linear's rate is the largest of its grid" in notes
    assert not any(n.startswith("marginal") for n in notes), "a 'not worse' verdict claims no difference"
    # a difference that clears the spread by less than half of it is marginal; one at 2 spreads is not
    better = "supported (the difference exceeds the spread)"
    assert report_study.caveats(claim, better, "Δ +0.0267, spread 0.0253 (seeds", [], {}) == [
        "marginal: |Δ| is 1.06 spreads"
    ]
    assert report_study.caveats(claim, better, "Δ +0.0500, spread 0.0250 (seeds", [], {}) == []
