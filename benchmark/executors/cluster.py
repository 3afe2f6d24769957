"""Cluster configuration: ``--cluster local|pbs|slurm [--cluster-config FILE] [--workers N]``
-> :class:`ClusterConfig` (checked keys, defaults) -> :func:`make_cluster` (a
``distributed.LocalCluster`` or a dask-jobqueue ``PBSCluster`` / ``SLURMCluster``)."""
from __future__ import annotations

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
    scaled to ``config.workers`` workers (their jobs queue on the batch system)."""
    if config.kind == "local":
        return _import_distributed().LocalCluster(**config.constructor_kwargs())
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
