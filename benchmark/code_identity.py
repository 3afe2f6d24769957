"""Which code computed a result: the protocol version a job's module declares, and a digest of
the source it runs. Nothing here imports the module it describes (the source is read with ast).

A job's id is its module and args (:mod:`benchmark.expand`), so after an edit the runner skips
every finished job. Two things keep a report from silently mixing numbers of different code
without making a refactor re-run the catalog:

* **Protocol version.** A module declares ``PROTOCOL_VERSION = N`` (an int literal at its top
  level) next to the code it versions. The version enters the job id only when it is not 1
  (:func:`benchmark.expand.job_id_for`): declaring it re-runs nothing, bumping it re-runs that
  module's jobs and no other. Bump it when the module's numbers change.
* **Code digest.** Every result records ``provenance.code`` (:func:`code_identity`, written by
  the job itself, through its lab's result writer): the module, its protocol version, the
  sha256 of its import closure and one short hash per file. The closure is the module's file,
  the ``__init__.py`` of its packages and, transitively, every module they import (anywhere in
  the file, lazily imported ones included) that resolves to a file under the same root as the
  job's module (the repository's own packages); third-party code is left out.
  Reports compare it with the checkout's (:func:`code_flags`): a result of other code carries
  ``code_changed`` naming the files that differ, and a table whose results of one module come
  from several digests says so (:func:`mixed_code`). A refactor shows up as a flag, not as a
  silent mix nor as a re-run; the researcher bumps the version (numbers changed: its jobs re-run)
  or accepts the results for the current code (:func:`accept_code`), which re-stamps them and
  keeps what they were computed with in ``provenance.code_accepted``.

Modules resolve like ``python -m`` from the working directory would find them, then from the
checkout this package lives in (:func:`search_roots`). Caches key on each file's size and mtime,
so a long-lived process (a pool worker, a report over 300 results) hashes each file once.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

#: The checkout of this engine (the directory holding ``benchmark/``).
REPO_ROOT = Path(__file__).resolve().parents[1]
VERSION_NAME = "PROTOCOL_VERSION"
DEFAULT_VERSION = 1
#: Hex digits of each file's sha256 kept in ``provenance.code.files`` (enough to say which changed).
FILE_HASH_CHARS = 16

#: Left out of every closure: modules that record or write a job's result, not compute its numbers
#: (the producer imports them: this one for ``provenance.code``, the envelope and the atomic writer
#: to write the result JSON).
NOT_CODE = frozenset({__name__, "benchmark.envelope", "benchmark.atomic"})

CODE_CHANGED = "code_changed"
MIXED_CODE = "mixed_code"

_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def search_roots() -> tuple[Path, ...]:
    """Where modules are looked for: the working directory (``python -m`` puts it first on
    ``sys.path``), then :data:`REPO_ROOT`."""
    out: list[Path] = []
    for root in (Path.cwd(), REPO_ROOT):
        root = root.resolve()
        if root not in out:
            out.append(root)
    return tuple(out)


def find_module(name: str, roots: Optional[Iterable[Path]] = None) -> Optional[tuple[Path, Path]]:
    """``(file, root)`` of module ``name`` (``a/b/c.py`` or ``a/b/c/__init__.py`` under the first
    root that has it), without importing anything; None if no root has it."""
    if not isinstance(name, str) or not _MODULE_NAME.fullmatch(name):
        return None
    parts = name.split(".")
    for root in (search_roots() if roots is None else roots):
        root = Path(root)
        base = root.joinpath(*parts)
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                return path, root
    return None


@dataclass(frozen=True)
class _Source:
    sha256: str
    imports: tuple[tuple[int, str, tuple[str, ...]], ...]  # (level, module, names); Import: level -1
    version: Any  # the top-level PROTOCOL_VERSION: an int, None (absent) or an error message


_sources: dict[tuple[str, int, int], _Source] = {}


def _source(path: Path) -> _Source:
    """Hash, imports and declared version of one file (memoized on path, size and mtime)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _sources:
        return _sources[key]
    data = path.read_bytes()
    imports: list[tuple[int, str, tuple[str, ...]]] = []
    version: Any = None
    try:
        tree = ast.parse(data, filename=str(path))
    except (SyntaxError, ValueError):
        tree = None
    if tree is not None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imports += [(-1, alias.name, ()) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                imports.append((node.level, node.module or "", tuple(a.name for a in node.names)))
        version = _declared_version(tree, path)
    src = _Source(hashlib.sha256(data).hexdigest(), tuple(imports), version)
    _sources[key] = src
    return src


def _declared_version(tree: ast.Module, path: Path) -> Any:
    """The int a top-level ``PROTOCOL_VERSION = N`` assigns; None if the module binds no such
    name; an error message if it binds it some other way (the engine cannot read it without
    running the module)."""
    found: Any = None
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if not any(isinstance(t, ast.Name) and t.id == VERSION_NAME for t in targets):
                continue
            value = node.value
            if (isinstance(value, ast.Constant) and isinstance(value.value, int)
                    and not isinstance(value.value, bool) and value.value >= 1):
                found = value.value
            else:
                found = (f"{path}:{node.lineno}: {VERSION_NAME} must be assigned a positive int "
                         "literal (the engine reads it from the source)")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((a.asname or a.name) == VERSION_NAME for a in node.names):
                found = (f"{path}:{node.lineno}: {VERSION_NAME} must be assigned in the module itself "
                         "(the engine reads it from the source), not imported")
    return found


def declared_version(module: str, roots: Optional[Iterable[Path]] = None) -> Optional[int]:
    """The ``PROTOCOL_VERSION`` module ``module`` declares; None if it declares none or cannot be
    found here. ValueError if it declares one the source does not spell as an int literal."""
    found = find_module(module, roots)
    version = _source(found[0]).version if found is not None else None
    if isinstance(version, str):
        raise ValueError(version)
    return version


def protocol_version(module: str, roots: Optional[Iterable[Path]] = None) -> int:
    """:func:`declared_version`, 1 when none is declared."""
    version = declared_version(module, roots)
    return DEFAULT_VERSION if version is None else version


def command_version(command: Mapping[str, Any], roots: Optional[Iterable[Path]] = None) -> int:
    """Protocol version of a suite command: its module's (:func:`protocol_version`); 1 for a
    ``program``."""
    module = command.get("module")
    return protocol_version(module, roots) if module else DEFAULT_VERSION


def _absolute(level: int, module: str, importer: str, is_package: bool) -> str:
    """Absolute name of ``from <level dots><module> import ...`` inside ``importer``."""
    if level <= 0:
        return module
    package = importer if is_package else importer.rpartition(".")[0]
    parts = package.split(".") if package else []
    if level - 1 > len(parts):
        return ""
    base = parts[:len(parts) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def import_closure(module: str, roots: Optional[Iterable[Path]] = None) -> Optional[tuple[Path, dict[str, Path]]]:
    """``(root, {relative posix path: file})`` of the code ``module`` runs from its root: its file,
    its packages' ``__init__.py`` and, transitively, what they import from the same root
    (:data:`NOT_CODE` excepted). None if ``module`` is not found."""
    found = find_module(module, roots)
    if found is None:
        return None
    root = found[1]
    files: dict[str, Path] = {}
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if not name or name in seen or any(name == m or name.startswith(f"{m}.") for m in NOT_CODE):
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # packages run their __init__
        hit = find_module(name, (root,))
        if hit is None:
            continue  # not this repository's (or an attribute imported with "from x import y")
        path = hit[0]
        files[path.relative_to(root).as_posix()] = path
        is_package = path.name == "__init__.py"
        for level, target, names in _source(path).imports:
            base = _absolute(level, target, name, is_package) if level >= 0 else target
            todo.append(base)
            todo += [f"{base}.{n}" if base else n for n in names if n != "*"]
    return root, files


def code_identity(module: str, roots: Optional[Iterable[Path]] = None) -> Optional[dict[str, Any]]:
    """``provenance.code`` of a job running ``module``: ``{"module", "protocol_version",
    "sha256", "files": {path: short sha256}}``, where ``sha256`` hashes ``"<path>\\t<sha256 of
    the file>\\n"`` over the sorted closure (:func:`import_closure`); None if ``module`` is not
    found."""
    found = find_module(module, roots)
    if found is None:
        return None
    path, root = found
    _, files = import_closure(module, (root,))
    digests = {rel: _source(f).sha256 for rel, f in sorted(files.items())}
    total = hashlib.sha256("".join(f"{rel}\t{d}\n" for rel, d in digests.items()).encode()).hexdigest()
    version = _source(path).version
    return {"module": module, "protocol_version": version if isinstance(version, int) else DEFAULT_VERSION,
            "sha256": total, "files": {rel: d[:FILE_HASH_CHARS] for rel, d in digests.items()}}


def main_module() -> Optional[str]:
    """The module this process runs as ``__main__`` (``python -m m``, or a pool worker's
    ``runpy.run_module``), from its spec; None for a script or an interactive session."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None)


# --- reports: results against the checkout --------------------------------------------------

def recorded_code(provenance: Any) -> Optional[dict[str, Any]]:
    """A result's ``provenance.code`` (a pydantic model or a mapping); None when not recorded."""
    extra = getattr(provenance, "model_extra", None)
    prov = extra if extra is not None else provenance
    code = prov.get("code") if isinstance(prov, Mapping) else None
    return code if isinstance(code, Mapping) and isinstance(code.get("sha256"), str) else None


def short(digest: Optional[str]) -> str:
    return digest[:12] if digest else "unrecorded"


def file_changes(old: Mapping[str, str], new: Mapping[str, str]) -> str:
    """``"changed a.py, b.py; new c.py; gone d.py"`` between two ``files`` maps ("" if equal)."""
    changed = sorted(f for f in old.keys() & new.keys() if old[f] != new[f])
    parts = [("changed", changed), ("new", sorted(new.keys() - old.keys())), ("gone", sorted(old.keys() - new.keys()))]
    return "; ".join(f"{what} {', '.join(files)}" for what, files in parts if files)


class Checkout:
    """The checkout's code identity of each module, computed once per module."""

    def __init__(self, roots: Optional[Iterable[Path]] = None):
        self.roots = None if roots is None else tuple(roots)
        self._memo: dict[str, Optional[dict[str, Any]]] = {}

    def __call__(self, module: str) -> Optional[dict[str, Any]]:
        if module not in self._memo:
            self._memo[module] = code_identity(module, self.roots)
        return self._memo[module]


def code_change(code: Mapping[str, Any], checkout: Checkout) -> Optional[str]:
    """Why recorded ``code`` is not the checkout's (None when it is)."""
    module = code.get("module")
    current = checkout(module) if isinstance(module, str) else None
    if current is None:
        return f"computed by {module} {short(code['sha256'])}, a module this checkout does not have"
    if current["sha256"] == code["sha256"]:
        return None
    files = code.get("files")
    what = file_changes(files, current["files"]) if isinstance(files, Mapping) else ""
    return (f"computed by code {short(code['sha256'])}; the checkout's {module} is "
            f"{short(current['sha256'])}" + (f": {what}" if what else ""))


def code_flags(results: Iterable[tuple[Any, Any]], checkout: Optional[Checkout] = None) -> dict[str, dict[str, str]]:
    """``{job_id: {"code_changed": reason}}`` for results (``(job, envelope)`` pairs) whose recorded
    code differs from the checkout's. Results that record none are left to :func:`mixed_code`."""
    checkout = checkout or Checkout()
    out: dict[str, dict[str, str]] = {}
    for job, env in results:
        code = recorded_code(env.provenance)
        reason = code_change(code, checkout) if code is not None else None
        if reason:
            out[job.job_id] = {CODE_CHANGED: reason}
    return out


def job_module(job: Any) -> str:
    """The module a job runs (``[python, -m, module, ...]``), else ``"(program)"``."""
    argv = list(job.argv)
    return argv[2] if len(argv) > 2 and argv[1] == "-m" else "(program)"


def code_key(job: Any, env: Any) -> tuple[str, Optional[str]]:
    """``(module, digest or None)`` of a result: the module it records, else the job's."""
    code = recorded_code(env.provenance)
    if code is not None and isinstance(code.get("module"), str):
        return code["module"], code["sha256"]
    return job_module(job), None


def code_versions(pairs: Iterable[tuple[Any, Any]]) -> dict[str, Counter]:
    """``{module: Counter(digest or None)}`` over ``(job, envelope)`` pairs."""
    out: dict[str, Counter] = {}
    for job, env in pairs:
        module, digest = code_key(job, env)
        out.setdefault(module, Counter())[digest] += 1
    return out


def versions_text(module: str, counts: Counter, checkout: Optional[Checkout] = None) -> str:
    """``"`m`: 1a2b3c4d5e6f (current, 10), 9f9f9f9f9f9f (2), unrecorded (3)"``."""
    current = (checkout(module) or {}).get("sha256") if checkout is not None else None
    items = sorted(counts.items(), key=lambda kv: (kv[0] != current, kv[0] is None, str(kv[0])))
    return f"`{module}`: " + ", ".join(
        f"{short(d)} ({'current, ' if d is not None and d == current else ''}{n})" for d, n in items)


def mixed_code(pairs: Iterable[tuple[Any, Any]], checkout: Optional[Checkout] = None) -> list[str]:
    """One :func:`versions_text` per module whose results come from more than one code version
    (a digest, or none recorded); empty when no module is mixed."""
    return [versions_text(m, c, checkout) for m, c in sorted(code_versions(pairs).items()) if len(c) > 1]


# --- accepting results for the current code ------------------------------------------------

def accept_code(jobs: Iterable[Any], checkout: Optional[Checkout] = None) -> list[tuple[Any, str]]:
    """Re-stamp the results of ``jobs`` computed by other code (or with none recorded) with the
    checkout's ``provenance.code``, appending what they were computed with (digest, files,
    git rev, when accepted) to ``provenance.code_accepted``. For a refactor whose numbers are
    known to be unchanged; a change of numbers bumps ``PROTOCOL_VERSION`` instead. Returns
    ``[(job, what changed)]`` of the results rewritten (atomically); missing results, results
    already current and modules this checkout cannot find are left alone. The caller records the
    rewritten files as accepted (:func:`benchmark.records.reaccept_result`), as ``accept-code``
    does."""
    from .atomic import atomic_write_json

    checkout = checkout or Checkout()
    stamped = datetime.now(timezone.utc).isoformat(timespec="seconds")
    done = []
    for job in jobs:
        try:
            doc = json.loads(Path(job.out_json).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        prov = doc.get("provenance") if isinstance(doc, dict) else None
        if not isinstance(prov, dict):
            continue
        old = recorded_code(prov)
        module = old["module"] if old is not None else job_module(job)
        current = checkout(module)
        if current is None or (old is not None and old["sha256"] == current["sha256"]):
            continue
        what = (file_changes(old.get("files") or {}, current["files"]) if old is not None
                else "no code digest recorded")
        prov["code_accepted"] = [*(prov.get("code_accepted") or []), {
            "sha256": old["sha256"] if old is not None else None, "files": (old or {}).get("files"),
            "git_rev": prov.get("git_rev"), "accepted_as": current["sha256"], "at": stamped}]
        prov["code"] = current
        atomic_write_json(Path(job.out_json), doc, sort_keys=False)  # keys keep their order
        done.append((job, what))
    return done
