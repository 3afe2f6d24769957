"""Protocol guards the engine evaluates itself, beside the flags a result raises on its own.

* the task kind's guards (``easy_pair_saturated``, ``majority_collapse``, ...);
* ``dirty_worktree``: the result came from a checkout with uncommitted changes;
* ``args_mismatch:<key>``: the result's recorded args differ from the job's (a result copied from
  elsewhere, or a program that ignored a flag);
* ``provenance_mismatch:<key>``: provenance (e.g. ``cache_root``) differs from the job's arg of the
  same name: a table built from a cache other than the one the suite names.
"""
from __future__ import annotations

import math
import os
from typing import Any

from .expand import Job
from .results import Envelope
from .tasks import TaskKind

PROVENANCE_KEYS = ("cache_root", "cache_manifest_sha256", "ckpt_sha256")


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
            return os.path.abspath(value)
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


def derived_flags(job: Job, env: Envelope, kind: TaskKind) -> list[str]:
    """Flags the engine raises for one result (sorted, unique)."""
    flags: set[str] = set()
    flat = env.flat()
    for guard in kind.guards:
        try:
            if guard.fires(flat):
                flags.add(guard.flag)
        except (KeyError, TypeError, ValueError):
            continue
    if env.provenance.dirty:
        flags.add("dirty_worktree")
    for key, value in job.args.items():
        if key in env.args and value is not None and not same_value(value, env.args[key]):
            flags.add(f"args_mismatch:{key}")
    prov = env.provenance.model_dump()
    for key in PROVENANCE_KEYS:
        if key in job.args and prov.get(key) is not None and not same_value(job.args[key], prov[key]):
            flags.add(f"provenance_mismatch:{key}")
    return sorted(flags)
