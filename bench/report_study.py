"""The study of issue #17 (docs/study.md): which commands it runs, how it picks learning rates, and
the verdict per claim. `make study` = `python -m bench.report_study run`.

    python -m bench.report_study run [--root runs/study] [--jobs 2] [--doc docs/study.md] [--dry-run]
                                     [--seeds 0,1,2] [--lr-grid 1e-4,3e-4,1e-3] [KEY=VALUE ...]
    python -m bench.report_study verdict [--root runs/study]     # the verdict of what is there
    python -m bench.report_study plan [--doc docs/study.md]      # the plan page, before any run

Stages, each an ordinary resumable sweep (a finished job is skipped when the command runs again):
  1. learning-rate search, seed 0 (sweep=study_lr_asdiv / study_lr_sentiment), runs under --root;
  2. the winners: per (part, method) the rate with the best score on the held-out split
     (eval.heldout: data that is neither trained on nor reported), ties to the lower held-out answer loss, then the smaller rate;
  3. the main grids, three seeds at the chosen rates (sweep=study_asdiv / study_sentiment), under
     the same root: a search job at the chosen rate is the same config as seed 0, so it runs once;
  4. bench.report on the main grids' runs at the chosen rates (<root>/report), then the verdict per
     claim, all written into --doc (figures copied next to it, into <doc folder>/study/).
KEY=VALUE arguments are appended to every bench.run command (a key of a preset is replaced: the
smoke test runs the whole chain with model=tiny-llama and a few steps); PART:KEY=VALUE (asdiv:...,
sentiment:...) to that part's commands only.

Verdicts compare arms (a set of runs over seeds) by their primary metric: the difference of means
against the spread, the larger of the seed-to-seed spread max(std_a, std_b) (ddof=1) and the test
set's standard error of the difference, sqrt((p_a(1-p_a) + p_b(1-p_b)) / n) for n test items (every
seed is scored on the same items, so more seeds do not shrink it). "better": supported when
mean_a - mean_b > spread. "competitive" (same or better): supported when mean_a - mean_b >= -spread.
Otherwise "not supported by the data". With fewer than two seeds on either side there is no spread
and no verdict. "cheaper": train time and peak memory both lower by more than their spreads.
"allocation": the share of the final rank held by the feed-forward layers and the attention output
projection exceeds its share at the start (uniform ranks) by more than its seed-to-seed std.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PARTS = {  # part: (main preset, learning-rate search preset, what it measures)
    "asdiv": (
        "study_asdiv",
        "study_lr_asdiv",
        "SmolLM2-135M, ASDiv exact match on 100 held-out problems (task=asdiv), adapters on q_proj, v_proj",
    ),
    "sentiment": (
        "study_sentiment",
        "study_lr_sentiment",
        "SmolLM2-135M + classification head, movie-review sentiment accuracy on 500 validation sentences, "
        "adapters on all linear layers",
    ),
}
TASKS = {"asdiv": "asdiv", "sentiment": "movie_review_sentiment"}  # the task name each part's preset runs
LR_GRID = ("1e-4", "3e-4", "1e-3")
LR_GRID_FULL = ("1e-5", "3e-5", "1e-4")  # full fine-tuning moves every weight: its rates are lower
# (part, method, the overrides its search runs with): the rate found is used by every arm of that method
LR_SEARCH = (
    ("asdiv", "lora", ("method=lora", "method.r=16")),
    ("asdiv", "full", ("method=full",)),
    ("asdiv", "cla", ("method=cla",)),
    ("asdiv", "c3la", ("method=c3la",)),
    ("asdiv", "prunedlora", ("method=prunedlora", "method.sparsity=0.5")),
    ("sentiment", "lora", ("method=lora", "method.r=8")),
    ("sentiment", "l1ra", ("method=l1ra", "method.r=8")),
    ("sentiment", "adalora", ("method=adalora", "method.target_r=8")),
)
# What tells a search job from the main-grid runs at the same rate, beyond its overrides: the search
# is seed 0 (the study_lr_* presets), and PrunedLoRA's search runs the default criterion while the
# main grid adds magnitude and wanda at that sparsity
SEARCH_ONLY = {("asdiv", "prunedlora"): ("method.criterion=obs_gradient",)}
# The main grids, one bench.run command each (one rate per method). cLA and c3LA train r * d_out
# per layer and LoRA r * (d_in + d_out): on SmolLM2's q_proj (576 -> 576) and v_proj (576 -> 192),
# cLA at r=16 trains 16 * 768 per layer and LoRA at r=6 trains 6 * 1920 (within 7%), hence LoRA r=6
# as the parameter-matched reference and r=16 as the same-rank one (tests/bench/test_sweep_presets.py).
MAIN = (
    ("asdiv", "lora", ("method=lora", "method.r=6,8,16,32")),
    ("asdiv", "full", ("method=full",)),
    ("asdiv", "cla", ("method=cla", "method.r=16")),
    ("asdiv", "c3la", ("method=c3la", "method.r=16")),
    # the criteria at the first sparsity only: the study must fit an afternoon on two cores
    (
        "asdiv",
        "prunedlora",
        (
            "method=prunedlora",
            "method.r_target=8",
            "method.sparsity=0.5",
            "method.criterion=obs_gradient,magnitude,wanda",
        ),
    ),
    (
        "asdiv",
        "prunedlora",
        ("method=prunedlora", "method.r_target=8", "method.sparsity=0.75", "method.criterion=obs_gradient"),
    ),
    ("sentiment", "lora", ("method=lora", "method.r=8")),
    ("sentiment", "l1ra", ("method=l1ra", "method.r=8")),
    ("sentiment", "adalora", ("method=adalora", "method.target_r=8")),
)


@dataclass(frozen=True)
class Arm:
    name: str
    part: str
    where: tuple[str, ...]  # bench.report --where filters; the method's chosen rate is added

    @property
    def method(self) -> str:
        return next(w.split("=", 1)[1] for w in self.where if w.startswith("method="))


ARMS = {
    a.name: a
    for a in (
        Arm("LoRA r=6", "asdiv", ("method=lora", "method.r=6")),
        Arm("LoRA r=8", "asdiv", ("method=lora", "method.r=8")),
        Arm("LoRA r=16", "asdiv", ("method=lora", "method.r=16")),
        Arm("LoRA r=32", "asdiv", ("method=lora", "method.r=32")),
        Arm("full FT", "asdiv", ("method=full",)),
        Arm("cLA r=16", "asdiv", ("method=cla", "method.r=16")),
        Arm("c3LA r=16", "asdiv", ("method=c3la", "method.r=16")),
        *(
            Arm(
                f"PrunedLoRA {crit} 16->8" if s == "0.5" else f"PrunedLoRA {crit} 32->8",
                "asdiv",
                ("method=prunedlora", "method.r_target=8", f"method.sparsity={s}", f"method.criterion={crit}"),
            )
            for s, crits in (("0.5", ("obs_gradient", "magnitude", "wanda")), ("0.75", ("obs_gradient",)))
            for crit in crits
        ),
        Arm("LoRA r=8 all-linear", "sentiment", ("method=lora", "method.r=8")),
        Arm("L1RA r=8 all-linear", "sentiment", ("method=l1ra", "method.r=8")),
        Arm("AdaLoRA r=8 all-linear", "sentiment", ("method=adalora", "method.target_r=8")),
    )
}


@dataclass(frozen=True)
class Claim:
    paper: str
    text: str
    kind: str  # better | competitive | cheaper | allocation
    a: str
    b: str = ""  # the arm a is compared with (none for allocation)


CLAIMS = (
    Claim(
        "Beyond LoRA",
        "cLA is competitive with LoRA at matched trainable parameters",
        "competitive",
        "cLA r=16",
        "LoRA r=6",
    ),
    Claim(
        "Beyond LoRA",
        "c3LA is competitive with LoRA at matched trainable parameters",
        "competitive",
        "c3LA r=16",
        "LoRA r=6",
    ),
    Claim("Beyond LoRA", "cLA is competitive with LoRA at the same rank", "competitive", "cLA r=16", "LoRA r=16"),
    Claim("Beyond LoRA", "c3LA is competitive with LoRA at the same rank", "competitive", "c3LA r=16", "LoRA r=16"),
    Claim(
        "Beyond LoRA",
        "cLA trains in less time and memory than LoRA at the same rank",
        "cheaper",
        "cLA r=16",
        "LoRA r=16",
    ),
    Claim(
        "Beyond LoRA",
        "c3LA trains in less time and memory than LoRA at the same rank",
        "cheaper",
        "c3LA r=16",
        "LoRA r=16",
    ),
    Claim("Beyond LoRA", "full fine-tuning is the ceiling (better than LoRA r=16)", "better", "full FT", "LoRA r=16"),
    *(
        Claim(
            "PrunedLoRA",
            f"PrunedLoRA {r} is better than LoRA at r_target",
            "better",
            f"PrunedLoRA obs_gradient {r}",
            "LoRA r=8",
        )
        for r in ("16->8", "32->8")
    ),
    Claim(
        "PrunedLoRA",
        "PrunedLoRA 16->8 is competitive with LoRA at r_init",
        "competitive",
        "PrunedLoRA obs_gradient 16->8",
        "LoRA r=16",
    ),
    Claim(
        "PrunedLoRA",
        "PrunedLoRA 32->8 is competitive with LoRA at r_init",
        "competitive",
        "PrunedLoRA obs_gradient 32->8",
        "LoRA r=32",
    ),
    *(
        Claim(
            "PrunedLoRA",
            f"the OBS-gradient criterion beats {crit} pruning at {r}",
            "better",
            f"PrunedLoRA obs_gradient {r}",
            f"PrunedLoRA {crit} {r}",
        )
        for r in ("16->8",)
        for crit in ("magnitude", "wanda")
    ),
    Claim(
        "L1RA",
        "L1RA scores the same or better than LoRA at the same total rank",
        "competitive",
        "L1RA r=8 all-linear",
        "LoRA r=8 all-linear",
    ),
    Claim(
        "L1RA",
        "L1RA scores the same or better than AdaLoRA at the same final budget",
        "competitive",
        "L1RA r=8 all-linear",
        "AdaLoRA r=8 all-linear",
    ),
    Claim(
        "L1RA",
        "the freed ranks move to the feed-forward layers and the attention output projection",
        "allocation",
        "L1RA r=8 all-linear",
    ),
)
# module names that count as feed-forward or attention output (Llama and BERT naming)
RECEIVERS = re.compile(
    r"(gate_proj|up_proj|down_proj|o_proj|fc1|fc2|intermediate\.dense|output\.dense|"
    r"attention\.output\.dense|mlp)"
)


# -- the numbers --------------------------------------------------------------------------------
def arm_runs(runs: list[dict], arm: Arm, lr: str | None) -> list[dict]:
    filters = [*arm.where, "status=success"] + ([f"method.lr={lr}"] if lr else [])
    return _select(runs, arm.part, arm.method, filters)


def _select(runs: list[dict], part: str, method: str, filters) -> list[dict]:
    """The runs of one part and method that every filter keeps (method first: another method's runs
    lack its keys, which --where would call unknown)."""
    from bench.report import where
    from bench.report_where import parse

    task = TASKS[part]
    mine = [
        r
        for r in runs
        if r["config"]["task"]["name"] == task and r["config"]["method"]["name"] == method and not is_base_run(r)
    ]
    return where(mine, [parse(f) for f in filters]) if mine else []


# The untrained model's score on each part's splits: one job per part that evaluates before
# training (eval.base=true). Its one training step only lets the job finish the usual way; its tuned
# score is not used, and the run is kept out of the search and the main grids.
BASE_OVERRIDES = ("method=lora", "method.lr=1e-4", "train.max_steps=1", "eval.base=true")


def is_base_run(result: dict) -> bool:
    """A study's grids run with eval.base=false (the presets), so eval.base marks its base jobs."""
    return bool((result["config"].get("eval") or {}).get("base"))


