"""Dependencies between the jobs of one run: job B needs job A when a path B passes in one of its
declared ``inputs`` equals or lies under a path A passes in one of its declared ``outputs``
(:func:`dependency_links`); a circle is a SuiteError before anything runs; :func:`_blocked` says
whether a producer's outcome fails or locks its consumer. The rules are in :mod:`benchmark.runner`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Mapping, Optional

from .errors import SuiteError
from .expand import Job
from .job_steps import JobOutcome
from .reconcile import INTERRUPTED


def norm_path(path: str) -> str:
    """One spelling per path: absolute (against the cwd) and normalised; symlinks are not followed."""
    return os.path.abspath(os.path.normpath(path))


def _path_args(job: Job, names: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(arg, path as passed)`` for each of ``names`` that ``job`` passes as one path (not a
    list, flag or None), in declared order."""
    out = []
    for name in names:
        value = job.args.get(name)
        if value is not None and not isinstance(value, (list, bool)):
            out.append((name, str(value)))
    return out


def _self_and_parents(path: str) -> Iterator[str]:
    """``path`` (normalised, absolute), then each folder above it up to the root."""
    while True:
        yield path
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


@dataclass(frozen=True)
class Link:
    """Why a job waits for job ``producer`` (an index): its input ``arg`` (``path``, as passed)
    equals or lies under a path the producer passes in one of its declared outputs."""

    producer: int
    arg: str
    path: str


def dependency_links(jobs: list[Job]) -> dict[int, list[Link]]:
    """``{consumer index: [Link, ...]}`` for the jobs that read what another job of ``jobs``
    writes; jobs without producers are left out. A job never depends on itself. Paths are
    compared whole, by components (``runs/a`` is not above ``runs/ab/x.pt``)."""
    writers: dict[str, list[int]] = {}
    for i, job in enumerate(jobs):
        for _, path in _path_args(job, job.outputs):
            here = writers.setdefault(norm_path(path), [])
            if i not in here:
                here.append(i)
    if not writers:
        return {}
    links: dict[int, list[Link]] = {}
    for i, job in enumerate(jobs):
        for arg, path in _path_args(job, job.inputs):
            for place in _self_and_parents(norm_path(path)):
                for p in writers.get(place, ()):
                    if p != i and all(link.producer != p for link in links.get(i, ())):
                        links.setdefault(i, []).append(Link(p, arg, path))
    return links


def job_dependencies(jobs: list[Job]) -> dict[int, set[int]]:
    """``{consumer index: {producer indices}}``: see :func:`dependency_links`."""
    return {i: {link.producer for link in found} for i, found in dependency_links(jobs).items()}


def find_cycle(deps: Mapping[int, set[int]]) -> Optional[list[int]]:
    """One cycle of the graph ``deps`` (node -> nodes it needs) as ``[a, b, ..., a]`` (each needs
    the next), or None. Deterministic: nodes and their needs are visited in sorted order."""
    state: dict[int, int] = {}  # 1: on the current path, 2: explored, no cycle through it
    for root in sorted(deps):
        if root in state:
            continue
        path, todo = [root], [iter(sorted(deps[root]))]
        state[root] = 1
        while path:
            nxt = next(todo[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                todo.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                todo.append(iter(sorted(deps.get(nxt, ()))))
    return None


def check_dependencies(jobs: list[Job]) -> dict[int, list[Link]]:
    """:func:`dependency_links` of ``jobs``; SuiteError naming the jobs if they form a cycle."""
    links = dependency_links(jobs)
    cycle = find_cycle({i: {link.producer for link in found} for i, found in links.items()})
    if cycle is not None:
        chain = " -> ".join(f"{jobs[i].label} ({jobs[i].job_id})" for i in cycle)
        raise SuiteError(f"{jobs[cycle[0]].suite}: jobs depend on each other in a cycle (each reads a path "
                         f"the next one writes through its `inputs` / `outputs` args): {chain}")
    return links


def _blocked(job: Job, links: list[Link], jobs: list[Job],
             results: Mapping[int, JobOutcome]) -> Optional[JobOutcome]:
    """The outcome of a job whose producers all have one, when it must not run: failed (a
    producer failed) or locked (a producer runs elsewhere); None when it may be judged as usual."""
    for status, verb, state in (("failed", "not run", "which failed"),
                                (INTERRUPTED, "not run", "which was interrupted"),
                                ("locked", "not judged", "which is running elsewhere")):
        for link in links:
            if results[link.producer].status == status:
                src = jobs[link.producer]
                return JobOutcome(job, status, f"{verb}: its input {link.arg} ({link.path}) comes from job "
                                               f"{src.job_id} ({src.label}), {state}")
    return None


