"""A job is its id: rows that run another module, declared outputs, and results shared by suites."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from benchutil import write_suite  # noqa: E402

from benchmark.errors import SuiteError  # noqa: E402
from benchmark.expand import expand, job_id_for  # noqa: E402
from benchmark.report import build_report  # noqa: E402
from benchmark.runner import run_jobs  # noqa: E402
from benchmark.status import job_state  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402

TABLES = [{"rows": ["method"], "metrics": ["score"]}]

# A module the engine runs with `python -m`, written into tmp_path (on PYTHONPATH).
MODULE = '''
import json, os, sys
argv = sys.argv[1:]
args = dict(zip(argv[0::2], argv[1::2]))
out = args.pop("--out_json")
env = {"schema_version": 1, "task": "command", "args": {k[2:]: v for k, v in args.items()},
       "metrics": {"score": float(args.get("--seed", 0)) + 100.0},
       "provenance": {"git_rev": None, "started": "2024-01-01T00:00:00Z", "wall_s": 0.0}}
with open(os.environ["RAN_LOG"], "a") as fh:
    fh.write("baseline " + os.environ["BENCHMARK_JOB_ID"] + "\\n")
json.dump(env, open(out, "w"))
'''


def _load(path, tmp_path):
    return load_suite(path, tmp_path / "params.yaml")


def _module_suite(tmp_path, **kw) -> Path:
    """write_suite, with `module: fakemod` in place of the fake program."""
    path = write_suite(tmp_path, **kw)
    doc = yaml.safe_load(path.read_text())
    doc.pop("program")
    doc["module"] = "fakemod"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _ran(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_a_row_may_run_another_module(tmp_path, monkeypatch):
    (tmp_path / "lab_baseline.py").write_text(MODULE)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("RAN_LOG", str(tmp_path / "ran.txt"))
    monkeypatch.chdir(tmp_path)
    path = _module_suite(tmp_path, matrix={"method": {
        "net": {"scale": 1},
        "shape_baseline": {"module": "lab_baseline", "scale": 1}}}, seeds={"seed": [1]}, tables=TABLES)
    suite = _load(path, tmp_path)
    jobs = {j.tags["method"]: j for j in expand(suite, tmp_path / "results")}
    net, base = jobs["net"], jobs["shape_baseline"]
    assert net.argv[1:3] == ["-m", "fakemod"] and base.argv[1:3] == ["-m", "lab_baseline"]
    assert "module" not in base.args and "--module" not in base.argv
    # identity: same args, another module -> another id; the id is the module's, not the suite's
    assert base.job_id == job_id_for({"module": "lab_baseline"}, base.args) != net.job_id
    outcome = run_jobs([base], n_jobs=1, log=lambda s: None).outcomes[0]
    assert outcome.status == "done", outcome.log_tail
    assert json.loads(base.out_json.read_text())["metrics"]["score"] == 101.0
    assert _ran(tmp_path / "ran.txt") == ["baseline", base.job_id]


@pytest.mark.parametrize("row, message", [
    ({"module": "not a module!"}, "expected a dotted module name"),
    ({"module": 3}, "expected a dotted module name"),
])
def test_row_module_is_validated(tmp_path, row, message):
    path = _module_suite(tmp_path, matrix={"method": {"a": {"scale": 1}, "b": row}}, tables=TABLES)
    with pytest.raises(SuiteError, match=f"matrix.method.b.module: {message}"):
        _load(path, tmp_path)


def test_row_module_needs_a_module_suite(tmp_path):
    path = write_suite(tmp_path, matrix={"method": {"a": {"scale": 1}, "b": {"module": "x.y"}}},
                       tables=TABLES)
    with pytest.raises(SuiteError, match="matrix.method.b.module: a row may replace the suite's `module`"):
        _load(path, tmp_path)


def test_outputs_must_name_an_arg(tmp_path):
    path = write_suite(tmp_path, matrix={"method": {"a": {"scale": 1}}}, tables=TABLES, outputs=["save_dir"])
    with pytest.raises(SuiteError, match=r"outputs\[0\]: unknown arg 'save_dir'"):
        _load(path, tmp_path)


def test_a_result_whose_output_is_gone_runs_again(tmp_path):
    out_dir = tmp_path / "ckpt_a"
    path = write_suite(tmp_path, args={"save_dir": str(out_dir), "append": str(tmp_path / "ran.txt")},
                       matrix={"method": {"a": {"scale": 1}}}, seeds={"seed": [0]}, tables=TABLES,
                       outputs=["save_dir"])
    suite = _load(path, tmp_path)
    [job] = expand(suite, tmp_path / "results")
    out_dir.mkdir()
    assert run_jobs([job], log=lambda s: None).outcomes[0].status == "done"
    assert run_jobs([job], log=lambda s: None).outcomes[0].status == "skipped"
    out_dir.rmdir()  # the checkpoint folder a later stage needs is gone
    assert job_state(job).state == "stale" and "output missing: save_dir" in job_state(job).detail
    rep = build_report(suite, [job], results_dir=tmp_path / "results")
    assert "missing_output:save_dir" in rep.markdown
    lines: list[str] = []
    outcome = run_jobs([job], log=lines.append).outcomes[0]
    assert outcome.status == "done" and "output missing: save_dir" in outcome.moved_why
    assert list(job.out_json.parent.glob(f"{job.job_id}.json.stale-*"))  # moved aside, not deleted
    assert _ran(tmp_path / "ran.txt") == [job.job_id, job.job_id]


def _two_suites(tmp_path, shared_args, **extra):
    """Suites `first` and `second` that share the job (method=shared, seed=0)."""
    common = {"append": str(tmp_path / "ran.txt"), **shared_args}
    a = write_suite(tmp_path, "first", args=common, seeds={"seed": [0]}, tables=TABLES,
                    matrix={"method": {"shared": {"scale": 2}, "own_a": {"scale": 3}}}, **extra)
    b = write_suite(tmp_path, "second", args=common, seeds={"seed": [0]}, tables=TABLES,
                    matrix={"method": {"shared": {"scale": 2}, "own_b": {"scale": 4}}}, **extra)
    return _load(a, tmp_path), _load(b, tmp_path)


def test_a_job_shared_by_two_suites_runs_once(tmp_path):
    first, second = _two_suites(tmp_path, {})
    res = tmp_path / "results"
    ja, jb = expand(first, res), expand(second, res)
    shared = [j for j in ja if j.tags["method"] == "shared"][0]
    assert shared.job_id in {j.job_id for j in jb}
    run_jobs(ja, log=lambda s: None)
    lines: list[str] = []
    summary = run_jobs(jb, log=lines.append)
    status = {o.job.tags["method"]: o.status for o in summary.outcomes}
    assert status == {"shared": "reused", "own_b": "done"}
    assert "reused=1" in summary.line()
    assert _ran(tmp_path / "ran.txt").count(shared.job_id) == 1
    copy = res / "second" / f"{shared.job_id}.json"
    assert copy.read_bytes() == (res / "first" / f"{shared.job_id}.json").read_bytes()
    record = json.loads(copy.with_name(f"{shared.job_id}.job.json").read_text())
    assert record["status"] == "done" and record["reused_from"].endswith(f"first/{shared.job_id}.json")
    # both reports carry the row
    rep = build_report(second, jb, results_dir=res)
    assert "| shared" in rep.markdown


def test_an_invalid_or_stale_twin_is_not_reused(tmp_path):
    ckpt = tmp_path / "model.pt"
    ckpt.write_text("v1")
    first, second = _two_suites(tmp_path, {"ckpt": str(ckpt)}, inputs=["ckpt"])
    res = tmp_path / "results"
    ja, jb = expand(first, res), expand(second, res)
    run_jobs(ja, log=lambda s: None)
    shared_id = [j for j in ja if j.tags["method"] == "shared"][0].job_id
    ckpt.write_text("v2 (re-trained)")  # the twin is stale now
    out = {o.job.tags["method"]: o.status for o in run_jobs(jb, log=lambda s: None).outcomes}
    assert out["shared"] == "done"
    assert _ran(tmp_path / "ran.txt").count(shared_id) == 2
    # an invalid twin (fails its envelope) is not adopted either
    (res / "second" / f"{shared_id}.json").unlink()
    (res / "first" / f"{shared_id}.json").write_text("{\"broken\": true}")
    (res / "second" / f"{shared_id}.job.json").unlink()
    out = {o.job.tags["method"]: o.status for o in run_jobs(jb, log=lambda s: None).outcomes}
    assert out["shared"] == "done"
    assert _ran(tmp_path / "ran.txt").count(shared_id) == 3


def test_no_reuse_runs_the_shared_job_again(tmp_path):
    first, second = _two_suites(tmp_path, {})
    res = tmp_path / "results"
    ja, jb = expand(first, res), expand(second, res)
    run_jobs(ja, log=lambda s: None)
    status = {o.job.tags["method"]: o.status for o in run_jobs(jb, log=lambda s: None, reuse=False).outcomes}
    assert status == {"shared": "done", "own_b": "done"}
    shared = [j for j in ja if j.tags["method"] == "shared"][0]
    assert _ran(tmp_path / "ran.txt").count(shared.job_id) == 2
