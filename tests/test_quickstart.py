"""The README's default job on the real SmolLM2-135M (minutes: `make test-slow`)."""

from __future__ import annotations

import json

import pytest

from bench.results import validate_result
from tests.conftest import run_cli


@pytest.mark.slow
def test_quickstart_fine_tunes_and_evaluates_before_and_after(tmp_path):
    root = tmp_path / "runs"
    out = run_cli("experiment=quickstart", f"run.root={root}", "logger=none", timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    result = json.loads(next(root.rglob("result.json")).read_text())
    validate_result(result)
    m = result["metrics"]
    assert result["status"] == "success"
    assert m["eval_base"]["n"] == m["eval"]["n"] == 25
    assert result["history"][-1]["loss"] < result["history"][0]["loss"]  # it learned something
    assert m["trainable_params"] == m["expected_trainable_params"] == 921_600  # r=16 on q,v of 30 layers
    assert result["provenance"]["model"]["file_sha256"].startswith("b179c952")
    assert result["provenance"]["data"]["train"]["name"] == "asdiv"
    assert result["provenance"]["data"]["test"]["name"] == "gsm8k"
    # the training source's held-out exact match, base and tuned, on problems it never trained on
    held = result["provenance"]["data"]["test"]["heldout"]
    assert m["eval_base"]["heldout"]["n"] == m["eval"]["heldout"]["n"] == held["rows"] == 40
    assert len(held["rows_sha256"]) == 64 and "sha256" in held["split_rule"]
    assert result["provenance"]["data"]["train"]["heldout_rows"] == 40
    assert 0 <= m["eval"]["heldout"]["exact_match,strict-match"] <= 1
