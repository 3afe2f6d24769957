"""The NEPA-3D protocol guards over a whole result (docs/protocols.md#pitfalls-shared-by-the-protocols).

Each reads :class:`.fields.ProtocolView`, the typed fields the evaluators write, and returns a
one-line reason when it fires:

* ``mesh_distance_leak`` (blocking): an observation backend (point cloud, voxel) whose recorded
  distance source is not derived from the point cloud
  (:func:`nepa3d.protocol_thresholds.distance_leak`);
* ``transductive_probe`` (blocking): the probe head was fit on the evaluation split;
* ``context_query_overlap`` (blocking): context and query points not disjoint;
* ``probe_not_above_nn_copy`` (cpac): the probe's MAE is not below the nn_copy baseline's;
* ``target_transform:<name>``: metrics of a transformed target; ``target_transform`` is also a
  segregating arg (a table mixing transforms carries ``mixed_target_transform``, blocking).
"""
from __future__ import annotations

import math
from typing import Optional

from benchmark.guards import ProtocolGuard, register_guard, register_segregating_arg
from benchmark.results import BASELINE_PREFIX, Envelope
from nepa3d.protocol_thresholds import distance_leak

from .fields import ProtocolView

#: The baseline a completion probe must beat (``--baseline nn_copy``).
NN_COPY = "nn_copy"

#: ``target_transform`` values that mean "no transform" (the default protocol).
NO_TRANSFORM = ("none", None, "")


def check_mesh_distance_leak(env: Envelope) -> Optional[str]:
    """An observation backend that read distances from a non-observed source."""
    hits = [f"{b.key}={b.backend} reads distances from {b.dist_source!r}"
            for b in ProtocolView.of(env).backends if distance_leak(b.backend, b.dist_source)]
    return "; ".join(hits) or None


def check_target_transform(env: Envelope) -> Optional[tuple[str, str]]:
    value = ProtocolView.of(env).target_transform
    if value not in NO_TRANSFORM:
        return str(value), f"target_transform={value}: raw metrics are not comparable with untransformed ones"
    return None


def check_transductive(env: Envelope) -> Optional[str]:
    """The probe head was fit on the evaluation split (legacy transductive protocol)."""
    v = ProtocolView.of(env)
    if v.legacy_transductive:
        return "legacy_transductive is true"
    if v.has_head_train_split:
        head = v.head_train_split
        if head is None or head.strip().lower() in ("", "none", "legacy_transductive"):
            return f"head_train_split={head!r}: the head is fit on part of the evaluation shapes"
        if v.eval_split is not None and head == v.eval_split:
            return f"head_train_split={head!r} is the evaluation split"
    return None


def check_probe_vs_nn_copy(env: Envelope) -> Optional[str]:
    """The probe's MAE is not below the nn_copy baseline's on the same queries: the frozen
    features carry less about the distance than the nearest context point does (the probe's
    value is its margin over nn_copy: docs/protocols.md#the-nn_copy-floor-in-cpac). Not for
    ``baseline_only`` results, whose metrics *are* the baseline's."""
    if ProtocolView.of(env).baseline_only:
        return None
    flat = env.flat()
    probe, base = flat.get("mae"), flat.get(f"{BASELINE_PREFIX}/{NN_COPY}/mae")
    if probe is None or base is None or math.isnan(probe) or math.isnan(base):
        return None
    if probe >= base:
        return f"mae {probe:.4f} >= nn_copy mae {base:.4f}"
    return None


def check_context_query_overlap(env: Envelope) -> Optional[str]:
    value = ProtocolView.of(env).disjoint_context_query
    if value is False:
        return "disjoint_context_query=False: query points may repeat context points"
    return None


register_guard(ProtocolGuard("mesh_distance_leak", check_mesh_distance_leak,
                             "a point-cloud backend read mesh-derived distances (leak)", blocking=True))
register_guard(ProtocolGuard("target_transform:", check_target_transform,
                             "metrics of a transformed target (report as auxiliary)"))
register_guard(ProtocolGuard("transductive_probe", check_transductive,
                             "the probe head was fit on the evaluation split", blocking=True))
register_guard(ProtocolGuard("probe_not_above_nn_copy", check_probe_vs_nn_copy,
                             "the probe's MAE is not below the nearest-context-copy baseline's "
                             "(the features add nothing over copying a neighbour)",
                             tasks=("cpac",)))
register_guard(ProtocolGuard("context_query_overlap", check_context_query_overlap,
                             "context and query points are not disjoint", blocking=True))
register_segregating_arg("target_transform", NO_TRANSFORM,
                         "metrics under a target transform beside untransformed ones; marked "
                         "cells are not comparable with the others")
