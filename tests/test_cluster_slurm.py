"""``python -m benchmark run --cluster slurm`` against a real single-node SLURM.

The test starts munged, slurmctld and slurmd (Debian's ``slurm-wlm`` and ``munge``) on loopback,
as root, with every file in a temporary directory (``scripts/ci/install_slurm.sh`` installs the
packages; ``make test`` calls it), then runs small suites of a probe command through the CLI:
each job runs exactly once inside the SLURM batch jobs of the dask workers, a rerun skips every
job and submits no batch job, an interrupt (SIGINT, SIGTERM) cancels the batch jobs (running and
pending) and keeps finished results while unfinished ones are not written, and a batch job that
SLURM refuses is a one-line error, not a run that waits forever.

Where no scheduler can start (binaries missing, not root, munged or a daemon failing) the tests
skip with one line saying why. Teardown always cancels what is left and stops the daemons.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo")
NODE_CPUS = 2  # the node offers 2 CPUs (config_overrides: whatever the machine has)
PARTITION = "bench"

# A job that records who ran it (benchmark job id, the SLURM batch job it ran in) and writes a
# valid result whose score is a hand-checkable function of its args: scale * seed.
PROBE = '''import json, os, sys, time
from benchmark.atomic import atomic_write_text
a = dict(zip(sys.argv[1::2], sys.argv[2::2]))
with open(a["--ran"], "a") as fh:
    fh.write(f"{os.environ['BENCHMARK_JOB_ID']} {os.environ.get('SLURM_JOB_ID', '-')}\\n")
time.sleep(float(a["--sleep"]))
env = {"schema_version": 1, "task": "command", "args": {}, "metrics": {"score": float(a["--scale"]) * float(a["--seed"])},
       "provenance": {"git_rev": None, "started": "2024-01-01T00:00:00Z", "wall_s": 0.0}}
atomic_write_text(a["--out_json"], json.dumps(env))
'''


class Unavailable(Exception):
    """SLURM cannot start here; the message is the one-line skip reason."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Slurm:
    """A running single-node SLURM: its config (``SLURM_CONF``), its files, its daemons."""

    root: Path
    node: str
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def cmd(self, *argv: str, check: bool = True) -> str:
        out = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=30)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {out.returncode}: {out.stderr.strip()}")
        return out.stdout

    def queue(self) -> list[tuple[str, str, str]]:
        """(job id, name, state) of every job SLURM still holds (pending, running, completing)."""
        out = self.cmd("squeue", "-h", "-o", "%i|%j|%T")
        return [tuple(line.split("|")) for line in out.splitlines() if line.strip()]

    def wait_queue_empty(self, timeout: float = 20.0) -> list[tuple[str, str, str]]:
        deadline = time.time() + timeout
        while (left := self.queue()) and time.time() < deadline:
            time.sleep(0.2)
        return left

    def finished(self, name: str) -> dict[str, str]:
        """Job id -> final state of every ended batch job called ``name`` (jobcomp/filetxt)."""
        path = self.root / "jobcomp.txt"
        text = path.read_text() if path.exists() else ""
        records = [dict(re.findall(r"(\w+)=(\S*)", line)) for line in text.splitlines()]
        return {r["JobId"]: r["JobState"] for r in records if r.get("Name") == name}

    def log_tail(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = self.root / name
            if path.exists():
                parts.append(f"== {name}\n" + "\n".join(path.read_text().splitlines()[-15:]))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel every job, then stop slurmd, slurmctld and munged (kill after a grace)."""
        if "slurmctld" in self.procs:
            try:
                self.cmd("scancel", "--partition", PARTITION, check=False)
                self.wait_queue_empty(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for name in reversed(DAEMONS):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _why_not() -> str | None:
    missing = [b for b in DAEMONS + CLIENTS if shutil.which(b) is None]
    if missing:
        return f"SLURM not installed (missing {', '.join(missing)}; scripts/ci/install_slurm.sh installs it)"
    if os.geteuid() != 0:
        return "a test SLURM needs root (SlurmUser=root, munged as root)"
    return None


def start_slurm(root: Path) -> Slurm:
    """Write munge key, slurm.conf and cgroup.conf under ``root``; start the three daemons in
    the foreground (children of this process) and wait for the node to be idle."""
    node = socket.gethostname().split(".")[0]
    slurm = Slurm(root, node)
    (root / "state").mkdir()
    (root / "spool").mkdir()
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    sock = root / "munge.sock"
    ctld_port, d_port = _free_port(), _free_port()
    slurm.conf.write_text(f"""\
ClusterName=benchtest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SlurmdParameters=config_overrides
JobCompType=jobcomp/filetxt
JobCompLoc={root}/jobcomp.txt
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
NodeName={node} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory=4000 State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
""")
    # no cgroups: processes are tracked by /proc (ProctrackType above), nothing is confined
    (root / "cgroup.conf").write_text("CgroupAutomount=no\nConstrainCores=no\nConstrainRAMSpace=no\n")
    argvs = {
        "munged": ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={sock}",
                   f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log",
                   f"--seed-file={root}/munged.seed"],
        "slurmctld": ["slurmctld", "-D", "-i", "-f", str(slurm.conf)],
        "slurmd": ["slurmd", "-D", "-N", node, "-f", str(slurm.conf)],
    }
    try:
        for name in DAEMONS:
            with open(root / f"{name}.stderr", "wb") as err:
                slurm.procs[name] = subprocess.Popen(argvs[name], env=slurm.env, stdin=subprocess.DEVNULL,
                                                     stdout=err, stderr=subprocess.STDOUT)
            if name == "munged":
                _wait_for(lambda: sock.exists(), slurm, "munged", timeout=10)
        state = ""

        def node_idle() -> bool:
            nonlocal state
            state = slurm.cmd("sinfo", "-h", "-N", "-o", "%T", check=False).strip()
            return state == "idle"

        _wait_for(node_idle, slurm, "slurmd", timeout=30, what=lambda: f"node state {state or 'unknown'}")
    except BaseException:
        slurm.stop()
        raise
    return slurm


def _wait_for(ready, slurm: Slurm, daemon: str, *, timeout: float, what=lambda: "") -> None:
    deadline = time.time() + timeout
    while not ready():
        dead = [n for n, p in slurm.procs.items() if p.poll() is not None]
        if dead or time.time() > deadline:
            why = f"{dead[0]} exited with {slurm.procs[dead[0]].returncode}" if dead else \
                f"{daemon} not ready after {timeout:.0f} s" + (f" ({what()})" if what() else "")
            said = _last_line(slurm.root, dead[0] if dead else daemon)
            raise Unavailable(f"SLURM did not start: {why}" + (f": {said}" if said else ""))
        time.sleep(0.1)


def _last_line(root: Path, daemon: str) -> str:
    """The daemon's last words: its stderr, else its log file."""
    for path in (root / f"{daemon}.stderr", root / f"{daemon}.log"):
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()
                 if line.strip()] if path.exists() else []
        if lines:
            return lines[-1]
    return ""


