"""The dask executor: jobs run on cluster workers; the client keeps skip, lock, validation, MLflow.

A real ``distributed.LocalCluster`` runs a small suite of ``command`` jobs; PBS/SLURM configs are
checked at the boundary (the kwargs handed to a stand-in ``dask_jobqueue`` module) and, where
dask-jobqueue is installed, by the batch script it renders (the ``#PBS`` lines). A real SLURM
runs suites in tests/test_cluster_slurm.py; no PBS server is available to the tests.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from benchutil import write_suite  # noqa: E402

from benchmark.cli import main  # noqa: E402
from benchmark.executors import (CLUSTER_EXTRA, CommandSpec, DaskExecutor, ExecutorError,  # noqa: E402
                                 load_cluster_config, make_cluster)
from benchmark.expand import expand  # noqa: E402
from benchmark.results import load_result  # noqa: E402
from benchmark.runner import check_existing, run_jobs  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402
from benchmark.tasks import get_task  # noqa: E402

distributed = pytest.importorskip("distributed")

# A job that records who ran it (job id, its own pid, its parent's pid = the process that launched
# it) and writes a result whose score is a hand-checkable function of its args: scale * seed.
PROBE = '''import json, os, sys, time
from benchmark.atomic import atomic_write_text
a = dict(zip(sys.argv[1::2], sys.argv[2::2]))
with open(a["--ran"], "a") as fh:
    fh.write(f"{os.environ['BENCHMARK_JOB_ID']} {os.getpid()} {os.getppid()}\\n")
time.sleep(float(a.get("--sleep", 0)))
env = {"schema_version": 1, "task": "command", "args": {}, "metrics": {"score": float(a["--scale"]) * float(a["--seed"])},
       "provenance": {"git_rev": None, "started": "2024-01-01T00:00:00Z", "wall_s": 0.0}}
atomic_write_text(a["--out_json"], json.dumps(env))
'''


def _probe_suite(tmp_path: Path, sleep: float = 0.3):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    ran = tmp_path / "ran.txt"
    path = tmp_path / "probe.yaml"
    path.write_text(f"""name: probe
task: command
program: [python, {probe}]
args: {{ran: {ran}, sleep: {sleep}}}
matrix:
  model: {{a: {{scale: 1}}, b: {{scale: 2}}}}
