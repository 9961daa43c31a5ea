"""Sweep presets (conf/sweep/) and launcher configs (conf/hydra/launcher/) compose to what
docs/sweeps.md promises: the design's grids, matched ranks, jobs identical to hand-typed ones."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from bench.config import resolved, run_hash
from tests.conftest import CONF, compose

PRESETS = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))


def hydra_compose(*overrides: str):
    """The config with its `hydra` node (sweeper params, launcher), as bench.run sees it."""
    from hydra import compose as hydra_compose_api
    from hydra import initialize_config_dir

    from bench.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose_api(config_name="config", overrides=list(overrides), return_hydra_config=True)


def grid(preset: str) -> dict[str, list[str]]:
    cfg = hydra_compose(f"sweep={preset}")
    assert cfg.hydra.mode.name == "MULTIRUN", f"sweep={preset} must imply -m"
    return {key: str(values).split(",") for key, values in cfg.hydra.sweeper.params.items()}


def final_rank(method: str) -> int:
    """r_t of a rank-pruning method: the rank it prunes to (its key differs by method)."""
    m = compose(f"method={method}").method
    keys = [k for k in ("r_target", "target_r") if k in m]
    assert len(keys) == 1, f"method {method} names its final rank with none or several of r_target, target_r"
    return m[keys[0]]


def test_presets_exist():
    assert {"sparsity", "sparsity_refs", "beyond_lora"} <= set(PRESETS)


def test_sparsity_preset_prunes_every_method_to_the_same_rank_over_the_design_grid():
    params = grid("sparsity")
    methods = params["method"]
    assert methods == ["prunedlora", "adalora"]
    assert [float(s) for s in params["method.sparsity"]] == [0.5, 0.75, 0.875, 0.9375]  # methods-spec.md §21
    assert len({final_rank(m) for m in methods}) == 1, "the pruning methods must share r_target"
    assert len(params["seed"]) >= 2, "mean ± std needs several seeds"


def test_lora_references_sit_at_both_ends_of_every_sparsity():
    sparsity, refs = grid("sparsity"), grid("sparsity_refs")
    r_t = final_rank(sparsity["method"][0])
    wanted = {r_t} | {round(r_t / (1 - float(s))) for s in sparsity["method.sparsity"]}
    assert refs["method"] == ["lora"] and {int(r) for r in refs["method.r"]} == wanted
    assert refs["seed"] == sparsity["seed"], "references need the same seeds as what they are compared with"


def test_beyond_lora_methods_are_configs_at_one_rank():
    methods = grid("beyond_lora")["method"]
    missing = [m for m in methods if not (CONF / "method" / f"{m}.yaml").exists()]
    assert not missing, f"conf/method/ lacks {missing}"
    ranks = {}
    for m in methods:
        cfg = compose(f"method={m}").method
        assert cfg.name == m
        if "r" in cfg:
            ranks[m] = cfg.r
    assert set(methods) - set(ranks) == {"full"}, "every Beyond-LoRA method but full has a rank r"
    assert len(set(ranks.values())) == 1, f"matched rank: every method at the same r, got {ranks}"


@pytest.mark.parametrize("preset", PRESETS)
def test_a_preset_sets_only_the_sweep_so_jobs_keep_their_run_directory(preset):
    job = ("model=tiny-llama", "method=lora", "seed=3", "train.max_steps=7")
    with_preset = resolved(compose(*job, f"sweep={preset}"))
    assert with_preset == resolved(compose(*job))
    assert run_hash(with_preset) == run_hash(resolved(compose(*job)))


def test_command_line_keys_replace_the_preset_grid():
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    # what BasicSweeper.sweep does: the preset's params first, then the command line
    params = [f"{k}={v}" for k, v in hydra_compose("sweep=sparsity").hydra.sweeper.params.items()]
    cli = ["method.sparsity=0.5", "seed=1,2", "model=tiny-llama"]
    jobs = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params + cli), None)[0]
    assert len(jobs) == 2 * 1 * 2
    assert all("method.sparsity=0.5" in job and "model=tiny-llama" in job for job in jobs)


def test_slurm_launcher_extends_submitit_with_one_gpu_per_run_and_requeues():
    launcher = hydra_compose("hydra/launcher=slurm").hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.tasks_per_node == 1
    assert launcher.max_num_timeout > 0, "a timed-out or pre-empted run is requeued and resumes"
    assert "partition" in launcher and "timeout_min" in launcher
    overridden = hydra_compose("hydra/launcher=slurm", "hydra.launcher.partition=gpu").hydra.launcher
    assert overridden.partition == "gpu"


def test_joblib_launcher_composes():
    launcher = hydra_compose("hydra/launcher=joblib", "hydra.launcher.n_jobs=2").hydra.launcher
    assert launcher._target_.endswith("joblib_launcher.JoblibLauncher") and launcher.n_jobs == 2
    assert OmegaConf.select(launcher, "prefer") == "processes", "one process per worker: jobs never share torch state"
