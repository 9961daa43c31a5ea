"""Studies as data (bench/study/): the spec's checks, the commands generated from it, the rate choice
on the held-out split, and verdicts computed from synthetic runs whose per-item results are known;
the whole chain on the tiny model is in test-slow."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
import yaml

from bench.study import judge, plan, select, spec
from bench.study.__main__ import main as study_main
from tests.conftest import REPO, compose
from tests.helpers.runs import outcomes, write_run
from tests.helpers.studies import MINI, mini_study, populate, reported_study

DEFAULT = REPO / "studies" / "three_papers.yaml"


# -- the spec ------------------------------------------------------------------------------------
def test_the_default_study_loads_and_every_claim_names_defined_arms():
    study = spec.load(DEFAULT)
    assert study.claims and all(name in study.arms for c in study.claims for name in c.arms)
    assert {c.family for c in study.claims} >= {"primary"}
    primary = [c for c in study.claims if c.family == "primary"]
    assert len({c.paper for c in primary}) == len(primary)  # one primary claim per paper
    for c in study.claims:
        if c.kind == "non_inferior":
            assert c.margin and c.margin > 0 and c.base


@pytest.mark.parametrize(
    "change, message",
    [
        ({"claimz": []}, "unknown key"),
        ({"claims": [{**MINI["claims"][0], "margin": None}]}, "needs a margin"),
        ({"claims": [{**MINI["claims"][0], "arms": ["cLA r=8", "nobody"]}]}, "arm 'nobody' is not defined"),
        ({"claims": [{**MINI["claims"][2], "metric": "exact_match_strict"}]}, "cheaper claim's metric"),
        ({"grids": [{"part": "p", "method": "lora", "overrides": {"method.lr": 1e-3}}]}, "set by the study"),
        ({"seeds": []}, "seeds must be"),
    ],
)
def test_a_bad_study_file_is_refused_with_what_is_wrong(tmp_path, change, message):
    with pytest.raises(spec.SpecError, match=message):
        mini_study(tmp_path, **change)


def test_the_engine_names_no_method_task_or_paper():
    """The config groups are the registry: a method, task or paper in bench/study/ would be a
    study's content written into the engine."""
    names = {p.stem for group in ("method", "task") for p in (REPO / "conf" / group).glob("*.yaml")}
    names |= {"L1RA", "PrunedLoRA", "Beyond LoRA", "cLA", "AdaLoRA"}
    code = "\n".join(p.read_text() for p in (REPO / "bench" / "study").glob("*.py"))
    literals = set(re.findall(r"[\"']([^\"'\n]+)[\"']", code))
    assert not {n for n in names if n in literals}


# -- the commands ----------------------------------------------------------------------------------
def test_the_commands_come_from_the_yaml_alone(tmp_path):
    study = mini_study(tmp_path)
    search = [" ".join(c[2:]) for c in plan.search_commands(study, {})]
    assert "method=lora method.r=8 method.lr=0.0001,0.0003,0.001 seed=0" in search[0]
    assert search[-1].count("train.max_steps=1") == 1 and "eval.base=true" in search[-1]  # the base job
    main = [" ".join(c[2:]) for c in plan.main_commands(study, {("p", "lora"): 3e-4, ("p", "cla"): 1e-3})]
    assert "method=lora method.r=4,8 method.lr=0.0003 seed=0,1,2" in main[0]
    assert "method=cla method.r=8 method.lr=0.001 seed=0,1,2" in main[1]
    smoke = plan.with_extra(study, ["train.max_steps=5", "p:eval.limit=2"])
    assert "train.max_steps=5" in " ".join(plan.search_commands(smoke, {})[0]) and "eval.limit=2" in " ".join(
        plan.search_commands(smoke, {})[0]
    )


def test_run_all_stops_a_stage_at_a_broken_command(monkeypatch):
    import time

    calls = []

    def fake(cmd, dry_run):
        calls.append(cmd)
        if len(calls) == 1:
            raise RuntimeError("broken")
        time.sleep(0.3)

    monkeypatch.setattr(plan, "_call", fake)
    with pytest.raises(RuntimeError, match="broken"):
        plan.run_all([["py", "-m", "bench.run", "-m", f"a={i}", "run.root=r"] for i in range(6)], jobs=2)
    assert len(calls) < 6  # the commands still queued when one broke never start


