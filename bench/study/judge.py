"""A study's claims to verdicts, from the finished runs and their items files.

Per claim: the arms' runs (bench.study.select), then the preconditions, then the comparison and the
rule (bench.verdicts):
- every arm has finished runs with per-item results for the claim's metric (else "not tested");
- each method's own mechanism check (`Method.mechanism`, found through the run config's
  `method._target_`) reached the study's `mechanism_min` in every run of the arm (else "not tested");
- a non-inferiority claim with a `base` arm: the reference arm beats the untrained model by at
  least twice the margin (assay sensitivity; else "not tested");
- both arms' chosen learning rates lie inside their search grids (else the verdict is provisional).
Holm's correction then runs over each declared family.

Cost claims compare a per-run cost (train time, or peak memory: CUDA's max_memory_allocated, the
CPU's peak of live tensor bytes; never the CPU's peak RSS, which depends on the allocator) as a
ratio over seeds; the evidence says which memory figure was compared. A `rank_share` claim asks
whether a dynamic-rank arm's final rank sits more in the modules its regular expression names
than those modules' share at the start (uniform ranks).
"""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass, field

import numpy as np

from bench import compare as cmp
from bench import paired, verdicts
from bench.study import select
from bench.study.spec import Arm, Claim, Study


@dataclass
class Judged:
    claim: Claim
    verdict: verdicts.Verdict
    evidence: list[str] = field(default_factory=list)  # mechanism and precondition facts, shown beside it
    runs: dict = field(default_factory=dict)  # arm name -> its runs


def mechanism_facts(arm: Arm, runs: list[dict], threshold: float) -> tuple[list[str], list[str]]:
    """(evidence lines, failure reasons) of an arm's mechanism check, run by run."""
    evidence, failures = [], []
    for r in runs:
        target = (r["config"].get("method") or {}).get("_target_")
        if not target:
            continue
        module, _, name = target.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            failures.append(f"{arm.name}: its method class {target} cannot be imported ({err})")
            continue
        found = cls.mechanism(r.get("method_report") or {}, r["config"])
        if found is None:
            continue
        seed = r["config"]["seed"]
        evidence.append(f"{arm.name}, seed {seed}: {found.name} {found.measure:.3f} ({found.evidence})")
        if found.measure < threshold:
            failures.append(
                verdicts.mechanism(
                    False,
                    f"{arm.name}, seed {seed}: {found.name} {found.measure:.3f} < {threshold:g} ({found.evidence})",
                )
            )
    return evidence, failures


def source(claim: Claim, arm: Arm) -> cmp.Source:
    return cmp.Source(claim.metric, "eval_base" if arm.base else claim.stage, claim.split)


def grid_reasons(study: Study, arms: list[Arm], rates: dict) -> list[str]:
    out = []
    for arm in arms:
        if arm.base:
            continue
        trial = study.search.trial(arm.part, arm.method)
        key, value = study.chosen.get((arm.part, arm.method), ("method.lr", rates.get((arm.part, arm.method))))
        fixed = key in arm.where and value is not None and not math.isclose(float(arm.where[key]), float(value))
        if trial is not None and value is not None and len(trial.grid) > 1 and not fixed:
            what = "learning rate" if key == "method.lr" else key
            reason = verdicts.grid_reason(value, trial.grid, what=f"{what} of {arm.name}")
            if reason:
                out.append(reason)
        if trial is not None and trial.lr_from:  # its rate is the other method's choice: that search too
            source = Arm(f"{arm.name} (rate of {trial.lr_from})", arm.part, trial.lr_from, {})
            out += grid_reasons(study, [source], rates)
    return out


