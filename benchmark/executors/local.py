"""Local slots: threads on this machine, one subprocess per slot (``n_jobs`` slots, or
``len(gpus) * jobs_per_gpu`` slots whose jobs get ``CUDA_VISIBLE_DEVICES`` of their GPU)."""
from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Mapping, Optional

from .command import CommandSpec, ExecResult, _Procs, execute_command, thread_share_env


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