# -- rates and verdicts from synthetic runs ---------------------------------------------------------
def test_rates_are_chosen_on_the_heldout_split_and_grid_ends_are_named(tmp_path):
    study = mini_study(tmp_path)
    populate(study)
    runs, rows, rates = _state(study)
    assert rates == {("p", "lora"): 3e-4, ("p", "cla"): 1e-3}
    assert select.grid_end(study, "p", "cla", 1e-3) == "largest" and select.grid_end(study, "p", "lora", 3e-4) is None
    assert len(select.arm_runs(study, runs, study.arms["cLA r=8"], rates)) == 3
    assert len(select.arm_runs(study, runs, study.arms["base"], rates)) == 1


def _state(study):
    from bench.study.__main__ import state

    return state(study)[1:]


def test_verdicts_follow_the_paired_intervals_and_the_preconditions(tmp_path):
    study = mini_study(tmp_path)
    populate(study)
    runs, _, rates = _state(study)
    judged = {j.claim.text: j for j in judge.judge_all(study, runs, rates)}
    ni = judged["cLA is non-inferior to LoRA"].verdict
    # the same item difficulty with different flips: Δ near 0, a paired interval well inside ±0.05
    assert ni.verdict == "non-inferior" and ni.ci90[0] > -0.05
    assert ni.provisional  # cLA's rate is the largest of its grid
    assert any("against base" in e for e in judged["cLA is non-inferior to LoRA"].evidence)  # the assay check ran
    better = judged["LoRA r=8 is better than LoRA r=4"].verdict
    assert better.verdict == "better" and better.ci95[0] > 0 and better.p_adjusted is not None
    cheaper = judged["cLA is cheaper"].verdict
    assert cheaper.verdict == "cheaper" and cheaper.delta == pytest.approx(0.8, rel=0.02)


def test_a_reference_that_does_not_beat_the_base_model_leaves_the_claim_not_tested(tmp_path):
    study = mini_study(tmp_path)
    populate(study, cla_p=0.03, lora8_p=0.03, lora4_p=0.02)  # LoRA barely above the base model's 0
    runs, _, rates = _state(study)
    (ni,) = [j.verdict for j in judge.judge_all(study, runs, rates) if j.claim.kind == "non_inferior"]
    assert ni.verdict == "not tested" and any("no assay sensitivity" in r for r in ni.reasons)


def test_runs_without_items_files_are_not_tested_with_the_reason(tmp_path):
    study = mini_study(tmp_path)
    populate(study)
    for items in study.root.rglob("items.jsonl"):
        result = json.loads((items.parent.parent / "result.json").read_text())
        result["metrics"]["eval"].pop("items", None)
        (items.parent.parent / "result.json").write_text(json.dumps(result))
    runs, _, rates = _state(study)
    verdict = judge.judge_all(study, runs, rates)[0].verdict
    assert verdict.verdict == "not tested" and "no per-item results" in " ".join(verdict.reasons)


def test_the_report_renders_from_the_runs_alone(tmp_path):
    study = reported_study(tmp_path)
    page = study.doc.read_text()
    assert "## Verdicts" in page and "non-inferior" in page and "(provisional)" in page
    assert "| p | lora | lr | 0.0003 **(chosen)** | 0.0003 | success |" in page and "search.png" in page
    assert "## Report, part p (bench.report)" in page


