"""The code-execution sandbox against hostile programs: each must fail, and leave the host as it was
(canary file intact, no process left running, no temporary directory left behind)."""

from __future__ import annotations

import os
import socket
import textwrap
import time
from pathlib import Path

import pytest

from tasks import sandbox

LIMITS = sandbox.Limits(timeout_s=2.0, memory_mb=512)
HAS_NAMESPACES = bool(sandbox.namespace_prefix())


@pytest.fixture(params=["namespaces", "no_namespaces"])
def mode(request, monkeypatch):
    """Every hostile program runs with the namespaces (where this machine has them) and without,
    the fallback other machines get."""
    if request.param == "namespaces" and not HAS_NAMESPACES:
        pytest.skip("unshare is not usable here; the fallback is tested by the other parameter")
    if request.param == "no_namespaces":
        monkeypatch.setattr(sandbox, "namespace_prefix", lambda: ())
    return request.param


@pytest.fixture
def host(tmp_path):
    """A canary file outside the sandbox, and the directory the sandbox makes its temporary dirs in:
    the canary sits next to them, so `..` from the program's cwd leads toward it."""
    boxes = tmp_path / "boxes"
    boxes.mkdir()
    canary = tmp_path / "canary.txt"
    canary.write_text("still here")
    return boxes, canary


def alive_leftovers(marker: str) -> list[int]:
    """Processes (not zombies) whose environment says a sandbox run under `marker` started them."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z" and f"BENCH_SANDBOX_RUN={marker}".encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def assert_host_untouched(boxes: Path, canary: Path) -> None:
    assert canary.read_text() == "still here"
    assert list(boxes.iterdir()) == [], "the sandbox left its temporary directory behind"
    deadline = time.monotonic() + 3  # a killed process can take a moment to be reaped
    while alive_leftovers(str(boxes)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alive_leftovers(str(boxes)) == []


def run(program: str, boxes: Path, limits: sandbox.Limits = LIMITS) -> sandbox.Outcome:
    return sandbox.run(textwrap.dedent(program), limits, tmp_root=boxes)


def test_a_correct_program_passes_and_a_failing_one_does_not(host):
    boxes, canary = host
    assert run("def f(x):\n    return x + 1\nassert f(1) == 2\n", boxes).status == "passed"
    failing = run("assert 1 + 1 == 3, 'wrong answer'\n", boxes)
    assert failing.status == "failed" and failing.returncode != 0 and "wrong answer" in failing.stderr_tail
    assert run("def f(:\n", boxes).status == "failed"
    assert_host_untouched(boxes, canary)


HOSTILE = {
    "infinite_loop": "while True:\n    pass\n",
    "sleep_forever": "import time\ntime.sleep(10_000)\n",
    "fork_bomb": "import os\nwhile True:\n    os.fork()\n",
    "spawn_a_shell": "import subprocess\nsubprocess.run(['sh', '-c', 'sleep 100 &'])\n",
    "huge_allocation": "block = bytearray(64 * 2**30)\n",
    "huge_file": "with open('big', 'wb') as f:\n    f.write(b'x' * (64 * 2**20))\n",
    "open_a_socket": "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)\n",
    "exit_0_before_the_tests": "import sys\nsys.exit(0)\nassert False\n",
    "os_exit_0_before_the_tests": "import os\nos._exit(0)\nassert False\n",
    "kill_the_parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
}
DELETERS = {
    "os_remove": "import os\nos.remove({canary!r})\n",
    "pathlib_unlink": "import pathlib\npathlib.Path({canary!r}).unlink()\n",
    "truncate_by_opening": "open({canary!r}, 'w').write('gone')\n",
    # from the cwd (<tmp>/boxes/<box>/work) up to <tmp>, which holds the canary; outermost first
    "rmtree_parents_of_cwd": "import shutil\nfor up in ('../../..', '../..', '..'):\n    shutil.rmtree(up)\n",
    "rename_away": "import os\nos.rename({canary!r}, {canary!r} + '.moved')\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_program_fails_and_the_host_is_untouched(name, mode, host):
    boxes, canary = host
    started = time.monotonic()
    outcome = run(HOSTILE[name], boxes)
    assert not outcome.passed, outcome
    assert time.monotonic() - started < LIMITS.timeout_s + 2, "the wall-clock limit did not hold"
    assert_host_untouched(boxes, canary)


def test_timeouts_and_early_exits_are_named(host):
    boxes, _ = host
    assert run(HOSTILE["infinite_loop"], boxes).status == "timeout"
    assert run(HOSTILE["exit_0_before_the_tests"], boxes).status == "exited_early"
    assert run(HOSTILE["os_exit_0_before_the_tests"], boxes).status == "exited_early"


@pytest.mark.parametrize("name", sorted(DELETERS))
def test_program_cannot_delete_or_overwrite_a_file_outside_its_directory(name, mode, host):
    boxes, canary = host
    outcome = run(DELETERS[name].format(canary=str(canary)), boxes)
    assert not outcome.passed, outcome
    assert_host_untouched(boxes, canary)


def test_files_the_program_writes_in_its_own_directory_are_cleaned_up(host):
    boxes, canary = host
    outcome = run("import os\nos.makedirs('a/b/c')\nopen('a/b/c/f.txt', 'w').write('x')\n", boxes)
    assert outcome.passed, outcome
    assert_host_untouched(boxes, canary)


def test_environment_is_minimal_and_hashing_reproducible(host, monkeypatch):
    boxes, _ = host
    monkeypatch.setenv("BENCH_TEST_SECRET_TOKEN", "do-not-leak")
    program = """
        import os
        assert 'BENCH_TEST_SECRET_TOKEN' not in os.environ, 'caller environment leaked'
        assert os.environ['PYTHONHASHSEED'] == '0' and hash('abc') == {expected}
    """
    import subprocess
    import sys

    expected = subprocess.run(
        [sys.executable, "-c", "print(hash('abc'))"], capture_output=True, text=True, env={"PYTHONHASHSEED": "0"}
    ).stdout.strip()
    assert run(program.format(expected=expected), boxes).passed


@pytest.mark.skipif(not HAS_NAMESPACES, reason="needs a network namespace (unshare)")
def test_a_socket_past_the_guard_reaches_nothing(host):
    boxes, canary = host
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        # socket.SocketType is the raw type the guard leaves alone: only the namespace stops this
        outcome = run(
            f"import socket\ns = socket.SocketType()\ns.settimeout(1)\ns.connect(('127.0.0.1', {port}))\n", boxes
        )
        assert not outcome.passed and ("unreachable" in outcome.stderr_tail or "refused" in outcome.stderr_tail)
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert_host_untouched(boxes, canary)


FORK_PAST_THE_GUARD = """
    import sys
    del sys.modules['ctypes'], sys.modules['_ctypes']
    import ctypes, time
    libc = ctypes.CDLL(None)
    if libc.fork() == 0:
        {in_child}
        time.sleep(60)
