"""A result.json that passes the schema, for the tests of results, reports and comparisons."""

from __future__ import annotations

from bench.config import resolved, run_hash
from tests.conftest import compose


def minimal_result(status="success") -> dict:
    cfg = resolved(compose("model=tiny-llama"))
    h = run_hash(cfg)
    metrics = {"total_time_s": 1.0}
    if status == "success":
        metrics.update(
            train_time_s=0.5,
            tokens_per_s=10.0,
            peak_memory={"kind": "cpu_rss", "rss_bytes": 1},
            trainable_params=1,
            total_params=2,
            optimizer_steps=1,
            step_time_p50_s=0.1,
        )
    return {
        "schema_version": 1,
        "run_id": h[:10],
        "config_hash": h,
        "status": status,
        "error": None if status == "success" else {"type": "X", "message": "m"},
        "config": cfg,
        "metrics": metrics,
        "history": [],
        "method_report": {},
        "artifacts": {},
        "provenance": {
            "git_commit": None,
            "git_dirty": None,
            "packages": {},
            "python": "3",
            "device": {"type": "cpu", "name": "cpu"},
            "data": {},
            "model": {"name": "m", "source": "hub", "init": "random"},
        },
        "started_at": "t",
        "finished_at": "t",
    }
