"""python -m bench.report [RUNS_DIR ...] [--out DIR]

Reads every result.json under the given folders (default: runs/) and writes
  runs.csv / runs.md         one row per run, failures included
  summary.csv / .md / .tex   successful runs grouped by model, task, method and sparsity:
                             mean ± std over seeds of the primary metric (n shown), plus
                             trainable params, train time and peak memory
  problems                   result files that could not be read or break the schema, and runs
                             that did not succeed, with their errors (in report.md)
result.json is the only input; nothing is recomputed. A table that mixes devices or package
versions says so, since such numbers are not comparable.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from bench.config import run_hash
from bench.results import validate_result

# Runs are averaged only with runs whose config differs in nothing but the seed ("variant").
GROUP = ["model", "task", "method", "sparsity", "variant"]


def find_results(roots: list[Path]) -> list[Path]:
    found = []
    for root in roots:
        root = Path(root)
        candidates = [root] if root.name == "result.json" else root.rglob("result.json")
        found += [p for p in candidates if "attempts" not in p.parts]
    return sorted(found)


def load(roots: list[Path]) -> tuple[list[dict], list[dict]]:
    """(results, problems): a file that is truncated, not JSON or off-schema is a problem, not a crash."""
    import jsonschema

    runs, problems = [], []
    for path in find_results(roots):
        try:
            result = json.loads(path.read_text())
            validate_result(result)
        except (OSError, json.JSONDecodeError) as err:
            problems.append({"path": str(path), "problem": f"unreadable: {type(err).__name__}: {err}"})
            continue
        except jsonschema.ValidationError as err:
            problems.append({"path": str(path), "problem": f"breaks the result schema: {err.message}"})
            continue
        result["_path"] = str(path)
        runs.append(result)
    return runs, problems


def row(result: dict) -> dict:
    cfg, m = result["config"], result["metrics"]
    ev, base = m.get("eval") or {}, m.get("eval_base") or {}
    mem = m.get("peak_memory") or {}
    primary = ev.get("primary") or base.get("primary")
    return {
        "run_id": result["run_id"], "status": result["status"],
        "model": cfg["model"]["name"], "task": cfg["task"]["name"], "method": cfg["method"]["name"],
        # the configured sparsity, else the one the method reports (e.g. from r_init and r_target)
        "sparsity": (cfg["method"].get("sparsity") if cfg["method"].get("sparsity") is not None
                     else result["method_report"].get("sparsity")),
        "seed": cfg["seed"],
        "variant": run_hash({k: v for k, v in cfg.items() if k != "seed"})[:8],
        "metric": primary, "score": ev.get(primary), "score_base": base.get(primary),
        "trainable_params": m.get("trainable_params"), "train_time_s": m.get("train_time_s"),
        "peak_memory_gb": (mem.get("allocated_bytes") or mem.get("rss_bytes") or 0) / 1e9 or None,
        "memory_kind": mem.get("kind"), "tokens_per_s": m.get("tokens_per_s"),
        "device": result["provenance"]["device"].get("name"),
        "stack": " ".join(f"{k}={v}" for k, v in sorted(result["provenance"]["packages"].items())
                          if k in ("torch", "transformers", "peft")),
        "error": (result["error"] or {}).get("message"), "path": result["_path"],
    }


def runs_frame(runs: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([row(r) for r in runs])


def _mean_std(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "–"
    if len(values) == 1:
        return f"{values.iloc[0]:.4f}"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    ok = frame[frame["status"] == "success"].copy()
    if ok.empty:
        return pd.DataFrame()
    ok["sparsity"] = ok["sparsity"].astype(object).where(ok["sparsity"].notna(), "–")
    grouped = ok.groupby(GROUP + ["metric"], dropna=False)
    return grouped.agg(
        score=("score", _mean_std),
        n=("score", "count"),
        score_base=("score_base", _mean_std),
        trainable_params=("trainable_params", lambda v: int(v.median())),
        train_time_s=("train_time_s", "mean"),
        peak_memory_gb=("peak_memory_gb", "mean"),
    ).reset_index()


def warnings_for(frame: pd.DataFrame) -> list[str]:
    notes = []
    ok = frame[frame["status"] == "success"]
    for key, what in (("device", "devices"), ("stack", "software stacks")):
        if ok[key].nunique() > 1:
            notes.append(f"these runs mix {ok[key].nunique()} {what} ({'; '.join(sorted(ok[key].unique()))}): "
                         f"their times and memory are not comparable")
    return notes


def write(roots: list[Path], out: Path) -> dict:
    runs, problems = load(roots)
    out.mkdir(parents=True, exist_ok=True)
    frame = runs_frame(runs) if runs else pd.DataFrame(columns=["status"])
    table = summary(frame) if runs else pd.DataFrame()
    frame.drop(columns=["path"], errors="ignore").to_csv(out / "runs.csv", index=False)
    table.to_csv(out / "summary.csv", index=False)
    if not table.empty:
        (out / "summary.tex").write_text(table.to_latex(index=False, escape=True))
    failed = frame[frame["status"] != "success"] if runs else frame
    lines = ["# Report", "", f"{len(runs)} runs read from {', '.join(map(str, roots))}; "
             f"{int((frame['status'] == 'success').sum()) if runs else 0} succeeded.", ""]
    for note in warnings_for(frame) if runs else []:
        lines += [f"> warning: {note}", ""]
    lines += ["## Summary (successful runs, mean ± std over seeds)", "",
              table.to_markdown(index=False) if not table.empty else "no successful runs", ""]
    lines += ["## Failures", ""]
    lines += ([f"- `{r.path}`: {r.status}: {r.error}" for r in failed.itertuples()] or ["none"])
    lines += ["", "## Unreadable result files", ""]
    lines += ([f"- `{p['path']}`: {p['problem']}" for p in problems] or ["none"])
    (out / "report.md").write_text("\n".join(lines) + "\n")
    columns = [c for c in ("run_id", "status", "model", "task", "method", "sparsity", "seed", "score",
                           "score_base", "trainable_params", "train_time_s", "peak_memory_gb") if c in frame]
    (out / "runs.md").write_text(frame[columns].to_markdown(index=False) + "\n" if runs else "no runs\n")
    return {"runs": len(runs), "problems": problems, "out": out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="*", type=Path, default=[Path("runs")], help="folders with run directories")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <first root>/report)")
    args = parser.parse_args(argv)
    out = args.out or args.roots[0] / "report"
    info = write(args.roots, out)
    print((out / "report.md").read_text())
    print(f"written: {out}/report.md, runs.csv, runs.md, summary.csv" + (", summary.tex" if
                                                                          (out / "summary.tex").exists() else ""))
    return 1 if info["runs"] == 0 and not info["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
