"""Task kinds: what a task's result metrics must satisfy and how its tables read.

A task kind is pure data plus small functions. The engine never branches on a task name: it asks
the registry, which holds the generic ``command`` kind and whatever the plugins register
(:mod:`benchmark.plugins`). A new kind (another lab's external scorer, say) registers with one call::

    register_task(TaskKind(name="myscore", metrics=(MetricRule("score", min=0, max=1, required=True),),
                           default_metrics=("score",)))
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Optional


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

    ``fires`` gets a mapping of flattened metric name -> float (missing metrics are absent);
    ``reason`` (optional) the same mapping, and says why in one line (else ``description``).
    """

    flag: str
    fires: Callable[[Mapping[str, float]], bool]
    description: str = ""
    reason: Optional[Callable[[Mapping[str, float]], str]] = None


#: A cell sits "at chance" when it is no further than this many standard errors of a no-skill
#: method's score from the chance level (on the wrong side of it counts too).
CHANCE_MARGIN_SE = 2.0


@dataclass(frozen=True)
class Chance:
    """What ``metric`` scores when the method carries no information, read from the result itself.

    ``level(m)`` gets the result's flattened metrics and returns ``(value, se)``: the no-skill
    score and the standard error of a no-skill method's score on this evaluation set (0 when
    unknown), or None when the result does not say.
    """

    metric: str
    level: Callable[[Mapping[str, float]], Optional[tuple[float, float]]]
    description: str = ""


@dataclass(frozen=True)
class TaskKind:
    """Everything the engine knows about one kind of task.

    ``chance``: no-skill levels shown next to their metric, below which (within
    :data:`CHANCE_MARGIN_SE` standard errors) the readout does not rank a row. ``diagnostics``:
    full-match patterns of metrics that describe the evaluation rather than the method (a
    majority-class rate, an expected random recall, set sizes): shown, never ranked. ``finite``:
    every metric and baseline value must be a finite number (NaN and inf are refused; otherwise
    only a required metric is refused NaN).
    """

    name: str
    description: str = ""
    metrics: tuple[MetricRule, ...] = ()
    row_checks: tuple[RowCheck, ...] = ()
    default_metrics: tuple[str, ...] = ()
    directions: tuple[tuple[str, Direction], ...] = ()
    guards: tuple[Guard, ...] = ()
    chance: tuple[Chance, ...] = ()
    diagnostics: tuple[str, ...] = ()
    finite: bool = False

    def chance_of(self, metric: str) -> Optional[Chance]:
        """The chance rule of ``metric`` (a flattened name), if the kind has one."""
        return next((c for c in self.chance if c.metric == metric), None)

    def is_diagnostic(self, metric: str) -> bool:
        leaf = metric.rsplit("/", 1)[-1]
        return any(re.fullmatch(p, metric) or re.fullmatch(p, leaf) for p in self.diagnostics)

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
    """The registered kind ``name``; ``KeyError`` listing the known kinds otherwise. The first
    lookup loads the plugins (:mod:`benchmark.plugins`), which register their kinds."""
    from .plugins import ensure_loaded

    ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; expected one of: {', '.join(task_names())}") from None


def task_names() -> list[str]:
    from .plugins import ensure_loaded

    ensure_loaded()
    return sorted(_REGISTRY)


def metric_value(m: Mapping[str, float], key: str) -> float:
    """``m[key]`` as a float; NaN when absent or None."""
    value = m.get(key, math.nan)
    return math.nan if value is None else float(value)


def binomial_chance(p: float, n: float) -> tuple[float, float]:
    """(p, sqrt(p (1 - p) / n)): a rate ``p`` measured on ``n`` independent trials."""
    p = min(max(float(p), 0.0), 1.0)
    return p, (math.sqrt(p * (1.0 - p) / n) if n and n > 0 else 0.0)


# --- built-in kinds --------------------------------------------------------------------------

register_task(TaskKind(
    name="command",
    description="any program that writes the result envelope; metrics are any finite numbers",
    finite=True,
))
