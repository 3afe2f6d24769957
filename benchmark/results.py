"""The result JSON envelope (pydantic) and its flattening into one row of numbers.

Programs write the envelope (atomically); the engine only reads it. Nested metric dicts flatten
with ``/`` (``near@0.05/mae``); baselines flatten to ``baseline/<name>/<metric>``.
"""
from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .errors import ResultError

SCHEMA_VERSION = 1
BASELINE_PREFIX = "baseline"


def _check_numeric_tree(value: Any, where: str) -> None:
    if isinstance(value, dict):
        if not value:
            raise ValueError(f"{where}: expected numbers or nested mappings of numbers; got an empty mapping")
        for key, sub in value.items():
            if "/" in str(key):
                raise ValueError(f"{where}: metric name {key!r} must not contain '/' (used for nesting)")
            _check_numeric_tree(sub, f"{where}/{key}" if where else str(key))
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: expected a number; got {type(value).__name__} {value!r:.40}")


class Provenance(BaseModel):
    """Where a result came from. Extra keys are kept."""

    model_config = ConfigDict(extra="allow")
    git_rev: Optional[str]
    started: str
    wall_s: float
    dirty: Optional[bool] = None
    seed: Union[int, str, None] = None
    ckpt_sha256: Optional[str] = None
    versions: dict[str, Optional[str]] = {}
    device: Optional[str] = None


class Envelope(BaseModel):
    """Result JSON written by every job (``schema_version`` 1)."""

    model_config = ConfigDict(extra="allow")
    schema_version: Literal[1]
    task: str
    args: dict[str, Any]
    metrics: dict[str, Any]
    baselines: dict[str, dict[str, Any]] = {}
    flags: list[str] = []
    provenance: Provenance
    history: list[dict[str, Any]] = []   # per-epoch records {"epoch": e, name: value, ...}

    def history_series(self) -> dict[str, list[tuple[int, float]]]:
        """``{name: [(epoch, value), ...]}`` of the numeric, finite history entries."""
        out: dict[str, list[tuple[int, float]]] = {}
        for rec in self.history:
            step = rec.get("epoch")
            if not isinstance(step, int) or isinstance(step, bool):
                continue
            for k, v in rec.items():
                if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool) \
                        and math.isfinite(v):
                    out.setdefault(k, []).append((step, float(v)))
        return out

    @field_validator("metrics")
    @classmethod
    def _metrics_numeric(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError("expected at least one metric")
        _check_numeric_tree(value, "")
        return value

    @field_validator("baselines")
    @classmethod
    def _baselines_numeric(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, metrics in value.items():
            _check_numeric_tree(metrics, str(name))
        return value

    def flat(self) -> dict[str, float]:
        """Flattened metrics and baselines: ``{"mae": .., "near@0.05/mae": .., "baseline/nn/mae": ..}``."""
        out = flatten(self.metrics)
        for name, metrics in self.baselines.items():
            out.update(flatten(metrics, f"{BASELINE_PREFIX}/{name}"))
        return out


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested mapping of numbers -> ``{"a/b/c": float}``."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = float(value)
    return out


def _loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def load_result(path: Path | str, task: Optional[str] = None) -> Envelope:
    """Read and validate a result JSON; ``task`` (if given) must match. Raises ResultError."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultError(f"{path}: result JSON not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ResultError(f"{path}: expected a JSON object; got {type(data).__name__}")
    try:
        env = Envelope.model_validate(data)
    except ValidationError as exc:
        msgs = []
        for err in exc.errors(include_url=False):
            text = "required key is missing" if err["type"] == "missing" else err["msg"].removeprefix("Value error, ")
            msgs.append(f"{_loc(err['loc'])}: {text}")
        raise ResultError(f"{path}: invalid result envelope: " + "; ".join(msgs)) from None
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
