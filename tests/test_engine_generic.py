"""The engine is generic: nothing under benchmark/ names the NEPA-3D protocol, `import benchmark`
imports no nepa3d module, and a lab's protocol arrives as a plugin (benchmark/plugins.py) through
the suite key, $BENCH_PLUGINS or the installed entry points, and takes effect in a run."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "benchmark"))
from benchutil import write_suite  # noqa: E402

from benchmark import guards, plugins, tasks  # noqa: E402
from benchmark.errors import SuiteError  # noqa: E402

#: NEPA-3D concepts: the project, its tasks, data sets, cache keys, backends, baselines and args.
#: A word matches between non-alphanumeric characters (``_`` separates: ``train_udf`` is caught),
#: with an optional plural / digits after it (``nepa3d``, ``meshes``, ``rays``).
NEPA_WORDS = ("nepa", "ucpr", "cpac", "shapenet", "shapenetcore", "scanobjectnn", "modelnet", "udf", "udfgrid",
              "pt_dist", "nn_copy", "cache_root", "cache_manifest", "pointcloud", "point cloud",
              "point-cloud", "voxel", "mesh", "ray", "target_transform", "morton", "marching cubes")
NEPA_RE = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(re.escape(w) for w in NEPA_WORDS)
                     + r")(?:e?s|\d\w*)?(?![A-Za-z0-9])", re.I)

PYTHONPATH = {**os.environ, "PYTHONPATH": str(ROOT)}


def engine_files() -> list[Path]:
    return sorted(p for p in (ROOT / "benchmark").rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def test_the_word_list_catches_what_it_should():
    hits = ["nepa3d.bench_plugin", "NEPA-3D", "suites/cpac.yaml", "train_udf", "pt_dist_pc_pool",
            "baseline/nn_copy/mae", "args.cache_root", "pointcloud_noray", "a point cloud", "meshes",
            "ray_o_pool", "rays", "--target_transform", "ShapeNetCore", "ScanObjectNN", "Voxel grid"]
    misses = ["array", "stray", "mesher_free", "Raymond", "nepal_trip", "udfx", "copy", "cache",
              "root", "transform", "checkpoint", "ckpt"]
    assert [h for h in hits if not NEPA_RE.search(h)] == []
    assert [m for m in misses if NEPA_RE.search(m)] == []


def test_engine_names_no_nepa_concept():
    found = [f"{p.relative_to(ROOT)}:{i}: {m.group(0)!r} in {line.strip()[:100]}"
             for p in engine_files() for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
             for m in [NEPA_RE.search(line)] if m]
    assert len(engine_files()) > 30
    assert found == []


def test_import_benchmark_imports_no_nepa3d():
    """Every engine module imported, with no plugin named: no nepa3d module is loaded."""
    code = ("import importlib, pkgutil, sys, benchmark\n"
            "for m in pkgutil.iter_modules(benchmark.__path__):\n"
            "    if m.name != '__main__':\n"
            "        importlib.import_module('benchmark.' + m.name)\n"
            "print(sorted(n for n in sys.modules if n.split('.')[0] == 'nepa3d'))\n")
    env = {k: v for k, v in PYTHONPATH.items() if k != plugins.ENV_VAR}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_nepa_plugin_is_declared_as_an_entry_point():
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert doc["project"]["entry-points"][plugins.ENTRY_POINT_GROUP] == {"nepa3d": "nepa3d.bench_plugin"}


# --- a toy lab's plugin -------------------------------------------------------------------------

TOY_PLUGIN = '''
from benchmark.guards import ProtocolGuard, register_flag, register_guard
from benchmark.plugins import register_report_lines
from benchmark.tasks import Guard, MetricRule, TaskKind, register_task

register_task(TaskKind(name="{task}", metrics=(MetricRule("score", min=0.0, required=True),),
                       default_metrics=("score",),
                       guards=(Guard("toy_high", lambda m: m.get("score", 0) > 5, "score above 5"),)),
              replace=True)
register_guard(ProtocolGuard("toy_leak", lambda env: "args.leaky is set" if env.args.get("leaky") else None,
                             "the toy protocol's leak", blocking=True, tasks=("{task}",)))
register_flag("toy_note", "a flag the toy program raises itself", blocking=True)
register_report_lines(lambda col: [("toy lab", f"{{len(col.rows)}} toy result(s)")])
'''


def toy_suite(tmp_path: Path, task: str, **extra) -> Path:
    return write_suite(tmp_path, "toy", task=task, args={"task": task},
                       matrix={"row": {"clean": {"scale": 1}, "leaky": {"scale": 1, "leaky": 1},
                                       "high": {"scale": 10, "flag": "toy_note"}}},
                       seeds={"seed": [1]}, tables=[{"rows": ["row"], "metrics": ["score"]}], **extra)


def _forget(module: str, task: str) -> None:
    tasks._REGISTRY.pop(task, None)
    guards.PROTOCOL_GUARDS[:] = [g for g in guards.PROTOCOL_GUARDS if g.flag != "toy_leak"]
    plugins._loaded.pop(module, None)
    sys.modules.pop(module, None)


def test_toy_plugin_from_the_suite_key_takes_effect_in_a_run(tmp_path, monkeypatch):
    from benchmark.collect import collect
    from benchmark.expand import expand
    from benchmark.report import build_report
    from benchmark.runner import run_jobs
    from benchmark.suite import load_suite

    (tmp_path / "toylab_key.py").write_text(TOY_PLUGIN.format(task="toyscore_key"))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(KeyError):
            tasks.get_task("toyscore_key")
        suite = load_suite(toy_suite(tmp_path, "toyscore_key", plugins=["toylab_key"]), tmp_path / "params.yaml")
        jobs = expand(suite, tmp_path / "results")
        assert sorted(o.status for o in run_jobs(jobs, log=lambda s: None).outcomes) == ["done"] * 3
        rows = {r.tags["row"]: r for r in collect(suite, jobs).rows}
        assert {k: r.flags for k, r in rows.items()} == {
            "clean": [], "leaky": ["toy_leak"], "high": ["toy_high", "toy_note"]}
        assert rows["leaky"].reasons["toy_leak"] == "args.leaky is set"
        assert guards.is_blocking("toy_leak") and guards.is_blocking("toy_note")
        assert not guards.is_blocking("toy_high")
        assert guards.describe("toy_note") == "a flag the toy program raises itself"
        md = build_report(suite, jobs).markdown
        assert re.search(r"^\| toy lab +\| 3 toy result\(s\) +\|$", md, re.M)
        assert "toy_leak" in md and "the toy protocol's leak" in md
        # loading again changes nothing (once per process, idempotent)
        n_guards = len(guards.PROTOCOL_GUARDS)
        plugins.load_plugins(["toylab_key"])
        assert len(guards.PROTOCOL_GUARDS) == n_guards and plugins.loaded_plugins().count("toylab_key") == 1
    finally:
        _forget("toylab_key", "toyscore_key")


def _bench(tmp_path: Path, env: dict, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmark", *argv, "--results-dir", str(tmp_path / "results"),
                           "--params", str(tmp_path / "params.yaml")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_toy_plugin_from_the_env_var_in_a_fresh_process(tmp_path):
    (tmp_path / "toylab_env.py").write_text(TOY_PLUGIN.format(task="toyscore_env"))
    suite = toy_suite(tmp_path, "toyscore_env")
    env = {**PYTHONPATH, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]), "BENCH_NO_MLFLOW": "1"}
    without = _bench(tmp_path, {k: v for k, v in env.items() if k != plugins.ENV_VAR}, "validate", str(suite))
    assert without.returncode == 2 and "unknown task 'toyscore_env'" in without.stderr
    env[plugins.ENV_VAR] = "toylab_env"
    run = _bench(tmp_path, env, "run", str(suite), "--no-mlflow")
    assert run.returncode == 0, run.stderr
    rep = _bench(tmp_path, env, "report", str(suite), "--out", str(tmp_path / "reports"))
    assert rep.returncode == 0, rep.stderr
    md = (tmp_path / "reports" / "toy.md").read_text()
    assert re.search(r"^\| toy lab +\| 3 toy result\(s\) +\|$", md, re.M)
    assert "**toy_leak**" in md and "blocks promotion" in md


def test_a_plugin_that_fails_to_load_says_so_in_one_line(tmp_path, monkeypatch):
    from benchmark.suite import load_suite

    (tmp_path / "toylab_broken.py").write_text("import not_a_module_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = toy_suite(tmp_path, "toyscore_broken", plugins=["toylab_broken"])
    try:
        with pytest.raises(SuiteError) as err:
            load_suite(path, tmp_path / "params.yaml")
        assert str(err.value) == (f"{path}: plugins: plugin 'toylab_broken' (suite key) failed to load: "
                                  "ModuleNotFoundError: No module named 'not_a_module_anywhere'")
    finally:
        sys.modules.pop("toylab_broken", None)
    env = {**PYTHONPATH, plugins.ENV_VAR: "no_such_lab_plugin"}
    out = _bench(tmp_path, env, "validate", str(toy_suite(tmp_path, "toyscore_broken")))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: plugin 'no_such_lab_plugin' ($BENCH_PLUGINS) failed to load: "
        "ModuleNotFoundError: No module named 'no_such_lab_plugin'"]
