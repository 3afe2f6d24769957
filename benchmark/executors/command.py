"""One command in a subprocess on this machine: the unit every executor runs.

:class:`CommandSpec` says what to run (argv, environment, log, working directory),
:func:`execute_command` runs it here with its output appended to the log and returns an
:class:`ExecResult` (exit code and timing; never raises for a failing command). Executors differ
only in *where* they call :func:`execute_command` (a local thread, a pool worker, a dask worker).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: Seconds a command may take to exit after SIGTERM on an interrupt before it is killed.
TERM_GRACE_S = 10.0


@dataclass(frozen=True)
class CommandSpec:
    """What a worker needs to run one job (picklable, no engine state)."""

    job_id: str
    argv: list[str]
    log: str                                  # appended to; created with its folder
    env: dict[str, str] = field(default_factory=dict)  # set on top of the executing process's env
    header: str = ""                          # written to the log before the command's output
    cwd: Optional[str] = None                 # None: the executing process's working directory
    python_argv0: bool = False                # argv[0] is the client's Python: use the worker's own


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one command as the executor saw it (no validation: that is the runner's job)."""

    returncode: Optional[int]                 # None: the command never started (see ``error``)
    start: float
    end: float
    log_offset: int = 0                       # where this attempt's output starts in the log
    error: str = ""
    host: str = ""
    slot: Optional[str] = None                # the GPU (CUDA_VISIBLE_DEVICES) of a local slot

    @classmethod
    def not_started(cls, error: str, host: str = "") -> "ExecResult":
        now = time.time()
        return cls(None, now, now, 0, error, host or socket.gethostname())


def thread_share_env(workers: int, env: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """Give each of ``workers`` concurrent jobs its share of the CPU cores.

    Numeric libraries start one thread per core in every process; N parallel jobs would then
    run N x cores threads and oversubscribe the machine (measured: 2 fine-tuning jobs on 2 cores
    ran 3-4x slower than one after the other). Variables the caller already set are kept.
    """
    out = dict(os.environ if env is None else env)
    share = str(max(1, (os.cpu_count() or 1) // max(1, workers)))
    for var in THREAD_VARS:
        out.setdefault(var, share)
    return out


def _wait(proc: subprocess.Popen, should_stop: Optional[Callable[[], bool]], poll_s: float) -> int:
    """Wait for ``proc``; if ``should_stop()`` turns true, terminate it (then kill after a grace)."""
    if should_stop is None:
        return proc.wait()
    while True:
        try:
            return proc.wait(timeout=poll_s)
        except subprocess.TimeoutExpired:
            if should_stop():
                proc.terminate()
                try:
                    return proc.wait(timeout=TERM_GRACE_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    return proc.wait()


def execute_command(spec: CommandSpec, *, base_env: Optional[Mapping[str, str]] = None,
                    on_spawn: Optional[Callable[[subprocess.Popen], None]] = None,
                    on_exit: Optional[Callable[[subprocess.Popen], None]] = None,
                    should_stop: Optional[Callable[[], bool]] = None, poll_s: float = 1.0) -> ExecResult:
    """Run ``spec`` here: stdout and stderr appended to its log; never raises for command errors.

    ``base_env``: the environment ``spec.env`` is added to (default: this process's).
    ``on_spawn``/``on_exit``: see the live process (to terminate it on an interrupt).
    ``should_stop``: polled every ``poll_s`` seconds while the command runs; true terminates it.
    """
    host = socket.gethostname()
    argv = list(spec.argv)
    if spec.python_argv0 and argv:
        argv[0] = sys.executable
    if spec.cwd is not None and not os.path.isdir(spec.cwd):
        return ExecResult.not_started(
            f"working directory {spec.cwd} does not exist on {host}; the workers need the client's "
            "paths (a shared filesystem)", host)
    if should_stop is not None and should_stop():
        return ExecResult.not_started("interrupted before it started", host)
    env = dict(os.environ if base_env is None else base_env)
    env.update(spec.env)
    log = Path(spec.log)
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        fh = log.open("ab")
    except OSError as exc:
        return ExecResult.not_started(f"cannot open the log {log} on {host}: {exc}", host)
    with fh:
        offset = fh.tell()
        if spec.header:
            fh.write(spec.header.encode())
            fh.flush()
        start = time.time()
        try:
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=spec.cwd)
        except OSError as exc:
            return ExecResult(None, start, time.time(), offset, f"cannot start: {exc}", host)
        if on_spawn:
            on_spawn(proc)
        try:
            rc = _wait(proc, should_stop, poll_s)
        finally:
            if on_exit:
                on_exit(proc)
    return ExecResult(rc, start, time.time(), offset, "", host)


class _Procs:
    """Live subprocesses, so that an interrupt can terminate them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()

    def add(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.add(proc)

    def discard(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)

    def terminate_all(self) -> None:
        with self._lock:
            for proc in self._procs:
                try:
                    proc.terminate()
                except OSError:
                    pass