seeds: {{seed: [1, 2, 3]}}
tables: [{{rows: [model], metrics: [score]}}]
""")
    (tmp_path / "params.yaml").write_text("{}\n")
    suite = load_suite(path, tmp_path / "params.yaml")
    return path, ran, expand(suite, tmp_path / "results")


class RecordingTracker:
    """Stands in for MlflowTracker: remembers which process and thread logged each job."""

    enabled = True
    store = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, int]] = []

    def log_job(self, job, *, status, envelope=None, start=None, end=None, result_sha256=None):
        self.calls.append((job.job_id, status, os.getpid(), threading.get_ident()))
        return f"run-{len(self.calls)}"


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes (module-scoped: started once)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as c:
        yield c


def test_local_cluster_runs_every_job_once_on_the_workers(tmp_path, cluster):
    _, ran, jobs = _probe_suite(tmp_path)
    tracker = RecordingTracker()
    lines: list[str] = []
    with distributed.Client(cluster) as client:
        worker_pids = set(client.run(os.getpid).values())
        executor = DaskExecutor(client, owns_client=False)
        assert executor.capacity() == 2
        summary = run_jobs(jobs, tracker=tracker, log=lines.append, executor=executor)
        assert [o.status for o in summary.outcomes] == ["done"] * 6, "\n".join(lines)

        records = [line.split() for line in ran.read_text().splitlines()]
        assert sorted(r[0] for r in records) == sorted(j.job_id for j in jobs)  # each exactly once
        assert {int(r[2]) for r in records} <= worker_pids  # launched by the workers...
        assert os.getpid() not in {int(r[2]) for r in records}  # ...not by this (client) process
        # results are valid and hold the expected numbers (scale * seed)
        for job in jobs:
            assert check_existing(job, get_task("command")) is None
            scale = {"a": 1, "b": 2}[job.tags["model"]]
            assert load_result(job.out_json).metrics["score"] == scale * job.tags["seed"]
            record = json.loads(job.job_json.read_text())
            assert record["status"] == "done" and record["pid"] == os.getpid()
            assert not job.lock.exists()
        # MLflow-style logging happened once per job, in this process and this thread only
        assert sorted(c[0] for c in tracker.calls) == sorted(j.job_id for j in jobs)
        assert {(c[1], c[2], c[3]) for c in tracker.calls} == {("done", os.getpid(), threading.get_ident())}

        # a second run skips everything: nothing reaches the workers, nothing is logged
        again = run_jobs(jobs, tracker=tracker, log=lines.append, executor=executor)
        assert [o.status for o in again.outcomes] == ["skipped"] * 6
        assert len(ran.read_text().splitlines()) == 6 and len(tracker.calls) == 6


def test_failed_job_on_a_worker_is_judged_by_the_client(tmp_path, cluster):
    path = write_suite(tmp_path, matrix={"ckpt": {"ok": {"scale": 1}, "bad": {"scale": 2, "fail": True}}},
                       seeds={"seed": [1]}, tables=[{"rows": ["ckpt"], "metrics": ["score"]}])
    jobs = expand(load_suite(path, tmp_path / "params.yaml"), tmp_path / "results")
    with distributed.Client(cluster) as client:
        summary = run_jobs(jobs, log=lambda s: None, executor=DaskExecutor(client, owns_client=False))
    status = {o.job.tags["ckpt"]: o for o in summary.outcomes}
    assert status["ok"].status == "done"
    bad = status["bad"]
    assert (bad.status, bad.returncode, bad.detail) == ("failed", 3, "exit 3")
    assert bad.log_tail[-1] == "boom: failing on purpose"  # the worker's output reached the log
    assert json.loads(bad.job.job_json.read_text())["status"] == "failed" and not bad.job.lock.exists()


def test_interrupt_terminates_a_running_command(tmp_path):
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as c, distributed.Client(c) as client:
        executor = DaskExecutor(client, owns_client=False, poll_s=0.2)
        spec = CommandSpec(job_id="sleeper", argv=[sys.executable, "-c", "import time; time.sleep(60)"],
                           log=str(tmp_path / "sleeper.log"))
        fut, _ = executor.submit(spec)
        time.sleep(1.0)
        t0 = time.time()
        executor.interrupt()
        result = fut.result(timeout=20)
    assert result.returncode == -15  # SIGTERM from the worker, after the client's stop event
    assert time.time() - t0 < 10


def test_cli_dask_local_cluster_then_status(tmp_path, capsys):
    path, ran, jobs = _probe_suite(tmp_path, sleep=0.0)
    common = ["--results-dir", str(tmp_path / "results"), "--params", str(tmp_path / "params.yaml")]
    assert main(["run", str(path), "--executor", "dask", "--cluster", "local", "--workers", "2",
                 "--no-mlflow", *common]) == 0
    out = capsys.readouterr().out
    assert "executor: dask local cluster, 2 worker(s)" in out
    assert "probe: done=6 skipped=0 failed=0 total=6" in out
    assert sorted(line.split()[0] for line in ran.read_text().splitlines()) == sorted(j.job_id for j in jobs)
    # all finished: the next run starts no cluster at all
    assert main(["run", str(path), "--cluster", "local", "--no-mlflow", *common]) == 0
    out = capsys.readouterr().out
    assert "(started on demand)" in out and "probe: done=0 skipped=6" in out
    assert main(["status", str(path), *common]) == 0
    assert capsys.readouterr().out.splitlines()[0] == \
        "probe: completed jobs: 6 / 6 (running/locked: 0, failed: 0, stale: 0)"


# --- command line and cluster configs ---------------------------------------------------------

def _run_cli(tmp_path, *extra: str) -> int:
    path = write_suite(tmp_path, matrix={"ckpt": {"a": {"scale": 1}}}, tables=[{"rows": ["ckpt"], "metrics": ["score"]}])
    return main(["run", str(path), "--no-mlflow", "--results-dir", str(tmp_path / "results"),
                 "--params", str(tmp_path / "params.yaml"), *extra])


@pytest.mark.parametrize("extra, message", [
    (["--executor", "dask"], "expected exactly one of --scheduler"),
    (["--executor", "dask", "--scheduler", "tcp://h:1", "--cluster", "local"], "expected exactly one of"),
    (["--executor", "local", "--cluster", "local"], "--cluster: only with --executor dask"),
    (["--cluster", "local", "--gpus", "0,1"], "--gpus: only with --executor local"),
    (["--scheduler", "tcp://h:1", "--workers", "3"], "--workers: only with --cluster"),
])
def test_cli_rejects_inconsistent_executor_flags(tmp_path, capsys, extra, message):
    assert _run_cli(tmp_path, *extra) == 2
    assert message in capsys.readouterr().err


PBS_YAML = """\
workers: 4
cores: 8
memory: 32GB
queue: gpu
walltime: "04:00:00"
account: lab42
resource_spec: select=1:ncpus=8:ngpus=1
job_extra_directives: ["-j oe", "-m n"]
job_script_prologue: ["source .venv/bin/activate"]
"""


def test_pbs_yaml_becomes_cluster_kwargs(tmp_path):
    cfg_path = tmp_path / "pbs.yaml"
    cfg_path.write_text(PBS_YAML)
    cfg = load_cluster_config("pbs", cfg_path)
    assert cfg.workers == 4
    assert cfg.constructor_kwargs() == {
        "cores": 8, "memory": "32GB", "queue": "gpu", "walltime": "04:00:00", "account": "lab42",
        "resource_spec": "select=1:ncpus=8:ngpus=1", "job_extra_directives": ["-j oe", "-m n"],
        "job_script_prologue": ["source .venv/bin/activate"]}
    assert load_cluster_config("pbs", cfg_path, workers=10).workers == 10  # --workers wins


def test_local_defaults_and_overrides():
    cfg = load_cluster_config("local", None, default_workers=3)
    assert cfg.constructor_kwargs() == {"n_workers": 3, "processes": True, "threads_per_worker": 1,
                                        "dashboard_address": ":0"}


@pytest.mark.parametrize("kind, text, message", [
    ("slurm", "cores: 4\nmemory: 8GB\nqueu: short\n", "queu: unknown key for a slurm cluster"),
    ("pbs", "memory: 8GB\n", "cores: required for a pbs cluster"),
    ("slurm", "cores: 4\n", "memory: required for a slurm cluster"),
    ("slurm", "cores: 4\nmemory: 8GB\nworkers: 0\n", "workers: expected an integer >= 1"),
    ("pbs", "- cores\n", "expected a mapping of cluster kwargs"),
    ("local", "cores: 4\n", "cores: unknown key for a local cluster"),
])
def test_bad_cluster_config_names_file_and_key(tmp_path, kind, text, message):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(text)
    with pytest.raises(ExecutorError) as err:
        load_cluster_config(kind, cfg_path)
    assert str(err.value).startswith(str(cfg_path)) and message in str(err.value)


class _FakeJobqueueCluster:
    """Records how it was built and scaled (stands in for a dask_jobqueue cluster class)."""

    made: list["_FakeJobqueueCluster"] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.scaled: list[dict] = []
        _FakeJobqueueCluster.made.append(self)

    def scale(self, n=None, jobs=0, memory=None, cores=None):
        self.scaled.append({"n": n, "jobs": jobs})


def test_make_cluster_hands_the_kwargs_to_dask_jobqueue(tmp_path, monkeypatch):
    fake = types.ModuleType("dask_jobqueue")
    fake.PBSCluster = type("PBSCluster", (_FakeJobqueueCluster,), {})
    fake.SLURMCluster = type("SLURMCluster", (_FakeJobqueueCluster,), {})
    monkeypatch.setitem(sys.modules, "dask_jobqueue", fake)
    cfg_path = tmp_path / "slurm.yaml"
    cfg_path.write_text("workers: 3\ncores: 16\nmemory: 64GB\nqueue: batch\nwalltime: '01:00:00'\n"
                        "job_extra_directives: ['--gres=gpu:1']\njob_cpu: 16\n")
    cluster = make_cluster(load_cluster_config("slurm", cfg_path))
    assert type(cluster).__name__ == "SLURMCluster"
    assert cluster.kwargs == {"cores": 16, "memory": "64GB", "queue": "batch", "walltime": "01:00:00",
                              "job_extra_directives": ["--gres=gpu:1"], "job_cpu": 16}
    assert cluster.scaled == [{"n": 3, "jobs": 0}]  # scaled to 3 workers
    pbs = make_cluster(load_cluster_config("pbs", _write(tmp_path / "p.yaml", PBS_YAML)))
    assert type(pbs).__name__ == "PBSCluster" and pbs.scaled == [{"n": 4, "jobs": 0}]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_missing_dask_jobqueue_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # import fails as if not installed
    cfg_path = _write(tmp_path / "pbs.yaml", PBS_YAML)
    with pytest.raises(ExecutorError) as err:
        make_cluster(load_cluster_config("pbs", cfg_path))
    assert "--cluster pbs needs dask-jobqueue" in str(err.value) and CLUSTER_EXTRA in str(err.value)
    # through the command line: exit 2, one message, no traceback
    assert _run_cli(tmp_path, "--cluster", "pbs", "--cluster-config", str(cfg_path)) == 2
    err_text = capsys.readouterr().err
    assert "pip install 'nepa3d-bench[cluster]'" in err_text and "Traceback" not in err_text


# --- interrupts -------------------------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("executor_args", [["--jobs", "2"], ["--cluster", "local", "--workers", "2"]],
                         ids=["local", "dask"])
def test_sigterm_stops_running_commands_and_releases_locks(tmp_path, executor_args):
    import signal
    import subprocess

    path, ran, jobs = _probe_suite(tmp_path, sleep=60)
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "benchmark", "run", str(path), "--no-mlflow",
                             "--params", str(tmp_path / "params.yaml"), *executor_args],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(repo)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and (not ran.exists() or len(ran.read_text().splitlines()) < 2):
            time.sleep(0.2)
        started = [line.split() for line in ran.read_text().splitlines()]
        assert len(started) == 2  # two slots: two commands running, four queued
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=45)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "interrupted" in out
    time.sleep(0.5)
    assert not [pid for _, pid, _ in started if _alive(int(pid))]  # the commands were terminated
    assert not list((tmp_path / "results").rglob("*.lock"))  # and every lock released
    assert len(ran.read_text().splitlines()) == 2  # nothing else started
    by_id = {j.job_id: j for j in jobs}
    for job_id, _, _ in started:
        record = json.loads(by_id[job_id].job_json.read_text())
        assert record["status"] == "interrupted" and record["returncode"] == -15


# --- what dask-jobqueue submits -----------------------------------------------------------------

# The lab's PBS shape (README "Running a suite on a cluster"): one worker per batch job running one
# command at a time (cores: 1) on a node share of 8 CPUs and a GPU (resource_spec), environment
# exported (-V) so the worker finds the venv and PYTHONPATH.
LAB_PBS_YAML = """\
workers: 2
cores: 1
processes: 1
memory: 32GB
queue: gpu
walltime: "04:00:00"
account: lab42
resource_spec: select=1:ncpus=8:ngpus=1
job_name: nepa3d-bench
job_extra_directives: ["-j oe", "-V"]
job_script_prologue: ["export OMP_NUM_THREADS=8"]
"""


def test_pbs_job_script_has_the_hand_written_pbs_lines(tmp_path):
    pytest.importorskip("dask_jobqueue")
    from benchmark.executors import job_script

    script = job_script(load_cluster_config("pbs", _write(tmp_path / "pbs.yaml", LAB_PBS_YAML)))
    lines = [line for line in script.splitlines() if line.strip()]
    assert lines[0] == "#!/usr/bin/env bash"
    assert [line for line in lines if line.startswith("#PBS")] == [
        "#PBS -N nepa3d-bench",
        "#PBS -q gpu",
        "#PBS -A lab42",
        "#PBS -l select=1:ncpus=8:ngpus=1",  # resource_spec replaces the select line built from cores/memory
        "#PBS -l walltime=04:00:00",
        "#PBS -j oe",
        "#PBS -V",
    ]
    body = [line for line in lines[1:] if not line.startswith("#")]
    assert body[0] == "export OMP_NUM_THREADS=8"  # the prologue: the commands inherit the worker's env
    assert len(body) == 2
    worker = body[1].split()
    assert worker[:3] == [sys.executable, "-m", "distributed.cli.dask_worker"]  # this venv's interpreter
    assert worker[3].startswith("tcp://")  # the scheduler in the runner process
    opts = dict(zip(worker[4::2], worker[5::2]))
    # one thread: one command at a time; 32GB = 32e9 bytes = 29.80 GiB for the worker's own limit
    assert opts["--nthreads"] == "1" and opts["--memory-limit"] == "29.80GiB"
    assert "--nworkers" not in opts  # processes: 1


def test_pbs_defaults_split_cores_into_worker_processes(tmp_path):
    """Without `processes`, dask-jobqueue splits `cores` into worker processes and threads: 8
    cores -> 4 processes x 2 threads = 8 commands at once in one batch job (the README warns)."""
    pytest.importorskip("dask_jobqueue")
    from benchmark.executors import job_script

    script = job_script(load_cluster_config("pbs", _write(tmp_path / "pbs.yaml", PBS_YAML)))
    assert "#PBS -l select=1:ncpus=8:ngpus=1" in script.splitlines()
    worker = next(line for line in script.splitlines() if "dask_worker" in line).split()
    opts = dict(zip(worker[4::2], worker[5::2]))
    assert (opts["--nworkers"], opts["--nthreads"]) == ("4", "2")


def test_importing_dask_jobqueue_keeps_the_sigint_handler():
    """dask-jobqueue 0.9 installs SIGINT -> sys.exit() on import (a Ctrl-C'd run exited 0);
    the executors' import puts Python's KeyboardInterrupt handler back."""
    pytest.importorskip("dask_jobqueue")
    import subprocess

    code = ("import signal\nfrom benchmark.executors.cluster import _import_jobqueue\n_import_jobqueue('slurm')\n"
            "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)")
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(repo), os.environ.get("PYTHONPATH")) if p)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr
