"""Executors: where a job's command runs. Everything else stays in the runner (the client).

The runner decides what runs (skips finished jobs, takes the lock, moves invalid or stale results
aside), hands an executor a :class:`CommandSpec` and judges the :class:`ExecResult` itself
(validation, ``<id>.job.json``, MLflow: one process, one writer). An executor only runs an argv
with an environment, appends its output to the job's log and reports exit code and timing:

* :class:`LocalExecutor`: threads on this machine, one subprocess per slot: ``n_jobs`` slots, or
  ``len(gpus) * jobs_per_gpu`` slots whose jobs get ``CUDA_VISIBLE_DEVICES`` of their GPU.
* :class:`DaskExecutor`: one dask task per command on a ``dask.distributed`` cluster: a running
  scheduler (``--scheduler tcp://host:port``), a ``LocalCluster``, or a dask-jobqueue
  ``PBSCluster`` / ``SLURMCluster`` built from a YAML file of cluster kwargs. Workers must see
  the same filesystem paths as the client (results directory, suite inputs, the interpreter).

dask is optional (``pip install '<distribution>[cluster]'``) and imported only by the dask code.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Protocol

from .distribution import install_hint
from .errors import SuiteError

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
CLUSTER_EXTRA = install_hint("cluster")
#: Seconds a command may take to exit after SIGTERM on an interrupt before it is killed.
TERM_GRACE_S = 10.0


class ExecutorError(SuiteError):
    """An executor cannot be set up (bad cluster config, missing package, no scheduler): exit 2."""


# --- one command ----------------------------------------------------------------------------

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


# --- executors ------------------------------------------------------------------------------

class Executor(Protocol):
    """What the runner needs from an executor."""

    def capacity(self) -> int:
        """How many commands may be in flight now (the runner never submits more)."""

    def submit(self, spec: CommandSpec) -> tuple[Future, Optional[str]]:
        """Start ``spec``; return a future of its :class:`ExecResult` and where it runs (or None)."""

    def interrupt(self) -> None:
        """Terminate every running command (its future then completes) and start no new one."""

    def close(self) -> None:
        """Release threads, clients and clusters this executor owns."""

    def describe(self) -> str:
        """One line for the run's header."""


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


