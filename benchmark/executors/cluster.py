"""Cluster configuration: ``--cluster local|pbs|slurm [--cluster-config FILE] [--workers N]``
-> :class:`ClusterConfig` (checked keys, defaults) -> :func:`make_cluster` (a
``distributed.LocalCluster`` or a dask-jobqueue ``PBSCluster`` / ``SLURMCluster``)."""
from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .base import CLUSTER_EXTRA, ExecutorError, _import_distributed

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

    def where(self) -> str:
        """How error messages name this config: its file, else the flag."""
        return str(self.source) if self.source is not None else f"--cluster {self.kind}"

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
    from ..yamlio import load_yaml

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
    scaled to ``config.workers`` workers, each worker job accepted by the batch system (where it
    then queues). A refused submission raises :class:`ExecutorError` (see :func:`submit_workers`)."""
    if config.kind == "local":
        return _import_distributed().LocalCluster(**config.constructor_kwargs())
    cluster = jobqueue_cluster(config)
    submit_workers(cluster, config.workers, config.where())
    return cluster


def jobqueue_cluster(config: ClusterConfig):
    """The dask-jobqueue cluster of a ``pbs``/``slurm`` config, not scaled: its scheduler runs in
    this process and no batch job is submitted yet."""
    if config.kind not in _JOBQUEUE_CLASSES:
        raise ValueError(f"jobqueue_cluster: {config.kind} is not a batch-system cluster kind")
    cls = getattr(_import_jobqueue(config.kind), _JOBQUEUE_CLASSES[config.kind])
    try:
        return cls(**config.constructor_kwargs())
    except (TypeError, ValueError) as exc:
        raise ExecutorError(f"{config.where()}: {cls.__name__} rejected the config: {exc}") from None


def _import_jobqueue(kind: str):
    """``import dask_jobqueue``, keeping this process's SIGINT handler.

    dask-jobqueue 0.9 sets ``signal.signal(SIGINT, lambda *_: sys.exit())`` when imported (for
    its runner module): a Ctrl-C of the run then raised SystemExit(None), and the interrupted run
    exited 0 with its jobs neither recorded nor reported (seen on a real SLURM). The handler from
    before the import (Python's KeyboardInterrupt) is put back.
    """
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGINT) if main else None
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise ExecutorError(f"--cluster {kind} needs dask-jobqueue, which is not installed ({exc}); "
                            f"install it with: {CLUSTER_EXTRA}") from None
    finally:
        if main and before is not None and signal.getsignal(signal.SIGINT) is not before:
            signal.signal(signal.SIGINT, before)
    return dask_jobqueue


def job_script(config: ClusterConfig) -> str:
    """The batch script each worker job of a ``pbs``/``slurm`` config submits (``#PBS`` /
    ``#SBATCH`` lines, prologue, the ``dask_worker`` command), without submitting anything."""
    cluster = jobqueue_cluster(config)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


def submit_workers(cluster, n: int, where: str) -> None:
    """Scale ``cluster`` to ``n`` workers and wait until the batch system has accepted every
    worker job (not until it runs: that is the queue's business).

    ``cluster.scale`` alone submits in the background and only logs a refused ``sbatch``/``qsub``
    (unknown partition, too much memory, walltime over the limit): the run would then wait forever
    for workers that never come (seen on a real SLURM). The submission is awaited here instead and
    a refusal raises :class:`ExecutorError` with the batch system's own message (tornado's log of
    the same error is dropped: one message). A cluster without SpecCluster's ``_correct_state``
    (not a dask cluster) is only scaled.
    """
    correct_state = getattr(cluster, "_correct_state", None)
    if correct_state is None or not hasattr(cluster, "sync"):
        cluster.scale(n=n)
        return

    async def scale_and_submit() -> None:
        # In the event loop: scale() queues its own _correct_state call, which then finds and
        # shares the task created here; this coroutine resumes before tornado's callback logs.
        cluster.scale(n=n)
        try:
            await correct_state()  # submits the jobs; raises what the submit command said
        except Exception as exc:
            _REPORTED.append(exc)
            raise

    try:
        cluster.sync(scale_and_submit)
    except Exception as exc:  # noqa: BLE001 - dask-jobqueue raises RuntimeError with the output
        _close_refused(cluster)
        raise ExecutorError(f"{where}: the batch system refused the worker job: {_refusal(exc)}") from None


def _close_refused(cluster) -> None:
    """Close a cluster whose worker jobs were refused. Those jobs stay in status ``created``,
    which SpecCluster's close asserts against (leaving the cluster "closing", and the interpreter's
    exit then waits 10 s on it): they are marked failed first, as they are."""
    from distributed.core import Status

    for job in list(getattr(cluster, "_created", ())):
        if getattr(job, "job_id", "") is None and getattr(job, "status", None) == Status.created:
            job.status = Status.failed
    try:
        cluster.close()
    except Exception:  # noqa: BLE001 - the error worth reporting is the refusal
        pass


class _DropReported(logging.Filter):
    """Drops tornado's "Exception in callback" record of an error :func:`submit_workers` raised."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or not any(exc is seen for seen in _REPORTED)


#: Submission errors already raised as ExecutorError (kept, not their ids: ids are reused).
_REPORTED: list[BaseException] = []
logging.getLogger("tornado.application").addFilter(_DropReported())


def _refusal(exc: BaseException) -> str:
    """The batch system's words from dask-jobqueue's error (its stderr lines), on one line."""
    text = str(exc)
    tail = text.split("stderr:", 1)[1] if "stderr:" in text else text
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return "; ".join(lines) if lines else type(exc).__name__
