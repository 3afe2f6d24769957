"""The engine's reading of result JSONs: :func:`load_result` checks an envelope against its suite.

The envelope itself (fields, schema version, validation, flattening) is defined once in
:mod:`benchmark.envelope` and re-exported here. Programs write the envelope (atomically); the
engine only reads it. Nested metric dicts flatten with ``/`` (``near@0.05/mae``); baselines
flatten to ``baseline/<name>/<metric>``.
"""
from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Optional

from .envelope import BASELINE_PREFIX, SCHEMA_VERSION, Envelope, Provenance, flatten, read_envelope
from .errors import ResultError

__all__ = ["BASELINE_PREFIX", "SCHEMA_VERSION", "Envelope", "Provenance", "flatten", "load_result",
           "nonfinite_metrics", "is_valid_result", "move_aside", "finite"]


def load_result(path: Path | str, task: Optional[str] = None) -> Envelope:
    """Read and validate a result JSON; ``task`` (if given) must match. Raises ResultError."""
    path = Path(path)
    env = read_envelope(path)
    if task is not None and env.task != task:
        raise ResultError(f"{path}: task is {env.task!r} but the suite's task is {task!r}")
    bad = nonfinite_metrics(env) if _requires_finite(env.task) else []
    if bad:
        raise ResultError(f"{path}: " + "; ".join(f"metric {name!r} is {value}" for name, value in bad)
                          + f" (task {env.task!r} takes finite numbers only)")
    return env


def nonfinite_metrics(env: Envelope) -> list[tuple[str, float]]:
    """``(flattened name, value)`` of every NaN or infinite metric and baseline value."""
    return [(name, value) for name, value in env.flat().items() if not math.isfinite(value)]


def _requires_finite(task: str) -> bool:
    """Whether the registered kind ``task`` refuses non-finite metrics (:attr:`TaskKind.finite`)."""
    from .tasks import get_task

    try:
        return get_task(task).finite
    except KeyError:
        return False


def is_valid_result(path: Path, task: Optional[str] = None) -> bool:
    """True if ``path`` exists and holds a valid envelope (for ``task``)."""
    try:
        load_result(path, task)
    except ResultError:
        return False
    return True


def move_aside(path: Path, why: str = "invalid") -> Path:
    """Rename a result to ``<name>.<why>-<timestamp>`` (never deleted); return the new path."""
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.{why}-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.{why}-{stamp}-{n}")
        n += 1
    path.rename(target)
    return target


def finite(value: Optional[float]) -> bool:
    return value is not None and not math.isnan(value)
