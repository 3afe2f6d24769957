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
import ctypes
import functools
import gc
import importlib
import importlib.util
import io
import logging
import multiprocessing
import multiprocessing.util  # noqa: F401 - registers its atexit hook before ours (see _shutdown_all)
import os
import re
import runpy
import signal
import socket
import sys
import threading
import time
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

from .executors import TERM_GRACE_S, CommandSpec, ExecResult, _Procs, execute_command, thread_share_env

#: Seconds between two looks at a busy worker (its result, its RSS, the stop flag).
POLL_S = 0.5
#: Seconds a worker may take to exit after being asked to (close, recycle) before SIGTERM/SIGKILL.
EXIT_WAIT_S = 5.0
#: ``python``, ``python3``, ``python3.11``: interpreter basenames run in-process.
PYTHON_NAME = re.compile(r"python[0-9.]*")
#: Interpreter options accepted before ``-m``/the script (no effect in an unbuffered worker).
IGNORED_PYTHON_OPTIONS = ("-u",)
#: Signals whose handlers a job may change; restored after it.
RESTORED_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")
                         if hasattr(signal, n))
#: runpy warns when the module it runs as __main__ is also imported: expected with preloading.
_RUNPY_PRELOADED = r".* found in sys\.modules after import of package .*"
#: ``if __name__ == "__main__":`` at the start of a line: a module safe to import before running it.
MAIN_GUARD = re.compile(r"""^if\s+__name__\s*==\s*["']__main__["']\s*:""", re.MULTILINE)
START_METHODS = ("spawn", "forkserver")
MIB = 1 << 20


# --- what a job is ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PythonCall:
    """An argv that a worker runs in-process: ``kind`` "module" (``target`` = dotted name) or
    "script" (``target`` = path as given); ``args`` = ``sys.argv[1:]`` of the job."""

    kind: str
    target: str
    args: tuple[str, ...]


def is_python(argv0: str) -> bool:
    """Is ``argv0`` this interpreter? ``sys.executable``, a bare ``python*`` name (PATH), or a
    ``python*`` in ``sys.executable``'s directory (``.venv/bin/python3``). Another venv's or a
    system Python is not: its packages may differ, so it runs as a subprocess."""
    if not argv0:
        return False
    if os.path.abspath(argv0) == os.path.abspath(sys.executable):
        return True
    if not PYTHON_NAME.fullmatch(os.path.basename(argv0)):
        return False
    return os.sep not in argv0 or os.path.dirname(os.path.abspath(argv0)) == os.path.dirname(
        os.path.abspath(sys.executable))


def python_call(argv: Sequence[str], cwd: Optional[str] = None) -> Optional[PythonCall]:
    """The :class:`PythonCall` of ``argv``, or None when it must run as a subprocess (not this
    Python; an unsupported option; no module/script; a script that is not a regular file)."""
    if len(argv) < 2 or not is_python(argv[0]):
        return None
    rest = list(argv[1:])
    while rest and rest[0] in IGNORED_PYTHON_OPTIONS:
        rest.pop(0)
    if not rest:
        return None
    if rest[0] == "-m":
        return PythonCall("module", rest[1], tuple(rest[2:])) if len(rest) > 1 and rest[1] else None
    if rest[0].startswith("-"):
        return None
    script = rest[0] if cwd is None else os.path.join(cwd, rest[0])
    return PythonCall("script", rest[0], tuple(rest[1:])) if os.path.isfile(script) else None


def has_main_guard(module: str) -> bool:
    """May ``module`` be imported before it runs as ``__main__``? Only a plain ``.py`` module
    whose source has an ``if __name__ == "__main__":`` guard: importing one without a guard would
    run the job's body an extra time, under the wrong ``__name__``; a package runs its
    ``__main__`` submodule (runpy imports the package itself). Imports the parent packages."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, AttributeError, TypeError, ValueError):
        return False
    if spec is None or spec.submodule_search_locations is not None or not (spec.origin or "").endswith(".py"):
        return False
    try:
        source = Path(spec.origin).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return MAIN_GUARD.search(source) is not None


def exit_code(code: Any) -> int:
    """The process exit status ``SystemExit(code)`` gives: None -> 0, an int -> ``code & 0xFF``;
    anything else is printed to stderr (as Python does) -> 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


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


# --- the worker process -------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _libc() -> Any:
    """This process's C library (``fflush``, ``malloc_trim``); a stub where there is none."""
    try:
        return ctypes.CDLL(None)
    except OSError:
        return object()