def judge_claim(study: Study, claim: Claim, runs: list[dict], rates: dict) -> Judged:
    arms = [study.arms[n] for n in claim.arms]
    chosen = {a.name: select.arm_runs(study, runs, a, rates) for a in arms}
    label = claim.metric or "rank share"
    out = Judged(claim, None, runs=chosen)  # type: ignore[arg-type]
    missing = [f"arm {a.name} has no finished run" for a in arms if not chosen[a.name]]
    if missing:
        out.verdict = verdicts.not_tested(claim.text, claim.kind, label, missing, family=claim.family)
        return out
    threshold = study.mechanism_min if claim.mechanism_min is None else claim.mechanism_min
    failures = []
    for a in arms:
        lines, failed = mechanism_facts(a, chosen[a.name], threshold)
        out.evidence += lines
        failures += failed
    provisional = grid_reasons(study, arms, rates)
    try:
        if claim.rank_share is not None:
            comparison = rank_share(arms[0], chosen[arms[0].name], claim.rank_share)
        elif claim.kind == "cheaper":
            comparison = cost_ratio(claim, arms, chosen, out.evidence)
        else:
            a, b = arms
            comparison = cmp.compare_runs(
                a.name, chosen[a.name], source(claim, a), b.name, chosen[b.name], source(claim, b)
            )
            if comparison.se == 0 and comparison.gain == 0:
                failures.append(
                    f"{claim.metric} does not vary: every item scored the same in every run of both arms "
                    "(a floor or a ceiling), so the comparison can find nothing"
                )
            if claim.kind == "non_inferior" and claim.base is not None:
                failures.append(assay(study, claim, b, chosen[b.name], runs, rates, out))
    except (cmp.CompareError, NotTested) as err:
        out.verdict = verdicts.not_tested(claim.text, claim.kind, label, [*failures, str(err)], family=claim.family)
        return out
    out.verdict = verdicts.judge(
        claim.text,
        claim.kind,
        comparison,
        margin=claim.margin,
        max_ratio=claim.max_ratio,
        failures=failures,
        provisional=provisional,
        family=claim.family,
        metric=label,
    )
    return out


def assay(study: Study, claim: Claim, reference: Arm, ref_runs: list[dict], runs, rates, out: Judged) -> str | None:
    base = study.arms[claim.base]
    base_runs = select.arm_runs(study, runs, base, rates)
    if not base_runs:
        return f"no assay sensitivity check: the base arm {base.name} has no finished run"
    vs_base = cmp.compare_runs(
        reference.name, ref_runs, source(claim, reference), base.name, base_runs, source(claim, base)
    )
    out.evidence.append(
        f"{reference.name} against {base.name}: gain {vs_base.gain:+.4g}, 95 % CI "
        f"[{vs_base.ci95[0]:+.4g}, {vs_base.ci95[1]:+.4g}] (assay sensitivity needs >= {2 * claim.margin:g})"
    )
    return verdicts.assay_sensitivity(vs_base, claim.margin)


class NotTested(RuntimeError):
    """A claim whose data cannot be compared; the message says why."""


def memory_figure(run: dict) -> tuple[float, str]:
    """A run's peak memory for a cost claim, and which figure it is: CUDA's max_memory_allocated, or
    on the CPU the peak of live tensor bytes (metrics.peak_tensor_bytes, bench/tensor_memory.py). A
    CPU run without a valid live-tensor peak is not compared: its peak RSS depends on the allocator
    (two runs of one LoRA configuration: 978 and 2,136 MB), not on the method."""
    m = run.get("metrics") or {}
    mem = m.get("peak_memory") or {}
    if mem.get("kind") == "cuda":
        return float(mem.get("allocated_bytes") or 0), "torch.cuda.max_memory_allocated"
    live = m.get("peak_tensor_bytes")
    if not live:
        raise NotTested(
            f"run {run['run_id']} records no live-tensor peak (train.memory_profile_steps=0, or run before it "
            "existed); its CPU figure, the peak RSS, depends on the allocator, not on the method: memory is not "
            "compared"
        )
    if not live.get("valid") or not live.get("bytes"):
        raise NotTested(
            f"the live-tensor peak of run {run['run_id']} is invalid "
            f"({'; '.join(live.get('invalid') or ['no figure'])}): memory is not compared"
        )
    first, last = live["window"]["measured_steps"]
    return float(live["bytes"]), f"peak live tensor bytes on the CPU (steps {first}-{last})"