def base_markdown(runs: list[dict], main_runs: list[dict]) -> str:
    """Per part: the base model's test and held-out scores beside the tuned runs' range."""
    lines = [
        "## The base model, untrained, on the same splits",
        "",
        "One job per part evaluates the model before any training (`eval.base=true`; "
        + " ".join(f"`{o}`" for o in BASE_OVERRIDES)
        + "). The tuned columns are the ranges over the main grids' runs.",
        "",
        "| part | metric | base, test | base, held-out | base held-out answer loss | tuned runs, test (min–max) "
        "| tuned runs, held-out answer loss (min–max) |",
        "|---|---|---|---|---|---|---|",
    ]
    for part, task in TASKS.items():
        base = [r for r in runs if is_base_run(r) and r["config"]["task"]["name"] == task and r["status"] == "success"]
        tuned = [
            (r["metrics"].get("eval") or {}).get((r["metrics"].get("eval") or {}).get("primary"))
            for r in main_runs
            if r["config"]["task"]["name"] == task and r["status"] == "success"
        ]
        tuned = [t for t in tuned if t is not None]
        span = f"{min(tuned):.3f}–{max(tuned):.3f} (n={len(tuned)})" if tuned else "–"
        losses = [
            heldout_answer_nll(r) for r in main_runs if r["config"]["task"]["name"] == task and r["status"] == "success"
        ]
        losses = [v for v in losses if math.isfinite(v)]
        span += f" | {min(losses):.3f}–{max(losses):.3f}" if losses else " | –"
        if not base:
            lines.append(f"| {part} | – | not run | – | – | {span} |")  # span holds the two tuned cells
            continue
        ev = base[0]["metrics"]["eval_base"]
        held = ev.get("heldout") or {}
        cells = [ev.get(ev["primary"]), held.get(held.get("primary")), held.get("answer_nll")]
        shown = ["–" if v is None else f"{v:.3f}" for v in cells]
        lines.append(f"| {part} | {ev['primary']} | {' | '.join(shown)} | {span} |")
    return "\n".join(lines) + "\n"


