"""Result integrity (issue 13): never a wrong number, never a silent hole with exit 0.

1. A runner killed outright: the results its orphaned commands finished get exactly one MLflow run
   each on the next run, and no ``running`` mark is left.
2. Locks carry a heartbeat: a lock from another host with an old heartbeat is broken, one with a
   fresh heartbeat is respected; ``unlock`` removes stale locks and keeps live ones.
3. ``run`` exits non-zero while a job of the suite has no result (1 failed, 3 running elsewhere).
4. Bad flags exit 2 with one line naming the flag; a NaN metric of a ``command`` task is refused.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pytest

from benchutil import envelope, write_json, write_suite  # noqa: E402

from benchmark.cli import main  # noqa: E402
from benchmark.expand import expand  # noqa: E402
from benchmark.locks import JobLock, inspect_lock, read_lock, this_holder  # noqa: E402
from benchmark.reconcile import reconcile  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TABLES = [{"rows": ["ckpt"], "metrics": ["score"]}]
ELSEWHERE = {"pid": 4242, "host": "another-host.example", "started": "2024-01-01T00:00:00+00:00"}


def _setup(tmp_path, args=None, rows=("a", "b"), seeds=(1, 2)):
    path = write_suite(tmp_path, args=args or {}, matrix={"ckpt": {r: {"scale": i + 1} for i, r in enumerate(rows)}},
                       seeds={"seed": list(seeds)}, tables=TABLES)
    (tmp_path / "params.yaml").write_text("{}\n")
    jobs = expand(load_suite(path, tmp_path / "params.yaml"), tmp_path / "results")
    common = ["--params", str(tmp_path / "params.yaml"), "--results-dir", str(tmp_path / "results")]
    return path, jobs, common


def _cli(argv, capsys) -> tuple[int, str, str]:
    """``main(argv)`` as the command line runs it (argparse's exit included): code, stdout, stderr."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _plant_lock(path: Path, age_s: float) -> None:
    """A lock as written by a runner on another host whose last heartbeat was ``age_s`` ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ELSEWHERE))
    then = time.time() - age_s
    os.utime(path, (then, then))


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _records(jobs) -> dict[str, dict]:
    return {j.job_id: json.loads(j.job_json.read_text()) for j in jobs if j.job_json.exists()}


@functools.lru_cache(maxsize=None)
def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _active_runs(uri: str, experiment: str = "demo") -> list:
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    return list(client.search_runs([exp.experiment_id], max_results=1000)) if exp else []


# --- 1. a runner killed outright ------------------------------------------------------------

@pytest.mark.slow
def test_killed_runner_leaves_no_unlogged_result_and_no_running_mark(tmp_path):
    started = tmp_path / "started.txt"
    path, jobs, common = _setup(tmp_path, args={"append": str(started), "sleep": 0.5})
    uri = f"sqlite:///{tmp_path}/m.db"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": uri}
    cmd = [sys.executable, "-m", "benchmark", "run", str(path), "--jobs", "2", *common]
    with open(tmp_path / "first.log", "w") as log:
        runner = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:  # kill once a job is logged to MLflow and another is running
            recs = _records(jobs).values()
            if (any((r.get("mlflow") or {}).get("result_sha256") for r in recs)
                    and any(r.get("status") == "running" for r in recs)):
                break
            time.sleep(0.05)
        runner.send_signal(signal.SIGKILL)  # the runner only: its commands go on as orphans
        runner.wait()
    assert runner.returncode == -signal.SIGKILL
    deadline = time.time() + 30
    while time.time() < deadline:  # the orphans finish what they started
        ran = set(started.read_text().split())
        if all(j.out_json.exists() for j in jobs if j.job_id in ran):
            break
        time.sleep(0.1)
    time.sleep(0.3)
    # the reported state: results on disk marked running, whose MLflow run (created when the job
    # started) is still RUNNING, without the result
    runs = _active_runs(uri)
    logged = {r.data.tags["job_id"] for r in runs if r.info.status == "FINISHED"}
    orphans = [j for j in jobs if j.out_json.exists()  # (no record: killed between submit and record)
               and _records([j]).get(j.job_id, {}).get("status") == "running"]
    assert orphans and logged and not {j.job_id for j in orphans} & logged
    assert {r.info.status for r in runs if r.data.tags["job_id"] in {j.job_id for j in orphans}} == {"RUNNING"}
    # and a logged result that changed on disk since (edited by hand): not the job's result any
    # more (its record holds the sha256 it was accepted with): moved aside, the job runs again and
    # its MLflow run follows the recomputed result
    changed = next(j for j in jobs if j.job_id in logged)
    doc = json.loads(changed.out_json.read_text())
    computed = doc["metrics"]["score"]
    doc["metrics"]["score"] = 99.0
    changed.out_json.write_text(json.dumps(doc))

    second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "reconciled:" in second.stdout
    runs = _active_runs(uri)
    assert Counter(r.data.tags["job_id"] for r in runs) == Counter({j.job_id: 1 for j in jobs})  # one each
    by_job = {r.data.tags["job_id"]: r for r in runs}
    assert all(by_job[j.job_id].data.tags["result_sha256"] == _sha(j.out_json) for j in jobs)
    assert by_job[changed.job_id].data.metrics["score"] == computed != 99.0
    [aside] = [p for p in changed.out_json.parent.iterdir()
               if p.name.startswith(changed.job_id) and "invalid" in p.name]
    assert json.loads(aside.read_text())["metrics"]["score"] == 99.0  # kept, never deleted
    assert {r.info.status for r in runs} == {"FINISHED"}  # no run left RUNNING
    assert {r["status"] for r in _records(jobs).values()} == {"done"}
    assert not list((tmp_path / "results").rglob("*.lock"))
    assert sorted(started.read_text().split()) == sorted([j.job_id for j in jobs] + [changed.job_id])

    third = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0 and "reconciled:" not in third.stdout
    assert {r.info.run_id for r in _active_runs(uri)} == {r.info.run_id for r in runs}  # nothing logged again


def test_reconcile_fixes_running_marks_unless_a_live_lock_holds_the_job(tmp_path):
    _, jobs, _ = _setup(tmp_path)
    finished, gone, held = jobs[0], jobs[1], jobs[2]
    write_json(finished.out_json, envelope())
    for job in (finished, gone, held):
        write_json(job.job_json, {"status": "running", "inputs": {}})
    _plant_lock(finished.lock, age_s=10_000)  # its runner died long ago, on another host
    lock = JobLock(held.lock)
    assert lock.acquire() is None
    try:
        fixed = reconcile([finished, gone, held], {finished.job_id}, tracker=None)
    finally:
        lock.release()
    records = _records(jobs)
    assert records[finished.job_id]["status"] == "done" and records[finished.job_id]["inputs"] == {}
    assert records[gone.job_id]["status"] == "interrupted"
    assert records[held.job_id]["status"] == "running"  # its live holder records it
    assert not finished.lock.exists() and fixed.locks_removed == 1
    assert fixed.marks == Counter({"done": 1, "interrupted": 1})


# --- 2. locks: heartbeat, other hosts, unlock ------------------------------------------------

def test_stale_lock_from_another_host_is_broken_and_the_job_runs(tmp_path, capsys):
    path, jobs, common = _setup(tmp_path)
    _plant_lock(jobs[0].lock, age_s=3600)  # heartbeat an hour old (limit: 10 min)
    code, out, _ = _cli(["status", str(path), *common], capsys)
    assert code == 0 and "running/locked: 0" in out and "stale lock: pid 4242 on another-host.example" in out
    code, out, err = _cli(["run", str(path), "--no-mlflow", *common], capsys)
    assert code == 0, out + err
    assert all(j.out_json.exists() for j in jobs) and not jobs[0].lock.exists()


def test_fresh_lock_from_another_host_is_respected_and_run_exits_3(tmp_path, capsys):
    path, jobs, common = _setup(tmp_path)
    _plant_lock(jobs[0].lock, age_s=5)
    planted = jobs[0].lock.read_bytes()
    code, out, _ = _cli(["status", str(path), *common], capsys)
    assert "running/locked: 1" in out
    code, out, err = _cli(["run", str(path), "--no-mlflow", *common], capsys)
    assert code == 3
    assert err.strip() == ("not finished: 1 job(s): 1 running elsewhere (held by live locks; re-run when they "
                           "finish, or `python -m benchmark unlock` if their runner is gone)")
    assert "running elsewhere (pid 4242 on another-host.example" in out
    assert not jobs[0].out_json.exists() and jobs[0].lock.read_bytes() == planted
    assert all(j.out_json.exists() for j in jobs[1:])


def test_unlock_removes_stale_locks_and_keeps_live_ones(tmp_path, capsys):
    path, jobs, common = _setup(tmp_path)
    stale, live, mine = jobs[0], jobs[1], jobs[2]
    _plant_lock(stale.lock, age_s=3600)
    _plant_lock(live.lock, age_s=5)
    held = JobLock(mine.lock)
    assert held.acquire() is None  # this live process
    try:
        code, out, _ = _cli(["unlock", str(path), *common], capsys)
        assert code == 0
        lines = out.splitlines()
        assert len(lines) == 3 and lines[0].startswith(f"removed  {stale.lock}: pid 4242 on another-host.example")
        assert "heartbeat 60 min old" in lines[0]
        assert lines[1].startswith(f"kept     {live.lock}: pid 4242") and "(--force removes it)" in lines[1]
        assert lines[2].startswith(f"kept     {mine.lock}: pid {os.getpid()} on {socket.gethostname()}")
        assert not stale.lock.exists() and live.lock.exists() and mine.lock.exists()
        code, out, _ = _cli(["unlock", str(path), "--job", live.job_id, "--force", *common], capsys)
        assert code == 0 and out.startswith(f"removed  {live.lock}: pid 4242") and "live, forced" in out
        assert len(out.splitlines()) == 1 and not live.lock.exists() and mine.lock.exists()
    finally:
        held.release()
    code, out, _ = _cli(["unlock", str(path), *common], capsys)
    assert (code, out) == (0, "no locks among 4 job(s)\n")


def test_heartbeat_is_renewed_while_held_and_a_lost_lock_is_left_alone(tmp_path, monkeypatch):
    path = tmp_path / "x.lock"
    path.write_text(json.dumps(asdict(this_holder())))  # this live process, but no heartbeat for an hour
    old = time.time() - 3600
    os.utime(path, (old, old))
    check = inspect_lock(path)
    assert not check.live and check.why == "heartbeat 60 min old, stale after 10 min"
    path.unlink()
    monkeypatch.setenv("BENCHMARK_LOCK_RENEW_S", "0.05")
    lock = JobLock(path)
    assert lock.acquire() is None
    os.utime(path, (old, old))
    time.sleep(0.5)
    assert inspect_lock(path).live and time.time() - path.stat().st_mtime < 1  # renewed
    # another process broke it (it judged us stale) and took it: we must not touch theirs
    path.unlink()
    path.write_text(json.dumps(ELSEWHERE))
    time.sleep(0.3)
    assert lock.lost
    lock.release()
    assert read_lock(path).host == ELSEWHERE["host"]


@pytest.mark.slow
def test_a_long_job_keeps_its_lock_live_past_the_stale_limit(tmp_path, capsys, monkeypatch):
    started = tmp_path / "started.txt"
    path, jobs, common = _setup(tmp_path, args={"append": str(started), "sleep": 4.0}, rows=("a",), seeds=(1,))
    monkeypatch.setenv("BENCHMARK_LOCK_RENEW_S", "0.2")
    monkeypatch.setenv("BENCHMARK_LOCK_STALE_S", "1.0")
    cmd = [sys.executable, "-m", "benchmark", "run", str(path), "--no-mlflow", *common]
    first = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 30
    while not started.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)  # past the stale limit: only the heartbeat keeps the lock live
    code, _, err = _cli(["run", str(path), "--no-mlflow", *common], capsys)
    out, _ = first.communicate(timeout=60)
    assert first.returncode == 0, out
    assert code == 3 and "1 running elsewhere" in err
    assert started.read_text().split() == [jobs[0].job_id]  # ran once


# --- 3. exit codes --------------------------------------------------------------------------

def test_run_exit_codes_name_what_is_missing(tmp_path, capsys):
    path = write_suite(tmp_path, matrix={"ckpt": {"a": {"scale": 1, "fail": True}, "b": {"scale": 2}}},
                       seeds={"seed": [1, 2]}, tables=TABLES)
    common = ["--params", str(tmp_path / "params.yaml"), "--results-dir", str(tmp_path / "results")]
    jobs = {j.label: j for j in expand(load_suite(path, tmp_path / "params.yaml"), tmp_path / "results")}
    _plant_lock(jobs["ckpt=b seed=1"].lock, age_s=1)
    code, out, err = _cli(["run", str(path), "--no-mlflow", *common], capsys)
    assert code == 1, out + err
    assert err == ("not finished: 3 job(s): 2 failed (see the FAILED lines); 1 running elsewhere (held by live "
                   "locks; re-run when they finish, or `python -m benchmark unlock` if their runner is gone)\n")
    code, out, err = _cli(["run", str(path), "--no-mlflow", "--only", "ckpt=b", *common], capsys)
    assert code == 3 and "not finished: 1 job(s): 1 running elsewhere" in err
    jobs["ckpt=b seed=1"].lock.unlink()
    code, out, err = _cli(["run", str(path), "--no-mlflow", "--only", "ckpt=b", *common], capsys)
    assert (code, err) == (0, "") and "done=1 skipped=1" in out


@pytest.mark.parametrize("ends", ["with a result", "without one"])
def test_a_job_running_elsewhere_is_judged_again_at_the_end_of_the_run(tmp_path, capsys, ends):
    started = tmp_path / "started.txt"
    path, jobs, common = _setup(tmp_path, args={"sleep": 1.0, "append": str(started)}, rows=("a",))
    other = jobs[0]
    _plant_lock(other.lock, age_s=1)

    def other_runner_ends() -> None:  # while this run's own job sleeps
        deadline = time.time() + 30
        while not started.exists() and time.time() < deadline:
            time.sleep(0.02)
        if ends == "with a result":
            write_json(other.out_json, envelope())
        else:
            write_json(other.job_json, {"status": "failed", "detail": "exit 3"})
        other.lock.unlink()

    thread = threading.Thread(target=other_runner_ends)
    thread.start()
    try:
        code, out, err = _cli(["run", str(path), "--no-mlflow", *common], capsys)
    finally:
        thread.join()
    assert f"locked   ckpt=a seed=1  {other.job_id}" in out
    if ends == "with a result":
        assert (code, err) == (0, "") and "finished elsewhere meanwhile" in out
    else:
        assert code == 1 and "failed elsewhere: exit 3 (the next run runs it)" in out
        assert err.startswith("not finished: 1 job(s): 1 failed")


# --- 4. argument validation and NaN ----------------------------------------------------------

BAD_FLAGS = [
    (["run", "{suite}", "--jobs", "0"], "--jobs: expected an integer >= 1; got 0"),
    (["run", "{suite}", "--jobs", "-2"], "--jobs: expected an integer >= 1; got -2"),
    (["run", "{suite}", "--jobs", "two"], "argument --jobs/-j: invalid int value: 'two'"),
    (["run", "{suite}", "--gpus", "0", "--jobs-per-gpu", "0"], "--jobs-per-gpu: expected an integer >= 1; got 0"),
    (["run", "{suite}", "--executor", "pool", "--jobs", "0"], "--jobs: expected an integer >= 1; got 0"),
    (["run", "{suite}", "--executor", "dask", "--cluster", "local", "--workers", "0"],
     "--workers: expected an integer >= 1; got 0"),
    (["run", "{suite}", "--executor", "threads"],
     "argument --executor: invalid choice: 'threads' (choose from"),
    (["run", "{suite}", "--only", "nope=1"], "--only nope=1: {yaml} has no axis 'nope' (axes: ckpt, seed)"),
    (["run", "{suite}", "--only", "ckpt=zzz"], "--only ckpt=zzz: {yaml} has no row 'zzz' on axis 'ckpt' (rows: a, b)"),
    (["run", "{suite}", "--only", "seed=7"], "--only seed=7: {yaml} has no row '7' on axis 'seed' (rows: 1, 2)"),
    (["run", "{suite}", "--only", "ckpt=a,"], "--only ckpt=a,: {yaml} has no row '' on axis 'ckpt' (rows: a, b)"),
    (["status", "{suite}", "--limit", "-1"], "--limit: expected an integer >= 0; got -1"),
    (["unlock", "{suite}", "--job", "0123456789abcdef"], "--job 0123456789abcdef: no job of the suites has this id"),
    (["run", "{suite}", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
]


def test_bad_flags_exit_2_with_one_line_and_change_nothing(tmp_path, capsys):
    path, jobs, common = _setup(tmp_path)
    for job in jobs:
        write_json(job.out_json, envelope())
    (tmp_path / "results" / "demo" / f"{jobs[0].job_id}.json").write_text("{}")  # an invalid result too
    before = _snapshot(tmp_path / "results")
    for argv, expected in BAD_FLAGS:
        argv = [a.replace("{suite}", str(path)) for a in argv] + common
        code, out, err = _cli(argv, capsys)
        assert code == 2, (argv, out, err)
        assert len(err.splitlines()) == 1 and err.startswith("error: "), (argv, err)
        assert expected.replace("{yaml}", str(path)) in err, (argv, err)
        assert "Traceback" not in out + err
        assert _snapshot(tmp_path / "results") == before, argv

def test_bad_lock_settings_in_the_environment_exit_2(tmp_path, capsys, monkeypatch):
    path, _, common = _setup(tmp_path)
    monkeypatch.setenv("BENCHMARK_LOCK_STALE_S", "soon")
    code, _, err = _cli(["run", str(path), *common], capsys)
    assert code == 2 and err == "error: $BENCHMARK_LOCK_STALE_S: expected a number of seconds > 0; got 'soon'\n"
    assert not (tmp_path / "results").exists()


def test_nan_metric_of_a_command_task_is_refused(tmp_path, capsys):
    path, jobs, common = _setup(tmp_path, args={"metrics": '{"score": NaN, "near": {"r": Infinity}}'},
                                rows=("a",), seeds=(1,))
    code, out, err = _cli(["run", str(path), "--no-mlflow", *common], capsys)
    assert code == 1
    assert (f"{jobs[0].out_json}: metric 'score' is nan; metric 'near/r' is inf (task 'command' takes finite "
            "numbers only)") in out
    assert _records(jobs)[jobs[0].job_id]["status"] == "failed"
    code, _, err = _cli(["validate", str(path), *common], capsys)
    assert code == 1 and "metric 'score' is nan" in err
    code, _, err = _cli(["report", str(path), "--out", str(tmp_path / "reports"), *common], capsys)
    assert code == 1 and "metric 'score' is nan" in err and not list(tmp_path.glob("reports/*"))
