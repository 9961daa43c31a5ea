"""What fine-tuning did to the model: a stage after training that measures the tuned model and
never changes training or the run's scores (docs/analysis.md).

`analysis=none|default|full` (conf/analysis/, defaults in bench.config.AnalysisConfig) switches
each measurement; the results go to result.json's `analysis` and to the tracker. The stage has two
halves: `before_method` keeps what only the untouched model has (W0 of the analysed layers, the
base model's loss on the forgetting text), `after_training` measures the tuned model.

- spectra and intruder dimensions of every analysed layer's update (spectra.py, updates.py);
- forgetting: the language-modelling loss on text no task trains on, base against tuned (forgetting.py);
- the generalization gap: the training loss on trained-on against unseen examples (gap.py).

- the loss landscape (`analysis=full`): trajectory plane with the path, line, random plane, sharpness (landscape.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Optional

log = logging.getLogger("bench.analysis")


def enabled(acfg) -> bool:
    return bool(acfg.spectra or acfg.intruders or acfg.forgetting or acfg.gap or acfg.landscape)


@dataclass
class Before:
    """What the untouched model gave: W0 per analysed layer, and the forgetting text's base losses."""

    w0: dict = field(default_factory=dict)
    texts: list = field(default_factory=list)
    text_info: dict = field(default_factory=dict)
    base_losses: Optional[list] = None
    not_applicable: dict = field(default_factory=dict)  # measurement -> why it cannot run
    time_s: float = 0.0
    snapshots: Optional[object] = None  # landscape.Snapshots, filled by the train loop


