"""How the engine's names become MLflow names: the one place that says it.

**Metrics.** A run's metric is named exactly as the reports' CSV/JSON column (the flattened
metric name: ``mae``, ``near@0.05/mae``, ``baseline/copy/rmse``) whenever MLflow accepts the
name. MLflow accepts alphanumerics, ``_ - . /``, space (and ``:`` except on Windows); the
reports' names use one more character, ``@``, which MLflow refuses. So:

==========  ==============  ====================================================
report      MLflow          rule
==========  ==============  ====================================================
``@``       ``_at_``        ``iou@0.03`` -> ``iou_at_0.03``, ``r@1`` -> ``r_at_1``
``:``       ``_x3a_``       refused on Windows stores: mapped everywhere
other       ``_xHH_``       any other refused character, by its code point (hex)
==========  ==============  ====================================================

The mapping is one-to-one on every name that does not itself contain ``_at_`` or ``_x`` + hex +
``_`` (no report column does; tests/test_mlflow_names.py checks the committed reports), and
:func:`report_name` inverts it, so a run's metric reads back as its report column.

Per-epoch curves are ``epoch/<name>`` with step = epoch (:data:`EPOCH_PREFIX`).

**Tags.** The standard MLflow system tags (:data:`RUN_NAME`, :data:`SOURCE_NAME`,
:data:`SOURCE_TYPE`, :data:`GIT_COMMIT`), then the engine's: ``job_id``, ``task``,
``benchmark.status``, ``result_sha256`` (:data:`DIGEST_TAG`), ``flags``, ``ckpt_sha256``
(:data:`CKPT_TAG`), ``dvc.exp_name`` / ``dvc.exp_baseline_rev`` (from ``$DVC_EXP_NAME`` /
``$DVC_EXP_BASELINE_REV``, set by ``dvc exp run``), and one tag per matrix axis, named as the axis
(``ckpt``, ``eval_seed``); an axis named like an engine tag is tagged ``matrix.<axis>``.
"""
from __future__ import annotations

import re

#: MLflow system tags (mlflow.utils.mlflow_tags).
RUN_NAME = "mlflow.runName"
SOURCE_NAME = "mlflow.source.name"
SOURCE_TYPE = "mlflow.source.type"
GIT_COMMIT = "mlflow.source.git.commit"
#: The engine's tags.
JOB_TAG = "job_id"
TASK_TAG = "task"
STATUS_TAG = "benchmark.status"
DIGEST_TAG = "result_sha256"
FLAGS_TAG = "flags"
CKPT_TAG = "ckpt_sha256"
DVC_EXP_TAG = "dvc.exp_name"
DVC_BASELINE_TAG = "dvc.exp_baseline_rev"
#: Environment variables ``dvc exp run`` sets for the commands of its stages.
DVC_ENV = {"DVC_EXP_NAME": DVC_EXP_TAG, "DVC_EXP_BASELINE_REV": DVC_BASELINE_TAG}
ENGINE_TAGS = frozenset({JOB_TAG, TASK_TAG, STATUS_TAG, DIGEST_TAG, FLAGS_TAG, CKPT_TAG,
                         DVC_EXP_TAG, DVC_BASELINE_TAG})
AXIS_PREFIX = "matrix."
#: Metric prefix of per-epoch curves (step = epoch).
EPOCH_PREFIX = "epoch/"
#: Artifact folders of a run: the job's log and result JSON, and the plots its outputs hold.
LOG_DIR, RESULT_DIR, PLOT_DIR = "log", "result", "plots"

_ALLOWED = re.compile(r"[A-Za-z0-9_\-. /]")
_SPECIAL = {"@": "_at_"}
_ESCAPE = re.compile(r"_at_|_x([0-9a-f]+)_")


def _map_char(ch: str) -> str:
    if _ALLOWED.fullmatch(ch):
        return ch
    return _SPECIAL.get(ch) or f"_x{ord(ch):x}_"


def metric_name(name: str) -> str:
    """The MLflow metric (or param) name of a report column: ``iou@0.03`` -> ``iou_at_0.03``."""
    return "".join(map(_map_char, name))


def report_name(name: str) -> str:
    """Inverse of :func:`metric_name`: ``near_at_0.05/iou_at_0.03`` -> ``near@0.05/iou@0.03``."""
    return _ESCAPE.sub(lambda m: "@" if m.group(0) == "_at_" else chr(int(m.group(1), 16)), name)


def axis_tag(axis: str) -> str:
    """The tag of matrix axis ``axis``: its name, unless an engine or MLflow tag has it."""
    key = metric_name(axis)
    return f"{AXIS_PREFIX}{key}" if key in ENGINE_TAGS or key.startswith("mlflow.") else key
