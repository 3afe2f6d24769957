"""Runner: skip finished jobs, re-run missing ones, move invalid results aside, isolate failures."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from benchutil import envelope, write_json, write_suite  # noqa: E402

from benchmark.cli import main  # noqa: E402
from benchmark.expand import expand  # noqa: E402
from benchmark.locks import JobLock, _proc_start, read_lock  # noqa: E402
from benchmark.results import load_result  # noqa: E402
from benchmark.runner import run_jobs  # noqa: E402
from benchmark.status import status_lines  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402

TABLES = [{"rows": ["ckpt"], "metrics": ["score"]}]


def _setup(tmp_path, matrix=None, **kw):
    path = write_suite(tmp_path, matrix=matrix or {"ckpt": {"a": {"scale": 1}, "b": {"scale": 2}}},
                       seeds={"seed": [1, 2, 3]}, tables=TABLES, **kw)
    suite = load_suite(path, tmp_path / "params.yaml")
    return path, suite, expand(suite, tmp_path / "results")


def _run(jobs, **kw):
    lines: list[str] = []
    summary = run_jobs(jobs, log=lines.append, **kw)
    return summary, "\n".join(lines)


def test_second_run_skips_everything(tmp_path):
    _, _, jobs = _setup(tmp_path)
    first, _ = _run(jobs)
    assert (first.count("done"), first.count("skipped"), first.count("failed")) == (6, 0, 0)
    assert all(load_result(j.out_json, "command").metrics["score"] > 0 for j in jobs)
    record = json.loads(jobs[0].job_json.read_text())
    assert record["status"] == "done" and record["argv"] == jobs[0].argv and record["tags"] == jobs[0].tags
    assert jobs[0].log.exists() and not jobs[0].lock.exists()
    second, out = _run(jobs)
    assert (second.count("done"), second.count("skipped")) == (0, 6)
    assert second.line().startswith("demo: done=0 skipped=6 failed=0 total=6 (")
    assert "skip" in out


def test_rerun_after_a_result_is_deleted(tmp_path):
    _, _, jobs = _setup(tmp_path)
    _run(jobs)
    jobs[4].out_json.unlink()
    summary, _ = _run(jobs)
    assert summary.count("done") == 1 and summary.count("skipped") == 5
    assert [o.job.job_id for o in summary.outcomes if o.status == "done"] == [jobs[4].job_id]


def test_invalid_result_is_moved_aside_and_rerun(tmp_path):
    _, _, jobs = _setup(tmp_path)
    write_json(jobs[0].out_json, {"schema_version": 1, "task": "command"})  # no metrics / provenance
    write_json(jobs[1].out_json, envelope(task="ucpr"))  # valid envelope, wrong task
    jobs[2].out_json.write_text("{truncated")
    summary, out = _run(jobs)
    assert summary.count("done") == 6
    for job in jobs[:3]:
        aside = list(job.out_json.parent.glob(f"{job.job_id}.json.invalid-*"))
        assert len(aside) == 1, aside
        load_result(job.out_json, "command")  # the re-run wrote a valid one
    assert "moved the previous result aside" in out and "task is 'ucpr' but the suite's task is 'command'" in out
    assert json.loads(next(jobs[1].out_json.parent.glob(f"{jobs[1].job_id}.json.invalid-*")).read_text())["task"] == "ucpr"


def test_failed_job_does_not_stop_others_and_exits_1(tmp_path, capsys):
    path, suite, jobs = _setup(tmp_path, matrix={"ckpt": {"a": {"scale": 1}, "b": {"scale": 2, "fail": True}}})
    rc = main(["run", str(path), "--no-mlflow", "--results-dir", str(tmp_path / "results"),
               "--params", str(tmp_path / "params.yaml"), "--jobs", "2"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "demo: done=3 skipped=0 failed=3 total=6" in out
    assert out.count("FAILED") == 3 and "exit 3" in out
    assert "| boom: failing on purpose" in out and "| fake log line 29" in out
    assert "| fake log line 5\n" not in out  # only the tail (~20 lines) is shown
    ok = [j for j in jobs if j.tags["ckpt"] == "a"]
    assert all(j.out_json.exists() for j in ok)
    # status knows which failed; results already written stay
    lines = status_lines(suite, jobs)
    assert lines[0] == "demo: completed jobs: 3 / 6 (running/locked: 0, failed: 3, stale: 0)"
    assert lines[1:4] == ["  completion by ckpt:", "    a: 3/3", "    b: 0/3"]
    # a second run re-runs the failed ones only
    summary, _ = _run(jobs)
    assert (summary.count("skipped"), summary.count("failed")) == (3, 3)


def test_exit_zero_without_result_is_a_failure(tmp_path):
    _, _, jobs = _setup(tmp_path, matrix={"ckpt": {"a": {"no_write": True}}})
    summary, _ = _run(jobs[:1])
    assert summary.count("failed") == 1 and "no result JSON" in summary.outcomes[0].detail


def test_live_lock_is_skipped_and_stale_lock_broken(tmp_path):
    _, _, jobs = _setup(tmp_path)
    live = JobLock(jobs[0].lock)
    assert live.acquire() is None  # held by this (live) process
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    jobs[1].lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"}))
    try:
        summary, out = _run(jobs[:2])
    finally:
        live.release()
    assert [o.status for o in summary.outcomes] == ["locked", "done"]
    assert "running elsewhere" in summary.line() and f"pid {os.getpid()}" in out
    assert not jobs[1].lock.exists()


def test_lock_records_pid_host_and_start_time(tmp_path):
    lock = JobLock(tmp_path / "x.lock")
    assert lock.acquire() is None
    info = read_lock(tmp_path / "x.lock")
    assert (info.pid, info.host, info.proc_start) == (os.getpid(), socket.gethostname(), _proc_start(os.getpid()))
    assert JobLock(tmp_path / "x.lock").acquire() == info  # second taker sees the holder
    lock.release()
    assert not (tmp_path / "x.lock").exists()


def test_gpus_round_robin(tmp_path):
    _, _, jobs = _setup(tmp_path)
    summary, out = _run(jobs, gpus=["0", "1"], jobs_per_gpu=1)
    assert summary.count("done") == 6
    devices = [load_result(j.out_json).provenance.device for j in jobs]
    assert set(devices) == {"0", "1"}
    assert "[gpu 0]" in out and "[gpu 1]" in out


def test_cli_only_dry_run_and_status_running(tmp_path, capsys):
    path, suite, jobs = _setup(tmp_path)
    common = ["--results-dir", str(tmp_path / "results"), "--params", str(tmp_path / "params.yaml")]
    assert main(["run", str(path), "--dry-run", *common]) == 0
    out = capsys.readouterr().out
    assert out.count("[todo]") == 6 and f"--out_json {jobs[0].out_json}" in out
    assert main(["run", str(path), "--no-mlflow", "--only", "ckpt=b", "--only", "seed=1,3", *common]) == 0
    assert "demo: done=2 skipped=0 failed=0 total=2" in capsys.readouterr().out
    assert main(["run", str(path), "--only", "nope=1", *common]) == 2
    assert "has no axis 'nope'" in capsys.readouterr().err
    lock = JobLock(jobs[0].lock)
    lock.acquire()
    try:
        assert main(["status", str(path), *common]) == 0
    finally:
        lock.release()
    out = capsys.readouterr().out.splitlines()
    assert out[:4] == ["demo: completed jobs: 2 / 6 (running/locked: 1, failed: 0, stale: 0)",
                       "  completion by ckpt:", "    a: 0/3", "    b: 2/3"]


def test_changed_input_file_makes_results_stale(tmp_path):
    ckpt_a, ckpt_b = tmp_path / "a.pt", tmp_path / "b.pt"
    ckpt_a.write_bytes(b"weights v1")
    ckpt_b.write_bytes(b"other")
    path = write_suite(tmp_path, matrix={"ckpt": {"a": str(ckpt_a), "b": str(ckpt_b)}}, seeds={"seed": [1, 2]},
                       tables=TABLES, inputs=["ckpt"])
    suite = load_suite(path, tmp_path / "params.yaml")
    jobs = expand(suite, tmp_path / "results")
    assert _run(jobs)[0].count("done") == 4
    record = json.loads(jobs[0].job_json.read_text())["inputs"]["ckpt"]
    assert record["path"] == str(ckpt_a) and record["fingerprint"].startswith("sha256:")
    assert _run(jobs)[0].count("skipped") == 4
    ckpt_a.write_bytes(b"weights v2, re-trained")  # same path, new contents
    assert status_lines(suite, jobs)[0] == "demo: completed jobs: 2 / 4 (running/locked: 0, failed: 0, stale: 2)"
    from benchmark.collect import collect

    assert {tuple(r.derived) for r in collect(suite, jobs).rows if r.tags["ckpt"] == "a"} == {("stale_input:ckpt",)}
    summary, out = _run(jobs)
    assert [o.job.tags["ckpt"] for o in summary.outcomes if o.status == "done"] == ["a", "a"]
    assert "input changed since it ran: ckpt" in out
    assert len(list(jobs[0].out_json.parent.glob(f"{jobs[0].job_id}.json.stale-*"))) == 1
    assert _run(jobs)[0].count("skipped") == 4


def test_parallel_jobs_share_the_cores(monkeypatch):
    from benchmark.runner import THREAD_VARS, thread_share_env
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    env = thread_share_env(4, {"PATH": "/bin"})
    assert all(env[v] == "2" for v in THREAD_VARS)
    assert thread_share_env(16, {})["OMP_NUM_THREADS"] == "1"
    assert thread_share_env(2, {"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"  # caller wins


def test_no_mlflow_environment_switch_logs_nothing(tmp_path, capsys, monkeypatch):
    path, suite, jobs = _setup(tmp_path)
    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.setenv("BENCH_NO_MLFLOW", "1")
    rc = main(["run", str(path), "--results-dir", str(tmp_path / "results"),
               "--params", str(tmp_path / "params.yaml"), "--jobs", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and "MLflow logging off (BENCH_NO_MLFLOW=1)" in out
    assert all(j.out_json.exists() for j in jobs)
    assert not db.exists(), "no tracking store was touched"