def test_the_default_studys_grids_match_cla_in_parameters_and_in_rank():
    """LoRA r=6 is the rank whose trainable count is closest to cLA/c3LA at r=16 (within the report's
    matching tolerance), r=16 the same rank; counts are the methods' own on SmolLM2's shapes."""
    import torch
    import transformers
    from omegaconf import OmegaConf

    from bench.report.table import MATCH_TOLERANCE
    from bench.run import build

    arch = OmegaConf.to_container(compose("model=smollm2-135m").model.arch)
    arch.pop("model_type")
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**arch))

    def count(method, r):
        return build(
            compose("model=smollm2-135m", f"method={method}", f"method.r={r}").method
        ).expected_trainable_params(model)

    study = spec.load(DEFAULT)
    arms = {a.name: a for a in study.arms.values()}
    target = count("cla", arms["cLA r=16 (asdiv)"].where["method.r"])
    matched = arms["LoRA r=6 (asdiv)"].where["method.r"]
    closest = min(range(1, 17), key=lambda k: abs(count("lora", k) - target))
    assert closest == matched
    assert abs(count("lora", matched) - target) <= MATCH_TOLERANCE * min(count("lora", matched), target)


@pytest.mark.slow
def test_the_whole_chain_runs_on_the_tiny_model(tmp_path):
    """make study's chain on the tiny model: searches, base job, main grids, items files, report."""
    study = mini_study(tmp_path)
    path = tmp_path / "mini.yaml"
    data = yaml.safe_load(path.read_text())
    data.update(root=str(study.root), doc=str(study.doc), seeds=[0, 1])
    data["search"]["grids"]["default"] = [1.0e-3, 3.0e-3]
    path.write_text(yaml.safe_dump(data))
    extra = ["train.device=cpu", "logger=none", "p:task.asdiv_heldout=4", "p:task.asdiv_test=6", "eval.max_gen_toks=4"]
    assert study_main(["run", str(path), *extra]) == 0
    page = study.doc.read_text()
    assert "## Verdicts" in page
    assert len(list(study.root.rglob("eval/items.jsonl"))) >= 6


def test_the_default_study_runs_every_adapter_at_one_scaling_and_its_mechanisms_long_enough():
    """The design rules of studies/three_papers.yaml, recomputed from its overrides by hand: alpha / r = 2
    in every adapter arm (the final rank for the pruning methods), PrunedLoRA's criteria at two
    sparsities that each reach r_target by the reference pace with a fifth of the run left, and an
    L1RA lambda grid whose smallest value still shrinks a gate by 0.1 over the run."""
    study = spec.load(DEFAULT)
    for g in study.grids:
        o = g.overrides
        if g.method in ("lora", "cla", "c3la", "l1ra"):
            assert o["method.alpha"] / o["method.r"] == 2, g
        elif g.method in ("adalora", "prunedlora"):
            final = o.get("method.target_r", o.get("method.r_target"))
            assert o["method.alpha_rule"] == "scaled" and o["method.alpha"] / final == 2, g
    for g in (g for g in study.grids if g.method == "prunedlora"):
        o, part = g.overrides, study.parts[g.part].overrides
        steps, warmup = part["train.max_steps"], part["train.warmup_ratio"] * part["train.max_steps"]
        assert (o["method.prune_k"], o["method.prune_every"]) == (2, 10)  # the reference pace
        assert o["method.first_event"] > warmup
        for s in o["method.sparsity"] if isinstance(o["method.sparsity"], list) else [o["method.sparsity"]]:
            events = (round(o["method.r_target"] / (1 - s)) - o["method.r_target"]) // o["method.prune_k"]
            last = o["method.first_event"] + (events - 1) * o["method.prune_every"]
            assert (steps - last) / steps >= 0.2, (g.part, s)
    sentiment = [g for g in study.grids if g.method == "prunedlora" and g.part == "sentiment"][0].overrides
    assert len(sentiment["method.sparsity"]) == 2 and {"obs_gradient", "magnitude", "wanda"} == set(
        sentiment["method.criterion"]
    )
    lam = [t for t in study.search.trials if t.method == "l1ra"]
    assert lam and all(t.key == "method.l1_lambda" and t.lr_from == "lora" for t in lam)
    eta_c = compose("method=l1ra").method.eta_c
    for t in lam:
        steps = study.parts[t.part].overrides["train.max_steps"]
        assert min(t.grid) * eta_c * steps >= 0.1 > 0.02 * eta_c * steps  # the dropped 0.01, 0.02 stay below