def _stats(values: list[float]) -> tuple[float, float, int]:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return math.nan, math.nan, 0
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else math.nan, len(values)


def score(result: dict) -> float | None:
    ev = result["metrics"].get("eval") or {}
    return ev.get(ev.get("primary"))


def heldout_score(result: dict) -> float | None:
    ev = result["metrics"].get("eval") or {}
    return (ev.get("heldout") or {}).get(ev.get("primary"))


def heldout_answer_nll(result: dict) -> float:
    """The held-out split's answer loss where the task reports one (generation tasks), else +inf."""
    ev = result["metrics"].get("eval") or {}
    value = (ev.get("heldout") or {}).get("answer_nll")
    return math.inf if value is None else float(value)


def receiver_share(pattern: dict) -> tuple[float, float]:
    """(share of the final rank in feed-forward / attention-output modules, their share of modules)."""
    total = sum(pattern.values())
    recv = [name for name in pattern if RECEIVERS.search(name)]
    return (sum(pattern[n] for n in recv) / total if total else math.nan), len(recv) / len(pattern)


def memory_note(runs: list[dict]) -> str:
    lifetime = sum(not training_peak(r) for r in runs)
    if not lifetime:
        return ""
    return (
        f"\n**Peak memory below is not training memory** for {lifetime} of {len(runs)} runs: their CPU peak RSS is "
        "the process's lifetime peak, model loading included (`peak_memory.scope` absent or `process`; the "
        "runner resets it before training since this was found). Compare memory on the GPU figures "
        "(docs/performance.md) instead.\n"
    )


def training_peak(result: dict) -> bool:
    """Whether a run's peak memory covers training alone: CUDA's peak is reset before training; on
    the CPU only a run that reset the process's peak RSS says so (peak_memory.scope)."""
    mem = result["metrics"].get("peak_memory") or {}
    return mem.get("kind") == "cuda" or mem.get("scope") == "training"


def rank_moves(method_report: dict) -> tuple[int, int]:
    """(ranks pruned, ranks reassigned) over a dynamic-rank run's events: (0, 0) means its final
    pattern is its initial one, so it says nothing about where freed ranks go."""
    pruned = reassigned = 0
    for event in method_report.get("events") or []:
        pruned += sum(int(v) for v in (event.get("pruned") or {}).values() if isinstance(v, (int, float)))
        reassigned += sum(int(v) for v in (event.get("reassigned") or {}).values() if isinstance(v, (int, float)))
    return pruned, reassigned


def judge(claim: Claim, a: list[dict], b: list[dict]) -> tuple[str, str]:
    """(numbers, verdict) of one claim from the runs of its arms."""
    if not a or (claim.kind != "allocation" and not b):
        return "–", "not run"
    if claim.kind == "allocation":
        shares = [
            receiver_share(r["method_report"]["rank_pattern"])
            for r in a
            if isinstance(r["method_report"].get("rank_pattern"), dict) and r["method_report"]["rank_pattern"]
        ]
        if not shares:
            return "–", "no rank pattern reported"
        final, sd, n = _stats([s[0] for s in shares])
        start = statistics.mean(s[1] for s in shares)
        numbers = f"final share {final:.3f} ± {sd:.3f} (n={n}) vs {start:.3f} at the start (uniform)"
        logged = [r for r in a if "events" in r["method_report"]]  # runs that report their rank updates
        if logged and len(logged) == len(a) and all(rank_moves(r["method_report"]) == (0, 0) for r in logged):
            events = sum(len(r["method_report"].get("events") or []) for r in a)
            return numbers + f"; {events} rank-update events, none pruned or reassigned a rank", (
                "not tested: no rank moved in these runs (training too short for the method's pruning to act)"
            )
        if n < 2:
            return numbers, "no spread with one seed"
        return numbers, "supported" if final - start > sd else "not supported by the data"
    if claim.kind == "cheaper":
        parts, ok, memory_unmeasured = [], True, False
        for key, unit in (("train_time_s", "s"), ("peak_memory", "GB")):

            def value(r, key=key):
                if key == "train_time_s":
                    return r["metrics"].get("train_time_s")
                mem = r["metrics"].get("peak_memory") or {}
                return (mem.get("allocated_bytes") or mem.get("rss_bytes") or 0) / 1e9 or None

            if key == "peak_memory" and not all(training_peak(r) for r in a + b):
                parts.append(
                    "peak_memory not compared: the CPU peak of these runs is the process's lifetime one "
                    "(model loading included), not training's"
                )
                memory_unmeasured = True
                continue
            (ma, sa, na), (mb, sb, nb) = _stats([value(r) for r in a]), _stats([value(r) for r in b])
            spread = max(sa, sb)
            parts.append(f"{key.replace('_s', '')} {ma:.3g} vs {mb:.3g} {unit} (Δ {ma - mb:+.3g}, spread {spread:.3g})")
            ok = ok and na > 1 and nb > 1 and mb - ma > spread
        if len(a) < 2 or len(b) < 2:
            return "; ".join(parts), "no spread with one seed"
        if memory_unmeasured:
            return "; ".join(parts), (
                "time: " + ("supported" if ok else "not supported by the data") + "; memory: not tested here"
            )
        return "; ".join(parts), "supported" if ok else "not supported by the data"
    (ma, sa, na), (mb, sb, nb) = _stats([score(r) for r in a]), _stats([score(r) for r in b])
    numbers = f"{ma:.4f} ± {sa:.4f} (n={na}) vs {mb:.4f} ± {sb:.4f} (n={nb})"
    if na < 2 or nb < 2:
        return numbers, "no spread with one seed"
    diff, seeds = ma - mb, max(sa, sb)
    se, items = test_set_se(ma, mb, a + b)
    spread = max(seeds, se)
    numbers += f"; Δ {diff:+.4f}, spread {spread:.4f} (seeds {seeds:.4f}" + (
        f", test-set SE of Δ {se:.4f} at n={items})" if items else ")"
    )
    if claim.kind == "better":
        if diff > spread:
            return numbers, "supported (the difference exceeds the spread)"
        if diff < -spread:
            return numbers, "not supported by the data (worse beyond the spread)"
        return numbers, "not supported by the data (within the spread)"
    if diff >= -spread:
        return numbers, "supported (not worse beyond the spread)" + (" and better" if diff > spread else "")
    return numbers, "not supported by the data (worse beyond the spread)"


