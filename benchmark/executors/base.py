"""What the runner needs from an executor (:class:`Executor`), its error type, and
:class:`LazyExecutor`, which builds an executor on first use."""
from __future__ import annotations

from concurrent.futures import Future
from typing import Callable, Optional, Protocol

from ..distribution import install_hint
from ..errors import SuiteError
from .command import CommandSpec

CLUSTER_EXTRA = install_hint("cluster")


class ExecutorError(SuiteError):
    """An executor cannot be set up (bad cluster config, missing package, no scheduler): exit 2."""


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


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise ExecutorError(f"--executor dask needs dask.distributed, which is not installed ({exc}); "
                            f"install it with: {CLUSTER_EXTRA}") from None
    return distributed