@pytest.fixture(scope="module")
def slurm():
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue not installed (pip install -e '.[dev]')")
    root = Path(tempfile.mkdtemp(prefix="slurm-"))  # short: the munge socket path has a limit
    root.chmod(0o755)  # munged wants its socket's folder reachable
    try:
        running = start_slurm(root)
    except Unavailable as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(str(exc))
    try:
        yield running
    finally:
        running.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- helpers ------------------------------------------------------------------------------------

@dataclass
class Suite:
    path: Path
    ran: Path
    results: Path
    params: Path
    cluster_yaml: Path
    job_name: str


def _suite(tmp_path: Path, *, sleeps: dict[str, float], seeds: list[int], workers: int,
           partition: str = PARTITION) -> Suite:
    """A suite of the probe command: model a/b (scale 1/2) x ``seeds``, and the cluster YAML of
    ``workers`` single-thread SLURM workers (one batch job each, 1 CPU, worker logs in tmp)."""
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    ran = tmp_path / "ran.txt"
    path = tmp_path / "slurmprobe.yaml"
    path.write_text(f"""name: slurmprobe
task: command
program: [python, {probe}]
args: {{ran: {ran}}}
matrix:
  model: {{a: {{scale: 1, sleep: {sleeps['a']}}}, b: {{scale: 2, sleep: {sleeps['b']}}}}}
seeds: {{seed: {json.dumps(seeds)}}}
tables: [{{rows: [model], metrics: [score]}}]
""")
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    job_name = f"bench-{uuid.uuid4().hex[:8]}"  # this test's batch jobs, in the module's SLURM
    cluster_yaml = tmp_path / "slurm.yaml"
    cluster_yaml.write_text(f"""workers: {workers}
cores: 1
processes: 1
memory: 500MB
queue: {partition}
walltime: "00:05:00"
job_name: {job_name}
interface: lo
log_directory: {tmp_path / 'worker-logs'}
""")
    return Suite(path, ran, tmp_path / "results", params, cluster_yaml, job_name)


def _argv(s: Suite) -> list[str]:
    return [sys.executable, "-m", "benchmark", "run", str(s.path), "--cluster", "slurm",
            "--cluster-config", str(s.cluster_yaml), "--no-mlflow", "--params", str(s.params),
            "--results-dir", str(s.results)]


def _env(slurm: Slurm) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**slurm.env, "PYTHONPATH": path}


