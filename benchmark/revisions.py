"""The per-seed metrics of a git revision or a DVC experiment, for ``benchmark compare``.

Each suite's stage commits ``metrics/<suite>.seeds.json`` (a DVC out with ``cache: false``)::

    {"suite": "<name>", "seed_arg": "<--seed or null>",
     "rows": {"<row label>": {"<metric>": {"<seed value as text>": <float>}}}}

with the row label of :func:`benchmark.compare.row_label`. :func:`resolve_revision` turns a
git revision (commit, branch, tag, ``HEAD~1``) or a DVC experiment name into a commit and
:func:`read_seed_files` reads those files as they are at that commit (``git ls-tree`` /
``git show``; the working tree is not touched).

DVC keeps an experiment as a hidden git ref ``refs/exps/<baseline[:2]>/<baseline[2:]>/<name>``
(other refs under ``refs/exps/``, such as the stash or the executors' refs, have another shape and
are skipped). A name that is a git revision is read as the revision; an experiment name found under
several baselines is taken from the one whose baseline is ``HEAD``, and is otherwise ambiguous.
Every failure is a :class:`~benchmark.errors.SuiteError` of one line (exit 2).
"""
from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import SuiteError

METRICS_DIR = "metrics"
SEEDS_SUFFIX = ".seeds.json"
EXP_NAMESPACE = "refs/exps/"


@dataclass(frozen=True)
class Revision:
    """``spec`` as given, the commit it names, and how it was found (``git revision`` or
    ``DVC experiment <ref>``)."""

    spec: str
    commit: str
    kind: str

    def describe(self) -> str:
        return f"{self.spec} ({self.kind}, {self.commit[:10]})"


@dataclass(frozen=True)
class SeedFile:
    """One ``metrics/<suite>.seeds.json``: ``rows[row][metric][seed text] = value`` (NaN dropped)."""

    suite: str
    seed_arg: Optional[str]
    rows: dict[str, dict[str, dict[str, float]]]


def _git(repo: Path | str, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    except OSError as exc:  # no git on PATH
        raise SuiteError(f"git: cannot run: {exc}") from None


def _commit_of(repo: Path | str, spec: str) -> Optional[str]:
    done = _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{spec}^{{commit}}")
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def experiment_refs(repo: Path | str) -> dict[str, list[str]]:
    """``experiment name -> [refs/exps/xx/yyyy/name, ...]`` of every experiment ref."""
    done = _git(repo, "for-each-ref", "--format=%(refname)", EXP_NAMESPACE)
    if done.returncode != 0:
        return {}
    out: dict[str, list[str]] = {}
    for ref in done.stdout.split():
        parts = ref.split("/")  # refs, exps, baseline[:2], baseline[2:], name
        if len(parts) == 5 and len(parts[2]) == 2:
            out.setdefault(parts[4], []).append(ref)
    return out


def resolve_revision(spec: str, repo: Path | str = ".", label: str = "") -> Revision:
    """The commit ``spec`` names in the git repository at ``repo``: a git revision first, else
    the experiment ref whose last path component is ``spec``. Unknown -> one-line SuiteError."""
    where = f"{label} {spec}".strip()
    if _git(repo, "rev-parse", "--git-dir").returncode != 0:
        raise SuiteError(f"{where}: not a results directory, and {Path(repo).resolve()} is not a git repository")
    commit = _commit_of(repo, spec) if not spec.startswith("-") else None
    if commit is not None:
        return Revision(spec, commit, "git revision")
    refs = experiment_refs(repo).get(spec, [])
    if len(refs) > 1:
        head = _commit_of(repo, "HEAD") or ""
        refs = [r for r in refs if "".join(r.split("/")[2:4]) == head] or refs
    if len(refs) > 1:
        raise SuiteError(f"{where}: DVC experiment name under several baselines ({', '.join(refs)}); "
                         "name one of those refs instead")
    if refs:
        commit = _commit_of(repo, refs[0])
        if commit is not None:
            return Revision(spec, commit, f"DVC experiment {refs[0]}")
    raise SuiteError(f"{where}: not a results directory, git revision or DVC experiment name")


def _finite(value) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def parse_seed_file(doc, where: str) -> SeedFile:
    """Check and convert one seeds document (non-numbers and NaN are dropped, as missing)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("suite"), str) or not isinstance(doc.get("rows"), dict):
        raise SuiteError(f"{where}: expected {{\"suite\": NAME, \"seed_arg\": ..., \"rows\": {{...}}}}")
    seed_arg = doc.get("seed_arg")
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for row, metrics in doc["rows"].items():
        if not isinstance(metrics, dict) or not all(isinstance(s, dict) for s in metrics.values()):
            raise SuiteError(f"{where}: rows.{row}: expected {{metric: {{seed: value}}}}")
        rows[row] = {m: {str(seed): v for seed, x in seeds.items() if (v := _finite(x)) is not None}
                     for m, seeds in metrics.items()}
    return SeedFile(doc["suite"], seed_arg if isinstance(seed_arg, str) else None, rows)


def read_seed_files(rev: Revision, repo: Path | str = ".") -> dict[str, SeedFile]:
    """``suite name -> SeedFile`` of every ``metrics/*.seeds.json`` at ``rev``; none -> SuiteError."""
    listing = _git(repo, "ls-tree", "--full-tree", "--name-only", rev.commit, f"{METRICS_DIR}/")
    paths = sorted(p for p in listing.stdout.splitlines() if p.endswith(SEEDS_SUFFIX))
    if listing.returncode != 0 or not paths:
        raise SuiteError(f"{rev.describe()}: no {METRICS_DIR}/*{SEEDS_SUFFIX} at that revision "
                         "(the suites' per-seed metrics are committed from this change on)")
    out: dict[str, SeedFile] = {}
    for path in paths:
        where = f"{rev.spec}:{path}"
        shown = _git(repo, "show", f"{rev.commit}:{path}")
        if shown.returncode != 0:
            last = (shown.stderr.strip().splitlines() or ["?"])[-1]
            raise SuiteError(f"{where}: git show failed: {last}")
        try:
            doc = json.loads(shown.stdout)
        except json.JSONDecodeError as exc:
            raise SuiteError(f"{where}: not JSON ({exc})") from None
        seeds = parse_seed_file(doc, where)
        out[seeds.suite] = seeds
    return out