def _flush_output() -> None:
    """Flush Python's and C's stdio buffers into the current fds 1/2."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    try:
        _libc().fflush(None)
    except AttributeError:
        pass


@contextmanager
def _output_to(log: str) -> Iterator[None]:
    """fds 1 and 2 append to ``log`` inside the block; restored after."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    _flush_output()
    saved = (os.dup(1), os.dup(2))
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        _flush_output()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (*saved, fd):
            os.close(f)


def _unbuffered_stdio() -> None:
    """sys.stdout/stderr write straight to fds 1/2 (as with PYTHONUNBUFFERED, which the runner
    sets for every job), so Python and C output interleave in the log as in a subprocess."""
    for name, fd in (("stdout", 1), ("stderr", 2)):
        old = getattr(sys, name)
        setattr(sys, name, io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), write_through=True,
                                            encoding=getattr(old, "encoding", None) or "utf-8",
                                            errors=getattr(old, "errors", None) or "strict"))


def _print_uncaught(exc: BaseException) -> None:
    """Print ``exc`` as the interpreter prints an uncaught exception (``sys.excepthook``),
    without the worker's own frame."""
    tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
    exc = exc.with_traceback(tb)
    sys.excepthook(type(exc), exc, tb)


@dataclass(frozen=True)
class _TorchDefaults:
    threads: int
    dtype: Any
    grad: bool
    deterministic: bool
    cudnn: tuple[bool, bool]  # benchmark, deterministic


def _torch_state(torch) -> _TorchDefaults:
    return _TorchDefaults(torch.get_num_threads(), torch.get_default_dtype(), torch.is_grad_enabled(),
                          torch.are_deterministic_algorithms_enabled(),
                          (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic))