def _run(slurm: Slurm, s: Suite, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(_argv(s), env=_env(slurm), cwd=s.path.parent, capture_output=True, text=True,
                          timeout=timeout)


def _ran(s: Suite) -> list[tuple[str, str]]:
    return [tuple(line.split()) for line in s.ran.read_text().splitlines()] if s.ran.exists() else []


def _expected(s: Suite) -> dict[str, tuple[str, float]]:
    """Job id -> (model, score) of the jobs the suite expands to; score = scale * seed by hand."""
    from benchmark.expand import expand
    from benchmark.suite import load_suite

    jobs = expand(load_suite(s.path, s.params), s.results)
    return {j.job_id: (j.tags["model"], {"a": 1, "b": 2}[j.tags["model"]] * j.tags["seed"]) for j in jobs}


# --- tests --------------------------------------------------------------------------------------

def test_each_job_runs_once_in_the_workers_batch_jobs_and_a_rerun_skips_all(slurm, tmp_path):
    s = _suite(tmp_path, sleeps={"a": 0.5, "b": 0.5}, seeds=[1, 2, 3], workers=2)
    expected = {job: score for job, (_, score) in _expected(s).items()}
    t0 = time.time()
    out = _run(slurm, s)
    wall = time.time() - t0
    assert out.returncode == 0, out.stdout + out.stderr + slurm.log_tail()
    assert "executor: dask slurm cluster, 2 worker(s)" in out.stdout
    assert "slurmprobe: done=6 skipped=0 failed=0 total=6" in out.stdout

    ran = _ran(s)
    assert sorted(job for job, _ in ran) == sorted(expected)  # every job exactly once
    batch = slurm.finished(s.job_name)
    assert len(batch) == 2, batch  # one batch job per worker, ended (cancelled by the client's close)
    assert set(batch.values()) == {"CANCELLED"}
    assert {slurm_job for _, slurm_job in ran} <= set(batch)  # each command ran inside one of them
    logs = sorted(p.name for p in (tmp_path / "worker-logs").iterdir())
    assert logs == sorted(f"{s.job_name}-{j}.{ext}" for j in batch for ext in ("err", "out")), logs
    assert slurm.wait_queue_empty() == []
    for job_id, score in expected.items():
        envelope = json.loads((s.results / "slurmprobe" / f"{job_id}.json").read_text())
        assert envelope["metrics"] == {"score": score}
        assert json.loads((s.results / "slurmprobe" / f"{job_id}.job.json").read_text())["status"] == "done"

    again = _run(slurm, s)  # all finished: no cluster, no batch job, nothing runs
    assert again.returncode == 0, again.stdout + again.stderr
    assert "slurmprobe: done=0 skipped=6 failed=0 total=6" in again.stdout
    assert "(started on demand)" in again.stdout
    assert len(_ran(s)) == 6 and slurm.finished(s.job_name) == batch and slurm.queue() == []
    print(f"first run {wall:.1f} s")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_cancels_the_batch_jobs_and_keeps_finished_results(slurm, tmp_path, sig):
    # 3 one-CPU workers on a 2-CPU node: two batch jobs run, the third pends in SLURM's queue.
    s = _suite(tmp_path, sleeps={"a": 0.2, "b": 120}, seeds=[1, 2, 3], workers=3)
    expected = _expected(s)
    proc = subprocess.Popen(_argv(s), env=_env(slurm), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(_ran(s)) < 5:  # a1-a3 finished, b1 b2 running
            time.sleep(0.2)
        started = _ran(s)
        states = sorted(state for _, name, state in slurm.queue() if name == s.job_name)
        assert len(started) == 5, (started, slurm.log_tail())
        assert states == ["PENDING", "RUNNING", "RUNNING"], states
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, out
    assert "interrupted" in out
    assert slurm.wait_queue_empty() == []  # every batch job cancelled, the pending one too
    batch = slurm.finished(s.job_name)
    assert len(batch) == 3 and set(batch.values()) == {"CANCELLED"}, batch

    folder = s.results / "slurmprobe"
    for job, (model, score) in expected.items():
        record = json.loads((folder / f"{job}.job.json").read_text()) if (folder / f"{job}.job.json").exists() else {}
        if model == "a":  # finished before the signal: result and record kept
            assert json.loads((folder / f"{job}.json").read_text())["metrics"] == {"score": score}
            assert record["status"] == "done"
        else:  # running (interrupted) or never started: no result written
            assert not (folder / f"{job}.json").exists()
            assert record.get("status") in ({"interrupted"} if job in {j for j, _ in started} else {None}), record
    assert not list(s.results.rglob("*.lock"))
    assert len(_ran(s)) == 5  # the queued job never started


def test_a_batch_job_slurm_refuses_is_a_one_line_error(slurm, tmp_path):
    s = _suite(tmp_path, sleeps={"a": 0, "b": 0}, seeds=[1], workers=1, partition="nosuch")
    t0 = time.time()
    out = _run(slurm, s, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.splitlines() == [
        f"error: {s.cluster_yaml}: the batch system refused the worker job: sbatch: error: invalid partition "
        "specified: nosuch; sbatch: error: Batch job submission failed: Invalid partition name specified"]
    assert time.time() - t0 < 30 and not _ran(s) and slurm.queue() == []
