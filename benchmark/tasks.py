"""Task kinds: what a task's result metrics must satisfy and how its tables read.

A task kind is pure data plus small functions. The engine never branches on a task name: it asks
the registry. A new kind (another lab's external scorer, say) registers with one call::

    register_task(TaskKind(name="myscore", metrics=(MetricRule("score", min=0, max=1, required=True),),
                           default_metrics=("score",)))
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

Direction = Literal["min", "max"]

#: Direction of a metric when its task kind says nothing: matched (full match) against the last
#: ``/``-component of the flattened metric name; anything else is "higher is better".
DEFAULT_DIRECTIONS: tuple[tuple[str, Direction], ...] = (
    (r"mae|rmse|mse|chamfer.*|mean_rank|median_rank|.*loss.*|.*err(or)?.*|wall_s", "min"),
)


@dataclass(frozen=True)
class MetricRule:
    """Range of the metric column(s) named ``pattern`` (exact name, or a regex if ``regex``).

    Rules apply to the top-level metric and to the same metric under every baseline
    (``baseline/<name>/<metric>``); ``required`` applies to the top-level metric only.
    """

    pattern: str
    min: float | None = None
    max: float | None = None
    required: bool = False
    regex: bool = False

    def matches(self, name: str) -> bool:
        if self.regex:
            return re.fullmatch(self.pattern, name) is not None
        return name == self.pattern


@dataclass(frozen=True)
class RowCheck:
    """A check across columns of one result row, e.g. ``r@1 <= r@5 <= r@10``.

    ``fn`` receives one pandas Series per name in ``columns`` and returns a boolean Series. Rows
    where any of the columns is missing pass (absence is the job of ``MetricRule.required``).
    """

    name: str
    columns: tuple[str, ...]
    fn: Callable[..., Any]


@dataclass(frozen=True)
class Guard:
    """A protocol guard: raises ``flag`` on a result whose flattened metrics satisfy ``fires``.

    ``fires`` gets a mapping of flattened metric name -> float (missing metrics are absent).
    """

    flag: str
    fires: Callable[[Mapping[str, float]], bool]
    description: str = ""


@dataclass(frozen=True)
class TaskKind:
    """Everything the engine knows about one kind of task."""

    name: str
    description: str = ""
    metrics: tuple[MetricRule, ...] = ()
    row_checks: tuple[RowCheck, ...] = ()
    default_metrics: tuple[str, ...] = ()
    directions: tuple[tuple[str, Direction], ...] = ()
    guards: tuple[Guard, ...] = ()

    @property
    def required_metrics(self) -> tuple[str, ...]:
        return tuple(r.pattern for r in self.metrics if r.required and not r.regex)

    def direction(self, metric: str) -> Direction:
        """``"min"`` if lower is better for ``metric`` (flattened name), else ``"max"``."""
        leaf = metric.rsplit("/", 1)[-1]
        for pattern, direction in (*self.directions, *DEFAULT_DIRECTIONS):
            if re.fullmatch(pattern, metric) or re.fullmatch(pattern, leaf):
                return direction
        return "max"


_REGISTRY: dict[str, TaskKind] = {}


def register_task(kind: TaskKind, *, replace: bool = False) -> TaskKind:
    """Add a task kind to the registry (``replace=True`` to redefine an existing one)."""
    if kind.name in _REGISTRY and not replace:
        raise ValueError(f"task kind {kind.name!r} is already registered")
    _REGISTRY[kind.name] = kind
    return kind


def get_task(name: str) -> TaskKind:
    """The registered kind ``name``; ``KeyError`` listing the known kinds otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; expected one of: {', '.join(task_names())}") from None


def task_names() -> list[str]:
    return sorted(_REGISTRY)


def _get(m: Mapping[str, float], key: str) -> float:
    value = m.get(key, math.nan)
    return math.nan if value is None else float(value)


# --- built-in kinds --------------------------------------------------------------------------

register_task(TaskKind(
    name="cls",
    description="classification fine-tune / few-shot (accuracy in [0, 1])",
    metrics=(
        MetricRule("test_acc", 0.0, 1.0, required=True),
        MetricRule("best_val_acc", 0.0, 1.0),
        MetricRule("test_majority_rate", 0.0, 1.0),
    ),
    default_metrics=("test_acc",),
    guards=(Guard("majority_collapse",
                  lambda m: _get(m, "test_acc") <= _get(m, "test_majority_rate") + 1e-9,
                  "test accuracy does not beat the majority-class rate (collapse)"),),
))

register_task(TaskKind(
    name="ucpr",
    description="cross-primitive retrieval (recall@k, mAP in [0, 1]; mean rank >= 1)",
    metrics=(
        MetricRule("r@1", 0.0, 1.0, required=True),
        MetricRule("r@5", 0.0, 1.0, required=True),
        MetricRule("r@10", 0.0, 1.0, required=True),
        MetricRule("mAP", 0.0, 1.0, required=True),
        MetricRule("mean_rank", min=1.0, required=True),
        MetricRule(r"r@\d+", 0.0, 1.0, regex=True),
    ),
    row_checks=(RowCheck("r@1 <= r@5 <= r@10", ("r@1", "r@5", "r@10"),
                         lambda a, b, c: (a <= b + 1e-12) & (b <= c + 1e-12)),),
    default_metrics=("r@1", "r@5", "r@10", "mAP"),
    directions=((r"(median|mean)_rank", "min"),),
    guards=(Guard("easy_pair_saturated", lambda m: _get(m, "r@1") >= 0.99,
                  "R@1 near 1: an easy pair, not alignment evidence"),),
))

register_task(TaskKind(
    name="cpac",
    description="completion probe on UDF (mae, rmse >= 0, IoU in [0, 1])",
    metrics=(
        MetricRule("mae", min=0.0, required=True),
        MetricRule("rmse", min=0.0),
        MetricRule(r"iou@[^/]*", 0.0, 1.0, regex=True),
        MetricRule(r"[^/]+/(mae|rmse)", min=0.0, regex=True),
        MetricRule(r"[^/]+/iou@[^/]*", 0.0, 1.0, regex=True),
    ),
    row_checks=(RowCheck("rmse >= mae", ("rmse", "mae"), lambda rmse, mae: rmse >= mae - 1e-9),),
    default_metrics=("mae", "rmse", "iou@0.03"),
))

register_task(TaskKind(
    name="command",
    description="any program that writes the result envelope; metrics are any numbers",
))
