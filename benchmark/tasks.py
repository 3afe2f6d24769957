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
from typing import Any, Callable, Literal, Mapping, Optional

from nepa3d.protocol_thresholds import (COLLAPSED_EMBEDDINGS_FLAG, EASY_PAIR_FLAG, EASY_PAIR_R1,
                                        EMBED_SPREAD_METRICS, EMBED_SPREAD_MIN, MAJORITY_FLAG,
                                        MAJORITY_TOL, easy_pair_saturated, embeddings_collapsed,
                                        majority_collapse)

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


def binomial_chance(p: float, n: float) -> tuple[float, float]:
    """(p, sqrt(p (1 - p) / n)): a rate ``p`` measured on ``n`` independent trials."""
    p = min(max(float(p), 0.0), 1.0)
    return p, (math.sqrt(p * (1.0 - p) / n) if n and n > 0 else 0.0)


def _accuracy_chance(m: Mapping[str, float]) -> Optional[tuple[float, float]]:
    """Classification: the majority-class rate of the test set (what a constant predictor
    scores), binomial standard error over ``n_test`` samples."""
    p = _get(m, "test_majority_rate")
    return None if math.isnan(p) else binomial_chance(p, _get(m, "n_test"))


def _gallery_size(m: Mapping[str, float]) -> Optional[int]:
    """N, the number of gallery items, from ``expected_random_r@1`` = 1 / N."""
    r1 = _get(m, "expected_random_r@1")
    return None if math.isnan(r1) or r1 <= 0 else int(round(1.0 / r1))


def _recall_chance(k: int) -> Callable[[Mapping[str, float]], Optional[tuple[float, float]]]:
    """Retrieval R@k under uniformly random ranks: k / N (one relevant item among N)."""
    def level(m: Mapping[str, float]) -> Optional[tuple[float, float]]:
        n = _gallery_size(m)
        return None if n is None else binomial_chance(min(1.0, k / n), n)
    return level


def _reciprocal_rank_chance(m: Mapping[str, float]) -> Optional[tuple[float, float]]:
    """mAP (= MRR with one relevant item) under uniformly random ranks: H_N / N, with the
    standard error of a mean of N reciprocal ranks."""
    n = _gallery_size(m)
    if n is None:
        return None
    mean = sum(1.0 / k for k in range(1, n + 1)) / n
    var = sum(1.0 / k ** 2 for k in range(1, n + 1)) / n - mean ** 2
    return mean, math.sqrt(max(var, 0.0) / n)


def _mean_rank_chance(m: Mapping[str, float]) -> Optional[tuple[float, float]]:
    """Mean rank under uniformly random ranks: (N + 1) / 2, variance (N^2 - 1) / 12 per query."""
    n = _gallery_size(m)
    return None if n is None else ((n + 1) / 2.0, math.sqrt((n * n - 1) / 12.0 / n))


def _collapsed_spreads(m: Mapping[str, float]) -> list[str]:
    return [f"{name} = {m[name]:.2e}" for name in EMBED_SPREAD_METRICS if embeddings_collapsed(m.get(name))]


#: The NEPA protocol guards: the thresholds and tests are :mod:`nepa3d.protocol_thresholds`', the
#: objects the evaluators flag their own results with.
EASY_PAIR_GUARD = Guard(
    EASY_PAIR_FLAG, lambda m: easy_pair_saturated(m.get("r@1")),
    f"R@1 >= {EASY_PAIR_R1:g}: an easy pair, not alignment evidence",
    reason=lambda m: f"r@1 = {m['r@1']:.4f} >= {EASY_PAIR_R1:g}")
MAJORITY_GUARD = Guard(
    MAJORITY_FLAG, lambda m: majority_collapse(m.get("test_acc"), m.get("test_majority_rate")),
    f"test accuracy within {MAJORITY_TOL:g} of the majority-class rate (collapse)",
    reason=lambda m: (f"test_acc {m['test_acc']:.4f} <= test_majority_rate "
                      f"{m['test_majority_rate']:.4f} + {MAJORITY_TOL:g}"))
COLLAPSED_EMBEDDINGS_GUARD = Guard(
    COLLAPSED_EMBEDDINGS_FLAG, lambda m: bool(_collapsed_spreads(m)),
    f"retrieval embeddings collapsed (spread = 1 - mean pairwise cosine < {EMBED_SPREAD_MIN:g}): "
    "a direction shared by every shape decides the ranking",
    reason=lambda m: f"{', '.join(_collapsed_spreads(m))} < {EMBED_SPREAD_MIN:g}")


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
    chance=(Chance("test_acc", _accuracy_chance, "the test set's majority-class rate"),),
    diagnostics=(r"test_majority_rate", r"test_pred_classes", r"n_(train|val|test|classes)",
                 r"best_epoch"),
    guards=(MAJORITY_GUARD,),
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
        MetricRule(r"embed_spread_(query|gallery)", 0.0, 2.0, regex=True),
    ),
    row_checks=(RowCheck("r@1 <= r@5 <= r@10", ("r@1", "r@5", "r@10"),
                         lambda a, b, c: (a <= b + 1e-12) & (b <= c + 1e-12)),),
    default_metrics=("r@1", "r@5", "r@10", "mAP"),
    directions=((r"(median|mean)_rank", "min"),),
    chance=(Chance("r@1", _recall_chance(1), "k / N"), Chance("r@5", _recall_chance(5), "k / N"),
            Chance("r@10", _recall_chance(10), "k / N"),
            Chance("mAP", _reciprocal_rank_chance, "H_N / N (random ranks)"),
            Chance("mean_rank", _mean_rank_chance, "(N + 1) / 2")),
    diagnostics=(r"expected_random_r@\d+", r"embed_spread_(query|gallery)"),
    guards=(EASY_PAIR_GUARD, COLLAPSED_EMBEDDINGS_GUARD),
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
    name="pretrain",
    description="self-supervised pretraining run (final loss >= 0; its checkpoint is an output)",
    metrics=(
        MetricRule("final_loss", min=0.0, required=True),
        MetricRule("steps", min=0.0),
        MetricRule("epochs", min=0.0),
        MetricRule("n_params", min=1.0),
    ),
    default_metrics=("final_loss", "steps"),
    directions=((r"steps|epochs|n_params", "max"),),
    diagnostics=(r"steps", r"epochs", r"n_params"),
))

register_task(TaskKind(
    name="command",
    description="any program that writes the result envelope; metrics are any finite numbers",
    finite=True,
))
