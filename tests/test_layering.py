"""The import structure, read from the source (ast, nothing imported):

- the research column ``nepa3d`` is layered: every import of one nepa3d module by another follows
  :data:`ALLOWED` (a module's layer: the longest prefix in :data:`LAYERS`), so no import runs back up;
- the engine's modules (``benchmark``) import each other without a circle (a DFS over every import,
  lazy and ``TYPE_CHECKING`` ones included: a circle there is a circle in the design);
- the engine never imports ``nepa3d`` at module level (the research code is a plugin, loaded lazily).
- engine modules stay small (:data:`MAX_LINES`) unless their docstring says why they are one piece;
- report rendering reads no DVC file and runs no git: those lookups are :mod:`benchmark.dvc_lookup`'s.

Known exceptions are listed with their reason and must still exist (a stale entry fails too, so the
list shrinks as the code is fixed).
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterable

ROOT = Path(__file__).resolve().parents[1]

#: module prefix -> layer (longest prefix wins). ``data`` is two layers: the cache store (read by the
#: backends) and the datasets built on backends + tokenizer; preprocessing writes the store.
LAYERS = {
    "nepa3d": "base",
    "nepa3d.protocol_thresholds": "base",
    "nepa3d.utils": "utils",
    "nepa3d.geometry": "geometry",
    "nepa3d.data": "preprocess",
    "nepa3d.data.cache": "store",
    "nepa3d.data.corpus_meta": "store",
    "nepa3d.data.npz_members": "store",
    "nepa3d.data.loader_store": "store",
    "nepa3d.data.mesh_files": "store",
    "nepa3d.backends": "backends",
    "nepa3d.cli": "cli",
    "nepa3d.token": "token",
    "nepa3d.data.dataset": "dataset",
    "nepa3d.data.mixed_pretrain": "dataset",
    "nepa3d.models": "models",
    "nepa3d.train": "train",
    "nepa3d.analysis": "analysis",
    "nepa3d.bench_plugin": "plugin",
}

#: layer -> the layers its modules may import (its own included). Read bottom-up:
#: base < utils < geometry, store, token < preprocess, backends < cli < dataset < models < train < analysis < plugin
#: (cli: the research CLIs' flag parsing, typed configs and flag groups, which name backend and token
#: options; the programs in preprocess, train and analysis parse their flags with it)
ALLOWED = {
    "base": {"base"},
    "utils": {"base", "utils"},
    "geometry": {"base", "utils", "geometry"},
    "store": {"base", "utils", "store"},
    "token": {"base", "utils", "token"},
    "preprocess": {"base", "utils", "geometry", "store", "cli", "preprocess"},
    "backends": {"base", "utils", "geometry", "store", "backends"},
    "cli": {"base", "utils", "geometry", "store", "backends", "token", "cli"},
    "dataset": {"base", "utils", "geometry", "store", "backends", "token", "dataset"},
    "models": {"base", "utils", "token", "models"},
    "train": {"base", "utils", "geometry", "store", "backends", "token", "cli", "dataset", "models", "train"},
    "analysis": {"base", "utils", "geometry", "store", "backends", "token", "cli", "dataset", "models", "train",
                 "analysis"},
    "plugin": set(),  # filled below: anything in nepa3d
}
ALLOWED["plugin"] = set(ALLOWED) | {"plugin"}

#: (importer, imported) nepa3d edges against ALLOWED that are known, with why they remain.
KNOWN_UPWARD = {
    ("nepa3d.utils.results", "nepa3d.data.corpus_meta"):
        "the envelope's corpus record; goes with the one result envelope (issue 16 item 3)",
}

#: benchmark modules that still import nepa3d at module level, and why.
KNOWN_ENGINE_TO_NEPA = {
}


#: Lines an engine module may have; a longer one says why in its docstring (:data:`ONE_PIECE`).
MAX_LINES = 420
ONE_PIECE = "One module on purpose"
#: The report's rendering modules, and what they must not import (lookups outside the results).
RENDERING = ("benchmark.report", "benchmark.report_format", "benchmark.report_tables", "benchmark.report_sections")
LOOKUPS = ("yaml", "subprocess", "git", "dvc")


# --- reading imports ------------------------------------------------------------------------------

def modules(package: str) -> dict[str, Path]:
    """``{dotted module name: file}`` of every .py file under ``package`` (a package is its __init__)."""
    out = {}
    for f in sorted((ROOT / package).rglob("*.py")):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def imports(module: str, path: Path, top_level_only: bool = False) -> set[str]:
    """Dotted names a module imports (``from a import b`` gives ``a`` and ``a.b``; relative imports
    resolved). ``top_level_only``: only the statements that run when the module is imported
    (module body, not inside a function, class or ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    nodes: Iterable[ast.AST] = _top_level(tree.body) if top_level_only else ast.walk(tree)
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            out.add(source)
            out.update(f"{source}.{a.name}" for a in node.names)
    return out


def _top_level(body: list[ast.stmt]) -> Iterable[ast.stmt]:
    for stmt in body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            yield stmt
        elif isinstance(stmt, ast.If) and not _is_type_checking(stmt.test):
            yield from _top_level(stmt.body)
            yield from _top_level(stmt.orelse)
        elif isinstance(stmt, ast.Try):
            for block in (stmt.body, stmt.orelse, stmt.finalbody, *(h.body for h in stmt.handlers)):
                yield from _top_level(block)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def graph(package: str) -> dict[str, set[str]]:
    """``{module: modules of the same package it imports}`` (every import, lazy ones included)."""
    mods = modules(package)
    return {m: {d for d in imports(m, f) if d in mods and d != m} for m, f in mods.items()}


def layer_of(module: str) -> str | None:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None)
    return LAYERS[best] if best else None


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One circle of ``g`` as ``[a, b, ..., a]`` (DFS, white/grey/black), None if there is none."""
    state: dict[str, int] = {}  # 1: on the DFS stack, 2: done
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(g.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state:
                found = visit(v)
                if found:
                    return found
        stack.pop()
        state[u] = 2
        return None

    for node in sorted(g):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


# --- the helpers on hand-checked cases ------------------------------------------------------------

def test_find_cycle_on_small_graphs():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None  # a diamond is no circle
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": set(), "s": {"p"}, "p": {"s"}}) == ["p", "s", "p"]


def test_imports_reads_lazy_relative_and_type_checking(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    src = pkg / "mod.py"
    src.write_text("from typing import TYPE_CHECKING\nfrom . import sib\nfrom .other import name\n"
                   "if TYPE_CHECKING:\n    from .typed import T\n"
                   "def f():\n    import lazy.thing\n")
    every = imports("pkg.mod", src)
    assert {"pkg.sib", "pkg.other", "pkg.other.name", "pkg.typed.T", "lazy.thing"} <= every
    top = imports("pkg.mod", src, top_level_only=True)
    assert "pkg.other.name" in top and "pkg.typed" not in top and "lazy.thing" not in top


def test_layer_of_takes_the_longest_prefix():
    assert layer_of("nepa3d.data.cache") == "store"
    assert layer_of("nepa3d.data.preprocess_shapenet") == "preprocess"
    assert layer_of("nepa3d.utils.ckpt") == "utils"
    assert layer_of("nepa3d.models.query_nepa") == "models"


# --- the repository ---------------------------------------------------------------------------------

def test_every_nepa3d_module_has_a_layer():
    missing = [m for m in modules("nepa3d") if layer_of(m) is None]
    assert not missing, f"no layer for {missing}: add its prefix to LAYERS in tests/test_layering.py"


def test_no_nepa3d_import_runs_back_up():
    mods = modules("nepa3d")
    upward = {}
    for m, f in mods.items():
        targets = {max((t for t in mods if dep == t or dep.startswith(t + ".")), key=len, default=None)
                   for dep in imports(m, f)} - {None, m}
        # ``from nepa3d.data import cache`` names the package on the way to its module: only the module counts
        targets = {t for t in targets if not any(o.startswith(t + ".") for o in targets)}
        for target in sorted(targets):
            if layer_of(target) not in ALLOWED[layer_of(m)]:
                upward[(m, target)] = f"{layer_of(m)} -> {layer_of(target)}"
    new = {k: v for k, v in upward.items() if k not in KNOWN_UPWARD}
    assert not new, "imports against the layer table (tests/test_layering.py ALLOWED): " + "; ".join(
        f"{a} imports {b} ({why})" for (a, b), why in sorted(new.items()))
    stale = sorted(set(KNOWN_UPWARD) - set(upward))
    assert not stale, f"fixed, remove from KNOWN_UPWARD: {stale}"


def test_utils_ckpt_imports_no_model():
    mods = modules("nepa3d")
    deps = imports("nepa3d.utils.ckpt", mods["nepa3d.utils.ckpt"])
    assert not {d for d in deps if d.startswith(("nepa3d.models", "nepa3d.token", "nepa3d.train"))}


def test_no_circle_among_benchmark_modules():
    cycle = find_cycle(graph("benchmark"))
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_engine_never_imports_nepa3d_at_module_level():
    found = {m for m, f in modules("benchmark").items()
             if any(d == "nepa3d" or d.startswith("nepa3d.") for d in imports(m, f, top_level_only=True))}
    new = found - set(KNOWN_ENGINE_TO_NEPA)
    assert not new, f"benchmark modules importing nepa3d at module level: {sorted(new)}"
    stale = sorted(set(KNOWN_ENGINE_TO_NEPA) - found)
    assert not stale, f"fixed, remove from KNOWN_ENGINE_TO_NEPA: {stale}"


def test_engine_modules_are_small_or_say_why():
    big = []
    for m, f in modules("benchmark").items():
        n = len(f.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES and ONE_PIECE not in (ast.get_docstring(ast.parse(f.read_text(encoding="utf-8"))) or ""):
            big.append(f"{m} ({n} lines)")
    assert not big, f"split these, or say in the docstring why each is one piece ({ONE_PIECE!r}): {big}"


def test_report_rendering_reads_no_dvc_and_runs_no_git():
    mods = modules("benchmark")
    for m in RENDERING:
        deps = imports(m, mods[m])
        bad = sorted(d for d in deps if d.split(".")[0] in LOOKUPS)
        assert not bad, f"{m} imports {bad}: put the lookup in benchmark/dvc_lookup.py and pass its answer in"
        assert "dvc.yaml" not in mods[m].read_text(encoding="utf-8"), \
            f"{m} names dvc.yaml: a lookup belongs in dvc_lookup"
    lookups = {d for d in imports("benchmark.report_sections", mods["benchmark.report_sections"])}
    assert "benchmark.dvc_lookup" not in lookups  # the protocol section gets the stages as data
