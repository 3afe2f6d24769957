"""Persistent workers: run Python jobs inside long-lived worker processes (``--executor pool``).

A subprocess per job pays the interpreter start-up and the imports of torch & co. (3-4 s) every
time. :class:`PoolExecutor` keeps ``n`` worker processes (``n_jobs`` slots, or ``jobs_per_gpu``
slots per GPU, ``CUDA_VISIBLE_DEVICES`` fixed per worker at spawn) that import once and run job
after job in-process, the way the interpreter would run the command line:

* ``[python, -m, MODULE, *args]`` -> ``runpy.run_module(MODULE, run_name="__main__",
  alter_sys=True)``; ``[python, SCRIPT.py, *args]`` -> ``runpy.run_path(SCRIPT, run_name=
  "__main__")``. ``python`` is this interpreter: ``sys.executable``, a bare ``python*`` name, or a
  ``python*`` beside ``sys.executable``; ``-u`` is accepted (workers are unbuffered anyway). Any
  other argv (another program, another interpreter, ``-c``/``-X``/... options, a directory or a
  zip to run) runs as a subprocess exactly like :func:`~benchmark.executors.execute_command`.
* Exit code as a subprocess would give it: return -> 0; ``SystemExit(code)``: None -> 0, an int
  -> ``code & 0xFF``, anything else printed to stderr -> 1; an uncaught exception -> its
  traceback (``sys.excepthook``) -> 1; an uncaught ``KeyboardInterrupt`` -> -2 (SIGINT).
* Output: fds 1 and 2 are ``dup2``-ed onto the job's log for the job (Python prints and C
  extensions writing to the fds alike); the parent writes ``spec.header`` first and returns the
  same ``log_offset`` as a subprocess slot. Worker stdio is unbuffered (as ``PYTHONUNBUFFERED``).
* Per job, then restored: ``os.environ`` (worker env + ``spec.env``), cwd (``spec.cwd``, else
  the runner's at submit), ``sys.argv`` (a script's ``argv[0]`` and ``__file__`` absolute),
  ``sys.path`` (``[0]`` = the cwd for ``-m``, the script's directory for a script),
  ``sys.modules['__main__']``, ``sys.stdout/stderr/stdin``, the umask, warnings filters and
  once-registry, the root logger's handlers and level, ``sys.excepthook``, the recursion limit,
  handlers of SIGINT/SIGTERM/SIGHUP/SIGUSR1/SIGUSR2, numpy's ``seterr``; torch's thread count,
  default dtype, grad mode, deterministic-algorithms and cuDNN flags go back to the worker's
  initial values; matplotlib figures are closed and its rcParams reset to the rc file's.
  Global RNGs are the jobs' business (they seed; a fresh process is randomly seeded anyway).
  Modules stay imported: that is the point. State a job leaves *inside* imported modules
  (caches, registries), ``atexit`` handlers and non-daemon threads are not reset.
* Imports: ``preload`` modules are imported when a worker starts; the module of each ``-m`` job
  is imported the first time a worker sees it (inside that job: its import-time output lands in
  that job's log), so later jobs re-execute only the module's body, not its imports. Only a
  module with an ``if __name__ == "__main__":`` guard is imported first (:func:`has_main_guard`):
  importing a guard-less one would run its job twice. After each job the worker collects the
  job's garbage and ``gc.freeze()``-s what survives, so later collections stay cheap.
* Robustness: a worker that dies during a job (segfault, ``os._exit(n)``, a signal) makes that
  job's exit code the worker's (-11 for SIGSEGV, like a subprocess) and is replaced at once.
  The parent polls every busy worker's RSS (its own, not its children's) every :data:`POLL_S`
  s; above ``max_rss_mb`` the worker is killed (exit -9; "worker exceeded ... MiB RSS (limit
  ... MiB)" in the result's error and the log) and replaced. After a job, a worker above the
  limit or that ran ``max_jobs_per_worker`` jobs is recycled. :meth:`PoolExecutor.interrupt`:
  busy workers get SIGTERM (SIGKILL after ``TERM_GRACE_S``), their jobs end -15; queued
  submissions never start.

The worker side (job recognition, the worker loop, state isolation) is :mod:`benchmark.pool_worker`.

Workers start lazily, all ``n`` at the first submit (an all-finished run starts none), with the
``spawn`` (or ``forkserver``) multiprocessing context: the runner has threads, so no ``fork``.
Each worker's environment (thread share of :func:`~benchmark.executors.thread_share_env`,
``CUDA_VISIBLE_DEVICES``) is set before it imports anything numeric. One caveat of ``spawn``:
a runner started as ``python some_script.py`` has that script re-imported (as ``__mp_main__``)
in every worker first; keep its top level free of numpy/torch imports (``python -m benchmark``
is not re-imported).
"""
from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.util  # noqa: F401 - registers its atexit hook before ours (see _shutdown_all)
import os
import socket
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Optional, Sequence