def test_the_default_study_matches_cla_and_lora_parameters_on_minilm_by_hand():
    """cLA trains r * d_out per linear layer and LoRA r * (d_in + d_out): on MiniLM's 37 linear layers
    (6 x (4 of 384->384, 384->1536, 1536->384) + the pooler), cLA r=16 and LoRA r=8 train the same."""
    arch = yaml.safe_load((REPO / "conf" / "model" / "minilm.yaml").read_text())["arch"]
    h, f, n = arch["hidden_size"], arch["intermediate_size"], arch["num_hidden_layers"]
    shapes = n * [(h, h)] * 4 + n * [(h, f), (f, h)] + [(h, h)]
    assert len(shapes) == 37
    study = spec.load(DEFAULT)
    r_cla = study.arms["cLA r=16 (sentiment)"].where["method.r"]
    r_lora = study.arms["LoRA r=8 (sentiment)"].where["method.r"]
    assert sum(r_cla * d_out for _, d_out in shapes) == sum(r_lora * (d_in + d_out) for d_in, d_out in shapes)


def test_the_example_study_in_the_docs_is_a_valid_study(tmp_path):
    text = (REPO / "docs" / "sweeps.md").read_text()
    (block,) = re.findall(r"```yaml\n(# studies/mine\.yaml.*?)```", text, flags=re.S)
    path = tmp_path / "mine.yaml"
    path.write_text(block)
    study = spec.load(path)
    assert [c.kind for c in study.claims] == ["non_inferior"] and len(plan.search_commands(study, {})) == 3


def test_a_metric_at_its_floor_in_both_arms_is_not_tested(tmp_path):
    study = mini_study(tmp_path)
    populate(study, cla_p=0.0, lora8_p=0.0, lora4_p=0.0)
    for path in study.root.rglob("eval/items.jsonl"):  # no seed-specific flips either: every item 0
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({**r, "exact_match_strict": 0}) + "\n" for r in rows))
    runs, _, rates = _state(study)
    (better,) = [j.verdict for j in judge.judge_all(study, runs, rates) if j.claim.kind == "better"]
    assert better.verdict == "not tested" and any("does not vary" in r for r in better.reasons)


def test_a_main_grid_run_on_the_search_seed_is_not_a_search_trial(tmp_path):
    """cLA's search leaves method.r at its default; the main grid's seed-0 run at r=8 and the chosen
    rate matches the trial's overrides but is not one of its jobs."""
    study = mini_study(tmp_path)
    populate(study)
    part = study.parts["p"].overrides
    write_run(study.root, {**part, "method": "cla", "method.r": 4, "method.lr": 1e-3}, 0, outcomes(0, 0.6, 7))
    _, rows, _ = _state(study)
    cla = [(r.lr, r.run["config"]["method"]["r"]) for r in rows if r.method == "cla"]
    assert cla == [(1e-4, 8), (3e-4, 8), (1e-3, 8)]


# -- a search that widens its grid, and one over another key at another method's rate -------------
def _budget_study(tmp_path, budget=5):
    search = {**copy.deepcopy(MINI["search"]), "budget": budget}
    search["grids"] = {"default": [1.0e-4, 1.0e-3], "lam": [0.1, 0.2]}
    search["trials"] = [
        {"part": "p", "method": "lora", "overrides": {"method.r": 8}},
        {"part": "p", "method": "cla"},
        {"part": "p", "method": "l1ra", "key": "method.l1_lambda", "lr_from": "lora", "grid": "lam"},
    ]
    grids = [*MINI["grids"], {"part": "p", "method": "l1ra", "overrides": {"method.r": 8}}]
    arms = {**MINI["arms"], "L1RA r=8": {"part": "p", "method": "l1ra", "where": {"method.r": 8}}}
    return mini_study(tmp_path, search=search, grids=grids, arms=arms)


def _held(lr):  # held-out curves that peak at 3e-2 (beyond the initial grid) for lora, 1e-4 for cla
    return {
        "lora": lambda v: 0.9 - abs(np.log10(v) - np.log10(3e-2)) / 10,
        "cla": lambda v: 0.9 - abs(np.log10(v / 1e-4)) / 10,
    }