class _WorkerState:
    """Worker side: runs one job at a time in this process and puts back what jobs may change."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.base_path = list(sys.path[1:])  # the worker's sys.path minus the runner's [0]
        self.imported: set[str] = set()
        self.torch0: Optional[_TorchDefaults] = None

    def note_torch(self, fresh: bool = True) -> None:
        """Remember torch's initial settings the first time it is imported. ``fresh=False``: it
        was imported inside a job, which may have changed them; a fresh process's are used
        (threads from OMP_NUM_THREADS, float32, grad on, nothing deterministic)."""
        torch = sys.modules.get("torch")
        if torch is None or self.torch0 is not None or not hasattr(torch, "get_num_threads"):
            return
        state = _torch_state(torch)
        if not fresh:
            threads = self.env.get("OMP_NUM_THREADS", "")
            state = _TorchDefaults(int(threads) if threads.isdigit() and int(threads) > 0 else state.threads,
                                   torch.float32, True, False, (False, False))
        self.torch0 = state

    def preload(self, module: str) -> None:
        importlib.import_module(module)
        self.imported.add(module)
        self.note_torch()

    def run(self, job: dict) -> int:
        """Run one job; its exit code. Never raises for the job's own errors.

        ``job``: ``{"call": PythonCall, "env": spec.env, "cwd": str, "log": absolute path}``.
        """
        call: PythonCall = job["call"]
        with _output_to(job["log"]), self._isolated(job):
            signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C interrupts the job
            try:
                if call.kind == "module":
                    if call.target not in self.imported and has_main_guard(call.target):
                        importlib.import_module(call.target)  # its imports, once per worker
                        self.imported.add(call.target)
                        self.note_torch()
                    runpy.run_module(call.target, run_name="__main__", alter_sys=True)
                else:  # absolute: __file__ of a script is absolute since Python 3.9
                    runpy.run_path(os.path.abspath(call.target), run_name="__main__")
                return 0
            except SystemExit as exc:
                return exit_code(exc.code)
            except KeyboardInterrupt as exc:
                _print_uncaught(exc)
                return -signal.SIGINT
            except BaseException as exc:  # noqa: BLE001 - the job's uncaught exception
                _print_uncaught(exc)
                return 1
            finally:
                signal.signal(signal.SIGINT, signal.SIG_IGN)

    @contextmanager
    def _isolated(self, job: dict) -> Iterator[None]:
        """The job's argv, environment, cwd and sys.path; every per-process setting put back after."""
        call: PythonCall = job["call"]
        cwd0, argv0, path0 = os.getcwd(), list(sys.argv), list(sys.path)
        main0, hook0, limit0 = sys.modules.get("__main__"), sys.excepthook, sys.getrecursionlimit()
        stdio0, umask0 = (sys.stdout, sys.stderr, sys.stdin), os.umask(0o022)
        os.umask(umask0)
        signals0 = {s: signal.getsignal(s) for s in RESTORED_SIGNALS}
        root = logging.getLogger()
        log0 = (list(root.handlers), root.level)
        np_err0 = sys.modules["numpy"].geterr() if "numpy" in sys.modules else None
        with warnings.catch_warnings():
            warnings.onceregistry.clear()
            warnings.filterwarnings("ignore", _RUNPY_PRELOADED, RuntimeWarning)
            try:
                os.environ.update(job["env"])
                os.chdir(job["cwd"])
                if call.kind == "module":
                    sys.argv = ["-m", *call.args]  # runpy sets [0] to the module's file, as python does
                    sys.path[:] = [os.getcwd(), *self.base_path]
                else:
                    sys.argv = [call.target, *call.args]
                    sys.path[:] = [os.path.dirname(os.path.realpath(call.target)), *self.base_path]
                yield
            finally:
                _flush_output()
                sys.stdout, sys.stderr, sys.stdin = stdio0
                if sys.stdout.closed or sys.stderr.closed:  # the job closed them
                    _unbuffered_stdio()
                os.umask(umask0)
                sys.argv, sys.path[:] = argv0, path0
                if main0 is not None:
                    sys.modules["__main__"] = main0
                sys.excepthook = hook0
                sys.setrecursionlimit(limit0)
                for s, h in signals0.items():
                    if h is not None:
                        signal.signal(s, h)
                root.handlers[:] = log0[0]
                root.setLevel(log0[1])
                os.chdir(cwd0)
                os.environ.clear()
                os.environ.update(self.env)
                self._reset_libraries(np_err0)

    def _reset_libraries(self, np_err0: Optional[dict]) -> None:
        """numpy error state, torch settings, matplotlib figures and rcParams; free memory."""
        np = sys.modules.get("numpy")
        if np is not None:
            np.seterr(**(np_err0 or {"divide": "warn", "over": "warn", "under": "ignore", "invalid": "warn"}))
        torch = sys.modules.get("torch")
        if torch is not None and hasattr(torch, "get_num_threads"):
            self.note_torch(fresh=False)
            d = self.torch0
            if torch.get_num_threads() != d.threads:
                torch.set_num_threads(d.threads)
            if torch.get_default_dtype() != d.dtype:
                torch.set_default_dtype(d.dtype)
            torch.set_grad_enabled(d.grad)
            if torch.are_deterministic_algorithms_enabled() != d.deterministic:
                torch.use_deterministic_algorithms(d.deterministic)
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = d.cudnn
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")
        if "matplotlib" in sys.modules:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sys.modules["matplotlib"].rc_file_defaults()
        # Free the job's garbage, then freeze the survivors (imported modules, their state): later
        # collections scan only what later jobs allocate (a full one takes ~0.1 s with torch loaded).
        gc.collect()
        gc.freeze()
        try:
            _libc().malloc_trim(0)  # hand freed heap back to the OS: the RSS the parent watches
        except AttributeError:
            pass


def _worker_main(conn, env: dict[str, str], preload: list[str]) -> None:
    """A worker's life: take the environment, import ``preload``, then run jobs sent on ``conn``
    (a dict each; None or EOF ends it) and answer each with its exit code."""
    os.environ.clear()
    os.environ.update(env)  # before anything imports numpy/torch: thread counts, CUDA devices
    early = [m for m in ("numpy", "torch") if m in sys.modules]
    if early:  # the runner's main script, re-imported by spawn, imported them: too late for env
        print(f"benchmark pool worker {os.getpid()}: {', '.join(early)} imported before the worker "
              "set its environment (by the runner's main script?); thread counts may differ from "
              "a subprocess slot's", file=sys.stderr)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the runner; it stops us
    _unbuffered_stdio()
    state = _WorkerState(env)
    for module in preload:
        try:
            state.preload(module)
        except BaseException as exc:  # noqa: BLE001 - a job importing it will report it in its log
            print(f"benchmark pool worker {os.getpid()}: --preload {module}: cannot import: "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):  # the runner is gone
            return
        if job is None:
            return
        rc = state.run(job)
        try:
            conn.send(rc)
        except (OSError, ValueError):
            return


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
