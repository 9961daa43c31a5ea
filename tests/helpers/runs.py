"""Synthetic finished runs for the comparison and study tests: result.json files that pass the schema,
with items.jsonl files whose per-item values the test chooses."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import numpy as np

from bench import results
from bench.config import resolved, run_hash
from tests.conftest import compose
from tests.helpers.results import minimal_result

N_ITEMS = 400
ITEM_IDS = [f"{i:016x}" for i in range(N_ITEMS)]
EXACT = {"kind": "binary", "higher_is_better": True, "aggregate": "exact_match,strict-match", "per": None}


def write_run(
    root: Path, overrides: dict, seed: int, correct: np.ndarray, *, heldout=0.5, time_s=1.0, base=None, status=None
):
    """A successful run of `overrides` (composed like bench.run) whose tuned test items are `correct`
    (0/1 per item), its held-out score `heldout`; `base`: the eval_base items of a base job;
    `status`: another status (e.g. failed: the run keeps its config and loses its scores)."""
    config = _config(tuple(f"{k}={v}" for k, v in overrides.items()) + (f"seed={seed}",))
    r = copy.deepcopy(minimal_result())
    h = run_hash(config)
    r.update(config=config, run_id=h[:10], config_hash=h)
    r["metrics"]["train_time_s"] = time_s
    run_dir = root / h[:10]

    def evaluation(stage: str, values: np.ndarray) -> dict:
        rows = [{"id": i, "exact_match_strict": int(v)} for i, v in zip(ITEM_IDS, values)]
        (run_dir / stage).mkdir(parents=True, exist_ok=True)
        (run_dir / stage / "items.jsonl").write_text(
            "".join(json.dumps({**row, "split": "test"}) + "\n" for row in rows)
        )
        return {
            "primary": "exact_match,strict-match",
            "exact_match,strict-match": float(values.mean()),
            "n": len(values),
            "items": {
                "file": "items.jsonl",
                "n": len(values),
                "split": "test",
                "metrics": {"exact_match_strict": EXACT},
            },
            "heldout": {"exact_match,strict-match": heldout, "answer_nll": 1.0, "n": 10},
        }

    r["metrics"]["eval"] = evaluation("eval", correct)
    if base is not None:
        r["metrics"]["eval_base"] = evaluation("eval_base", base)
    if status is not None:
        r["status"] = status
        r["metrics"].pop("eval", None)
        r["error"] = {"type": "RuntimeError", "message": "loss is nan"}
    results.write_result(run_dir, r)
    return r


@functools.lru_cache(maxsize=None)
def _resolved(args: tuple) -> str:
    return json.dumps(resolved(compose(*args)))


def _config(args: tuple) -> dict:
    """The resolved config of `args` (composing takes a while; the tests reuse a few dozen)."""
    return json.loads(_resolved(args))


def outcomes(seed: int, p: float, shift: int = 0) -> np.ndarray:
    """Item i correct when its fixed difficulty is below p (the same items are hard for every arm,
    so the arms are positively correlated item by item), with a few seed-specific flips."""
    difficulty = np.random.default_rng(0).random(N_ITEMS)
    flips = np.random.default_rng(100 + seed + shift).random(N_ITEMS) < 0.03
    return ((difficulty < p) ^ flips).astype(int)


def _layer(values):
    return {"top_singular_values": values, "numerical_rank": len(values)}


def with_analysis(root, method, seed, forgetting, intruders, stable_rank, sv):
    """A run of `method` whose result.json carries an analysis section (a landscape for full)."""
    r = write_run(root, {"model": "tiny-llama", "method": method}, seed, outcomes(seed, 0.5))
    r["analysis"] = {
        "settings": {},
        "not_applicable": {},
        "time_s": {"layers_s": 0.1},
        "layers": {
            "route": "probe",
            "n_layers": 2,
            "layers": {"model.layers.0.self_attn.q_proj": _layer(sv), "model.layers.0.self_attn.v_proj": _layer(sv)},
            "intruders_total": intruders,
            "mean": {"stable_rank": stable_rank, "effective_rank": 2.0, "relative_norm": 0.01},
        },
        "forgetting": {
            "nll_base": 3.0,
            "nll_tuned": 3.0 + forgetting,
            "forgetting": forgetting,
            "tokens": 10,
            "items": {},
            "data": {},
        },
        "gap": {"train": {}, "unseen": {}, "loss_gap": 0.1, "accuracy_gap": None},
    }
    if method == "full":
        grid = [[1.0, 2.0], [3.0, 4.0]]
        r["analysis"]["landscape"] = {
            "loss_at_final": 1.0,
            "trajectory": {"x": [0, 1], "y": [0, 1], "loss": grid, "path": [[1, 1], [0, 0]], "plane_energy_share": 1.0},
            "line": {"alpha": [-0.5, 0.0, 1.0, 1.5], "loss": [3.0, 2.0, 1.0, 1.2]},
            "random": {"x": [-1, 1], "y": [-1, 1], "loss": grid},
            "sharpness": {"radius": 0.1, "samples": 2, "mean_increase": 0.5},
            "points": 11,
            "snapshot_steps": [0, 2],
        }
    results.write_result(root / r["run_id"], r)
