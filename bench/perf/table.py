"""bench.perf's rows as a Markdown table: step time, tokens/s, live-tensor memory, ratios to the
reference method, the change-event costs and the harness overhead."""

from __future__ import annotations

from bench.config import REFERENCE_METHOD
from bench.perf.measure import WORK_KEYS


def median_run(found: list[dict]) -> dict:
    """The run with the median step time, with the spread of all runs attached."""
    ok = [r for r in found if "error" not in r and "invalid" not in r]
    if not ok:
        return found[0]
    ok.sort(key=lambda r: r["step_time_p50_s"])
    chosen = dict(ok[len(ok) // 2])
    chosen["runs"] = [r["step_time_p50_s"] for r in ok]
    return chosen


def _mem(row: dict) -> float | None:
    """The row's memory figure: live tensor bytes, CUDA's max_memory_allocated or, on the CPU, the
    peak over the memory-profiled steps (bench/tensor_memory.py); None where there is none (or the
    CPU figure failed its check). The RSS growth is never used in its place: it depends on the
    allocator (two runs of one LoRA configuration: 978 and 2,136 MB), not on the method."""
    m = row["peak_memory"]
    if m.get("kind") == "cuda":
        return float(m["allocated_bytes"]) if m.get("allocated_bytes") else None
    found = (row.get("peak_tensor_bytes") or {}).get("bytes")
    return float(found) if found else None


def _rss(row: dict) -> float | None:
    found = row["peak_memory"].get("train_delta_bytes")
    return None if found is None else float(found)


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 1e6:.0f}"


MEMORY_NOTE = (
    "peak mem: live tensor bytes (CUDA: torch.cuda.max_memory_allocated; CPU: the peak over the "
    "memory-profiled steps after the warm-up, split and checked in each row's peak_tensor_bytes); "
    "RSS Δ: the CPU process's peak RSS growth over training, which depends on the allocator, shown "
    "beside it and never compared"
)


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def heading(rows: list[dict]) -> tuple[str, dict]:
    """The work settings of the measured rows, as text, and where a row differs, per row index."""
    works = [r["work"] for r in rows if "work" in r]
    # the most common value of each key is the heading's; a row that differs names its own
    shared = {
        k: max(values, key=values.count)
        for k in WORK_KEYS
        if k != "checkpointing"
        for values in [[str(w[k]) for w in works if k in w]]  # rows written before a key existed lack it
        if values
    }
    differ = {
        i: {k: v for k, v in r["work"].items() if k in shared and str(v) != shared[k]}
        for i, r in enumerate(rows)
        if "work" in r
    }
    text = ", ".join(f"{k} {v}" for k, v in shared.items())
    return text, differ


def table(rows: list[dict], reference: str = REFERENCE_METHOD) -> str:
    _, differ = heading(rows)
    lines = [
        "| method | checkpointing | step p50 (s) | step p90 (s) | runs: step p50 min–max (s) | tokens/s | "
        f"peak mem (MB) | RSS Δ (MB) | step vs {reference} | mem vs {reference} | trainable | TFLOP/s | MFU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = {
        r["checkpointing"]: r
        for r in rows
        if r.get("method") == reference and not r.get("bare") and "error" not in r and "invalid" not in r
    }
    for i, r in enumerate(rows):
        if "error" in r:
            lines.append(
                f"| {' '.join(r['argv'])} | error | {r['error'].splitlines()[-1] if r['error'] else ''} |||||||||||"
            )
            continue
        name = (
            r["method"]
            + (" (bare loop)" if r["bare"] else "")
            + "".join(f" {k}={v}" for k, v in differ.get(i, {}).items())
        )
        if "invalid" in r:
            lines.append(
                f"| {name} | {r['checkpointing']} | invalid measurement, not a result: "
                f"{'; '.join(r['invalid'])} |||||||||||"
            )
            continue
        if r["bare"]:
            continue
        ref = base.get(r["checkpointing"])
        ratio_t = r["step_time_p50_s"] / ref["step_time_p50_s"] if ref else float("nan")
        ratio_m = _mem(r) / _mem(ref) if ref and _mem(ref) and _mem(r) else float("nan")
        spread = r.get("runs") or [r["step_time_p50_s"]]
        lines.append(
            f"| {name} | {r['checkpointing']} | {r['step_time_p50_s']:.4f} | "
            f"{r.get('step_time_p90_s') or float('nan'):.4f} | {min(spread):.4f}–{max(spread):.4f} "
            f"(n={len(spread)}) | {r['tokens_per_s']:.0f} | {_mb(_mem(r))} | {_mb(_rss(r))} | "
            f"{ratio_t:.3f} | {ratio_m:.3f} | {r['trainable_params']:,} | "
            f"{r.get('achieved_tflops', float('nan')):.2f} | {_pct(r.get('mfu'))} |"
        )
        if r.get("timed_events"):
            lines.append(
                f"| {name}: one change event | {r['checkpointing']} | +{r['event_cost_s']:.4f} "
                f"(its step and the next, over two steady steps; {r['timed_events']} in the timed "
                f"window, steps {', '.join(map(str, r['change_steps']))}) |||||||||||"
            )
        found = r.get("peak_tensor_bytes")
        if found and not found.get("valid"):
            lines.append(
                f"| {name}: peak tensor bytes | {r['checkpointing']} | invalid measurement, not a result: "
                f"{'; '.join(found.get('invalid', []))} |||||||||||"
            )
    if any("peak_memory" in r for r in rows):
        lines += ["", MEMORY_NOTE]
    bare = [r for r in rows if r.get("bare") and "invalid" not in r]
    for b in bare:
        ref = base.get(b["checkpointing"])
        if ref:
            lines.append("")
            lines.append(
                f"Harness overhead ({reference}, checkpointing={b['checkpointing']}): suite step p50 "
                f"{ref['step_time_p50_s']:.4f} s / bare PEFT+torch loop {b['step_time_p50_s']:.4f} s = "
                f"**{ref['step_time_p50_s'] / b['step_time_p50_s']:.3f}×**"
            )
    return "\n".join(lines)
