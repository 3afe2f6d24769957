"""The NEPA-3D task kinds (cls, ucpr, cpac, pretrain): metric rules, chance levels, metric guards.

The thresholds and tests of the metric guards are :mod:`nepa3d.protocol_thresholds`', the objects
the evaluators flag their own results with: no number is repeated here.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Optional

from benchmark.tasks import (Chance, Guard, MetricRule, RowCheck, TaskKind, binomial_chance,
                             metric_value, register_task)
from nepa3d.protocol_thresholds import (COLLAPSED_EMBEDDINGS_FLAG, EASY_PAIR_FLAG, EASY_PAIR_R1,
                                        EMBED_SPREAD_METRICS, EMBED_SPREAD_MIN, MAJORITY_FLAG,
                                        MAJORITY_TOL, easy_pair_saturated, embeddings_collapsed,
                                        majority_collapse)

Level = Callable[[Mapping[str, float]], Optional[tuple[float, float]]]


def accuracy_chance(m: Mapping[str, float]) -> Optional[tuple[float, float]]:
    """Classification: the majority-class rate of the test set (what a constant predictor
    scores), binomial standard error over ``n_test`` samples."""
    p = metric_value(m, "test_majority_rate")
    return None if math.isnan(p) else binomial_chance(p, metric_value(m, "n_test"))


def gallery_size(m: Mapping[str, float]) -> Optional[int]:
    """N, the number of gallery items, from ``expected_random_r@1`` = 1 / N."""
    r1 = metric_value(m, "expected_random_r@1")
    return None if math.isnan(r1) or r1 <= 0 else int(round(1.0 / r1))


def recall_chance(k: int) -> Level:
    """Retrieval R@k under uniformly random ranks: k / N (one relevant item among N)."""
    def level(m: Mapping[str, float]) -> Optional[tuple[float, float]]:
        n = gallery_size(m)
        return None if n is None else binomial_chance(min(1.0, k / n), n)
    return level


def reciprocal_rank_chance(m: Mapping[str, float]) -> Optional[tuple[float, float]]:
    """mAP (= MRR with one relevant item) under uniformly random ranks: H_N / N, with the
    standard error of a mean of N reciprocal ranks."""
    n = gallery_size(m)
    if n is None:
        return None
    mean = sum(1.0 / k for k in range(1, n + 1)) / n
    var = sum(1.0 / k ** 2 for k in range(1, n + 1)) / n - mean ** 2
    return mean, math.sqrt(max(var, 0.0) / n)


def mean_rank_chance(m: Mapping[str, float]) -> Optional[tuple[float, float]]:
    """Mean rank under uniformly random ranks: (N + 1) / 2, variance (N^2 - 1) / 12 per query."""
    n = gallery_size(m)
    return None if n is None else ((n + 1) / 2.0, math.sqrt((n * n - 1) / 12.0 / n))


def _collapsed_spreads(m: Mapping[str, float]) -> list[str]:
    return [f"{name} = {m[name]:.2e}" for name in EMBED_SPREAD_METRICS if embeddings_collapsed(m.get(name))]


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


CLS = TaskKind(
    name="cls",
    description="classification fine-tune / few-shot (accuracy in [0, 1])",
    metrics=(
        MetricRule("test_acc", 0.0, 1.0, required=True),
        MetricRule("best_val_acc", 0.0, 1.0),
        MetricRule("test_majority_rate", 0.0, 1.0),
    ),
    default_metrics=("test_acc",),
    chance=(Chance("test_acc", accuracy_chance, "the test set's majority-class rate"),),
    diagnostics=(r"test_majority_rate", r"test_pred_classes", r"n_(train|val|test|classes)",
                 r"best_epoch"),
    guards=(MAJORITY_GUARD,),
)

UCPR = TaskKind(
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
    chance=(Chance("r@1", recall_chance(1), "k / N"), Chance("r@5", recall_chance(5), "k / N"),
            Chance("r@10", recall_chance(10), "k / N"),
            Chance("mAP", reciprocal_rank_chance, "H_N / N (random ranks)"),
            Chance("mean_rank", mean_rank_chance, "(N + 1) / 2")),
    diagnostics=(r"expected_random_r@\d+", r"embed_spread_(query|gallery)"),
    guards=(EASY_PAIR_GUARD, COLLAPSED_EMBEDDINGS_GUARD),
)

CPAC = TaskKind(
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
)

PRETRAIN = TaskKind(
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
)

for _kind in (CLS, UCPR, CPAC, PRETRAIN):
    register_task(_kind, replace=True)
