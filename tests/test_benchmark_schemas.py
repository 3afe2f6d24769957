"""Result validation: the envelope (pydantic) and the task kinds' row schemas (pandera)."""
from __future__ import annotations

import json
import sys

import pytest

from benchutil import envelope, write_json, write_suite  # noqa: E402

from benchmark import tasks  # noqa: E402
from benchmark.cli import main  # noqa: E402
from benchmark.errors import ResultError  # noqa: E402
from benchmark.expand import expand  # noqa: E402
from benchmark.results import flatten, load_result  # noqa: E402
from benchmark.runner import run_jobs  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402

UCPR_OK = {"r@1": 0.2, "r@5": 0.5, "r@10": 0.7, "mAP": 0.3, "mean_rank": 4.0}


def _suite(tmp_path, task, metrics_by_row, **kw):
    """A suite whose fake job writes the literal metrics given per matrix row."""
    matrix = {"row": {name: {"metrics": json.dumps(m), "task": task} for name, m in metrics_by_row.items()}}
    path = write_suite(tmp_path, task=task, matrix=matrix, tables=[{"rows": ["row"]}], **kw)
    suite = load_suite(path, tmp_path / "params.yaml")
    return path, suite, expand(suite, tmp_path / "results")


def _cli(tmp_path, *argv):
    return main([*argv, "--results-dir", str(tmp_path / "results"), "--params", str(tmp_path / "params.yaml")])


def test_flatten_nested_and_baselines():
    assert flatten({"mae": 1, "near@0.05": {"mae": 2.0, "n": 10}}) == {"mae": 1.0, "near@0.05/mae": 2.0,
                                                                    "near@0.05/n": 10.0}


def test_envelope_errors_name_file_and_key(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, envelope(schema_version=2))
    with pytest.raises(ResultError, match=rf"^{path}: invalid result envelope: schema_version"):
        load_result(path)
    bad = envelope()
    del bad["provenance"]["started"]
    write_json(path, bad)
    with pytest.raises(ResultError, match=r"provenance.started: required key is missing"):
        load_result(path)
    write_json(path, envelope(metrics={"mae": "high"}))
    with pytest.raises(ResultError, match=r"metrics: .*mae: expected a number"):
        load_result(path)
    write_json(path, envelope(task="cls"))
    with pytest.raises(ResultError, match=rf"^{path}: task is 'cls' but the suite's task is 'cpac'"):
        load_result(path, "cpac")


def test_ucpr_r1_above_one_is_rejected_naming_the_file(tmp_path, capsys):
    path, suite, jobs = _suite(tmp_path, "ucpr", {"ok": UCPR_OK, "bad": {**UCPR_OK, "r@1": 1.5}})
    # the runner marks the job failed (its JSON stays for inspection)
    summary = run_jobs(jobs, log=lambda s: None)
    bad_job = next(j for j in jobs if j.tags["row"] == "bad")
    failed = [o for o in summary.outcomes if o.status == "failed"]
    assert [o.job for o in failed] == [bad_job] and "r@1" in failed[0].detail
    assert bad_job.out_json.exists()
    capsys.readouterr()
    # validate and report: exit 1, one message naming the file and the column/check; nothing written
    assert _cli(tmp_path, "validate", str(path)) == 1
    err = capsys.readouterr().err
    assert f"{bad_job.out_json}: metric 'r@1' failed in_range(0.0, 1.0): got 1.5" in err
    assert f"{bad_job.out_json}: check 'r@1 <= r@5 <= r@10' failed (r@1=1.5, r@5=0.5, r@10=0.7)" in err
    out_dir = tmp_path / "reports"
    assert _cli(tmp_path, "report", str(path), "--out", str(out_dir)) == 1
    err = capsys.readouterr().err
    assert str(bad_job.out_json) in err and "files left in place" in err
    assert not (out_dir / "demo.md").exists() and bad_job.out_json.exists()
    # the next run moves the bad result aside (never deletes it) and re-runs the job
    summary = run_jobs(jobs, log=lambda s: None)
    assert [o.status for o in summary.outcomes if o.job is bad_job] == ["failed"]
    assert len(list(bad_job.out_json.parent.glob(f"{bad_job.job_id}.json.invalid-*"))) == 1
    from benchmark.status import status_lines

    assert status_lines(suite, jobs)[0] == "demo: completed jobs: 1 / 2 (running/locked: 0, failed: 0, stale: 0, invalid: 1)"


