"""The bench.perf command: every configuration in its own process (so that peak memory is its
own), repeats interleaved, the median run of each reported."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import bench.perf
from bench.config import REFERENCE_METHOD, TrainConfig, group_options
from bench.perf.measure import base_method, measure, memory_steps
from bench.perf.table import heading, median_run, table
from bench.provenance import REPO_ROOT


def per_method_overrides(specs: list[str], methods: list[str]) -> dict[str, list[str]]:
    """`--only full:train.optimizer=adafactor` -> {"full": ["train.optimizer=adafactor"]}. A method
    may appear twice under labels (`--methods full,full@adafactor --only full@adafactor:...`)."""
    found: dict[str, list[str]] = {}
    for spec in specs:
        method, sep, override = spec.partition(":")
        if not sep or "=" not in override:
            raise SystemExit(f"--only {spec!r}: expected METHOD:KEY=VALUE, e.g. full:train.optimizer=adafactor")
        if method not in methods:
            raise SystemExit(f"--only {spec!r}: method '{method}' is not in --methods ({', '.join(methods)})")
        found.setdefault(method, []).append(override)
    return found


def _run_one(argv: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.perf", "--one", *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr or out.stdout)[-800:], "argv": argv}
    return json.loads(lines[-1])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.perf", description=bench.perf.__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-llama")
    p.add_argument(
        "--methods",
        default="lora,prunedlora,l1ra,adalora,dora,full",
        help="comma-separated; NAME@LABEL adds a labelled variant, configured with --only NAME@LABEL:...",
    )
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument(
        "--cadence-steps",
        type=int,
        default=None,
        metavar="N",
        help="methods schedule their periodic events (rank updates, phase switches, pruning) for a run of "
        "N steps, of which the window is the start (default: the window's own length)",
    )
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument(
        "--grad-accum",
        type=int,
        default=1,
        help="micro-batches per optimizer step (pinned: a model/task profile's own value is not used)",
    )
    p.add_argument("--compile", action="store_true", help="train.compile=true (torch.compile, inductor)")
    p.add_argument(
        "--kernels", default="none", choices=["none", "liger"], help="train.kernels (liger: fused kernels, CUDA)"
    )
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--checkpointing", default="both", choices=["both", "true", "false"])
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="no")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="trace a few steady steps of each row with torch.profiler into DIR/<method>.txt (slows those rows)",
    )
    p.add_argument(
        "--memory-steps",
        type=int,
        default=TrainConfig.memory_profile_steps,
        metavar="N",
        help="CPU: steps between the warm-up and the timed steps over which the peak of live tensor bytes is "
        "measured (train.memory_profile_steps; not timed); 0: off, the memory column is then n/a",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every configuration this many times, interleaved; report the median run",
    )
    p.add_argument("--out", type=Path, default=None, help="also write the table (Markdown) here")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", default=REFERENCE_METHOD, help=argparse.SUPPRESS)
    p.add_argument(
        "--reference",
        default=REFERENCE_METHOD,
        metavar="METHOD",
        help=f"the method the ratio columns and the bare-loop overhead compare with (default: {REFERENCE_METHOD})",
    )
    p.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-bare", action="store_true", help="skip the bare-loop reference (harness overhead)")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="METHOD:OVERRIDE",
        help="an override for one method only, e.g. full:train.optimizer=adafactor (repeatable)",
    )
    p.add_argument("override", nargs="*", help="extra config overrides, e.g. model.init=random")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.one:
        args.checkpointing = args.checkpointing == "true"
        print(json.dumps(measure(args)))
        return 0
    common = [
        "--model",
        args.model,
        "--rank",
        str(args.rank),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--batch",
        str(args.batch),
        "--grad-accum",
        str(args.grad_accum),
        "--seq",
        str(args.seq),
        *(["--compile"] if args.compile else []),
        "--kernels",
        args.kernels,
        "--device",
        args.device,
        "--precision",
        args.precision,
        *(["--threads", str(args.threads)] if args.threads else []),
        *(["--profile", str(args.profile)] if args.profile else []),
        *(["--cadence-steps", str(args.cadence_steps)] if args.cadence_steps else []),
        "--memory-steps",
        str(args.memory_steps),
    ]
    ckpts = ["false", "true"] if args.checkpointing == "both" else [args.checkpointing]
    methods = args.methods.split(",")
    known = group_options("method")
    unknown = [m for m in methods if base_method(m) not in known]
    if unknown:
        raise SystemExit(f"--methods: unknown method(s) {', '.join(unknown)}; known: {', '.join(known)}")
    only = per_method_overrides(args.only, methods)
    configs = [
        [*common, "--method", m, "--checkpointing", ckpt, *args.override, *only.get(m, [])]
        for ckpt in ckpts
        for m in methods
    ]
    if not args.no_bare:
        configs += [
            [*common, "--method", args.reference, "--checkpointing", ckpt, "--bare", *args.override] for ckpt in ckpts
        ]
    runs: dict = {i: [] for i in range(len(configs))}
    for _ in range(args.repeat):  # interleaved, so slow drifts of the machine hit every configuration alike
        for i, argv in enumerate(configs):
            runs[i].append(_run_one(argv))
            print(json.dumps(runs[i][-1]), flush=True)
    rows = [median_run(found) for found in runs.values()]
    mem = memory_steps(args)
    text = (
        f"{args.model}, rank {args.rank}; {heading(rows)[0]}; {args.steps} timed steps after "
        f"{args.warmup} warm-up"
        + (f" and {mem} memory-profiled steps" if mem else "")
        + f", median of {args.repeat} interleaved run(s) per row"
        + "".join(f"; {m}: {' '.join(o)}" for m, o in only.items())
        + "".join(f"; {' '.join(o)}" for o in [args.override] if o)
        + "\n\n"
        + table(rows, args.reference)
    )
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0 if all("error" not in r and "invalid" not in r for r in rows) else 1
