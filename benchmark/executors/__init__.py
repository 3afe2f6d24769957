"""Executors: where a job's command runs. Everything else stays in the runner (the client).

The runner decides what runs (skips finished jobs, takes the lock, moves invalid or stale results
aside), hands an executor a :class:`CommandSpec` and judges the :class:`ExecResult` itself
(validation, ``<id>.job.json``, MLflow: one process, one writer). An executor only runs an argv
with an environment, appends its output to the job's log and reports exit code and timing.
One module per kind:

* :mod:`.command`: one command in a subprocess here (:func:`execute_command`), the unit of all.
* :mod:`.base`: the :class:`Executor` protocol, :class:`ExecutorError`, :class:`LazyExecutor`.
* :mod:`.local`: :class:`LocalExecutor`, threads on this machine, one subprocess per slot (``n_jobs``
  slots, or ``len(gpus) * jobs_per_gpu`` slots whose jobs get ``CUDA_VISIBLE_DEVICES``).
* :mod:`.dask_client`: :class:`DaskExecutor`, one dask task per command on a ``dask.distributed``
  cluster (a running scheduler, or a cluster from :mod:`.cluster`).
* :mod:`.cluster`: ``--cluster local|pbs|slurm`` YAML -> :class:`ClusterConfig` -> a
  ``LocalCluster`` or a dask-jobqueue ``PBSCluster`` / ``SLURMCluster`` (:func:`make_cluster`; the
  worker jobs' batch script: :func:`job_script`).

(The persistent in-process worker pool is :mod:`benchmark.pool`.) dask is optional
(``pip install '<distribution>[cluster]'``) and imported only by the dask code.
"""
from .base import CLUSTER_EXTRA, Executor, ExecutorError, LazyExecutor
from .cluster import (CLUSTER_DEFAULTS, CLUSTER_KEYS, CLUSTER_KINDS, ClusterConfig, job_script, jobqueue_cluster,
                      load_cluster_config, make_cluster, submit_workers)
from .command import (TERM_GRACE_S, THREAD_VARS, CommandSpec, ExecResult, _Procs, execute_command,
                      thread_share_env)
from .dask_client import DaskExecutor, dask_executor, require_distributed, run_on_worker
from .local import LocalExecutor

__all__ = ["CLUSTER_DEFAULTS", "CLUSTER_EXTRA", "CLUSTER_KEYS", "CLUSTER_KINDS", "ClusterConfig", "CommandSpec",
           "DaskExecutor", "ExecResult", "Executor", "ExecutorError", "LazyExecutor", "LocalExecutor",
           "TERM_GRACE_S", "THREAD_VARS", "dask_executor", "execute_command", "job_script", "jobqueue_cluster",
           "load_cluster_config", "make_cluster", "require_distributed", "run_on_worker", "submit_workers",
           "thread_share_env"]
