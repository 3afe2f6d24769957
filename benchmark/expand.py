"""Expansion of a suite into jobs: cartesian product of matrix axes x seed values.

A job's identity (``job_id``) is the first 16 hex digits of the sha256 of the canonical JSON of
``{"module" | "program": ..., "args": resolved args}``, plus ``"protocol_version": N`` when the
module declares ``PROTOCOL_VERSION = N`` with N != 1 (:mod:`benchmark.code_identity`): it does not
depend on the suite name, the results directory, the output path or the machine, so a re-run finds
finished jobs; version 1 leaves the ids as they were before versions existed, and bumping a
module's version re-runs that module's jobs only.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .code_identity import command_version
from .errors import SuiteError
from .seeds import derive_seed, replicate_identity

if TYPE_CHECKING:  # annotations only: `import benchmark` (a job recording its code) skips pydantic
    from .suite import Suite

PYTHON_ALIASES = ("python", "python3")


@dataclass
class Job:
    """One unit of work: an argv that writes ``out_json``; ``tags`` say where it sits in the matrix."""

    suite: str
    job_id: str
    tags: dict[str, Any]
    argv: list[str]
    out_json: Path
    log: Path
    task: str = "command"
    args: dict[str, Any] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()  # args naming input files whose contents the result depends on
    outputs: tuple[str, ...] = ()  # args naming paths the job writes besides its result JSON
    depends_on: tuple[str, ...] = ()  # files (not args) whose contents every job's result depends on

    @property
    def lock(self) -> Path:
        return self.out_json.with_name(f"{self.job_id}.lock")

    @property
    def job_json(self) -> Path:
        return self.out_json.with_name(f"{self.job_id}.job.json")

    @property
    def label(self) -> str:
        """``ckpt=scratch query=pool eval_seed=0`` (or ``(single job)``)."""
        return " ".join(f"{k}={v}" for k, v in self.tags.items()) or "(single job)"


def canonical_args(args: dict[str, Any]) -> dict[str, Any]:
    """Args as they reach the argv: ``None`` and ``False`` are omitted, keys sorted."""
    return {k: args[k] for k in sorted(args) if args[k] is not None and args[k] is not False}


def job_id_for(command: dict[str, Any], args: dict[str, Any], version: int = 1) -> str:
    """Stable id: sha256 of canonical JSON of ``{**command, "args": canonical args}``, with
    ``"protocol_version": version`` when ``version`` is not 1; 16 hex."""
    payload = {**command, "args": canonical_args(args)}
    if version != 1:
        payload["protocol_version"] = version
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def format_value(value: Any) -> str:
    """One argv token for a scalar: bools as true/false, floats by repr (shortest round-trip)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def render_args(args: dict[str, Any]) -> list[str]:
    """``{k: v}`` -> ``--k v``; True -> bare ``--k``; False/None/[] -> omitted; list -> ``--k a b``."""
    out: list[str] = []
    for key, value in args.items():
        flag = key if key.startswith("-") else f"--{key}"
        if value is None or value is False or value == []:
            continue
        if value is True:
            out.append(flag)
        elif isinstance(value, list):
            out += [flag, *map(format_value, value)]
        else:
            out += [flag, format_value(value)]
    return out


def command_of(suite: Suite) -> dict[str, Any]:
    """The suite's command: ``{"module": m}`` or ``{"program": [...]}`` (a matrix row may run
    another module: see :data:`benchmark.suite.ROW_MODULE_KEY` and :func:`matrix_points`); an
    ``ingest`` suite runs :mod:`benchmark.ingest`."""
    if getattr(suite, "ingest", None) is not None:
        from .ingest import INGEST_MODULE

        return {"module": INGEST_MODULE}
    return {"module": suite.module} if suite.module else {"program": list(suite.program or [])}


def command_prefix(command: dict[str, Any]) -> list[str]:
    """argv prefix: ``[python, -m, module]`` or the program with ``python`` -> this interpreter."""
    if "module" in command:
        return [sys.executable, "-m", command["module"]]
    program = list(command["program"])
    if program and program[0] in PYTHON_ALIASES:
        program[0] = sys.executable
    return program