"""


def test_a_process_forked_past_the_guard_does_not_outlive_the_run(mode, host):
    """The child is in the program's process group: killed with it (or refused by RLIMIT_NPROC)."""
    boxes, canary = host
    run(FORK_PAST_THE_GUARD.format(in_child="pass"), boxes)
    assert_host_untouched(boxes, canary)


@pytest.mark.skipif(not HAS_NAMESPACES, reason="needs a PID namespace (unshare)")
def test_a_daemon_that_leaves_the_process_group_dies_with_the_pid_namespace(host):
    boxes, canary = host
    run(FORK_PAST_THE_GUARD.format(in_child="libc.setsid()"), boxes)
    assert_host_untouched(boxes, canary)


FORK_BOMB_PAST_THE_GUARD = """
    import os, sys
    del sys.modules['ctypes'], sys.modules['_ctypes']
    import ctypes, time
    libc = ctypes.CDLL(None)
    for _ in range(50):  # bounded, should the limit not hold
        pid = libc.fork()
        if pid < 0:
            raise OSError('fork refused')
        if pid == 0:
            time.sleep(60)
            os._exit(0)
"""


@pytest.mark.skipif(os.geteuid() == 0, reason="the kernel does not apply RLIMIT_NPROC to root")
def test_fork_bomb_past_the_guard_is_refused_by_the_process_limit(host):
    boxes, canary = host
    outcome = run(FORK_BOMB_PAST_THE_GUARD, boxes)
    assert outcome.status == "failed" and "fork refused" in outcome.stderr_tail, outcome
    assert_host_untouched(boxes, canary)


def test_run_many_keeps_the_input_order(host):
    boxes, _ = host
    programs = [f"assert {i} % 2 == 0\n" for i in range(6)]
    outcomes = sandbox.run_many(programs, LIMITS, workers=3, tmp_root=boxes)
    assert [o.passed for o in outcomes] == [i % 2 == 0 for i in range(6)]


def test_limits_reject_values_that_cannot_work():
    with pytest.raises(ValueError, match="timeout_s"):
        sandbox.Limits(timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        sandbox.Limits(memory_mb=8)


def test_isolation_report_says_what_protects_this_machine():
    report = sandbox.isolation()
    assert report["namespaces"] == ("none" if not HAS_NAMESPACES else report["namespaces"])
    assert report["nproc_limit_applies"] is (os.geteuid() != 0)
    assert "RLIMIT_AS" in report["rlimits"] and "RLIMIT_NPROC" in report["rlimits"]


def test_a_sandbox_that_cannot_run_anything_fails_loudly(monkeypatch):
    monkeypatch.setattr(sandbox, "_CHILD", "raise SystemExit('broken bootstrap')")
    sandbox.check_works.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="cannot run a trivial program"):
            sandbox.check_works(LIMITS)
    finally:
        sandbox.check_works.cache_clear()
