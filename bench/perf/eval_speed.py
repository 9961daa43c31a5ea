"""python -m bench.perf.eval_speed [--model M] [--task T] [--device D] [--out FILE] [override ...]

The time of one base-model evaluation pass, as a job runs it (the model loaded as bench.run loads
it, the task's own evaluation, eval.* from the config), without training. With random weights
(model.init=random) generation seldom meets an end-of-sequence token, so every answer runs to the
token limit: the worst case of an evaluation's time. The GPU kit runs it for the 7B shape on the
full GSM8K test split (scripts/gpu_session.sh evalspeed; docs/performance.md).

Checked before it is printed: the number of questions scored is the split's (or eval.limit's),
and the new tokens counted are at most questions x the generation limit.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def measure(model: str, task: str, device: str, overrides: list[str]) -> dict:
    import torch

    from bench import metrics as M
    from bench.config import build, compose_config, validate
    from bench.models import loading

    cfg = compose_config([f"model={model}", f"task={task}", "method=lora", f"train.device={device}", *overrides])
    validate(cfg)
    task_obj = build(cfg.task)
    task_obj.check(cfg)
    on = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
    net, tokenizer, info = loading.load(
        cfg.model, device=loading.build_device(cfg.model, on), head=task_obj.model_head()
    )
    net.to(on).eval()
    with tempfile.TemporaryDirectory() as out_dir:
        scores, seconds, throughput = M.timed_evaluation(task_obj, net, tokenizer, cfg.eval, Path(out_dir), cfg.seed)
    limit = getattr(task_obj, "max_gen_toks", None) if cfg.eval.max_gen_toks is None else cfg.eval.max_gen_toks
    split_rows = (scores.get("data") or {}).get("rows")
    row = {
        "model": cfg.model.name,
        "init": cfg.model.init,
        "dtype": cfg.model.dtype,
        "task": cfg.task.name,
        "device": torch.cuda.get_device_name(on) if on.type == "cuda" else "cpu",
        "eval_batch_size": cfg.eval.batch_size,
        "batch_sizes_chosen": throughput.get("batch_sizes"),
        "questions": scores["n"],
        "max_gen_toks": limit,
        "seconds": seconds,
        **{k: throughput[k] for k in ("questions_per_s", "new_tokens", "new_tokens_per_s", "generate_calls")},
        "primary": scores.get("primary"),
    }
    expected = min(cfg.eval.limit, split_rows) if cfg.eval.limit and split_rows else cfg.eval.limit or split_rows
    row["invalid"] = invalid_reasons(row, expected_questions=expected)
    return row


def invalid_reasons(row: dict, expected_questions: int | None) -> list[str]:
    reasons = []
    if expected_questions is not None and row["questions"] != expected_questions:
        reasons.append(f"{row['questions']} questions scored, the split and eval.limit give {expected_questions}")
    limit, new = row["max_gen_toks"], row["new_tokens"]
    if limit is not None and new is not None and new > row["questions"] * limit:
        reasons.append(
            f"{row['new_tokens']} new tokens counted, more than {row['questions']} questions x "
            f"{row['max_gen_toks']} tokens can produce"
        )
    return reasons


def table(row: dict) -> str:
    sizes = "; ".join(f"{k} {v}" for k, v in (row["batch_sizes_chosen"] or {}).items()) or "-"
    return "\n".join(
        [
            "| model | task | device | questions | eval.batch_size (chosen) | seconds | questions/s | new tokens/s |",
            "|---|---|---|---|---|---|---|---|",
            f"| {row['model']} ({row['init']}, {row['dtype']}) | {row['task']} | {row['device']} | "
            f"{row['questions']} | {row['eval_batch_size']} ({sizes}) | {row['seconds']:.1f} | "
            f"{row['questions_per_s']:.2f} | "
            + (f"{row['new_tokens_per_s']:.0f}" if row["new_tokens_per_s"] is not None else "n/a")
            + " |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.perf.eval_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-llama")
    p.add_argument("--task", default="gsm8k")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", type=Path, default=None, help="also write the table (Markdown) and the row (JSON)")
    p.add_argument("override", nargs="*", help="config overrides, e.g. model.init=random eval.batch_size=auto")
    args = p.parse_args(argv)
    row = measure(args.model, args.task, args.device, args.override)
    print(json.dumps(row))
    if row["invalid"]:
        print("invalid measurement, not a result: " + "; ".join(row["invalid"]), file=sys.stderr)
        return 1
    text = table(row)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(row, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
