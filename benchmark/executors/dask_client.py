"""The dask executor: one dask task per command on a ``dask.distributed`` cluster (a running
scheduler ``tcp://host:port``, or a cluster :mod:`.cluster` starts). The client (this process)
keeps skip, locks, validation and MLflow; the workers only run :func:`run_on_worker`. Workers
must see the same filesystem paths as the client (results directory, suite inputs, interpreter).

dask is optional (``pip install '<distribution>[cluster]'``) and imported only when used.
"""
from __future__ import annotations

import os
import sys
import time
import uuid
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Optional

from .base import CLUSTER_EXTRA, ExecutorError, LazyExecutor, _import_distributed
from .cluster import ClusterConfig, make_cluster
from .command import THREAD_VARS, CommandSpec, ExecResult, execute_command, thread_share_env


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