def test_set_se(ma: float, mb: float, runs: list[dict]) -> tuple[float, int]:
    """(standard error of the difference of two proportions, test items) on the test split the
    runs share. Every seed is scored on the same items, so this error does not shrink with seeds:
    with 100 ASDiv problems, 0.02 against 0.05 is 2 against 5 answers. 0 where the score is not a
    proportion or the item count is unknown."""
    items = [(r["metrics"].get("eval") or {}).get("n") for r in runs]
    if not items or any(not isinstance(n, int) or n <= 0 for n in items):
        return 0.0, 0
    n = min(items)
    if not all(0.0 <= m <= 1.0 for m in (ma, mb)):
        return 0.0, 0
    return math.sqrt((ma * (1 - ma) + mb * (1 - mb)) / n), n


def pick_rates(lr_runs: list[dict]) -> tuple[dict, list[tuple]]:
    """({(part, method): rate}, rows of the search table). A rate wins on the held-out score; a tie
    goes to the lower held-out answer loss where the task reports one (exact match on 50 problems
    ties often: the first study's ASDiv search had 0.00 / 0.02 / 0.04 for every method, while the
    answer loss told the rates apart), then to the smaller rate; a failed job never wins."""
    winners, rows = {}, []
    for part, method, overrides in LR_SEARCH:
        mine = _select(lr_runs, part, method, [*overrides, "seed=0", *SEARCH_ONLY.get((part, method), ())])
        mine.sort(key=lambda r: float(r["config"]["method"]["lr"]))
        scored = {}
        for r in mine:
            lr = r["config"]["method"]["lr"]
            held = heldout_score(r) if r["status"] == "success" else None
            rows.append((part, method, lr, r["status"], held))
            if held is not None:
                scored[float(lr)] = max((held, -heldout_answer_nll(r), -float(lr)), scored.get(float(lr), (-math.inf,)))
        if scored:
            winners[(part, method)] = max(scored, key=scored.get)
    return winners, rows


def edge_pairs(lr_rows: list[tuple], winners: dict) -> dict:
    """{(part, method): "largest" | "smallest"} for each winner at an end of its search grid."""
    out = {}
    for (part, method), lr in sorted(winners.items()):
        grid = sorted(float(r[2]) for r in lr_rows if r[:2] == (part, method))
        if len(grid) > 1 and float(lr) in (grid[0], grid[-1]):
            out[(part, method)] = "largest" if float(lr) == grid[-1] else "smallest"
    return out


def edge_note(lr_rows: list[tuple], winners: dict) -> str:
    """Name the winners at an end of the grid they were searched over: the best rate may lie
    beyond it, and the reader should know the search did not bracket it."""
    edge = [f"{p}/{m} ({end})" for (p, m), end in edge_pairs(lr_rows, winners).items()]
    if not edge:
        return "Every chosen rate lies inside its grid."
    return (
        "At an end of its grid (the search did not bracket the best rate; a rate beyond it was not tried): "
        + ", ".join(edge)
        + "."
    )


# -- the commands -------------------------------------------------------------------------------
def _lr_text(lr: float) -> str:
    return f"{lr:g}"


def commands(
    root: Path, extra: list[str], jobs: int, seeds: str | None, lr_grid: str | None, winners: dict | None
) -> list[list[str]]:
    """The bench.run commands of stage 1 (winners None) or stage 3."""
    # `jobs` commands run at once (run_all), each a sequential sweep sharing the cores: one joblib
    # pool per command would leave a worker idle whenever a command has an odd number of jobs
    launch = [f"train.threads={max(1, (os.cpu_count() or 2) // jobs)}"] if jobs > 1 else []
    out = []
    stage = LR_SEARCH if winners is None else MAIN
    if winners is None:  # stage 1 also scores the untrained model, once per part
        stage = stage + tuple((part, "base", BASE_OVERRIDES) for part in PARTS)
    for part, method, overrides in stage:
        main_preset, lr_preset = PARTS[part][:2]
        if method == "base":
            cmd = [f"sweep={lr_preset}", *overrides, f"run.root={root}"]
        elif winners is None:
            grid = lr_grid or ",".join(LR_GRID_FULL if method == "full" else LR_GRID)
            cmd = [f"sweep={lr_preset}", *overrides, f"method.lr={grid}", f"run.root={root}"]
        else:
            if (part, method) not in winners:
                continue  # its search did not produce a score; the verdict says "not run"
            cmd = [
                f"sweep={main_preset}",
                *overrides,
                f"method.lr={_lr_text(winners[(part, method)])}",
                f"run.root={root}",
            ] + ([f"seed={seeds}"] if seeds else [])
        mine = [e.split(":", 1)[1] if _part_of(e) else e for e in extra if _part_of(e) in (None, part)]
        # the preset chooses the task too; naming it here lets bench.run check task.* keys of `mine`
        out.append([sys.executable, "-m", "bench.run", *cmd, f"task={TASKS[part]}", "logger=none", *launch, *mine])
    return out