class LocalExecutor:
    """Subprocesses on this machine: ``n_jobs`` slots, or ``jobs_per_gpu`` slots per GPU."""

    def __init__(self, n_jobs: int = 1, gpus: Optional[list[str]] = None, jobs_per_gpu: int = 1,
                 env: Optional[Mapping[str, str]] = None) -> None:
        if gpus:
            slots: list[Optional[str]] = [g for _ in range(max(1, jobs_per_gpu)) for g in gpus]
        else:
            slots = [None] * max(1, n_jobs)
        self._slots = len(slots)
        self._free: deque[Optional[str]] = deque(slots)
        self._free_lock = threading.Lock()
        self.base_env = thread_share_env(self._slots, env)
        self._procs = _Procs()
        self._stopped = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=self._slots, thread_name_prefix="bench")
        self.gpus = list(gpus or [])

    def capacity(self) -> int:
        return self._slots

    def describe(self) -> str:
        if self.gpus:
            return f"local, {self._slots} slot(s) on GPU(s) {','.join(self.gpus)}"
        return f"local, {self._slots} slot(s)"

    def submit(self, spec: CommandSpec) -> tuple[Future, Optional[str]]:
        with self._free_lock:
            if not self._free:
                raise RuntimeError(f"LocalExecutor: more than {self._slots} commands submitted at once")
            slot = self._free.popleft()
        if slot is not None:
            spec = replace(spec, env={**spec.env, "CUDA_VISIBLE_DEVICES": slot})

        def task() -> ExecResult:
            try:
                if self._stopped.is_set():
                    return ExecResult.not_started("interrupted before it started")
                result = execute_command(spec, base_env=self.base_env, on_spawn=self._procs.add,
                                         on_exit=self._procs.discard)
                return replace(result, slot=slot)
            finally:  # free the slot before the future completes: the runner may submit at once
                with self._free_lock:
                    self._free.append(slot)

        return self._pool.submit(task), (f"gpu {slot}" if slot is not None else None)

    def interrupt(self) -> None:
        self._stopped.set()
        self._procs.terminate_all()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class _StopFlag:
    """Worker side: is the client's stop event set? (created lazily: short commands never ask)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._event = None

    def __call__(self) -> bool:
        try:
            if self._event is None:
                from distributed import Event

                self._event = Event(self.name)
            return bool(self._event.is_set())
        except Exception:  # noqa: BLE001 - a scheduler hiccup must not kill the job
            return False


def run_on_worker(spec: CommandSpec, stop_event: str, poll_s: float = 1.0) -> ExecResult:
    """The dask task: run ``spec`` on this worker, stopping it if the client sets ``stop_event``."""
    return execute_command(spec, should_stop=_StopFlag(stop_event), poll_s=poll_s)


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise ExecutorError(f"--executor dask needs dask.distributed, which is not installed ({exc}); "
                            f"install it with: {CLUSTER_EXTRA}") from None
    return distributed


class DaskExecutor:
    """One dask task per command; the client (this process) keeps locks, validation and MLflow."""

    def __init__(self, client, cluster=None, *, env: Optional[Mapping[str, str]] = None,
                 poll_s: float = 1.0, owns_client: bool = True, label: str = "") -> None:
        distributed = _import_distributed()
        self.client = client
        self.cluster = cluster
        self.env = dict(env or {})
        self.poll_s = poll_s
        self.owns_client = owns_client
        self.label = label or "dask"
        self._stop_name = f"benchmark-stop-{uuid.uuid4().hex}"
        self._stop = distributed.Event(self._stop_name, client=client)
        self._futures: set = set()
        self._cap = (0.0, 1)

    @classmethod
    def connect(cls, address: str, *, timeout: float = 30.0, **kw) -> "DaskExecutor":
        """Client of a running scheduler (``tcp://host:port``)."""
        distributed = _import_distributed()
        try:
            client = distributed.Client(address, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise ExecutorError(f"--scheduler {address}: cannot connect: {exc}") from None
        return cls(client, label=f"dask scheduler {address}", **kw)

    @classmethod
    def from_config(cls, config: "ClusterConfig", **kw) -> "DaskExecutor":
        """Start the cluster ``config`` describes (LocalCluster, PBSCluster, SLURMCluster)."""
        distributed = _import_distributed()
        cluster = make_cluster(config)
        try:
            client = distributed.Client(cluster)
        except Exception:
            cluster.close()
            raise
        env = dict(kw.pop("env", None) or {})
        if config.kind == "local":  # the workers share this machine's cores
            threads = int(config.kwargs.get("threads_per_worker") or 1) * config.workers
            env = {**{k: v for k, v in thread_share_env(threads, {}).items()
                      if k in THREAD_VARS and k not in os.environ}, **env}
        return cls(client, cluster, env=env, label=f"dask {config.describe()}", **kw)

    def capacity(self) -> int:
        """Total worker threads now (re-read at most every 2 s: clusters scale); at least 1."""
        now = time.monotonic()
        if now - self._cap[0] > 2.0:
            try:
                n = sum(self.client.nthreads().values())
            except Exception:  # noqa: BLE001 - keep the last known value
                n = self._cap[1]
            self._cap = (now, max(1, n))
        return self._cap[1]

    def describe(self) -> str:
        return f"{self.label} ({self.capacity()} worker thread(s) now)"

    def submit(self, spec: CommandSpec) -> tuple[Future, Optional[str]]:
        argv = list(spec.argv)
        spec = replace(spec, log=str(Path(spec.log).absolute()), cwd=spec.cwd or os.getcwd(),
                       python_argv0=bool(argv) and argv[0] == sys.executable,
                       env={**self.env, **spec.env})
        out: Future = Future()
        dfut = self.client.submit(run_on_worker, spec, self._stop_name, self.poll_s, pure=False,
                                  key=f"benchmark-{spec.job_id}-{uuid.uuid4().hex[:8]}", retries=0)
        self._futures.add(dfut)

        def done(f) -> None:
            self._futures.discard(f)
            try:
                out.set_result(f.result())
            except BaseException as exc:  # noqa: BLE001 - cancelled, worker lost, ...
                out.set_exception(exc)

        dfut.add_done_callback(done)
        return out, None

    def interrupt(self) -> None:
        """Set the stop event (running commands terminate within ``poll_s``); queued tasks that
        start later see it and do not launch."""
        try:
            self._stop.set()
        except Exception:  # noqa: BLE001
            pass

    def close(self) -> None:
        if self._futures:
            try:
                self.client.cancel(list(self._futures))
            except Exception:  # noqa: BLE001
                pass
        if self.owns_client:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


class LazyExecutor:
    """Builds its executor on first use, so a run whose jobs are all finished starts no cluster
    (and submits no batch jobs). Problems with the executor surface at that first use."""

    def __init__(self, factory: Callable[[], Executor], label: str) -> None:
        self._factory = factory
        self.label = label
        self._executor: Optional[Executor] = None

    @property
    def started(self) -> bool:
        return self._executor is not None

    def _get(self) -> Executor:
        if self._executor is None:
            self._executor = self._factory()
        return self._executor

    def capacity(self) -> int:
        return self._get().capacity()

    def submit(self, spec: CommandSpec) -> tuple[Future, Optional[str]]:
        return self._get().submit(spec)

    def describe(self) -> str:
        return self._executor.describe() if self._executor is not None else f"{self.label} (started on demand)"

    def interrupt(self) -> None:
        if self._executor is not None:
            self._executor.interrupt()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.close()


def require_distributed() -> None:
    """Fail early (without importing it: slow) if dask.distributed is not installed."""
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        raise ExecutorError("--executor dask needs dask.distributed, which is not installed; "
                            f"install it with: {CLUSTER_EXTRA}")


def dask_executor(scheduler: Optional[str] = None, config: Optional["ClusterConfig"] = None) -> LazyExecutor:
    """A lazily started :class:`DaskExecutor` for a scheduler address or a cluster config."""
    require_distributed()
    if (scheduler is None) == (config is None):
        raise ValueError("dask_executor: expected exactly one of scheduler or config")
    if scheduler is not None:
        return LazyExecutor(lambda: DaskExecutor.connect(scheduler), f"dask scheduler {scheduler}")
    return LazyExecutor(lambda: DaskExecutor.from_config(config), f"dask {config.describe()}")


# --- cluster configuration ------------------------------------------------------------------

CLUSTER_KINDS = ("local", "pbs", "slurm")

_JOBQUEUE_KEYS = frozenset({
    "cores", "memory", "processes", "nanny", "interface", "protocol", "death_timeout",
    "local_directory", "worker_extra_args", "job_script_prologue", "job_directives_skip",
    "log_directory", "shebang", "python", "job_name", "job_extra_directives", "walltime", "queue",
    "account", "scheduler_options", "shared_temp_directory", "silence_logs", "config_name"})
CLUSTER_KEYS: dict[str, frozenset[str]] = {
    "local": frozenset({"threads_per_worker", "processes", "memory_limit", "dashboard_address", "host",
                        "scheduler_port", "silence_logs", "local_directory", "protocol", "interface"}),
    "pbs": _JOBQUEUE_KEYS | {"resource_spec", "project"},
    "slurm": _JOBQUEUE_KEYS | {"job_cpu", "job_mem"},
}
#: Defaults the YAML may override. A LocalCluster runs one single-threaded worker per job slot
#: in its own process (jobs are subprocesses anyway), HTTP server on a free port (not 8787).
CLUSTER_DEFAULTS: dict[str, dict[str, Any]] = {
    "local": {"processes": True, "threads_per_worker": 1, "dashboard_address": ":0"},
    "pbs": {},
    "slurm": {},
}
_JOBQUEUE_CLASSES = {"pbs": "PBSCluster", "slurm": "SLURMCluster"}


@dataclass(frozen=True)
class ClusterConfig:
    """A cluster to start: its kind, how many workers to scale to, and constructor kwargs."""

    kind: str
    workers: int
    kwargs: dict[str, Any]
    source: Optional[Path] = None

    def describe(self) -> str:
        where = f" from {self.source}" if self.source else ""
        return f"{self.kind} cluster, {self.workers} worker(s){where}"

    def constructor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the cluster class (LocalCluster gets ``n_workers`` too; a
        jobqueue cluster starts empty and is scaled to ``workers`` after construction)."""
        kwargs = dict(self.kwargs)
        if self.kind == "local":
            kwargs["n_workers"] = self.workers
        return kwargs


def load_cluster_config(kind: str, path: Path | str | None = None, workers: Optional[int] = None,
                        default_workers: int = 1) -> ClusterConfig:
    """Cluster config from ``--cluster KIND [--cluster-config FILE] [--workers N]``.

    FILE is a YAML mapping of the cluster class's kwargs plus ``workers: N``, the number of dask
    workers to scale to (``workers`` argument first, then the file's, then ``default_workers``).
    Unknown keys, and a PBS/SLURM config without ``cores`` and ``memory``, raise
    :class:`ExecutorError` naming the file and the key.
    """
    from .yamlio import load_yaml

    if kind not in CLUSTER_KINDS:
        raise ExecutorError(f"--cluster {kind}: expected one of: {', '.join(CLUSTER_KINDS)}")
    where = str(path) if path is not None else f"--cluster {kind}"
    raw: Any = {}
    if path is not None:
        raw = load_yaml(path, what="cluster config") or {}
        if not isinstance(raw, dict):
            raise ExecutorError(f"{path}: expected a mapping of cluster kwargs; got {type(raw).__name__}")
    raw = dict(raw)
    file_workers = raw.pop("workers", None)
    for key in raw:
        if key not in CLUSTER_KEYS[kind]:
            raise ExecutorError(f"{where}: {key}: unknown key for a {kind} cluster; expected `workers` or "
                                f"one of: {', '.join(sorted(CLUSTER_KEYS[kind]))}")
    for key in ("cores", "memory") if kind in _JOBQUEUE_CLASSES else ():
        if raw.get(key) in (None, ""):
            raise ExecutorError(f"{where}: {key}: required for a {kind} cluster (per-job {key}, e.g. "
                                f"{'cores: 8' if key == 'cores' else 'memory: 32GB'})")
    n = workers if workers is not None else file_workers
    if n is None:
        n = default_workers
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        src = "--workers" if workers is not None else f"{where}: workers"
        raise ExecutorError(f"{src}: expected an integer >= 1; got {n!r}")
    kwargs = {**CLUSTER_DEFAULTS[kind], **raw}
    return ClusterConfig(kind=kind, workers=n, kwargs=kwargs, source=Path(path) if path is not None else None)


def make_cluster(config: ClusterConfig):
    """Start the cluster: ``distributed.LocalCluster`` or ``dask_jobqueue.{PBS,SLURM}Cluster``
    scaled to ``config.workers`` workers (their jobs queue on the batch system)."""
    if config.kind == "local":
        distributed = _import_distributed()
        return distributed.LocalCluster(**config.constructor_kwargs())
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise ExecutorError(f"--cluster {config.kind} needs dask-jobqueue, which is not installed ({exc}); "
                            f"install it with: {CLUSTER_EXTRA}") from None
    cls = getattr(dask_jobqueue, _JOBQUEUE_CLASSES[config.kind])
    try:
        cluster = cls(**config.constructor_kwargs())
    except (TypeError, ValueError) as exc:
        where = config.source or f"--cluster {config.kind}"
        raise ExecutorError(f"{where}: {cls.__name__} rejected the config: {exc}") from None
    cluster.scale(n=config.workers)
    return cluster