from .executors import TERM_GRACE_S, CommandSpec, ExecResult, _Procs, execute_command, thread_share_env
from .pool_worker import _worker_main, python_call

#: Seconds between two looks at a busy worker (its result, its RSS, the stop flag).
POLL_S = 0.5
#: Seconds a worker may take to exit after being asked to (close, recycle) before SIGTERM/SIGKILL.
EXIT_WAIT_S = 5.0
START_METHODS = ("spawn", "forkserver")
MIB = 1 << 20


def rss_mb(pid: int) -> float:
    """Resident set size of process ``pid`` in MiB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB
    except FileNotFoundError:
        if not os.path.isdir("/proc"):
            try:
                import psutil

                return psutil.Process(pid).memory_info().rss / MIB
            except Exception:  # noqa: BLE001 - gone, or no psutil
                return 0.0
        return 0.0
    except (OSError, ValueError, IndexError):
        return 0.0


def default_max_rss_mb(workers: int) -> int:
    """Total RAM / (2 x workers), in MiB: half the machine shared by the workers."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        import psutil

        total = psutil.virtual_memory().total
    return max(1, int(total // MIB // (2 * max(1, workers))))


# --- the parent side ----------------------------------------------------------------------------

class _Worker:
    """Parent-side handle of one worker process: its pipe, pid and job count."""

    def __init__(self, ctx, env: dict[str, str], preload: list[str], name: str) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, env, preload), name=name)
        self.proc.start()
        child.close()
        self.jobs = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.is_alive()

    def rss_mb(self) -> float:
        return rss_mb(self.proc.pid)

    def exitcode(self) -> int:
        """Wait for the (dead or killed) process; its exit code (-N: killed by signal N)."""
        self.proc.join()
        return self.proc.exitcode

    def reap(self) -> None:
        """Forget a dead (or misbehaving) worker: kill it if it still runs, wait for it, close the pipe."""
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()
        self.conn.close()

    def ask_exit(self) -> None:
        """Tell an idle worker to exit (it finishes its loop; :meth:`stop` reaps it)."""
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass

    def stop(self, wait_s: float = EXIT_WAIT_S) -> None:
        """Ask it to exit and wait ``wait_s``; then SIGTERM, then SIGKILL."""
        self.ask_exit()
        self.proc.join(wait_s)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(TERM_GRACE_S)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


_LIVE: "set[PoolExecutor]" = set()


def _shutdown_all() -> None:
    """At interpreter exit: stop workers of executors nobody closed (multiprocessing's own exit
    hook, registered earlier so it runs later, would otherwise wait for them forever)."""
    for executor in list(_LIVE):
        executor.close()


atexit.register(_shutdown_all)