def _part_of(override: str) -> str | None:
    """ "asdiv:task.asdiv_test=4" applies to part asdiv only; a plain KEY=VALUE to every part."""
    head = override.split("=", 1)[0]
    return head.split(":", 1)[0] if ":" in head and head.split(":", 1)[0] in PARTS else None


def chosen(runs: list[dict], winners: dict) -> list[dict]:
    """The runs of the main grids at their method's chosen rate, every seed (search jobs at other
    rates are left out; the one at the chosen rate is seed 0 of the main grid)."""
    keep = []
    for part, method, overrides in MAIN:
        if (part, method) not in winners:
            continue
        grid = [o for o in overrides if not o.startswith("method=")]
        rate = f"method.lr={_lr_text(winners[(part, method)])}"
        keep += [r for r in _select(runs, part, method, [rate]) if all(_in_grid(r, o) for o in grid)]
    return list({r["_path"]: r for r in keep}.values())


def _in_grid(result: dict, override: str) -> bool:
    from bench.report_where import _equal, lookup

    key, values = override.split("=", 1)
    value = lookup({}, result["config"], key)
    return any(_equal(value, v) for v in values.split(","))


def load_runs(folder: Path) -> list[dict]:
    from bench.report import load

    return load([folder])[0] if folder.exists() else []


# -- the document -------------------------------------------------------------------------------
DATA_MD = """## Data: what is trained on and what is scored

- **ASDiv, held out** (`task=asdiv`, conf/task/asdiv.yaml): SmolLM2-135M is trained on the ASDiv
  word problems and scored by exact match (`#### N`) on ASDiv problems it never trains on. The 2159
  usable problems are ordered by the sha256 of their content (canonical JSON of question and
  answer); the first 50 are the held-out split (`task.asdiv_heldout`, scored as `eval.heldout`,
  where learning rates are chosen), the next 100 the test split (`task.asdiv_test`, the primary
  metric). Training excludes both and every problem whose question text equals one of theirs.
  result.json records the rule, each split's row count and sha256 (`provenance.data`);
  `tests/tasks/test_gsm8k.py` recomputes the split by brute force and checks that no held-out
  question reaches a training example.
- **Movie-review sentiment** (`task=movie_review_sentiment`): accuracy on the first 500 sentences of
  the validation split (a content-hash split, tasks/movie_review_sentiment.py); 300 training
  sentences are held out (`task.heldout_rows`) for the learning-rate search.

Nothing is chosen on a test split: the search reads only `eval.heldout`.
"""
RULES_MD = """Verdict rules (bench/report_study.py): per claim, the mean over seeds of each arm's primary metric
and the spread: the larger of the seed-to-seed spread (the larger of the two arms' standard
deviations, ddof=1) and the test set's standard error of the difference, sqrt((p_a(1-p_a) +
p_b(1-p_b)) / n) for a score that is a proportion over n test items (every seed is scored on the
same items, so more seeds do not shrink it: on 100 ASDiv problems, 0.02 against 0.05 is 2 against
5 answers, 1.2 standard errors of 0.026 apart). *better* is
supported when the difference exceeds the spread; *competitive* (same or better) when arm a is not
worse by more than the spread; *cheaper* when train time and peak memory are both lower by more than
their spreads; *allocation* when the share of L1RA's final rank held by the feed-forward layers and
the attention output projection exceeds their share at the start (uniform) by more than its seed
std. Otherwise the verdict is "not supported by the data"; with one seed there is no spread and no
verdict. `tests/bench/test_report_study.py` checks these rules on result files with known numbers.

The main table (bench.report) marks parameter-matched groups and the cells within one standard
deviation of the group's LoRA row ([sweeps.md](sweeps.md#the-report)).
"""
HEAD_MD = """# Study: the three papers' claims on small offline models (issue #17)

**Status: not yet run.** This page holds the plan and the time estimate. `make study` runs the whole
study and then overwrites this file with the generated report (command, commit, machine, the
learning-rate search, the main table, the figures and a verdict per claim); nothing below is a
result.

```bash
make study                                   # = python -m bench.report_study run (runs/study/, docs/study.md)
python -m bench.report_study run --dry-run   # the bench.run commands it would run
python -m bench.report_study verdict         # the verdicts of whatever has finished so far
python -m bench.report_study report          # rewrite docs/study.md from the finished runs (runs nothing)
```

Every stage is an ordinary sweep: run `make study` again after an interruption and finished jobs
are skipped (a failed or stopped one runs again from its newest checkpoint). Two jobs run at once
(two `bench.run` sweeps side by side, `train.threads=1` each; `--jobs 1` for one at a time). Runs go to
`runs/study/` (a search job at the chosen rate is also seed 0 of the main grid: the same config,
run once); the full report of the chosen runs, one per part, to
`runs/study/report/<part>/`, the figures to `docs/study/`.

"""
ESTIMATE_MD = """Jobs (each stage skips what is finished; a search job at the chosen rate is also seed 0 of its
main grid): part asdiv 15 search + 28 main = 43 (5 of them full fine-tuning), part sentiment 9 + 6 = 15;
58 jobs in all, and one base-model job per part.

Measured on the 2-core development machine, 2026-11-25, while other work shared it (load average 3.3
to 3.5 on 2 cores, so every figure below is inflated), one job each, `train.max_steps=10`:

| representative job | train (10 steps) | step p50 | evaluation | wall |
|---|---|---|---|---|
| `sweep=study_lr_asdiv method=lora method.r=16 method.lr=1e-3 train.max_steps=10` | 117.5 s | 11.6 s | 192.4 s (150 problems, 32 tokens) | 317 s |
| `sweep=study_lr_sentiment method=l1ra method.r=8 method.lr=1e-3 train.max_steps=10` | 41.1 s | 2.2 s | 41.4 s (800 sentences) | 90 s |

Scaled to the presets' steps: an ASDiv job (30 steps) ~9 min, a sentiment job (60 steps) ~3 min at
that load, so 43 x 9 + 15 x 3 = ~7.2 h one job at a time, plus full fine-tuning's larger steps. On
an idle machine the same LoRA step took 3.0-3.6 s (docs/measurements.md, the default job: 30 steps
of the same ASDiv batches), 3.2-3.9 times less: **about 2-2.5 h for the whole study one job at a
time on an idle 2-core machine**; two jobs at once (`--jobs 2`, the default) may shorten it (not
measured). This is above the issue's 2 h target; `--seeds 0,1` or fewer arms shorten it. The
generated page states the measured wall time of the run.

Risk, seen in the default job: after 30 steps SmolLM2-135M's ASDiv exact match stays near 0 (0/40
held out, strict; 2/50 flexible in the 10-step job above), while the held-out answer loss falls.
If the test exact match stays at 0 for every arm, every score claim reads "not supported by the
data", which is the honest outcome for a model this small.
"""
FIRST_ATTEMPT_MD = """## First attempt (2026-11-25/26, stopped after the ASDiv search)

`make study` at commit 4f2c5b3 on the 2-core development machine, sharing it with other work (load
average 3 to 9): the ASDiv search finished (15 jobs in 40 min, two at a time), the sentiment search
did 3 of 9 jobs (about 11 min each at that load: 60 steps at 9-10 s) before it was stopped to free
the machine; the rest would not have finished in the session. Not a result, but what it showed:

- ASDiv, exact match on the 100 test problems after 30 steps: 0.02 to 0.06 for every method and
  rate (LoRA r=16, full, cLA, c3LA, PrunedLoRA 16->8 at 1e-4 / 3e-4 / 1e-3), within the binomial
  spread of +-0.02 at n = 100. Held-out exact match (50 problems) was 0.00, 0.02 or 0.04, tied in
  most searches, while the held-out answer loss told the rates apart (LoRA 1.71 / 0.87 / 0.62, full
  0.67 / 0.60 / 0.58 at its three rates). Ties now go to the lower held-out answer loss before the
  smaller rate.
- Movie-review sentiment, LoRA r=8 on all linear layers, accuracy on 500 validation sentences:
  0.616 / 0.840 / 0.878 at 1e-4 / 3e-4 / 1e-3: this part has signal.

So the ASDiv exact-match claims will likely read "not supported by the data" with SmolLM2-135M at
30 steps; the sentiment part can tell methods apart.
"""
QUICKSTART_MD = """## The default job changed with this study

`make run` (experiment=quickstart) now also scores 40 held-out ASDiv problems before and after
training (`task.asdiv_heldout: 40`), printed on the summary line as `base held-out ...` and
`tuned held-out ...` and stored under `metrics.eval_base.heldout` / `metrics.eval.heldout`. The
training set loses those 40 problems (and any with the same question), so quickstart's run hash
changes (5c4b34b503 before); other runs keep theirs, since both new keys are left out of the hash
at their neutral value 0.
"""