def before_method(run, model, tokenizer, method, examples=()) -> Before:
    from bench.analysis import forgetting, updates

    acfg, t = run.cfg.analysis, time.perf_counter()
    before = Before()
    if not run.main or not enabled(acfg):
        return before
    if acfg.spectra or acfg.intruders:
        before.w0 = updates.snapshot(updates.analysed_layers(model, method, run.cfg.model.adapter_targets))
    if acfg.forgetting:
        why = forgetting.applicable(model)
        if why:
            before.not_applicable["forgetting"] = why
        else:
            before.texts, before.text_info = forgetting_text(acfg, tokenizer, examples)
            before.base_losses = forgetting.passage_losses(
                model, tokenizer, before.texts, acfg.forgetting_max_length, acfg.batch_size
            )
    if acfg.landscape:
        from bench.analysis.landscape import Snapshots

        before.snapshots = Snapshots(run.cfg.train.max_steps // acfg.landscape_snapshots)
    before.time_s = time.perf_counter() - t
    return before


def forgetting_text(acfg, tokenizer, examples) -> tuple[list, dict]:
    from bench.analysis import forgetting

    if acfg.forgetting_source == "boolq":
        return forgetting.passages(acfg.forgetting_passages)
    training_text = "\n".join(tokenizer.decode(e["input_ids"], skip_special_tokens=True) for e in examples)
    return forgetting.hub_passages(
        acfg.forgetting_passages,
        acfg.forgetting_hub_id,
        acfg.forgetting_hub_config,
        acfg.forgetting_hub_revision,
        training_text,
    )


def after_training(run, model, method, task, tokenizer, examples, before: Before) -> dict:
    """result.json's `analysis`: each measurement's result and time, or why it did not run."""
    acfg = run.cfg.analysis
    out: dict = {"settings": dict(run.config.get("analysis") or {}), "not_applicable": dict(before.not_applicable)}
    timings = {"before_training_s": before.time_s}
    if acfg.spectra or acfg.intruders:
        t = time.perf_counter()
        out["layers"] = layer_analysis(run, model, method, before.w0)
        timings["layers_s"] = time.perf_counter() - t
    if acfg.forgetting and before.base_losses is not None:
        from bench.analysis import forgetting

        t = time.perf_counter()
        tuned = forgetting.passage_losses(model, tokenizer, before.texts, acfg.forgetting_max_length, acfg.batch_size)
        out["forgetting"] = forgetting.result(
            before.texts, before.base_losses, tuned, run.run_dir / "analysis" / "forgetting", before.text_info
        )
        out["forgetting"]["items"]["file"] = "analysis/forgetting/" + out["forgetting"]["items"]["file"]
        timings["forgetting_s"] = time.perf_counter() - t
    if acfg.gap:
        t = time.perf_counter()
        unseen = task.unseen_examples(tokenizer, run.cfg.train.max_length, acfg.gap_examples)
        if unseen is None:
            out["not_applicable"]["gap"] = f"task {task.name} gives no unseen examples in training form"
        else:
            from bench.analysis import gap

            out["gap"] = gap.generalization_gap(model, task, tokenizer, examples, unseen, acfg.batch_size)
        timings["gap_s"] = time.perf_counter() - t
    if acfg.landscape:
        t = time.perf_counter()
        found = landscape_of(run, model, task, tokenizer, before)
        if isinstance(found, str):
            out["not_applicable"]["landscape"] = found
        else:
            out["landscape"] = found
            found["time_per_point_s"] = (time.perf_counter() - t) / max(found["points"], 1)
        timings["landscape_s"] = time.perf_counter() - t
    out["time_s"] = timings
    return out


def landscape_of(run, model, task, tokenizer, before: Before):
    """The landscape's result, or why it cannot be drawn for this run."""
    from bench.analysis import gap, landscape

    acfg = run.cfg.analysis
    unseen = task.unseen_examples(tokenizer, run.cfg.train.max_length, acfg.landscape_examples)
    if unseen is None:
        return f"task {task.name} gives no unseen examples in training form"
    kept = before.snapshots.kept
    params = landscape.trainable(model)
    states = [s for _, s in kept] + [landscape.cpu_copy(params)]
    if kept and kept[0][0] != 0:
        return f"the run resumed at step {kept[0][0]}: the path from the start of training was not kept"
    if len(kept) < 2 or not landscape.same_space(states):
        return (
            "the trainable tensors changed name or shape during training (rank pruning, reallocation or "
            "phases): no single parameter space holds the path"
            if len(kept) >= 2
            else "fewer than two snapshots"
        )

    def held_out_loss() -> float:
        return gap.loss_and_accuracy(model, task, tokenizer, unseen, acfg.batch_size)["loss"]

    result = landscape.measure(
        params,
        held_out_loss,
        [s for _, s in kept],
        kept[0][1],
        acfg.landscape_grid,
        acfg.landscape_line_points,
        acfg.sharpness_radius,
        acfg.sharpness_samples,
        run.cfg.seed,
    )
    result["snapshot_steps"] = [step for step, _ in kept]
    result["examples"] = len(unseen)
    return result


def scalars(result: dict) -> dict:
    """The analysis' headline numbers, flat, for the tracker's summary."""
    out = {}
    layers = result.get("layers") or {}
    for key, value in (layers.get("mean") or {}).items():
        out[f"analysis/{key}"] = value
    if "intruders_total" in layers:
        out["analysis/intruders_total"] = layers["intruders_total"]
    for key in ("forgetting", "nll_base", "nll_tuned"):
        if (result.get("forgetting") or {}).get(key) is not None:
            out[f"analysis/{key}"] = result["forgetting"][key]
    for key in ("loss_gap", "accuracy_gap"):
        if (result.get("gap") or {}).get(key) is not None:
            out[f"analysis/{key}"] = result["gap"][key]
    return out


def summary_line(result: dict) -> str:
    parts = [f"{k.split('/', 1)[1]}={v:.4g}" for k, v in scalars(result).items()]
    parts += [f"{k}: not applicable" for k in result.get("not_applicable") or {}]
    return ", ".join(parts) or "nothing measured"


def layer_analysis(run, model, method, w0: dict) -> dict:
    """Per layer: the update's spectrum figures and intruder count; totals; how each SVD was taken."""
    import torch

    from bench.analysis import decompose, spectra, updates, w0_cache

    acfg = run.cfg.analysis
    factors = method.update_factors(model) or {}
    checked = updates.check_factors(model, factors, w0)
    # decompose where the model is: a GPU run's SVDs run on the GPU
    device = next(model.parameters()).device
    device = device if device.type == "cuda" else torch.device("cpu")
    per_layer, intruder_total = {}, 0
    routes = {"w0": {}, "tuned": {}, "w0_cache_hits": 0, "largest_check_error": 0.0}
    for name, w in w0.items():
        w = w.to(device)
        w0_svd, hit = w0_cache.w0_basis(w, acfg.top_k, use_cache=acfg.w0_cache)
        _count_route(routes, "w0", w0_svd)
        routes["w0_cache_hits"] += int(hit)
        if name in factors:
            B, A = factors[name]
            svd = spectra.factored_svd(B.to(device), A.to(device))
            delta = None
        else:
            delta = updates.probed_update(model, name, w.cpu()).to(device)
            svd = spectra.dense_svd(delta)
        row = spectra.update_stats(svd, w, w0_svd, acfg.top_k) if acfg.spectra else {}
        if acfg.intruders:
            if delta is None:
                tuned = decompose.low_rank_update_top(w, w0_svd, *factors[name], acfg.intruder_k)
            else:
                tuned = decompose.top_left(w.double() + delta.double(), acfg.intruder_k)
            _count_route(routes, "tuned", tuned)
            count, sims = spectra.intruders(w0_svd.U, tuned.U, acfg.intruder_epsilon, acfg.intruder_reference_k)
            row.update(intruders=count, intruder_similarities=sims)
            intruder_total += count
        per_layer[name] = row
    summary = {
        "route": "factors" if factors else "probe",
        "factors_checked_on": checked,
        "decompositions": routes,
        "layers": per_layer,
        "n_layers": len(per_layer),
    }
    if acfg.intruders:
        summary["intruders_total"] = intruder_total
    if acfg.spectra and per_layer:
        summary["mean"] = {
            key: float(torch.tensor([r[key] for r in per_layer.values()], dtype=torch.float64).nanmean())
            for key in ("stable_rank", "effective_rank", "relative_norm", "top_k_energy", "overlap_left")
        }
    return summary


def _count_route(routes: dict, which: str, basis) -> None:
    routes[which][basis.route] = routes[which].get(basis.route, 0) + 1
    routes["largest_check_error"] = max(routes["largest_check_error"], basis.error)