def matrix_points(suite: Suite) -> Iterable[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """Yield ``(tags, args, command)`` for every matrix x seed combination, in suite order.

    ``command`` is the suite's, or ``{"module": m}`` when one of the point's rows sets
    ``module: m`` (a baseline that answers the same protocol with another program; the last
    axis that sets it wins). Fixed seeds are passed as written. Derived seeds (``seeds: {arg:
    N}``): the tag is the replicate index and the arg is :func:`benchmark.seeds.derive_seed` of
    ``root_seed`` and the point's identity (command, args without the seed arg, replicate index).
    """
    from .suite import ROW_MODULE_KEY

    axes = suite.axes
    per_axis = [list(suite.matrix[a].items()) for a in axes]
    seeds = suite.seed_values or [None]
    for combo in itertools.product(*per_axis):
        args = dict(suite.args)
        tags: dict[str, Any] = {}
        command = command_of(suite)
        for axis, (row, value) in zip(axes, combo):
            tags[axis] = row
            if isinstance(value, dict):
                value = dict(value)
                if ROW_MODULE_KEY in value:
                    command = {"module": value.pop(ROW_MODULE_KEY)}
                args.update(value)
            else:
                args[axis] = value
        for seed in seeds:
            a, t = dict(args), dict(tags)
            if suite.seeds_derived:
                a[suite.seed_arg] = derive_seed(suite.root_seed, replicate_identity(command, args, seed))
                t[suite.seed_arg] = seed
            elif suite.seed_arg is not None:
                a[suite.seed_arg] = seed
                t[suite.seed_arg] = seed
            yield t, a, command


def expand(suite: Suite, results_dir: Path | str = "results") -> list[Job]:
    """All jobs of ``suite``. Two matrix points with identical resolved args raise SuiteError, and
    so does a module whose ``PROTOCOL_VERSION`` is not an int literal."""
    results_dir = Path(results_dir)
    base = results_dir / suite.name
    jobs: list[Job] = []
    seen: dict[str, dict[str, Any]] = {}
    versions: dict[str, int] = {}
    sources: dict = {}  # an ingest suite's metrics files, each parsed once
    for tags, args, command in matrix_points(suite):
        if suite.ingest is not None:  # the job's args: its row in a metrics file (benchmark.ingest)
            args = _ingest_args(suite, tags, args, sources)
        key = json.dumps(command, sort_keys=True)
        if key not in versions:
            try:
                versions[key] = command_version(command)
            except ValueError as exc:
                raise SuiteError(f"{suite.source}: {exc}") from None
        jid = job_id_for(command, args, versions[key])
        if jid in seen:
            a = " ".join(f"{k}={v}" for k, v in seen[jid].items())
            b = " ".join(f"{k}={v}" for k, v in tags.items())
            raise SuiteError(f"{suite.source}: matrix: points [{a}] and [{b}] resolve to identical "
                             "args (the same job); make the rows differ or drop one")
        seen[jid] = tags
        out_json = base / f"{jid}.json"
        argv = [*command_prefix(command), *render_args(args), suite.out_flag, str(out_json)]
        jobs.append(Job(suite=suite.name, job_id=jid, tags=tags, argv=argv, out_json=out_json,
                        log=base / "logs" / f"{jid}.log", task=suite.task, args=args,
                        inputs=tuple(suite.inputs), outputs=tuple(suite.outputs),
                        depends_on=tuple(suite.depends_on)))
    return jobs


def _ingest_args(suite: Suite, tags: dict[str, Any], args: dict[str, Any], sources: dict) -> dict[str, Any]:
    """:func:`benchmark.ingest.ingest_args`; a bad metrics file is a SuiteError naming the job."""
    from .ingest import ingest_args
    from .ingest_read import IngestError

    try:
        return ingest_args(suite, args, sources)
    except IngestError as exc:
        label = " ".join(f"{k}={v}" for k, v in tags.items())
        raise SuiteError(f"{exc} (ingest of {suite.source}, job {label})") from None


def select(jobs: list[Job], only: dict[str, list[str]]) -> list[Job]:
    """Jobs whose tags match every ``axis -> allowed rows`` entry of ``only`` (string compare)."""
    return [j for j in jobs if all(str(j.tags.get(k)) in v for k, v in only.items())]