def verdict_markdown(main_runs: list[dict], winners: dict, edge: dict | None = None) -> str:
    """The verdict table; `edge`: the (part, method) pairs whose chosen rate is at an end of its grid."""
    lines = ["| paper | claim | arms | numbers | verdict | caveats |", "|---|---|---|---|---|---|"]
    for c in CLAIMS:
        a, b = ARMS[c.a], ARMS.get(c.b)
        runs_a = arm_runs(main_runs, a, _rate(winners, a))
        runs_b = arm_runs(main_runs, b, _rate(winners, b)) if b else []
        numbers, verdict = judge(c, runs_a, runs_b)
        notes = caveats(c, verdict, numbers, [(a, runs_a), (b, runs_b)] if b else [(a, runs_a)], edge or {})
        lines.append(
            f"| {c.paper} | {c.text} | {c.a}{' vs ' + c.b if c.b else ''} | {numbers} | {verdict} | "
            f"{'; '.join(notes) or '–'} |"
        )
    return "\n".join(lines) + "\n"


def caveats(claim: Claim, verdict: str, numbers: str, arms: list, edge: dict) -> list[str]:
    """What limits a verdict beyond its numbers: a dynamic-rank arm that moved no rank (it trained
    as gated LoRA), an arm whose rate sits at an end of its search grid, a difference that clears
    the spread by less than half of it."""
    notes = []
    for arm, runs in arms:
        logged = [r for r in runs if "events" in r["method_report"]]
        if claim.kind != "allocation" and logged and all(rank_moves(r["method_report"]) == (0, 0) for r in logged):
            notes.append(f"{arm.name} moved no rank: it trained as gated LoRA, not as its method")
        if (arm.part, arm.method) in edge:
            notes.append(f"{arm.name}'s rate is the {edge[(arm.part, arm.method)]} of its grid")
    m = re.search(r"Δ ([+-][0-9.]+), spread ([0-9.]+)", numbers)
    says_different = any(k in verdict for k in ("exceeds the spread", "and better", "(worse beyond the spread)"))
    if m and says_different:
        diff, spread = abs(float(m.group(1))), float(m.group(2))
        if spread > 0 and diff < 1.5 * spread:
            notes.append(f"marginal: |Δ| is {diff / spread:.2f} spreads")
    return notes


def _rate(winners: dict, arm: Arm) -> str | None:
    lr = winners.get((arm.part, arm.method))
    return None if lr is None else _lr_text(lr)


def plan_markdown() -> str:
    lines = ["## Plan", ""]
    for part, (main_preset, lr_preset, what) in PARTS.items():
        lines.append(f"- part `{part}` ({what}): `sweep={main_preset}`, rates from `sweep={lr_preset}`")
    lines += [
        "",
        "Learning-rate search (seed 0; the winner has the best score on the held-out split, "
        "`eval.heldout`, which is neither trained on nor reported; ties go to the lower held-out answer loss where the task reports one, then to the smaller rate): "
        f"grid {', '.join(LR_GRID)} (full fine-tuning {', '.join(LR_GRID_FULL)}).",
        "",
        "| part | method | search runs with |",
        "|---|---|---|",
    ]
    lines += [f"| {p} | {m} | `{' '.join(o)}` |" for p, m, o in LR_SEARCH]
    lines += [
        "",
        "Main grids (seeds 0, 1, 2, each method at its chosen rate):",
        "",
        "| part | method | grid |",
        "|---|---|---|",
    ]
    lines += [f"| {p} | {m} | `{' '.join(o)}` |" for p, m, o in MAIN]
    lines += ["", "## Claims", "", "| paper | claim | kind | arms |", "|---|---|---|---|"]
    lines += [f"| {c.paper} | {c.text} | {c.kind} | {c.a}{' vs ' + c.b if c.b else ''} |" for c in CLAIMS]
    return "\n".join(lines) + "\n"


