"""Guards: flags the engine raises by itself, beside the flags a result raises on its own.

A guard never drops a row, it flags it (and, for a promotion gate, a *blocking* flag on a
compared result rejects the candidate). The engine holds the mechanisms; which guards exist is
data that a protocol's plugin registers (:mod:`benchmark.plugins`), none is named here:

* :func:`register_guard` -- a :class:`ProtocolGuard` over the whole envelope (args, metrics,
  ``extra``); the task kinds' metric guards (:class:`benchmark.tasks.Guard`) run beside them;
* :func:`register_flag` -- what a flag means and whether it blocks promotion (flags a producer
  raises itself, or a plugin's table-level flags);
* :func:`register_provenance_key` -- a provenance field that must equal the job's arg of the same
  name (``provenance_mismatch:<key>``);
* :func:`register_fingerprint` -- an input a job arg names whose fingerprint the result records
  in its provenance: results computed on another version of it are flagged across a suite;
* :func:`register_segregating_arg` -- an arg whose non-default value changes what a metric means
  (such results are marked in tables, never compared with the others: ``mixed_<arg>``).

Built in, per result (:func:`derive`): ``code_changed`` (:mod:`benchmark.code_identity`),
``dirty_worktree``, ``args_mismatch:<key>`` (the recorded args differ from the job's),
``provenance_mismatch:<key>``; per table (:func:`single_seed_rows`): ``single_seed``.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional

from .expand import Job
from .plugins import ensure_loaded
from .results import Envelope
from .tasks import TaskKind

#: A result computed with a deliberately planted defect (a canary: shuffled labels, ...) carries a
#: flag ``planted_defect:<what>`` from its producer; it is never evidence for anything.
PLANTED_DEFECT = "planted_defect"

#: Flags that make a result unusable as promotion evidence (exact names or ``prefix:``); plugins
#: add theirs with :func:`register_flag` (``blocking=True``) or a blocking guard.
BLOCKING_FLAGS: list[str] = ["args_mismatch:", "provenance_mismatch:", "stale_input:", "missing_output:",
                             "dirty_worktree", f"{PLANTED_DEFECT}:"]

#: What each flag means (shown once per flag in reports); plugins add theirs.
DESCRIPTIONS: dict[str, str] = {
    "dirty_worktree": "the result came from a checkout with uncommitted changes",
    "args_mismatch": "the result's recorded args differ from the job's (a result from elsewhere, "
                     "or a program that ignored a flag)",
    "provenance_mismatch": "provenance differs from the job's arg of the same name (e.g. another cache)",
    "stale_input": "an input file changed after the job ran (the next run re-runs it)",
    "missing_output": "a path the job wrote (e.g. its checkpoint folder) is gone (the next run re-runs it)",
    "single_seed": "a single seed: a value, not a mean (no std)",
    PLANTED_DEFECT: "computed with a deliberately planted defect (a canary check), never a real number",
    "code_changed": "computed by code other than the checkout's (the module's import closure differs): "
                    "a refactor (accept: `python -m benchmark accept-code`) or a change of numbers "
                    "(bump the module's PROTOCOL_VERSION: its jobs re-run)",
    "mixed_code": "the table holds results of one module computed by different code (or without a "
                  "recorded code digest): its numbers may not be comparable",
}


def register_flag(flag: str, description: str = "", *, blocking: bool = False) -> str:
    """Say what ``flag`` means (``prefix:`` for a family) and whether it blocks promotion.
    Idempotent; a later description of the same flag replaces the earlier one."""
    if description:
        DESCRIPTIONS[flag.rstrip(":")] = description
    if blocking and flag not in BLOCKING_FLAGS:
        BLOCKING_FLAGS.append(flag)
    return flag


#: Provenance fields that must equal the job's arg of the same name (``provenance_mismatch:<key>``).
PROVENANCE_KEYS: list[str] = []


def register_provenance_key(*keys: str) -> None:
    """Compare provenance ``key`` with the job's arg ``key`` on every result (idempotent)."""
    PROVENANCE_KEYS.extend(k for k in keys if k not in PROVENANCE_KEYS)


#: Args whose non-default value changes what a metric means; results that differ in them are
#: segregated in tables (marked, never compared). ``arg -> values that count as the default``.
SEGREGATING_ARGS: dict[str, tuple[Any, ...]] = {}


def register_segregating_arg(arg: str, defaults: tuple[Any, ...], description: str = "") -> None:
    """Segregate results whose recorded ``arg`` is not one of ``defaults``; a table that mixes
    them carries ``mixed_<arg>`` (blocking, described by ``description``)."""
    SEGREGATING_ARGS[arg] = tuple(defaults)
    register_flag(f"mixed_{arg}", description, blocking=True)


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
    """Add a protocol guard (a lab's own check); it runs for every result of its tasks. A guard
    of a flag already registered replaces it (loading a plugin twice changes nothing)."""
    PROTOCOL_GUARDS[:] = [g for g in PROTOCOL_GUARDS if g.flag != guard.flag]
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
    ensure_loaded()
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
    ensure_loaded()
    return any(flag.startswith(b) if b.endswith(":") else flag == b for b in BLOCKING_FLAGS) or any(
        g.blocking and (flag.startswith(g.flag) if g.flag.endswith(":") else flag == g.flag)
        for g in PROTOCOL_GUARDS)


