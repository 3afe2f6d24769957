"""Protocol guards: flags the engine raises by itself, beside the flags a result raises on its own.

The original lab found several protocol mistakes by hand
(docs/protocols.md#pitfalls-shared-by-the-protocols). The engine checks for them in every report,
and says so: a guard never drops a row, it flags it (and, for a promotion gate, a *blocking* flag
on a compared result rejects the candidate).

Per result (:func:`derive`, each flag with a one-line reason):

* the task kind's metric guards (:class:`benchmark.tasks.Guard`; e.g. ``easy_pair_saturated``,
  ``majority_collapse``, ``collapsed_embeddings``, whose thresholds the task definitions take
  from the evaluators' own definitions: no number is repeated here);
* :data:`PROTOCOL_GUARDS`, which see the whole envelope (args, metrics, ``extra``, ``sanity``):
  ``mesh_distance_leak`` (a point-cloud backend fed mesh-derived distances),
  ``target_transform:<name>`` (metrics of a transformed target),
  ``transductive_probe`` (probe head fit on the evaluation split), ``context_query_overlap``
  (context and query points not disjoint) and ``probe_not_above_nn_copy`` (a completion probe whose
  MAE is no better than copying the nearest context point's distance);
* ``code_changed``: the result's recorded code (``provenance.code``, the digest of its module's
  import closure) is not the checkout's (:mod:`benchmark.code_identity`; the reason names the files);
* ``dirty_worktree``, ``args_mismatch:<key>`` (the recorded args differ from the job's: a result
  from elsewhere, e.g. another ``cache_root``), ``provenance_mismatch:<key>`` (provenance such as
  ``cache_root`` differs from the job's arg of the same name).

Across a suite's results (:func:`cache_fingerprint_flags`): ``cache_fingerprint_mismatch`` when a
result's ``provenance.cache_manifest_sha256`` differs from the suite's cache as it is now (or, when
that cache is not on this machine, from the other results on the same ``cache_root``).

Per table (:func:`single_seed_rows`, :func:`segregation_key`): ``single_seed`` (a row with one
seed is not a mean), ``mixed_target_transform`` (transformed and untransformed metrics in one
table: the cells are marked and never compared with each other) and ``mixed_code`` (results of
one module computed by different code, or some without a recorded digest).

Guards are data: :func:`register_guard` adds one without touching the engine.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

from .expand import Job
from .results import BASELINE_PREFIX, Envelope
from .tasks import TaskKind

PROVENANCE_KEYS = ("cache_root", "cache_manifest_sha256", "ckpt_sha256")

#: A result computed with a deliberately planted defect (a canary: shuffled labels, ...) carries a
#: flag ``planted_defect:<what>`` from its producer; it is never evidence for anything.
PLANTED_DEFECT = "planted_defect"

#: The baseline a completion probe must beat (``--baseline nn_copy``).
NN_COPY = "nn_copy"

#: Backend values that make a point-cloud modality (prefix match), and distance sources that are
#: not derived from the observed point cloud
#: (docs/protocols.md#mesh-derived-distances-in-a-point-cloud-modality).
POINTCLOUD_BACKEND_PREFIX = "pointcloud"
MESH_DISTANCE_SOURCES = frozenset({"mesh", "mesh_derived", "pt_dist_pool", "udf", "udfgrid",
                                   "pt_dist_udf_pool"})
_BACKEND_KEY = re.compile(r"^(?:(?P<prefix>.+)_)?backend$")
_DIST_SOURCE_KEY = re.compile(r"^(?:(?P<prefix>.+?)_)?(?:pt_)?dist(?:ance)?_(?:source|key)$")

#: Args whose non-default value changes what a metric means; results that differ in them are
#: segregated in tables (marked, never compared). ``arg -> values that count as the default``.
SEGREGATING_ARGS: dict[str, tuple[Any, ...]] = {"target_transform": ("none", None, "")}

#: Flags that make a result unusable as promotion evidence (exact names or ``prefix:``).
BLOCKING_FLAGS = ("mesh_distance_leak", "transductive_probe", "context_query_overlap",
                  "cache_fingerprint_mismatch", "mixed_target_transform", "args_mismatch:",
                  "provenance_mismatch:", "stale_input:", "missing_output:", "dirty_worktree",
                  f"{PLANTED_DEFECT}:")

#: What each built-in flag means (shown once per flag in reports).
DESCRIPTIONS: dict[str, str] = {
    "dirty_worktree": "the result came from a checkout with uncommitted changes",
    "args_mismatch": "the result's recorded args differ from the job's (a result from elsewhere, "
                     "or a program that ignored a flag)",
    "provenance_mismatch": "provenance differs from the job's arg of the same name (e.g. another cache)",
    "stale_input": "an input file changed after the job ran (the next run re-runs it)",
    "missing_output": "a path the job wrote (e.g. its checkpoint folder) is gone (the next run re-runs it)",
    "cache_fingerprint_mismatch": "the result was computed on another version of the cache than "
                                  "the suite's",
    "single_seed": "a single seed: a value, not a mean (no std)",
    PLANTED_DEFECT: "computed with a deliberately planted defect (a canary check), never a real number",
    "mixed_target_transform": "metrics under a target transform beside untransformed ones; marked "
                              "cells are not comparable with the others",
    "code_changed": "computed by code other than the checkout's (the module's import closure differs): "
                    "a refactor (accept: `python -m benchmark accept-code`) or a change of numbers "
                    "(bump the module's PROTOCOL_VERSION: its jobs re-run)",
    "mixed_code": "the table holds results of one module computed by different code (or without a "
                  "recorded code digest): its numbers may not be comparable",
}


# --- protocol guards over the whole envelope ------------------------------------------------

@dataclass(frozen=True)
class ProtocolGuard:
    """A guard over a whole result: ``check(envelope)`` returns a reason when ``flag`` applies.

    ``flag`` may end in ``:`` (a family); ``check`` then returns ``(suffix, reason)``.
    ``tasks``: the task kinds it applies to (empty: every task).
    """

    flag: str
    check: Callable[[Envelope], Any]
    description: str = ""
    tasks: tuple[str, ...] = ()
    blocking: bool = False


PROTOCOL_GUARDS: list[ProtocolGuard] = []


def register_guard(guard: ProtocolGuard) -> ProtocolGuard:
    """Add a protocol guard (a lab's own check); it runs for every result of its tasks."""
    PROTOCOL_GUARDS.append(guard)
    if guard.description:
        DESCRIPTIONS.setdefault(guard.flag.rstrip(":"), guard.description)
    return guard


def _block(env: Envelope, name: str) -> Mapping:
    """A top-level mapping of the envelope (declared field or extra key); ``{}`` if absent."""
    value = (env.model_extra or {}).get(name, getattr(env, name, None))
    return value if isinstance(value, Mapping) else {}


def protocol_fields(env: Envelope) -> dict[str, Any]:
    """What the program says it did: ``args``, then ``extra``, then ``sanity`` blocks (top level
    or inside ``extra``); later sources win, nested mappings are skipped."""
    extra = _block(env, "extra")
    sources: list[Mapping] = [env.args, extra]
    for sanity in (_block(env, "sanity"), extra.get("sanity")):
        if isinstance(sanity, Mapping):
            sources.append(sanity)
    out: dict[str, Any] = {}
    for src in sources:
        out.update({k: v for k, v in src.items() if not isinstance(v, Mapping)})
    return out


def _falsy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("0", "false", "no", "off")
    return value is not None and not bool(value)


def check_mesh_distance_leak(env: Envelope) -> Optional[str]:
    """A point-cloud backend whose recorded distance source is mesh-derived.

    Backends: ``backend`` / ``<prefix>_backend``; sources: ``dist_source`` / ``pt_dist_key`` /
    ``<prefix>_dist_source`` ... A prefixed source applies to the backend of the same prefix, an
    unprefixed one to every backend.
    """
    fields = protocol_fields(env)
    backends: dict[str, str] = {}
    sources: dict[str, str] = {}
    for key, value in fields.items():
        if not isinstance(value, str):
            continue
        if m := _BACKEND_KEY.match(key):
            backends[m.group("prefix") or ""] = value
        elif m := _DIST_SOURCE_KEY.match(key):
            prefix = m.group("prefix") or ""
            sources["" if prefix == "pt" else prefix] = value  # pt_dist_key is unprefixed
    hits = []
    for prefix, backend in sorted(backends.items()):
        if not backend.startswith(POINTCLOUD_BACKEND_PREFIX):
            continue
        source = sources.get(prefix, sources.get(""))
        if source is not None and source.strip().lower() in MESH_DISTANCE_SOURCES:
            name = f"{prefix}_backend" if prefix else "backend"
            hits.append(f"{name}={backend} reads distances from {source!r}")
    return "; ".join(hits) or None


def check_target_transform(env: Envelope) -> Optional[tuple[str, str]]:
    value = protocol_fields(env).get("target_transform")
    if value not in SEGREGATING_ARGS["target_transform"]:
        return str(value), f"target_transform={value}: raw metrics are not comparable with untransformed ones"
    return None


def check_transductive(env: Envelope) -> Optional[str]:
    """The probe head was fit on the evaluation split (legacy transductive protocol)."""
    f = protocol_fields(env)
    if f.get("legacy_transductive") is True or str(f.get("legacy_transductive")).lower() == "true":
        return "legacy_transductive is true"
    if "head_train_split" in f:
        head = f["head_train_split"]
        if head is None or str(head).strip().lower() in ("", "none", "legacy_transductive"):
            return f"head_train_split={head!r}: the head is fit on part of the evaluation shapes"
        split = f.get("split", f.get("eval_split"))
        if split is not None and str(head) == str(split):
            return f"head_train_split={head!r} is the evaluation split"
    return None


def check_probe_vs_nn_copy(env: Envelope) -> Optional[str]:
    """The probe's MAE is not below the nn_copy baseline's on the same queries: the frozen
    features carry less about the distance than the nearest context point does (the probe's
    value is its margin over nn_copy: docs/protocols.md#the-nn_copy-floor-in-cpac). Not for
    ``baseline_only`` results, whose metrics *are* the baseline's."""
    if not _falsy(protocol_fields(env).get("baseline_only", False)):
        return None
    flat = env.flat()
    probe, base = flat.get("mae"), flat.get(f"{BASELINE_PREFIX}/{NN_COPY}/mae")
    if probe is None or base is None or math.isnan(probe) or math.isnan(base):
        return None
    if probe >= base:
        return f"mae {probe:.4f} >= nn_copy mae {base:.4f}"
    return None


def check_context_query_overlap(env: Envelope) -> Optional[str]:
    value = protocol_fields(env).get("disjoint_context_query")
    if _falsy(value):
        return f"disjoint_context_query={value!r}: query points may repeat context points"
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


# --- per-result flags -----------------------------------------------------------------------

def _norm(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        try:
            return float(value)
        except ValueError:
            pass
        if "/" in value or value.startswith("."):
            return os.path.realpath(value)
        return value
    return value


def same_value(a: Any, b: Any) -> bool:
    """Loose equality of an arg as the suite wrote it and as the program recorded it."""
    na, nb = _norm(a), _norm(b)
    if isinstance(na, float) and isinstance(nb, float):
        return math.isclose(na, nb, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(na) and math.isnan(nb))
    if isinstance(na, list) and isinstance(nb, list):
        return len(na) == len(nb) and all(same_value(x, y) for x, y in zip(na, nb))
    return na == nb


def derive(job: Job, env: Envelope, kind: TaskKind) -> dict[str, str]:
    """``{flag: reason}`` the engine raises for one result."""
    flags: dict[str, str] = {}
    flat = env.flat()
    for guard in kind.guards:
        try:
            if guard.fires(flat):
                flags[guard.flag] = guard.reason(flat) if guard.reason else guard.description
        except (KeyError, TypeError, ValueError):
            continue
    for guard in PROTOCOL_GUARDS:
        if guard.tasks and env.task not in guard.tasks:
            continue
        out = guard.check(env)
        if not out:
            continue
        if guard.flag.endswith(":"):
            suffix, reason = out
            flags[f"{guard.flag}{suffix}"] = reason
        else:
            flags[guard.flag] = out  # a protocol guard's reason wins over a task guard's text
    if env.provenance.dirty:
        flags["dirty_worktree"] = f"git rev {(env.provenance.git_rev or 'unknown')[:12]} with uncommitted changes"
    for key, value in job.args.items():
        if key in env.args and value is not None and not same_value(value, env.args[key]):
            flags[f"args_mismatch:{key}"] = f"args.{key} is {env.args[key]!r}; the suite says {value!r}"
    prov = env.provenance.model_dump()
    for key in PROVENANCE_KEYS:
        if key in job.args and prov.get(key) is not None and not same_value(job.args[key], prov[key]):
            flags[f"provenance_mismatch:{key}"] = f"provenance.{key} is {prov[key]!r}; the suite says {job.args[key]!r}"
    return dict(sorted(flags.items()))


def derived_flags(job: Job, env: Envelope, kind: TaskKind) -> list[str]:
    """Flags the engine raises for one result (sorted, unique)."""
    return list(derive(job, env, kind))


def is_blocking(flag: str) -> bool:
    """True for flags that disqualify a result as promotion evidence."""
    return any(flag.startswith(b) if b.endswith(":") else flag == b for b in BLOCKING_FLAGS) or any(
        g.blocking and (flag.startswith(g.flag) if g.flag.endswith(":") else flag == g.flag)
        for g in PROTOCOL_GUARDS)


def describe(flag: str) -> str:
    """What a flag means ("" if unknown): a built-in or protocol guard's text, else the
    description of the first registered task kind's guard of that name."""
    from .tasks import get_task, task_names

    text = DESCRIPTIONS.get(flag) or DESCRIPTIONS.get(flag.split(":", 1)[0], "")
    if text:
        return text
    return next((g.description for name in task_names() for g in get_task(name).guards
                 if g.flag == flag and g.description), "")


# --- across a suite's results: which cache ----------------------------------------------------

_manifest_memo: dict[str, Optional[str]] = {}


def cache_manifest_sha256(root: Path | str, pattern: str = "*.npz") -> Optional[str]:
    """Fingerprint of a cache directory as written to ``provenance.cache_manifest_sha256``:
    sha256 of ``"<relative path>\\t<size>\\n"`` over the sorted files matching ``pattern``
    (the same digest as :func:`nepa3d.utils.results.cache_manifest_sha256`). None if ``root`` is
    not a directory here. Memoized per process."""
    key = f"{os.path.realpath(root)}\0{pattern}"
    if key in _manifest_memo:
        return _manifest_memo[key]
    p = Path(root)
    digest = None
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(p.rglob(pattern)):
            try:
                size = f.stat().st_size
            except OSError:
                continue
            h.update(f"{f.relative_to(p)}\t{size}\n".encode())
        digest = h.hexdigest()
    _manifest_memo[key] = digest
    return digest


def cache_fingerprint_flags(results: Iterable[tuple[Job, Envelope]], *, arg: str = "cache_root",
                            live: bool = True) -> dict[str, dict[str, str]]:
    """``{job_id: {"cache_fingerprint_mismatch": reason}}`` for results computed on another cache.

    Results are grouped by the job's ``arg``; each group's expected fingerprint is the cache as it
    is now (``live`` and the directory exists here) or else the most common recorded one (on a
    tie nobody can say which is right: every result of the group is flagged).
    """
    groups: dict[str, list[tuple[Job, str]]] = {}
    for job, env in results:
        root, fp = job.args.get(arg), env.provenance.cache_manifest_sha256
        if isinstance(root, str) and fp:
            groups.setdefault(root, []).append((job, fp))
    out: dict[str, dict[str, str]] = {}
    for root, items in groups.items():
        current = cache_manifest_sha256(root) if live else None
        if current is not None:
            expected, what = current, f"the current {arg} {root}"
        else:
            counts = Counter(fp for _, fp in items).most_common()
            if len(counts) == 1:
                continue
            tie = counts[0][1] == counts[1][1]
            expected = None if tie else counts[0][0]
            what = f"most results on {root}"
        for job, fp in items:
            if fp != expected:
                theirs = f"{expected[:12]} ({what})" if expected else f"the other results on {root} (no majority)"
                out.setdefault(job.job_id, {})["cache_fingerprint_mismatch"] = (
                    f"cache_manifest_sha256 {fp[:12]} differs from {theirs}")
    return out


# --- per table ------------------------------------------------------------------------------

def segregation_key(env: Envelope) -> tuple[tuple[str, str], ...]:
    """``(("target_transform", "trunc"),)`` for results under a non-default segregating arg,
    ``()`` for the default protocol."""
    fields = protocol_fields(env)
    return tuple((arg, str(fields[arg])) for arg, defaults in SEGREGATING_ARGS.items()
                 if arg in fields and fields[arg] not in defaults)


def single_seed_rows(n_by_row: Mapping[Any, int]) -> list[Any]:
    """Rows whose cells hold exactly one seed: shown as values, never as means."""
    return [row for row, n in n_by_row.items() if n == 1]
