"""bench/study/timing.py: the schedule projection, against hand-packed slots and the committed study."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.study import spec, timing
from bench.study.__main__ import load_runs

REPO = Path(__file__).resolve().parents[3]
STUDY = REPO / "studies" / "three_papers.yaml"


def test_jobs_go_to_the_first_free_slot_in_the_order_they_are_submitted():
    assert timing.makespan([3.0, 1.0, 1.0, 1.0], 2) == 3.0  # one slot takes the 3, the other the three 1s
    assert timing.makespan([1.0, 1.0, 1.0, 3.0], 2) == 4.0  # the 3 comes last and starts at 1
    assert timing.makespan([2.0, 2.0, 2.0], 1) == 6.0
    assert timing.makespan([], 2) == 0.0


def test_a_sweep_command_is_rerun_as_the_one_job_it_was():
    result = {
        "provenance": {"command": ["run.py", "-m", "method=lora", "seed=0,1,2", "run.root=old", "hydra.sweep.dir=s"]},
        "config": {"seed": 1, "method": {"name": "lora"}},
    }
    cmd = timing.rerun_command(result, Path("new"))
    assert cmd[1:3] == ["-m", "bench.run"]
    assert cmd[3:] == ["method=lora", "seed=1", "run.root=new"]  # and its own logger, as committed


def test_scores_leave_out_times_and_compare_what_both_runs_have():
    a = {"metrics": {"eval": {"accuracy": 0.8, "time_s": 10.0, "heldout": {"log_loss": 0.4}}, "final_loss": 0.5}}
    b = {"metrics": {"eval": {"accuracy": 0.75, "time_s": 99.0, "heldout": {"log_loss": 0.41}}, "final_loss": 0.5}}
    sa, sb = timing.scores(a), timing.scores(b)
    assert set(sa) == {"accuracy", "heldout.log_loss", "final_loss"}
    key, diff = timing.largest_difference(sa, sb)
    assert key == "accuracy" and diff == pytest.approx(0.05)


@pytest.fixture(scope="module")
def committed():
    study = spec.load(STUDY)
    return study, load_runs(study.root)


def test_the_committed_study_projects_every_job_once(committed, tmp_path):
    study, runs = committed
    p = timing.project(study, runs)
    jobs = sum(s["jobs"] for s in p["stages"])
    assert jobs == len(runs)  # every committed run is one job of the schedule, none missing
    job_s = sum(s["job_s"] for s in p["stages"])
    assert job_s == pytest.approx(sum(r["metrics"]["total_time_s"] for r in runs))
    for s in p["stages"]:  # two slots: at least half the work, at most all of it
        assert s["job_s"] / study.jobs <= s["wall_s"] + 1e-9 <= s["job_s"] + 1e-9
    assert p["from_nothing_s"] == pytest.approx(sum(s["wall_s"] for s in p["stages"]))
    assert p["search_committed_s"] == p["stages"][-1]["wall_s"] and p["stages"][-1]["stage"] == "main grids"
    # a retime that halves every part's jobs and adds no start-up halves the projection
    retime = {"ratio": {part: 0.5 for part in study.parts}, "jobs": [{"process_s": 1.0, "new_s": 1.0}]}
    (tmp_path / "retime.json").write_text(json.dumps(retime))
    half = timing.project(study, runs, tmp_path)
    assert half["from_nothing_s"] == pytest.approx(p["from_nothing_s"] / 2)


def test_with_one_slot_the_projection_is_the_sum_of_the_jobs(committed):
    from dataclasses import replace

    study, runs = committed
    p = timing.project(replace(study, jobs=1), runs)
    assert p["from_nothing_s"] == pytest.approx(sum(r["metrics"]["total_time_s"] for r in runs))


def test_a_projection_without_a_committed_run_for_a_job_names_it(committed):
    study, runs = committed
    with pytest.raises(ValueError, match="no committed run for the planned job"):
        timing.project(study, runs[:-1])


def test_the_committed_retime_gives_the_times_the_study_page_states(committed):
    study, runs = committed
    retimed = REPO / "studies" / "three_papers" / "retime"
    record = json.loads((retimed / "retime.json").read_text())
    assert all(j["same_hash"] and j["status"] == "success" for j in record["jobs"])
    assert all(j["largest_score_difference"][1] == 0 for j in record["jobs"])
    p = timing.project(study, runs, retimed)
    prose = " ".join((REPO / "studies" / "three_papers.md").read_text().split())  # lines wrapped anywhere
    assert f"**{p['from_nothing_s'] / 60:.1f} minutes from nothing**" in prose and p["from_nothing_s"] <= 150 * 60
    assert f"**{p['search_committed_s'] / 60:.1f} minutes with the searches committed**" in prose
    assert p["search_committed_s"] <= 100 * 60