def describe(flag: str) -> str:
    """What a flag means ("" if unknown): a built-in or protocol guard's text, else the
    description of the first registered task kind's guard of that name."""
    from .tasks import get_task, task_names

    ensure_loaded()
    text = DESCRIPTIONS.get(flag) or DESCRIPTIONS.get(flag.split(":", 1)[0], "")
    if text:
        return text
    return next((g.description for name in task_names() for g in get_task(name).guards
                 if g.flag == flag and g.description), "")


# --- across a suite's results: which version of an input ------------------------------------

@dataclass(frozen=True)
class Fingerprint:
    """An input that job arg ``arg`` names (a data folder, say) and whose fingerprint each result
    records as ``provenance.<field>``. ``compute(value)`` fingerprints the input as it is now (the
    same digest the producer records), None when it is not on this machine. Results whose
    recorded fingerprint differs from the expected one carry ``flag``."""

    arg: str
    field: str
    compute: Callable[[str], Optional[str]]
    flag: str
    description: str = ""
    blocking: bool = True


FINGERPRINTS: list[Fingerprint] = []


def register_fingerprint(fp: Fingerprint) -> Fingerprint:
    """Check ``fp`` across every suite's results (replaces one of the same ``flag``)."""
    FINGERPRINTS[:] = [f for f in FINGERPRINTS if f.flag != fp.flag]
    FINGERPRINTS.append(fp)
    register_flag(fp.flag, fp.description, blocking=fp.blocking)
    return fp


def _recorded(env: Envelope, field: str) -> Any:
    return env.provenance.model_dump().get(field)


def fingerprint_mismatches(results: Iterable[tuple[Job, Envelope]], fp: Fingerprint, *,
                           live: bool = True) -> dict[str, dict[str, str]]:
    """``{job_id: {fp.flag: reason}}`` for results computed on another version of ``fp``'s input.

    Results are grouped by the job's ``fp.arg``; each group's expected fingerprint is the input as
    it is now (``live`` and ``fp.compute`` knows it here) or else the most common recorded one (on
    a tie nobody can say which is right: every result of the group is flagged).
    """
    groups: dict[str, list[tuple[Job, str]]] = {}
    for job, env in results:
        root, value = job.args.get(fp.arg), _recorded(env, fp.field)
        if isinstance(root, str) and value:
            groups.setdefault(root, []).append((job, value))
    out: dict[str, dict[str, str]] = {}
    for root, items in groups.items():
        current = fp.compute(root) if live else None
        if current is not None:
            expected, what = current, f"the current {fp.arg} {root}"
        else:
            counts = Counter(v for _, v in items).most_common()
            if len(counts) == 1:
                continue
            tie = counts[0][1] == counts[1][1]
            expected = None if tie else counts[0][0]
            what = f"most results on {root}"
        for job, value in items:
            if value != expected:
                theirs = f"{expected[:12]} ({what})" if expected else f"the other results on {root} (no majority)"
                out.setdefault(job.job_id, {})[fp.flag] = f"{fp.field} {value[:12]} differs from {theirs}"
    return out


def fingerprint_flags(results: Iterable[tuple[Job, Envelope]], *,
                      live: bool = True) -> dict[str, dict[str, str]]:
    """Every registered :class:`Fingerprint`'s mismatches, merged per job id."""
    ensure_loaded()
    results = list(results)
    out: dict[str, dict[str, str]] = {}
    for fp in FINGERPRINTS:
        for job_id, reasons in fingerprint_mismatches(results, fp, live=live).items():
            out.setdefault(job_id, {}).update(reasons)
    return out


# --- per table ------------------------------------------------------------------------------

def segregation_key(env: Envelope) -> tuple[tuple[str, str], ...]:
    """``(("transform", "log"),)`` for results under a non-default segregating arg,
    ``()`` for the default protocol."""
    ensure_loaded()
    fields = protocol_fields(env)
    return tuple((arg, str(fields[arg])) for arg, defaults in SEGREGATING_ARGS.items()
                 if arg in fields and fields[arg] not in defaults)


def mixed_flags(segregations: Iterable[tuple]) -> list[str]:
    """``mixed_<arg>`` for each segregating arg among the classes ``segregations`` (the table
    flags of a table that mixes them)."""
    return sorted({f"mixed_{arg}" for seg in segregations for arg, _ in seg})


def single_seed_rows(n_by_row: Mapping[Any, int]) -> list[Any]:
    """Rows whose cells hold exactly one seed: shown as values, never as means."""
    return [row for row, n in n_by_row.items() if n == 1]
