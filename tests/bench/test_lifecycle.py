"""The run lifecycle on its own (no model): whatever its stages raise ends in a result.json that
records the failure, the lock and the signal handlers are released, and only Ctrl-C and a
launcher's exit travel on."""

from __future__ import annotations

import copy
import json
import os
import signal
from types import SimpleNamespace

import pytest

from bench import results
from bench.config import resolved, run_hash
from bench.lifecycle import Run
from tests.conftest import TINY, compose

ONE_PROCESS = SimpleNamespace(is_main_process=True, wait_for_everyone=lambda: None)


@pytest.fixture(scope="module")
def composed():
    return compose(*TINY, "logger=none")


@pytest.fixture
def new_run(composed, tmp_path):
    """A Run of the tiny job under tmp_path; each call is another job of the same configuration."""

    def make() -> Run:
        cfg = copy.deepcopy(composed)
        cfg.run.root = str(tmp_path)
        config = resolved(cfg)
        return Run(cfg, config, run_hash(config), ONE_PROCESS)

    return make


def raise_sigterm():
    os.kill(os.getpid(), signal.SIGTERM)


def raise_value_error():
    raise ValueError("boom in the model stage")


@pytest.mark.parametrize(
    "body,status,error_type,fragment",
    [
        (raise_value_error, "failed", "ValueError", "boom in the model stage"),
        (raise_sigterm, "cancelled", "Cancelled", "received signal SIGTERM"),
    ],
)
def test_a_raising_stage_ends_in_a_failure_record(new_run, body, status, error_type, fragment):
    run = new_run()
    before = signal.getsignal(signal.SIGTERM)
    assert run.claim() is None
    with run:
        assert signal.getsignal(signal.SIGTERM) == run.stop._handle  # graceful stop while the run lives
        run.stage = "model"
        run.metrics_log.append({"step": 1, "loss": 2.5})
        body()
    assert run.status == status
    assert signal.getsignal(signal.SIGTERM) == before
    result = json.loads((run.run_dir / "result.json").read_text())
    results.validate_result(result)
    assert result["status"] == status and not results.is_finished(run.run_dir)
    assert result["error"]["type"] == error_type and result["error"]["stage"] == "model"
    assert fragment in result["error"]["message"] and fragment in result["error"]["traceback"]
    assert result["history"] == [{"step": 1, "loss": 2.5}]
    assert f"run {status} at stage 'model'" in (run.run_dir / "run.log").read_text()
    assert new_run().claim() is None  # the lock was released


@pytest.mark.parametrize("err", [KeyboardInterrupt(), SystemExit(3)], ids=["ctrl-c", "launcher-exit"])
def test_ctrl_c_and_exit_travel_on_after_the_result_is_written(new_run, err):
    run = new_run()
    run.claim()
    with pytest.raises(type(err)) as raised:
        with run:
            raise err
    if isinstance(err, SystemExit):
        assert raised.value.code == 3  # the launcher's own exit code reaches it
    assert json.loads((run.run_dir / "result.json").read_text())["status"] == "cancelled"


def test_a_held_directory_is_busy_and_a_finished_one_skipped(new_run):
    run = new_run()
    run.claim()
    with run:
        assert new_run().claim() == "busy"
        raise_value_error()
    (run.run_dir / "result.json").write_text(json.dumps({"status": "success"}))
    assert new_run().claim() == "skipped"
    # a refused claim leaves the directory as it was: no earlier result set aside
    assert not (run.run_dir / "attempts").exists()
