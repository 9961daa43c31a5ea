"""Evaluate an in-memory model with lm-eval on a task YAML the suite writes at run time.

The YAML goes into the run directory (with the absolute path of the data file it reads), so the
evaluation is reproducible from the run directory alone. A task config may hold Python callables
(e.g. `process_results`, for scoring that lm-eval cannot express in YAML): the task is then built
from the dict in memory, and the YAML records each callable as `python:<module>.<name>`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from bench import eval_batch

log = logging.getLogger(__name__)


def record_detected_sizes(lm) -> None:
    """lm-eval detects the batch size inside each request type's loop and keeps only some of the
    sizes it chose; this instance records every one (bench/eval_batch.py)."""
    detect = lm._detect_batch_size

    def detect_and_record(*args, **kwargs):
        size = detect(*args, **kwargs)
        eval_batch.record("lm_eval", size)
        return size

    lm._detect_batch_size = detect_and_record


def _recordable(task_yaml: dict) -> dict:
    """The config with callables replaced by their dotted names, for the YAML record."""

    def name(fn) -> str:
        target = fn if hasattr(fn, "__qualname__") else type(fn)
        return f"python:{target.__module__}.{target.__qualname__}"

    return {k: name(v) if callable(v) else v for k, v in task_yaml.items()}


def run(
    model,
    tokenizer,
    task_yaml: dict,
    eval_cfg,
    out_dir: Path,
    num_fewshot: int,
    max_gen_toks: int,
    seed: int,
    confirm_run_unsafe_code: bool = False,
) -> dict:
    """`confirm_run_unsafe_code`: lm-eval runs a task marked `unsafe_code` (one that executes model
    output) only with this set; pass True only when the user opted in."""
    import lm_eval
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    out_dir = Path(out_dir)
    tasks_dir = out_dir / "lm_eval_tasks"
    tasks_dir.mkdir(parents=True, exist_ok=True)
    name = task_yaml["task"]
    (tasks_dir / f"{name}.yaml").write_text(yaml.safe_dump(_recordable(task_yaml), sort_keys=False))
    has_callables = any(callable(v) for v in task_yaml.values())

    from bench.models.loading import unwrap  # torch: imported when an evaluation runs, not with the task

    hf_model = unwrap(model)
    was_training = hf_model.training
    hf_model.eval()
    device = next(hf_model.parameters()).device
    batch_size = eval_batch.for_lm_eval(eval_cfg.batch_size, device.type)
    lm = HFLM(pretrained=hf_model, tokenizer=tokenizer, batch_size=batch_size, device=str(device))
    if batch_size == eval_batch.AUTO:
        record_detected_sizes(lm)
    logging.getLogger("lm-eval").setLevel(logging.WARNING)
    try:
        res = lm_eval.simple_evaluate(
            model=lm,
            tasks=[ConfigurableTask(config=dict(task_yaml)) if has_callables else name],
            num_fewshot=num_fewshot,
            limit=eval_cfg.limit,
            # our YAMLs are self-contained: skipping the ~10 s index of lm-eval's own tasks
            task_manager=TaskManager(include_path=str(tasks_dir), include_defaults=False),
            log_samples=True,  # the per-document values of `docs`; samples.jsonl follows eval.log_samples
            gen_kwargs={"max_gen_toks": max_gen_toks},
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
            confirm_run_unsafe_code=confirm_run_unsafe_code,
        )
    finally:
        hf_model.train(was_training)
    scores = {k: v for k, v in res["results"][name].items() if k != "alias" and isinstance(v, (int, float))}
    samples = res.get("samples", {}).get(name, [])
    # the task as lm-eval built it: a YAML's `include:` brings the metrics of the file it names
    built = res.get("configs", {}).get(name) or task_yaml
    metric_names = {m["metric"] for m in built.get("metric_list") or [] if isinstance(m.get("metric"), str)}
    if eval_cfg.log_samples and samples:
        with open(out_dir / "samples.jsonl", "w") as f:
            for s in samples:
                f.write(
                    json.dumps(
                        {
                            "doc_id": s.get("doc_id"),
                            "target": s.get("target"),
                            "response": s.get("resps", [[None]])[0][0] if s.get("resps") else None,
                            "filtered": s.get("filtered_resps"),
                            **{k: s[k] for k in s if k in metric_names},
                        },
                        default=str,
                    )
                    + "\n"
                )
    n = res.get("n-samples", {}).get(name, {}).get("effective", len(samples))
    return {"scores": scores, "n": int(n), "lm_eval_version": res.get("lm_eval_version"), "docs": per_doc(samples)}


def per_doc(samples: list[dict]) -> list[dict]:
    """lm-eval's samples (one per document and filter) as one entry per document, in doc_id order:
    {doc_id, doc, metrics: {"<metric>,<filter>": value}}, the keys named as in lm-eval's scores."""
    docs: dict = {}
    for s in samples:
        entry = docs.setdefault(s["doc_id"], {"doc_id": s["doc_id"], "doc": s["doc"], "metrics": {}})
        for metric in s.get("metrics") or []:
            entry["metrics"][f"{metric},{s['filter']}"] = s[metric]
    return [docs[k] for k in sorted(docs)]