def test_cpac_rules(tmp_path):
    path, suite, jobs = _suite(tmp_path, "cpac", {
        "ok": {"mae": 0.1, "rmse": 0.2, "iou@0.03": 0.5, "near@0.05": {"mae": 0.1, "n": 10}},
        "rmse_low": {"mae": 0.3, "rmse": 0.2, "iou@0.03": 0.5},
        "iou_high": {"mae": 0.1, "rmse": 0.2, "iou@0.01": 1.2, "iou@0.03": 0.5},
        "no_mae": {"rmse": 0.2, "iou@0.03": 0.5}})
    summary = run_jobs(jobs, log=lambda s: None)
    status = {o.job.tags["row"]: o.status for o in summary.outcomes}
    assert status == {"ok": "done", "rmse_low": "failed", "iou_high": "failed", "no_mae": "failed"}
    from benchmark.collect import collect

    problems = "\n".join(collect(suite, jobs).problems())
    by_row = {j.tags["row"]: str(j.out_json) for j in jobs}
    assert f"{by_row['rmse_low']}: check 'rmse >= mae' failed (rmse=0.2, mae=0.3)" in problems
    assert f"{by_row['iou_high']}: metric 'iou@0.01' failed in_range(0.0, 1.0): got 1.2" in problems
    assert f"{by_row['no_mae']}: metric 'mae' required by task 'cpac' is missing" in problems
    assert by_row["ok"] not in problems


def test_cls_range_and_majority_collapse_guard(tmp_path):
    from benchmark.report import build_report

    path, suite, jobs = _suite(tmp_path, "cls", {"ok": {"test_acc": 0.8, "test_majority_rate": 0.3},
                                                 "collapsed": {"test_acc": 0.3, "test_majority_rate": 0.3}})
    assert {o.status for o in run_jobs(jobs, log=lambda s: None).outcomes} == {"done"}
    md = build_report(suite, jobs).markdown
    assert "**majority_collapse** (benchmark guard; 1 job(s)): row=collapsed" in md
    bad = jobs[0].out_json
    write_json(bad, envelope(task="cls", metrics={"test_acc": 80.0}))
    from benchmark.collect import collect

    [changed] = collect(suite, jobs).problems()  # not the file its job wrote (the record says)
    assert changed.startswith(f"{bad}: changed since its job wrote it")
    jobs[0].job_json.unlink()  # a result planted without a job record: judged on its values
    assert collect(suite, jobs).problems() == [f"{bad}: metric 'test_acc' failed in_range(0.0, 1.0): got 80.0"]


def test_table_metric_absent_from_results_is_reported(tmp_path, capsys):
    path = write_suite(tmp_path, matrix={"ckpt": {"a": {"scale": 1}}}, tables=[{"rows": ["ckpt"],
                                                                                 "metrics": ["scroe"]}])
    suite = load_suite(path, tmp_path / "params.yaml")
    run_jobs(expand(suite, tmp_path / "results"), log=lambda s: None)
    assert _cli(tmp_path, "validate", str(path)) == 1
    assert "tables[0].metrics: 'scroe' is in no result" in capsys.readouterr().err


def test_new_task_kind_registers_with_one_call(tmp_path):
    kind = tasks.TaskKind(name="extscore", metrics=(tasks.MetricRule("quality", 0, 1, required=True),),
                          default_metrics=("quality",), directions=(("quality", "max"),))
    tasks.register_task(kind)
    try:
        path, suite, jobs = _suite(tmp_path, "extscore", {"good": {"quality": 0.9}, "bad": {"quality": 2.0}})
        summary = run_jobs(jobs, log=lambda s: None)
        assert sorted(o.status for o in summary.outcomes) == ["done", "failed"]
        with pytest.raises(ValueError, match="already registered"):
            tasks.register_task(kind)
    finally:
        tasks._REGISTRY.pop("extscore", None)


def test_plugin_option_registers_a_kind_before_suites_load(tmp_path, monkeypatch, capsys):
    (tmp_path / "lab_tasks.py").write_text(
        "from benchmark.tasks import MetricRule, TaskKind, register_task\n"
        "register_task(TaskKind(name='labscore', metrics=(MetricRule('score', 0, 100, required=True),),\n"
        "                       default_metrics=('score',)))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write_suite(tmp_path, task="labscore", matrix={"ckpt": {"a": {"scale": 1, "task": "labscore"}}},
                       tables=[{"rows": ["ckpt"]}])
    try:
        assert _cli(tmp_path, "validate", str(path)) == 2  # unknown task without the plugin
        assert "unknown task 'labscore'" in capsys.readouterr().err
        assert _cli(tmp_path, "run", str(path), "--no-mlflow", "--plugin", "lab_tasks") == 0
        assert "demo: done=1" in capsys.readouterr().out
    finally:
        tasks._REGISTRY.pop("labscore", None)
        sys.modules.pop("lab_tasks", None)