def plan_page() -> str:
    """docs/study.md before the study has run: the plan and the estimate, no results."""
    return "\n".join(
        [
            HEAD_MD.rstrip() + "\n",
            DATA_MD,
            plan_markdown(),
            RULES_MD,
            "## Size and time estimate\n",
            ESTIMATE_MD,
            FIRST_ATTEMPT_MD,
            QUICKSTART_MD,
        ]
    )


def document(
    root: Path,
    report_md: str,
    lr_rows: list[tuple],
    winners: dict,
    main_runs: list[dict],
    argv: list[str],
    wall_s: float,
    all_runs: list[dict],
) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    ).stdout.strip()
    lines = [
        "# Study: the three papers' claims on small offline models (issue #17)",
        "",
        "Generated by `make study` (`python -m bench.report_study run`; `... report` rewrites it from the finished "
        "runs); do not edit by hand.",
        "",
        f"- command: `python -m bench.report_study {' '.join(shlex.quote(a) for a in argv)}`",
        f"- report written at commit: {commit or 'unknown'}{' (with uncommitted changes)' if dirty else ''}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}",
        f"- code of the runs (result.json `provenance.git_commit`): {runs_commits(all_runs)}",
        f"- wall time: {study_span_markdown(all_runs)}; "
        + (f"this invocation {wall_s / 60:.1f} min" if wall_s else "this invocation only wrote the report"),
        "",
        DATA_MD,
        plan_markdown(),
        RULES_MD,
        "## Learning-rate search (seed 0, held-out score)",
        "",
        "| part | method | lr | status | held-out score |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {p} | {m} | {lr} | {s} | {'–' if h is None else f'{h:.4f}'} |" for p, m, lr, s, h in lr_rows]
    lines += [
        "",
        "Chosen: " + (", ".join(f"{p}/{m} {_lr_text(lr)}" for (p, m), lr in sorted(winners.items())) or "none"),
        "",
        edge_note(lr_rows, winners),
        "",
        base_markdown(all_runs, main_runs),
        "## Verdicts",
        "",
        "Each claim compares the mean over seeds of the primary metric on the test split; the spread is the "
        "larger of the two arms' seed standard deviations (ddof=1) and the test set's standard error of the "
        "difference (rules above). A claim the data do not support says so.",
        "",
        verdict_markdown(main_runs, winners, edge_pairs(lr_rows, winners)),
        "The main table's `≈` (below) uses the seed spread only, as bench.report does for any sweep; the "
        "verdicts above also count the test set's standard error, so a cell without `≈` can still be "
        "within a verdict's spread.",
        memory_note(main_runs),
        report_md,
        "## Time, measured",
        "",
        timing_markdown(all_runs),
        QUICKSTART_MD,
    ]
    return "\n".join(lines)


def _when(stamp: str):
    from datetime import datetime

    return datetime.fromisoformat(stamp)


def _job_span(result: dict):
    """(start, end) of a job from its result.json, None where either is missing."""
    if not (result.get("started_at") and result.get("finished_at")):
        return None
    return _when(result["started_at"]), _when(result["finished_at"])


def runs_commits(runs: list[dict]) -> str:
    """The code version(s) behind the runs: one commit, or each with its count and the files that
    differ between them (a mixed study says so, and says what the difference is)."""
    from collections import Counter

    counts = Counter(
        ((r.get("provenance") or {}).get("git_commit") or "unknown", bool((r.get("provenance") or {}).get("git_dirty")))
        for r in runs
    )
    text = ", ".join(f"{c[:10]}{' (dirty)' if d else ''} ({n} runs)" for (c, d), n in counts.most_common())
    commits = [c for c, _ in counts if c != "unknown"]
    if len(set(commits)) > 1:
        diff = subprocess.run(
            ["git", "diff", "--name-only", commits[0], commits[1], "--", "*.py", "*.yaml", "*.toml", "*.txt"],
            capture_output=True,
            text=True,
        ).stdout.split()
        if diff:
            text += f"; code and config files that differ between {commits[0][:10]} and {commits[1][:10]}: {', '.join(diff)}"
    return text or "no runs"


def study_span_markdown(runs: list[dict]) -> str:
    """The time with at least one job running (the union of the jobs' start-end intervals), read from
    the runs themselves: it survives a resumed study or a regenerated report and leaves out the idle
    time between two invocations; the first-start-to-last-end span is given beside it."""
    spans = sorted(span for span in map(_job_span, runs) if span)
    if not spans:
        return "unknown (no run records its start and end)"
    busy_s, (open_at, close_at) = 0.0, spans[0]
    for start, end in spans[1:]:
        if start > close_at:  # a gap: nothing ran between close_at and start
            busy_s += (close_at - open_at).total_seconds()
            open_at, close_at = start, end
        else:
            close_at = max(close_at, end)
    busy_s += (close_at - open_at).total_seconds()
    job_s = sum((end - start).total_seconds() for start, end in spans)
    whole_s = (max(end for _, end in spans) - spans[0][0]).total_seconds()
    return (
        f"**{busy_s / 60:.1f} min** with at least one job running ({len(spans)} jobs, {job_s / 60:.1f} "
        f"job-minutes: jobs overlap when `--jobs` > 1); first start {spans[0][0]:%Y-%m-%d %H:%M} UTC, "
        f"{whole_s / 60:.1f} min to the last job's end"
    )


