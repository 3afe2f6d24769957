"""The worker side of :mod:`benchmark.pool`: what a job is (a Python command line run in-process,
:func:`python_call`; its exit code, :func:`exit_code`) and the worker process that runs job after
job (:func:`_worker_main`): the job's output on its log, the interpreter state it may change
isolated and restored, library state reset, garbage frozen. The rules are in :mod:`benchmark.pool`.

Imported by each spawned worker: keep its top level free of numpy/torch (they are imported lazily).
"""
from __future__ import annotations

import ctypes
import functools
import gc
import importlib
import importlib.util
import io
import logging
import os
import re
import runpy
import signal
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

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