def cost_values(claim: Claim, runs: list[dict], figures: set | None = None) -> list[float]:
    """The cost of each run; `figures` collects which memory figure each run gave."""
    out = []
    for r in runs:
        m = r.get("metrics") or {}
        if claim.metric == "train_time_s":
            value = m.get("train_time_s")
        else:
            value, figure = memory_figure(r)
            if figures is not None:
                figures.add(figure.split(" (")[0])
        if not value or value <= 0:
            raise NotTested(f"run {r['run_id']} records no {claim.metric}")
        out.append(float(value))
    return out


def cost_ratio(claim: Claim, arms: list[Arm], chosen: dict, evidence: list | None = None) -> paired.RatioComparison:
    a, b = arms
    figures: set = set()
    va, vb = cost_values(claim, chosen[a.name], figures), cost_values(claim, chosen[b.name], figures)
    if len(figures) > 1:
        raise NotTested(f"the runs' peak memory figures differ ({', '.join(sorted(figures))}): memory is not compared")
    if figures and evidence is not None:
        evidence.append(f"{claim.metric}: {figures.pop()}, in every run of both arms")
    seeds_a = [r["config"]["seed"] for r in chosen[a.name]]
    seeds_b = [r["config"]["seed"] for r in chosen[b.name]]
    return paired.ratio(va, vb, seeds_a, seeds_b, a=a.name, b=b.name, metric=claim.metric)


def receiver_share(pattern: dict, regex: str) -> tuple[float, float]:
    """(share of the final rank in the modules `regex` names, their share of the modules)."""
    total = sum(pattern.values())
    named = [m for m in pattern if re.search(regex, m)]
    if not pattern or not total:
        raise NotTested("the rank pattern is empty")
    return sum(pattern[m] for m in named) / total, len(named) / len(pattern)


def rank_share(arm: Arm, runs: list[dict], regex: str) -> paired.Comparison:
    """The gain final share - start share over the arm's runs, with a one-sample t interval (k - 1
    df): the runs are the only source of variance, the rank pattern being one number per run."""
    diffs, seeds = [], []
    for r in runs:
        pattern = (r.get("method_report") or {}).get("rank_pattern")
        if not isinstance(pattern, dict) or not pattern:
            raise NotTested(f"run {r['run_id']} of {arm.name} reports no rank pattern")
        final, start = receiver_share(pattern, regex)
        diffs.append(final - start)
        seeds.append(r["config"]["seed"])
    d = np.array(diffs)
    k = len(d)
    if k < 2:
        raise NotTested(f"{arm.name} has {k} run: a run-to-run interval needs two or more")
    mean, se, df = float(d.mean()), float(d.std(ddof=1) / math.sqrt(k)), k - 1
    ci = {level: paired._t_interval(mean, se, df, level) for level in (0.95, 0.90)}
    mde = paired._mde80(se, df)
    return paired.Comparison(
        a=f"{arm.name} final rank share",
        b="its share at the start (uniform ranks)",
        metric="rank share",
        kind="continuous",
        higher_is_better=True,
        delta=mean,
        gain=mean,
        item_var=0.0,
        run_var=se**2,
        interaction_var=0.0,
        se=se,
        df=float(df),
        run_variance="paired",
        ci95=ci[0.95],
        ci90=ci[0.90],
        mde80=float(mde),
        n_items=1,
        k_a=k,
        k_b=k,
        method=f"one-sample t over {k} runs of the final share minus the start share (no items)",
        bootstrap_ci95=None,
        bootstrap_resamples=0,
        mcnemar=None,
        permutation_p=None,
        notes=(),
    )


def judge_all(study: Study, runs: list[dict], rates: dict) -> list[Judged]:
    judged = [judge_claim(study, c, runs, rates) for c in study.claims]
    adjusted = verdicts.apply_holm([j.verdict for j in judged])
    for j, v in zip(judged, adjusted):
        j.verdict = v
    return judged