def _run_trials(study, scores):
    """Write every pending search point with its held-out score, as a sweep would, until none is left."""
    written = 0
    for _ in range(20):
        from bench.study.__main__ import state

        resolved, runs, _, rates = state(study)
        todo = select.pending(resolved, runs, rates)
        if not todo:
            return resolved, written
        for trial, points in todo:
            spec_ = {k: v for k, v in select.trial_spec(resolved, trial, rates).items() if k != "seed"}
            for value in points:
                held = scores[trial.method](value)
                write_run(study.root, {**spec_, trial.key: value}, 0, outcomes(0, 0.5), heldout=held)
                written += 1
    raise AssertionError("the search never settled")


def test_a_grid_grows_toward_the_best_value_until_the_budget_and_every_method_gets_it(tmp_path):
    study = _budget_study(tmp_path)
    scores = {**_held(None), "l1ra": lambda lam: 0.5 + (0.1 if lam == 0.2 else 0.0)}
    resolved, written = _run_trials(study, scores)
    grids = {t.method: t.grid for t in resolved.search.trials}
    # lora's best is beyond the top: the grid climbs by its own step (x10) and brackets 3e-2 at 1e-1
    assert grids["lora"] == (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    # cla's best starts at the lower end: the grid descends, then spends the rest of its budget on
    # the nearer end; every method ends with the same number of trials
    assert grids["cla"] == (1e-6, 1e-5, 1e-4, 1e-3, 1e-2) and len(grids["l1ra"]) == 5
    assert written == 15
    _, _, rows, rates = __import__("bench.study.__main__", fromlist=["state"]).state(study)
    assert rates[("p", "lora")] == pytest.approx(1e-2)  # 1e-2 and 1e-1 sit either side of 3e-2
    assert resolved.chosen[("p", "cla")] == ("method.lr", pytest.approx(1e-4))
    # l1ra ran at lora's chosen rate, over its own key; its chosen lambda is folded into its arm
    l1ra_rows = [r for r in rows if r.method == "l1ra"]
    assert [r.lr for r in l1ra_rows] == pytest.approx([1e-2] * 5) and rates[("p", "l1ra")] == pytest.approx(1e-2)
    lam = resolved.chosen[("p", "l1ra")][1]
    assert resolved.arms["L1RA r=8"].where["method.l1_lambda"] == lam
    main = " ".join(" ".join(c) for c in plan.main_commands(resolved, rates))
    assert f"method=l1ra method.r=8 method.l1_lambda={lam:g} method.lr=0.01" in main


def test_a_grid_that_fixes_the_searched_key_keeps_its_value_at_the_chosen_rate(tmp_path):
    study = _budget_study(tmp_path, budget=2)
    data = yaml.safe_load((tmp_path / "mini.yaml").read_text())
    fixed = {"method.r": 8, "method.l1_lambda": 0.7}
    data["grids"].append({"part": "p", "method": "l1ra", "overrides": fixed})
    data["arms"]["fixed"] = {"part": "p", "method": "l1ra", "where": fixed}
    study = mini_study(tmp_path, **{k: data[k] for k in ("search", "grids", "arms")})
    scores = {**_held(None), "l1ra": lambda lam: 0.5 + (0.1 if lam == 0.2 else 0.0)}
    resolved, _ = _run_trials(study, scores)
    from bench.study.__main__ import state

    _, _, _, rates = state(study)
    assert resolved.chosen[("p", "l1ra")][1] == pytest.approx(0.2)
    assert resolved.arms["fixed"].where["method.l1_lambda"] == 0.7
    assert resolved.arms["L1RA r=8"].where["method.l1_lambda"] == pytest.approx(0.2)
    # the searched arm's lambda sits at its grid's end (provisional); the fixed arm's lambda was never searched
    searched, fixed_arm = resolved.arms["L1RA r=8"], resolved.arms["fixed"]
    assert any("l1_lambda" in r for r in judge.grid_reasons(resolved, [searched], rates))
    assert not any("l1_lambda" in r for r in judge.grid_reasons(resolved, [fixed_arm], rates))
    l1ra = [set(c) for c in plan.main_commands(resolved, rates) if "method=l1ra" in c]
    lora_rate = f"method.lr={rates[('p', 'lora')]:g}"
    assert [{"method.l1_lambda=0.2", lora_rate} <= c for c in l1ra] == [True, False]
    assert [{"method.l1_lambda=0.7", lora_rate} <= c for c in l1ra] == [False, True]


def test_a_failed_run_at_an_end_bounds_the_grid(tmp_path):
    study = _budget_study(tmp_path, budget=3)
    part = study.parts["p"].overrides
    lora = {**part, "method": "lora", "method.r": 8}
    write_run(study.root, {**lora, "method.lr": 1e-4}, 0, outcomes(0, 0.5), heldout=0.3)
    write_run(study.root, {**lora, "method.lr": 1e-3}, 0, outcomes(0, 0.5), heldout=0.6)
    from bench.study.__main__ import state

    resolved, runs, _, rates = state(study)
    assert dict((t.method, g) for t, g in select.pending(resolved, runs, rates))["lora"] == (1e-2,)
    write_run(study.root, {**lora, "method.lr": 1e-2}, 0, outcomes(0, 0.5), status="failed")
    resolved, runs, _, rates = state(study)
    trial = resolved.search.trial("p", "lora")
    assert trial.grid == (1e-4, 1e-3, 1e-2) and rates[("p", "lora")] == 1e-3  # diverged above: not extended
    assert "lora" not in {t.method for t, _ in select.pending(resolved, runs, rates)}


def test_a_cancelled_search_job_runs_again_and_bounds_nothing(tmp_path):
    study = _budget_study(tmp_path, budget=3)
    lora = {**study.parts["p"].overrides, "method": "lora", "method.r": 8}
    write_run(study.root, {**lora, "method.lr": 1e-4}, 0, outcomes(0, 0.5), heldout=0.3)
    write_run(study.root, {**lora, "method.lr": 1e-3}, 0, outcomes(0, 0.5), status="cancelled")
    from bench.study.__main__ import state

    resolved, runs, rows, rates = state(study)
    assert dict((t.method, g) for t, g in select.pending(resolved, runs, rates))["lora"] == (1e-3,)
    assert [r.value for r in rows if r.method == "lora"] == [1e-4] and ("p", "lora") not in rates


@pytest.mark.parametrize(
    "trial, message",
    [
        ({"part": "p", "method": "l1ra", "key": "method.l1_lambda"}, "takes its rate from another method"),
        ({"part": "p", "method": "l1ra", "key": "method.l1_lambda", "lr_from": "dora"}, "has no rate search"),
        ({"part": "p", "method": "l1ra", "lr_from": "lora"}, "takes no lr_from"),
    ],
)
def test_a_search_over_another_key_needs_a_rate_source(tmp_path, trial, message):
    search = {**copy.deepcopy(MINI["search"]), "trials": [*MINI["search"]["trials"], trial]}
    with pytest.raises(spec.SpecError, match=message):
        mini_study(tmp_path, search=search)


# -- what a study commits -------------------------------------------------------------------------
def test_a_packed_root_holds_what_rechecks_a_run_and_reads_back_without_the_plain_items(tmp_path):
    import subprocess

    from bench import items
    from bench.study import pack

    study = mini_study(tmp_path)
    populate(study)
    plain = sorted(study.root.rglob("items.jsonl"))
    before = {p: items.read(p) for p in plain}
    size = pack.pack(study.root)
    assert size == pack.committed_bytes(study.root) and size > 0
    again = {p: p.with_name("items.jsonl.gz").read_bytes() for p in plain}
    for p in plain:  # a second pack rewrites nothing, and a fresh gzip of the same bytes is identical
        p.with_name("items.jsonl.gz").unlink()
    pack.pack(study.root)
    assert {p: p.with_name("items.jsonl.gz").read_bytes() for p in plain} == again
    for p in plain:
        p.unlink()  # a fresh clone: git brought only the compressed copies
    assert {p: items.read(p) for p in plain} == before
    # git sees exactly result.json, the compressed items and the ignore file
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (study.root / "r" / "adapter").mkdir(parents=True)
    (study.root / "r" / "adapter" / "adapter_model.safetensors").write_bytes(b"x")
    listed = subprocess.run(
        ["git", "-C", str(tmp_path), "ls-files", "--others", "--exclude-standard", "runs"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    names = {p.rsplit("/", 1)[-1] for p in listed}
    assert names == {".gitignore", "result.json", "items.jsonl.gz"}
    _, rows, rates = _state(study)  # the verdict machinery still finds every run
    assert rates == {("p", "lora"): 3e-4, ("p", "cla"): 1e-3}
    judged = judge.judge_all(study, *_state(study)[::2])
    assert judged[0].verdict.verdict == "non-inferior"


def test_a_study_restricted_to_some_parts_keeps_their_jobs_and_claims(tmp_path):
    parts = {**MINI["parts"], "q": copy.deepcopy(MINI["parts"]["p"])}
    parts["q"]["overrides"]["train.max_steps"] = 3
    trials = [*MINI["search"]["trials"], {"part": "q", "method": "lora"}]
    grids = [*MINI["grids"], {"part": "q", "method": "lora"}]
    arms = {**MINI["arms"], "LoRA q": {"part": "q", "method": "lora"}}
    claims = [
        *MINI["claims"],
        {
            "paper": "P",
            "text": "across",
            "kind": "better",
            "arms": ["LoRA q", "LoRA r=8"],
            "metric": "exact_match_strict",
        },
    ]
    study = mini_study(
        tmp_path, parts=parts, search={**MINI["search"], "trials": trials}, grids=grids, arms=arms, claims=claims
    )
    only = spec.only_parts(study, ["p"])
    assert set(only.parts) == {"p"} and all(t.part == "p" for t in only.search.trials)
    assert [c.text for c in only.claims] == [c["text"] for c in MINI["claims"]]  # the cross-part claim is left out
    full = [" ".join(c) for c in plan.search_commands(study, {})]
    assert all(" ".join(c) in full for c in plan.search_commands(only, {}))  # the same jobs as the full study's
    with pytest.raises(spec.SpecError, match="not in the study"):
        spec.only_parts(study, ["nope"])


def test_the_page_says_what_a_stopped_study_has_left(tmp_path):
    from bench.study import render

    study = mini_study(tmp_path)
    populate(study)
    resolved, runs, _, rates = __import__("bench.study.__main__", fromlist=["state"]).state(study)
    assert select.progress(resolved, runs, rates) == {"p": {"search": 0, "main": 0}}
    assert render.progress_line(resolved, runs, rates) == "- progress: every job of the study has run"
    lora4 = [r for r in runs if r["config"]["method"]["name"] == "lora" and r["config"]["method"]["r"] == 4]
    left = [r for r in runs if r is not lora4[0]]
    assert select.progress(resolved, left, rates) == {"p": {"search": 0, "main": 1}}
    assert "not finished" in render.progress_line(resolved, left, rates)


def test_side_by_side_jobs_are_single_commands_and_finished_ones_are_left_out(tmp_path):
    study = mini_study(tmp_path)
    populate(study)
    resolved, runs, _, rates = __import__("bench.study.__main__", fromlist=["state"]).state(study)
    whole = plan.main_commands(resolved, rates)  # one sweep per grid when jobs run one at a time
    assert len(whole) == 2 and "seed=0,1,2" in " ".join(whole[0])
    assert plan.main_commands(resolved, rates, threads=1, runs=runs) == []  # every job has its run
    lora4 = next(r for r in runs if r["config"]["method"]["r"] == 4 and r["config"]["seed"] == 1)
    (left,) = plan.main_commands(resolved, rates, threads=1, runs=[r for r in runs if r is not lora4])
    assert "method.r=4" in left and "seed=1" in left and "train.threads=1" in left
    assert len(plan.search_commands(resolved, rates, None, threads=1)) == 2 * 3 + 1  # 3 points each, the base job