def timing_markdown(runs: list[dict]) -> str:
    """Per part and method: jobs, and the mean job wall, train and evaluation seconds."""
    rows, unfinished = {}, 0
    for r in runs:
        span = _job_span(r)
        if r.get("status") != "success" or not span:
            unfinished += 1  # a failed job's times describe no complete job
            continue
        part = next((p for p, t in TASKS.items() if t == r["config"]["task"]["name"]), "?")
        m = r.get("metrics") or {}
        wall = (span[1] - span[0]).total_seconds()
        method = "base model (1 step)" if is_base_run(r) else r["config"]["method"]["name"]
        rows.setdefault((part, method), []).append(
            (wall, m.get("train_time_s"), m.get("eval_time_s"), m.get("step_time_p50_s"))
        )

    def mean(values):
        values = [v for v in values if v is not None]
        return f"{statistics.mean(values):.0f}" if values else "–"

    def p50(values):
        values = [v for v in values if v is not None]
        return f"{statistics.median_high(values):.2f}" if values else "–"

    lines = [
        "Every successful job of the study (search, base and main grids), read from its result.json: wall is the job's "
        "start to end (model load, training, evaluation, writing), with another job running beside it.",
        "",
        "| part | method | jobs | mean wall (s) | mean train (s) | median step (s) | mean evaluation (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for (part, method), got in sorted(rows.items()):
        walls, trains, evals, steps = zip(*got)
        lines.append(
            f"| {part} | {method} | {len(got)} | {mean(walls)} | {mean(trains)} | {p50(steps)} | {mean(evals)} |"
        )
    if unfinished:
        lines += ["", f"Not in the table: {unfinished} run(s) that did not succeed (their time is in the total below)."]
    lines += ["", f"Whole study: {study_span_markdown(runs)}.", ""]
    return "\n".join(lines)


def run(args, extra: list[str]) -> int:
    t0 = time.perf_counter()
    root = Path(args.root)
    run_all(commands(root, extra, args.jobs, None, args.lr_grid, None), args.jobs, args.dry_run)
    winners, _ = pick_rates(load_runs(root))
    run_all(commands(root, extra, args.jobs, args.seeds, None, winners), args.jobs, args.dry_run)
    if args.dry_run:
        return 0
    return write_report(args, time.perf_counter() - t0)


def write_report(args, wall_s: float) -> int:
    """Stage 4: the per-part reports, the figures and the document, from the finished runs."""
    from bench import report

    root = Path(args.root)
    all_runs = load_runs(root)
    winners, lr_rows = pick_rates(all_runs)
    main_runs = chosen(all_runs, winners)
    doc = Path(args.doc)
    figures = doc.parent / "study"
    figures.mkdir(parents=True, exist_ok=True)
    reports = []
    for part in PARTS:  # one report per part: parameter matching never crosses tasks or adapter targets
        out = root / "report" / part
        mine = [r for r in main_runs if r["config"]["task"]["name"] == TASKS[part]]
        report.write([Path(r["_path"]) for r in mine], out)
        for name in ("pareto.png", "rank_allocation.png"):
            if (out / name).exists():
                (figures / f"{part}_{name}").write_bytes((out / name).read_bytes())
        text = re.sub(
            r"(?m)^\d+ runs read from .*?;",
            f"{len(mine)} runs (part {part}: the main grids at the chosen rates; full report in {out});",
            (out / "report.md").read_text(),
            count=1,
        )
        reports.append(
            f"## Report, part {part} (bench.report)\n\n"
            + text.replace("# Report", "", 1).replace("## ", "### ").replace("](", f"](study/{part}_")
        )
    doc.write_text(document(root, "\n".join(reports), lr_rows, winners, main_runs, sys.argv[1:], wall_s, all_runs))
    print(f"written: {doc} (figures in {figures}, the full reports in {root / 'report'})")
    return 0


def run_all(cmds: list[list[str]], jobs: int, dry_run: bool) -> None:
    """Run the commands of one stage, `jobs` at a time, longest first (the lora grid has 11 jobs,
    most others 2 or 3), so the last minutes of a stage are not one command on one core."""
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    if dry_run or jobs <= 1 or not cmds:
        for cmd in cmds:
            _call(cmd, dry_run)
        return
    # Hydra names a sweep's directory by the second it starts: two commands starting together
    # would share it, so each gets its own
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    root = next(a.split("=", 1)[1] for a in cmds[0] if a.startswith("run.root="))
    ordered = sorted(cmds, key=_job_count, reverse=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [
            pool.submit(_call, [*cmd, f"hydra.sweep.dir={root}/.sweeps/{stamp}_{i:02d}"], False)
            for i, cmd in enumerate(ordered)
        ]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        broken = [f for f in done if f.exception() is not None]
        if broken:  # a broken command stops the study: queued commands never start
            pool.shutdown(wait=True, cancel_futures=True)
            raise broken[0].exception()


def _job_count(cmd: list[str]) -> int:
    """How many jobs a command's sweep has: the product of its comma lists (seeds from the preset
    count as one, the same for every command)."""
    count = 1
    for arg in cmd:
        if "=" in arg and not arg.startswith(("hydra", "-")):
            count *= len(arg.split("=", 1)[1].split(","))
    return count


def _call(cmd: list[str], dry_run: bool) -> None:
    print("+ " + " ".join(shlex.quote(c) for c in cmd[1:]), flush=True)
    if not dry_run:
        # a failed job is a result and the sweep goes on; a non-zero exit here is a broken command
        subprocess.run(cmd, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report_study", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "action",
        choices=("run", "report", "verdict", "plan"),
        help="run: the study, then its report; report: write --doc from the finished runs without "
        "running anything; verdict: print the verdicts of what has finished; plan: write --doc as the "
        "not-yet-run plan",
    )
    parser.add_argument("--root", default="runs/study", help="where the runs go")
    parser.add_argument(
        "--jobs", type=int, default=2, help="sweep commands at once, threads split between them; 1 = sequential"
    )
    parser.add_argument("--doc", default="docs/study.md", help="the document written at the end")
    parser.add_argument("--seeds", default=None, help="replace the main grids' seeds (e.g. 0 for a smoke test)")
    parser.add_argument("--lr-grid", default=None, help="replace the search grids (e.g. 1e-3 for a smoke test)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands of stages 1 and 3 only")
    args, extra = parser.parse_known_args(argv)
    bad = [e for e in extra if "=" not in e or e.startswith("-")]
    if bad:
        parser.error(f"unknown arguments {bad}: extra arguments are bench.run overrides KEY=VALUE")
    if args.action == "run":
        return run(args, extra)
    if args.action == "report":
        return write_report(args, 0.0)
    if args.action == "plan":
        Path(args.doc).write_text(plan_page())
        return 0
    root = Path(args.root)
    runs = load_runs(root)
    winners, _ = pick_rates(runs)
    print(verdict_markdown(chosen(runs, winners), winners))
    return 0


if __name__ == "__main__":
    sys.exit(main())
