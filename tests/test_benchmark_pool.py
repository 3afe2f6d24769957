"""The pool executor: persistent workers run Python jobs in-process exactly as a subprocess would.

Small scripts written to tmp_path probe exit codes, output, environment and isolation (each
compared with a :class:`LocalExecutor` subprocess where it matters); real UCPR / CPAC jobs on a
planted analytic cache check that results are bitwise identical to the subprocess mode.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from benchutil import write_suite  # noqa: E402

from benchmark.cli import main  # noqa: E402
from benchmark.executors import CommandSpec, LocalExecutor, thread_share_env  # noqa: E402
from benchmark.expand import expand  # noqa: E402
from benchmark.pool import PoolExecutor  # noqa: E402
from benchmark.pool_worker import exit_code, is_python, python_call  # noqa: E402
from benchmark.runner import run_jobs  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402

PY = sys.executable

# Prints what a job sees of its process (JSON on stdout, between markers), then changes all of it.
PROBE = r'''import json, logging, os, signal, sys, warnings
state = {"argv": sys.argv, "path0": sys.path[0], "cwd": os.getcwd(), "name": __name__,
         "file": __file__, "job": os.environ.get("BENCHMARK_JOB_ID"),
         "leak": os.environ.get("LEAK"), "omp": os.environ.get("OMP_NUM_THREADS"),
         "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
         "root_handlers": len(logging.getLogger().handlers), "recursion": sys.getrecursionlimit(),
         "sigterm": str(signal.getsignal(signal.SIGTERM)), "main_is_me": sys.modules["__main__"].__dict__ is globals()}
if "numpy" in sys.modules:
    state["np_err"] = sys.modules["numpy"].geterr()
if "torch" in sys.modules:
    t = sys.modules["torch"]
    state["torch"] = [t.get_num_threads(), str(t.get_default_dtype()), t.is_grad_enabled()]
try:
    warnings.warn("probe", UserWarning)
    state["warning_raises"] = False
except UserWarning:
    state["warning_raises"] = True
print("STATE" + json.dumps(state, sort_keys=True) + "END")
os.environ["LEAK"] = "1"
os.chdir("/")
warnings.simplefilter("error")
logging.basicConfig(level=logging.DEBUG)
sys.setrecursionlimit(500)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if "numpy" in sys.modules:
    sys.modules["numpy"].seterr(all="raise")
if "torch" in sys.modules:
    t.set_num_threads(2 if t.get_num_threads() == 1 else 1)
    t.set_default_dtype(t.float64)
    t.set_grad_enabled(False)
'''

# A command job: --mode ok writes a valid result; os_exit / segv / leak / sleep / exit misbehave.
JOB = r'''import json, os, signal, sys, time
a = dict(zip(sys.argv[1::2], sys.argv[2::2]))
if "--pid" in a:
    open(a["--pid"], "a").write(f"{os.getpid()}\n")
mode = a.get("--mode", "ok")
if mode == "os_exit":
    os._exit(3)
if mode == "segv":
    os.kill(os.getpid(), signal.SIGSEGV)
if mode == "leak":
    hoard = []
    while len(hoard) < 100:  # 1.6 GB at most
        hoard.append(b"x" * (16 << 20))
        time.sleep(0.02)
if mode == "sleep":
    print("sleeping", flush=True)
    time.sleep(60)
    open(a["--pid"] + ".woke", "w").write("woke")
env = {"schema_version": 1, "task": "command", "args": {}, "metrics": {"score": float(a.get("--seed", 0))},
       "provenance": {"git_rev": None, "started": "2024-01-01T00:00:00Z", "wall_s": 0.0}}
if "--out_json" in a:
    open(a["--out_json"], "w").write(json.dumps(env))
'''


def _script(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _spec(tmp_path: Path, job_id: str, argv: list, **kw) -> CommandSpec:
    return CommandSpec(job_id=job_id, argv=[str(a) for a in argv], log=str(tmp_path / "logs" / f"{job_id}.log"),
                       env={"BENCHMARK_JOB_ID": job_id, "PYTHONUNBUFFERED": "1", **kw.pop("env", {})},
                       header=f"=== job {job_id}\n", **kw)


def _run(executor, spec: CommandSpec):
    fut, where = executor.submit(spec)
    return fut.result(timeout=60)


def _log(spec: CommandSpec, result) -> str:
    data = Path(spec.log).read_bytes()[result.log_offset:].decode()
    assert data.startswith(spec.header)
    return data


def _state(spec: CommandSpec, result) -> dict:
    text = _log(spec, result)
    return json.loads(text[text.index("STATE") + 5:text.index("END")])


# --- what runs in-process -------------------------------------------------------------------

def test_python_argv_detection(tmp_path):
    script = _script(tmp_path, "s.py", "")
    assert is_python(PY) and is_python("python") and is_python("python3") and is_python("python3.11")
    assert is_python(os.path.join(os.path.dirname(PY), "python3"))
    assert not is_python("/opt/elsewhere/bin/python3") and not is_python("bash") and not is_python("pythonw-x")
    assert python_call([PY, "-m", "a.b", "--x", "1"]).kind == "module"
    assert python_call(["python3", "-u", "-m", "a.b"]).target == "a.b"
    assert python_call([PY, str(script), "1"]).args == ("1",)
    assert python_call([PY, "s.py"], cwd=str(tmp_path)).kind == "script"
    for argv in ([PY], [PY, "-c", "print(1)"], [PY, "-X", "dev", "-m", "a"], [PY, "-m"],
                 [PY, str(tmp_path / "missing.py")], [PY, str(tmp_path)], ["/bin/echo", "hi"]):
        assert python_call(argv) is None, argv


def test_exit_code_mapping():
    assert [exit_code(c) for c in (None, 0, 4, 256, -1, True)] == [0, 0, 4, 0, 255, 1]


# --- exit codes, output, environment, isolation ----------------------------------------------

EXITS = {"none": ("sys.exit()", 0), "zero": ("sys.exit(0)", 0), "four": ("sys.exit(4)", 4),
         "msg": ("sys.exit('bad input')", 1), "big": ("sys.exit(257)", 1),
         "raise": ("raise ValueError('boom from job')", 1), "return": ("x = 1", 0)}


def test_exit_codes_and_output_match_a_subprocess(tmp_path):
    body = ("import os, sys\nprint('out', os.environ['BENCHMARK_JOB_ID'])\n"
            "os.write(2, b'raw fd 2\\n')\nprint('err', file=sys.stderr)\n{}\n")
    local, pool = LocalExecutor(n_jobs=1), PoolExecutor(n_jobs=1)
    try:
        for k, (code, rc) in EXITS.items():
            script = _script(tmp_path, f"exit_{k}.py", body.format(code))
            ls, ps = _spec(tmp_path, f"local-{k}", [PY, script]), _spec(tmp_path, f"pool-{k}", [PY, script])
            lr, pr = _run(local, ls), _run(pool, ps)
            assert pr.returncode == lr.returncode == rc, k
            text = _log(ps, pr)
            assert f"out pool-{k}\n" in text and "raw fd 2\n" in text and "err\n" in text
            if k == "msg":
                assert "bad input\n" in text
            if k == "raise":
                assert "Traceback (most recent call last):" in text and "ValueError: boom from job" in text
                assert "benchmark/pool" not in text  # the job's frames, not the worker's (pool.py, pool_worker.py)
        assert {pool.job_pids[f"pool-{k}"] for k in EXITS} == set(pool.worker_pids())  # one worker for all
    finally:
        local.close()
        pool.close()


def test_job_state_is_a_fresh_process_state_every_time(tmp_path):
    """A job that changes env, cwd, warnings, logging, signals, numpy's seterr ... does not change
    what the next job sees: the probe's view equals a subprocess's, before and after."""
    probe = _script(tmp_path, "probe.py", "import numpy\n" + PROBE)
    pkg = tmp_path / "jobpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "probe.py").write_text("import numpy\n" + PROBE)  # no main guard: never imported first
    (pkg / "guarded.py").write_text("import numpy\nif __name__ == '__main__':\n" + textwrap.indent(PROBE, "    "))
    argvs = [[PY, probe, "--a", "1"], [PY, "-m", "jobpkg.probe", "--b"], [PY, "-m", "jobpkg.guarded", "c"]]
    local, pool = LocalExecutor(n_jobs=2), PoolExecutor(n_jobs=2)
    try:
        for i, argv in enumerate(argvs * 2):
            ls = _spec(tmp_path, f"l{i}", argv, cwd=str(tmp_path))
            ps = _spec(tmp_path, f"l{i}", argv, cwd=str(tmp_path))  # same id: same env
            expected, got = _state(ls, _run(local, ls)), _state(ps, _run(pool, ps))
            assert got == expected, i
            assert "RuntimeWarning" not in Path(ps.log).read_text()  # runpy: "found in sys.modules"
        assert expected["path0"] == str(tmp_path) and expected["argv"] == [str(pkg / "guarded.py"), "c"]
        assert expected["omp"] == thread_share_env(2)["OMP_NUM_THREADS"] and expected["leak"] is None
        assert len({pool.job_pids[f"l{i}"] for i in range(6)}) == 1  # all in one worker, one after the other
    finally:
        local.close()
        pool.close()


def test_gpu_slots_set_cuda_visible_devices_per_worker(tmp_path):
    probe = _script(tmp_path, "probe.py", PROBE)
    pool = PoolExecutor(gpus=["3", "5"], jobs_per_gpu=1)
    try:
        assert pool.capacity() == 2
        specs = [_spec(tmp_path, f"g{i}", [PY, probe]) for i in range(2)]
        futs = [pool.submit(s) for s in specs]
        assert sorted(where for _, where in futs) == ["gpu 3", "gpu 5"]
        results = [f.result(timeout=60) for f, _ in futs]
        for spec, (_, where), r in zip(specs, futs, results):
            assert _state(spec, r)["cuda"] == where[4:] == r.slot
    finally:
        pool.close()


# --- crashes, leaks, recycling -----------------------------------------------------------------

def _job_suite(tmp_path: Path, modes: list[str]) -> list:
    job = _script(tmp_path, "job.py", JOB)
    path = tmp_path / "crash.yaml"
    rows = ", ".join(f"{m}: {{mode: {m}}}" for m in modes)
    path.write_text(f"name: crash\ntask: command\nprogram: [python, {job}]\n"
                    f"args: {{pid: {tmp_path / 'pids.txt'}}}\nmatrix:\n  mode: {{{rows}}}\n"
                    "seeds: {seed: [1, 2]}\ntables: [{rows: [mode], metrics: [score]}]\n")
    (tmp_path / "params.yaml").write_text("{}\n")
    return expand(load_suite(path, tmp_path / "params.yaml"), tmp_path / "results")


def test_crashing_jobs_fail_with_their_code_and_workers_are_replaced(tmp_path):
    jobs = _job_suite(tmp_path, ["ok", "os_exit", "segv"])
    pool = PoolExecutor(n_jobs=2)
    try:
        summary = run_jobs(jobs, executor=pool, log=lambda s: None)
        by_mode = {}
        for o in summary.outcomes:
            by_mode.setdefault(o.job.tags["mode"], []).append((o.status, o.returncode))
        assert by_mode == {"ok": [("done", 0)] * 2, "os_exit": [("failed", 3)] * 2,
                           "segv": [("failed", -signal.SIGSEGV)] * 2}
        assert len(pool.worker_pids()) == 2 and pool.spawned == 2 + 4  # one replacement per crash
    finally:
        pool.close()
    assert pool.worker_pids() == []


def test_leaking_job_is_killed_and_the_next_job_gets_a_fresh_worker(tmp_path):
    job = _script(tmp_path, "job.py", JOB)
    pids = tmp_path / "pids.txt"
    pool = PoolExecutor(n_jobs=1, max_rss_mb=150, poll_s=0.1)
    try:
        leak = _spec(tmp_path, "leak", [PY, job, "--mode", "leak", "--pid", pids])
        r = _run(pool, leak)
        assert r.returncode == -signal.SIGKILL
        assert "worker exceeded" in r.error and r.error.endswith("MiB RSS (limit 150 MiB)")
        assert r.error in _log(leak, r)
        nxt = _spec(tmp_path, "next", [PY, job, "--pid", pids])
        assert _run(pool, nxt).returncode == 0
        first, second = pids.read_text().split()
        assert first != second and int(second) == pool.worker_pids()[0]
    finally:
        pool.close()


def test_worker_is_recycled_after_max_jobs(tmp_path):
    job = _script(tmp_path, "job.py", JOB)
    pids = tmp_path / "pids.txt"
    pool = PoolExecutor(n_jobs=1, max_jobs_per_worker=2)
    try:
        for i in range(3):
            assert _run(pool, _spec(tmp_path, f"j{i}", [PY, job, "--pid", pids])).returncode == 0
        a, b, c = pids.read_text().split()
        assert a == b != c and pool.spawned == 2
    finally:
        pool.close()


# --- interrupt, fallback, laziness --------------------------------------------------------------

def test_interrupt_terminates_running_jobs_and_nothing_starts_after(tmp_path):
    job = _script(tmp_path, "job.py", JOB)
    pool = PoolExecutor(n_jobs=2, poll_s=0.1)
    try:
        specs = [_spec(tmp_path, f"s{i}", [PY, job, "--mode", "sleep", "--pid", tmp_path / f"p{i}"])
                 for i in range(2)]
        futs = [pool.submit(s)[0] for s in specs]
        deadline = time.time() + 30
        while not all(Path(s.log).exists() and "sleeping" in Path(s.log).read_text() for s in specs):
            assert time.time() < deadline
            time.sleep(0.05)
        t0 = time.time()
        pool.interrupt()
        assert [f.result(timeout=15).returncode for f in futs] == [-signal.SIGTERM] * 2
        assert time.time() - t0 < 5
        late, _ = pool.submit(_spec(tmp_path, "late", [PY, job, "--pid", tmp_path / "late"]))
        r = late.result(timeout=15)
        assert r.returncode is None and "interrupted" in r.error
        assert not (tmp_path / "late").exists() and not list(tmp_path.glob("p*.woke"))
    finally:
        pool.close()


def test_non_python_argv_runs_as_a_subprocess(tmp_path):
    pool = PoolExecutor(n_jobs=1, gpus=None)
    try:
        sh = _spec(tmp_path, "sh", ["/bin/sh", "-c", "echo id=$BENCHMARK_JOB_ID; exit 5"])
        r = _run(pool, sh)
        assert r.returncode == 5 and "id=sh\n" in _log(sh, r) and "sh" not in pool.job_pids
        c = _spec(tmp_path, "c", [PY, "-c", "import os; print('pid', os.getpid())"])
        r = _run(pool, c)
        pid = int(_log(c, r).split("pid ")[1])
        assert r.returncode == 0 and pid not in pool.worker_pids() and "c" not in pool.job_pids
    finally:
        pool.close()


def test_all_skipped_run_spawns_no_worker(tmp_path):
    path = write_suite(tmp_path, matrix={"ckpt": {"a": {"scale": 1}}}, seeds={"seed": [1, 2]},
                       tables=[{"rows": ["ckpt"], "metrics": ["score"]}])
    jobs = expand(load_suite(path, tmp_path / "params.yaml"), tmp_path / "results")
    assert run_jobs(jobs, log=lambda s: None).count("done") == 2  # local subprocesses
    pool = PoolExecutor(n_jobs=2)
    try:
        assert run_jobs(jobs, executor=pool, log=lambda s: None).count("skipped") == 2
        assert pool.spawned == 0 and pool.worker_pids() == []
    finally:
        pool.close()


# --- command line -------------------------------------------------------------------------------

def _cli(tmp_path, *extra: str) -> int:
    path = write_suite(tmp_path, matrix={"ckpt": {"a": {"scale": 1}, "b": {"scale": 2}}}, seeds={"seed": [1, 2]},
                       tables=[{"rows": ["ckpt"], "metrics": ["score"]}])
    return main(["run", str(path), "--no-mlflow", "--results-dir", str(tmp_path / "results"),
                 "--params", str(tmp_path / "params.yaml"), *extra])


def test_cli_runs_a_suite_on_the_pool(tmp_path, capsys):
    assert _cli(tmp_path, "--executor", "pool", "--jobs", "2", "--worker-max-jobs", "3",
                "--worker-max-rss-mb", "2000", "--preload", "json,benchmark.errors") == 0
    out = capsys.readouterr().out
    assert "executor: pool, 2 persistent worker(s) (max RSS 2000 MiB each, recycled every 3 job(s), " \
           "preload json,benchmark.errors)" in out
    assert "demo: done=4 skipped=0 failed=0 total=4" in out


@pytest.mark.parametrize("extra, message", [
    (["--executor", "pool", "--worker-max-rss-mb", "-1"], "--worker-max-rss-mb: expected an integer >= 0; got -1"),
    (["--executor", "pool", "--worker-max-jobs", "-3"], "--worker-max-jobs: expected an integer >= 0; got -3"),
    (["--executor", "pool", "--jobs", "0"], "--jobs: expected an integer >= 1; got 0"),
    (["--executor", "pool", "--gpus", "0", "--jobs-per-gpu", "-1"], "--jobs-per-gpu: expected an integer >= 1"),
    (["--executor", "pool", "--preload", "a,,b-c"], "--preload a,,b-c: 'b-c' is not a module name"),
    (["--worker-max-jobs", "2"], "--worker-max-jobs: only with --executor pool"),
    (["--executor", "local", "--worker-max-rss-mb", "100"], "--worker-max-rss-mb: only with --executor pool"),
    (["--cluster", "local", "--preload", "json"], "--preload: only with --executor pool"),
    (["--executor", "pool", "--cluster", "local"], "--cluster: only with --executor dask"),
])
def test_cli_rejects_bad_pool_flags(tmp_path, capsys, extra, message):
    assert _cli(tmp_path, *extra) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


# --- real evaluator jobs: bitwise identical to subprocesses --------------------------------------

@pytest.mark.slow
def test_real_evaluator_jobs_are_bitwise_identical_to_subprocesses(tmp_path):
    """CPAC, UCPR, a state-changing probe, another CPAC and the first again in ONE worker give
    exactly the metrics of one subprocess per job (same thread settings: one thread each)."""
    import numpy as np

    from planted import tiny_checkpoint, write_spheres

    write_spheres(tmp_path / "cache", {"eval": 8, "train_udf": 8}, P=200, M=48, G=8, n_pc=96, n_classes=2)
    ckpt = tiny_checkpoint(tmp_path / "ckpt.pt")
    common = ["--cache_root", tmp_path / "cache", "--ckpt", ckpt, "--device", "cpu", "--batch", "4"]
    cpac = [PY, "-m", "nepa3d.analysis.completion_cpac_udf", *common, "--n_context", "16", "--n_query", "16"]
    argvs = {  # CPAC's mae/rmse are continuous: any numeric leak between jobs shows in them
        "cpac0": [*cpac, "--eval_seed", "0"],
        "ucpr": [PY, "-m", "nepa3d.analysis.retrieval_ucpr", *common, "--query_backend", "pointcloud_noray",
                 "--gallery_backend", "udfgrid", "--pooling", "mean_a", "--eval_seed", "1", "--mc_k", "2"],
        "probe": [PY, _script(tmp_path, "probe.py", "import torch\n" + PROBE)],  # then changes torch & co.
        "cpac1": [*cpac, "--query_source", "grid", "--grid_sample_mode", "near_surface", "--eval_seed", "1",
                  "--target_transform", "log1p"],
    }
    order = ["cpac0", "ucpr", "probe", "cpac1", "cpac0", "probe"]  # repeats run after everything else
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

    def specs(mode, names):
        return [_spec(tmp_path, f"{mode}{i}-{name}", [*argvs[name], *([] if name == "probe" else
                      ["--out_json", tmp_path / mode / f"{i}-{name}.json"])]) for i, name in enumerate(names)]

    def metrics(mode, names, spec_list, results):
        out = {}
        for i, (name, spec, r) in enumerate(zip(names, spec_list, results)):
            assert r.returncode == 0, (mode, name, Path(spec.log).read_text()[-3000:])
            out[i] = _state(spec, r) if name == "probe" else \
                json.loads((tmp_path / mode / f"{i}-{name}.json").read_text())["metrics"]
        return out

    (tmp_path / "local").mkdir()
    (tmp_path / "pool").mkdir()
    local = LocalExecutor(n_jobs=len(argvs), env=env)  # one subprocess per distinct job, in parallel
    try:
        local_specs = specs("local", list(argvs))
        futs = [local.submit(s)[0] for s in local_specs]
        by_name = metrics("local", list(argvs), local_specs, [f.result(timeout=300) for f in futs])
    finally:
        local.close()
    expected = {i: by_name[list(argvs).index(name)] for i, name in enumerate(order)}
    pool = PoolExecutor(n_jobs=1, env=env)
    try:
        pool_specs = specs("pool", order)
        got = metrics("pool", order, pool_specs, [_run(pool, s) for s in pool_specs])
        assert len({pool.job_pids[s.job_id] for s in pool_specs}) == 1
    finally:
        pool.close()
    for d in (expected, got):
        d[2] = {**d[2], "job": None}  # the probe's job id differs by mode
        d[5] = {**d[5], "job": None}
    assert got == expected  # exact: no approx
    assert got[0] == got[4] and got[2] == got[5] and got[5]["torch"] == [1, "torch.float32", True]