class PoolExecutor:
    """Persistent worker processes on this machine: ``n_jobs`` slots, or ``jobs_per_gpu`` slots
    per GPU (``CUDA_VISIBLE_DEVICES`` per worker). Same :class:`~benchmark.executors.Executor`
    protocol as :class:`~benchmark.executors.LocalExecutor`.

    ``max_rss_mb``: a worker above it is killed (during a job: the job fails) or recycled (after
    one); None: :func:`default_max_rss_mb`; 0: no limit. ``max_jobs_per_worker``: recycle a worker
    after that many jobs (0: never). ``preload``: modules every worker imports when it starts.
    ``env``: base environment (default: this process's) on which the thread shares are set.
    """

    def __init__(self, n_jobs: int = 1, gpus: Optional[list[str]] = None, jobs_per_gpu: int = 1,
                 env: Optional[Mapping[str, str]] = None, *, max_rss_mb: Optional[float] = None,
                 max_jobs_per_worker: int = 0, preload: Optional[Sequence[str]] = None,
                 start_method: str = "spawn", poll_s: float = POLL_S) -> None:
        if start_method not in START_METHODS:
            raise ValueError(f"start_method: expected one of {START_METHODS}; got {start_method!r}")
        if (max_rss_mb is not None and max_rss_mb < 0) or max_jobs_per_worker < 0:
            raise ValueError("max_rss_mb and max_jobs_per_worker must be >= 0")
        if gpus:
            slots: list[Optional[str]] = [g for _ in range(max(1, jobs_per_gpu)) for g in gpus]
        else:
            slots = [None] * max(1, n_jobs)
        self.gpus = list(gpus or [])
        self._gpu_of = slots
        self._workers: list[Optional[_Worker]] = [None] * len(slots)
        self._free: deque[int] = deque(reversed(range(len(slots))))  # a stack: reuse warm workers
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._started = False
        self._retiring: list[_Worker] = []  # recycled workers on their way out
        self.base_env = thread_share_env(len(slots), env)
        self.max_rss_mb = default_max_rss_mb(len(slots)) if max_rss_mb is None else max_rss_mb
        self.max_jobs_per_worker = int(max_jobs_per_worker)
        self.preload = list(preload or [])
        self.poll_s = poll_s
        self._ctx = multiprocessing.get_context(start_method)
        self._procs = _Procs()
        self._stopped = threading.Event()
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=len(slots), thread_name_prefix="bench-pool")
        self.spawned = 0  # workers started so far (replacements included)
        self.job_pids: dict[str, int] = {}  # job id -> pid of the worker that ran it (in-process jobs)

    # -- Executor protocol --

    def capacity(self) -> int:
        return len(self._workers)

    def describe(self) -> str:
        where = f" on GPU(s) {','.join(self.gpus)}" if self.gpus else ""
        rss = f"max RSS {self.max_rss_mb:.0f} MiB each" if self.max_rss_mb else "no RSS limit"
        jobs = f", recycled every {self.max_jobs_per_worker} job(s)" if self.max_jobs_per_worker else ""
        pre = f", preload {','.join(self.preload)}" if self.preload else ""
        return f"pool, {len(self._workers)} persistent worker(s){where} ({rss}{jobs}{pre})"

    def submit(self, spec: CommandSpec) -> tuple[Future, Optional[str]]:
        if self._closed:
            raise RuntimeError("PoolExecutor: submit after close")
        with self._lock:
            if not self._free:
                raise RuntimeError(f"PoolExecutor: more than {len(self._workers)} commands submitted at once")
            slot = self._free.pop()
        try:
            if not self._stopped.is_set():
                self._start_all()
        except BaseException:
            with self._lock:
                self._free.append(slot)
            raise
        spec = replace(spec, cwd=spec.cwd or os.getcwd())  # the runner's cwd now, as a subprocess gets it
        gpu = self._gpu_of[slot]

        def task() -> ExecResult:
            try:
                if self._stopped.is_set():
                    return ExecResult.not_started("interrupted before it started")
                return replace(self._run(slot, spec), slot=gpu)
            finally:  # free the slot before the future completes: the runner may submit at once
                with self._lock:
                    self._free.append(slot)

        return self._pool.submit(task), (f"gpu {gpu}" if gpu is not None else None)

    def interrupt(self) -> None:
        """Busy workers get SIGTERM within ``poll_s`` (SIGKILL after TERM_GRACE_S); subprocess
        fallbacks are terminated; queued submissions do not start."""
        self._stopped.set()
        self._procs.terminate_all()

    def close(self) -> None:
        """Wait for running jobs, then stop every worker."""
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True)
        for w in [*self._workers, *self._retiring]:
            if w is not None:
                w.stop()
        self._workers = [None] * len(self._workers)
        self._retiring.clear()
        _LIVE.discard(self)

    # -- workers --

    def worker_pids(self) -> list[int]:
        """Pids of the live workers (at most ``capacity()``)."""
        return [w.pid for w in self._workers if w is not None and w.alive()]

    def _spawn(self, slot: int) -> _Worker:
        env = dict(self.base_env)
        if self._gpu_of[slot] is not None:
            env["CUDA_VISIBLE_DEVICES"] = self._gpu_of[slot]
        w = _Worker(self._ctx, env, self.preload, name=f"bench-pool-{slot}")
        self._workers[slot] = w
        with self._lock:
            self.spawned += 1
            for old in [r for r in self._retiring if not r.alive()]:  # is_alive() reaps
                old.conn.close()
                self._retiring.remove(old)
        _LIVE.add(self)
        return w

    def _start_all(self) -> None:
        """Spawn every worker the first time a job is submitted (they import in parallel)."""
        with self._start_lock:
            if not self._started:
                for slot in range(len(self._workers)):
                    self._spawn(slot)
                self._started = True

    def _replace(self, slot: int, dead: bool = False) -> None:
        """Retire the slot's worker (``dead``: reaped now; else told to exit and reaped later) and
        start a fresh one, unless the executor is interrupted or closed."""
        old = self._workers[slot]
        self._workers[slot] = None
        if old is not None:
            if dead:
                old.reap()
            else:
                old.ask_exit()
                with self._lock:
                    self._retiring.append(old)
        if not (self._stopped.is_set() or self._closed):
            self._spawn(slot)

    # -- one job --

    def _run(self, slot: int, spec: CommandSpec) -> ExecResult:
        """Run ``spec`` on the slot's worker (or as a subprocess if it is not a Python call)."""
        host = socket.gethostname()
        if not os.path.isdir(spec.cwd):
            return ExecResult.not_started(f"working directory {spec.cwd} does not exist on {host}", host)
        call = python_call(spec.argv, spec.cwd)
        if call is None:
            gpu = self._gpu_of[slot]
            sub = spec if gpu is None else replace(spec, env={**spec.env, "CUDA_VISIBLE_DEVICES": gpu})
            return execute_command(sub, base_env=self.base_env, on_spawn=self._procs.add,
                                   on_exit=self._procs.discard)
        log = Path(spec.log)
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("ab") as fh:
                offset = fh.tell()
                fh.write(spec.header.encode())
        except OSError as exc:
            return ExecResult.not_started(f"cannot open the log {log} on {host}: {exc}", host)
        payload = {"call": call, "env": dict(spec.env), "cwd": spec.cwd, "log": str(log.absolute())}
        start = time.time()
        rc, error = self._drive(slot, payload, spec.job_id)
        if error:
            with log.open("ab") as fh:
                fh.write(f"\n=== benchmark pool: {error}\n".encode())
        return ExecResult(rc, start, time.time(), offset, error, host)

    def _send(self, slot: int, payload: dict) -> _Worker:
        """Hand ``payload`` to the slot's worker; a worker that died while idle is replaced once."""
        for attempt in range(2):
            w = self._workers[slot]
            if w is None or not w.alive():
                self._replace(slot, dead=True)
                w = self._workers[slot]
                if w is None:
                    raise RuntimeError("interrupted")
            try:
                w.conn.send(payload)
                return w
            except (OSError, ValueError):
                if attempt:
                    raise
                self._replace(slot, dead=True)
        raise AssertionError("unreachable")

    def _drive(self, slot: int, payload: dict, job_id: str) -> tuple[Optional[int], str]:
        """(exit code, error) of one in-process job; watches the worker until it answers or dies."""
        try:
            w = self._send(slot, payload)
        except Exception as exc:  # noqa: BLE001 - cannot start a worker
            return None, f"cannot start a pool worker: {type(exc).__name__}: {exc}"
        self.job_pids[job_id] = w.pid
        error, term_at = "", None
        while True:
            if w.conn.poll(self.poll_s):
                try:
                    rc = w.conn.recv()
                except (EOFError, OSError):  # died mid-job: its exit code is the job's
                    break
                w.jobs += 1
                self._after_job(slot, w)
                return rc, ""
            if not w.alive():
                break
            if self._stopped.is_set():
                if term_at is None:
                    w.proc.terminate()
                    term_at = time.monotonic()
                elif time.monotonic() - term_at > TERM_GRACE_S:
                    w.proc.kill()
            elif self.max_rss_mb and (rss := w.rss_mb()) > self.max_rss_mb:
                w.proc.kill()
                error = f"worker exceeded {rss:.0f} MiB RSS (limit {self.max_rss_mb:.0f} MiB)"
        rc = w.exitcode()
        self._replace(slot, dead=True)
        return rc, error

    def _after_job(self, slot: int, w: _Worker) -> None:
        """Recycle a worker that ran its quota of jobs or grew past the RSS limit."""
        if ((self.max_jobs_per_worker and w.jobs >= self.max_jobs_per_worker)
                or (self.max_rss_mb and w.rss_mb() > self.max_rss_mb)):
            self._replace(slot)
