"""A two-method mini study on the tiny model, its synthetic runs, and its written report."""

from __future__ import annotations

import copy

import numpy as np
import yaml

from bench.study import spec
from bench.study.__main__ import main as study_main
from tests.helpers.runs import N_ITEMS, outcomes, write_run

# A two-method study on the tiny model: the synthetic runs below are built from its overrides.
MINI = {
    "title": "mini",
    "doc": "study.md",
    "root": "runs",
    "seeds": [0, 1, 2],
    "jobs": 1,
    "mechanism_min": 0.05,
    "parts": {
        "p": {
            "what": "tiny",
            "overrides": {"model": "tiny-llama", "task": "asdiv", "train.max_steps": 2},
            "base": {"method": "lora", "method.lr": 1.0e-4, "train.max_steps": 1, "eval.base": True},
        }
    },
    "search": {
        "seed": 0,
        "select": [{"key": "primary", "higher_is_better": True}, {"key": "answer_nll", "higher_is_better": False}],
        "ties": "smaller_rate",
        "grids": {"default": [1.0e-4, 3.0e-4, 1.0e-3]},
        "trials": [{"part": "p", "method": "lora", "overrides": {"method.r": 8}}, {"part": "p", "method": "cla"}],
    },
    "grids": [
        {"part": "p", "method": "lora", "overrides": {"method.r": [4, 8]}},
        {"part": "p", "method": "cla", "overrides": {"method.r": 8}},
    ],
    "arms": {
        "base": {"part": "p", "base": True},
        "LoRA r=8": {"part": "p", "method": "lora", "where": {"method.r": 8}},
        "LoRA r=4": {"part": "p", "method": "lora", "where": {"method.r": 4}},
        "cLA r=8": {"part": "p", "method": "cla", "where": {"method.r": 8}},
    },
    "claims": [
        {
            "paper": "P",
            "text": "cLA is non-inferior to LoRA",
            "kind": "non_inferior",
            "arms": ["cLA r=8", "LoRA r=8"],
            "metric": "exact_match_strict",
            "margin": 0.05,
            "base": "base",
            "family": "primary",
        },
        {
            "paper": "P",
            "text": "LoRA r=8 is better than LoRA r=4",
            "kind": "better",
            "arms": ["LoRA r=8", "LoRA r=4"],
            "metric": "exact_match_strict",
            "family": "primary",
        },
        {
            "paper": "P",
            "text": "cLA is cheaper",
            "kind": "cheaper",
            "arms": ["cLA r=8", "LoRA r=8"],
            "metric": "train_time_s",
        },
    ],
}


def mini_study(tmp_path, **changes) -> spec.Study:
    data = copy.deepcopy(MINI)
    data.update(changes)
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(data))
    study = spec.load(path)
    from dataclasses import replace

    return replace(study, root=tmp_path / "runs", doc=tmp_path / "docs" / "study.md")


def populate(study: spec.Study, cla_p=0.6, lora8_p=0.6, lora4_p=0.45):
    part = study.parts["p"].overrides
    root = study.root
    # the search: seed 0 over the grid; 3e-4 wins for lora, 1e-3 (the grid's end) for cla
    for lr, held in ((1e-4, 0.2), (3e-4, 0.5), (1e-3, 0.4)):
        write_run(
            root, {**part, "method": "lora", "method.r": 8, "method.lr": lr}, 0, outcomes(0, lora8_p), heldout=held
        )
    cla = {**part, "method": "cla", "method.r": 8}
    for lr, held in ((1e-4, 0.2), (3e-4, 0.3), (1e-3, 0.5)):
        write_run(root, {**cla, "method.lr": lr}, 0, outcomes(0, cla_p, 7), heldout=held, time_s=0.8)
    lora8 = {**part, "method": "lora", "method.r": 8, "method.lr": 3e-4}
    for seed, jitter in ((1, 0.02), (2, -0.02)):
        write_run(root, lora8, seed, outcomes(seed, lora8_p), time_s=1.0 + jitter)
        write_run(root, {**cla, "method.lr": 1e-3}, seed, outcomes(seed, cla_p, 7), time_s=0.8 + jitter / 2)
    for seed in (0, 1, 2):
        write_run(root, {**part, "method": "lora", "method.r": 4, "method.lr": 3e-4}, seed, outcomes(seed, lora4_p, 3))
    base = {**part, **study.parts["p"].base}
    write_run(root, base, 0, outcomes(0, 0.0), base=np.zeros(N_ITEMS, dtype=int))


def reported_study(tmp_path) -> spec.Study:
    """The populated mini study, its report written by `bench.study report` (its YAML pointing at
    tmp_path's runs and page)."""
    study = mini_study(tmp_path)
    populate(study)
    path = tmp_path / "mini.yaml"
    data = yaml.safe_load(path.read_text())
    data.update(root=str(study.root), doc=str(study.doc))
    path.write_text(yaml.safe_dump(data))
    assert study_main(["report", str(path)]) == 0
    return study
