"""Benchmark (not a test) of the benchmark engine's own cost per job.

    .venv/bin/python scripts/bench/bench_engine_overhead.py [--n 200] [--jobs 1] [--mlflow]
                                                            [--executor local|pool|dask]
    .venv/bin/python scripts/bench/bench_engine_overhead.py --real [--n 20] [--jobs 1]

No-op mode (default): writes a temporary suite of ``--n`` no-op ``command`` jobs (a trivial
Python program that writes a valid result envelope and exits), then:

1. times the bare program ``--startup-runs`` times (the per-job Python start-up, which is the
   job's cost, not the engine's);
2. runs the suite with the engine (``run_jobs``, as ``python -m benchmark run`` does) on
   ``--executor`` and prints total seconds, seconds per job, the time spent inside the commands
   (as the executor saw them) and the engine's own overhead per job:
   ``(total * workers - time inside commands) / n``;
3. runs it again (every job finished: all skipped) and prints that time;
4. times the whole command line ``python -m benchmark run ... --no-mlflow`` once more (all
   skipped), interpreter start-up and imports included.

``--mlflow`` logs every finished job to a throw-away SQLite MLflow store (as a real run does);
without it the engine runs as ``--no-mlflow``. ``--executor dask`` (or ``--dask``) sends the
commands to a dask LocalCluster of ``--jobs`` workers (its start-up is printed, not counted);
``--executor pool`` runs them in ``--jobs`` persistent workers. Target <= 0.5 s per job.

``--real`` times REAL evaluator jobs instead: a tiny analytic cache (``--real-files`` spheres,
:mod:`nepa3d.data.analytic_sphere`) and a scratch checkpoint (``nepa3d.train.scratch_ckpt``,
d64 / L2 / H4, 32 points / 16 rays, QA tokens) in a temp dir, then ``--n`` UCPR jobs
(``nepa3d.analysis.retrieval_ucpr``, one ``--eval_seed`` each) through the engine twice: in
subprocess mode (``local``) and in ``pool`` mode. For each: per-job wall time and overhead per
job = ``(engine wall * workers - time inside the evaluator's own run) / n``, the inside time
being each result's ``provenance.wall_s`` (measured by the job, in its subprocess or worker).
Pool start-up is included. Target: <= 0.3 s of overhead per job in pool mode.

Prints figures and a JSON summary; never fails on timing.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmark.expand import expand  # noqa: E402
from benchmark.runner import run_jobs  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402

NOOP = '''"""No-op benchmark job: write a valid result envelope to --out_json and exit."""
import sys, time
from benchmark.atomic import atomic_write_json
t0 = time.time()
argv = sys.argv[1:]
args = dict(zip(argv[0::2], argv[1::2]))
out = args.pop("--out_json")
env = {"schema_version": 1, "task": "command", "args": {k.lstrip("-"): v for k, v in args.items()},
       "metrics": {"score": float(args.get("--seed", 0))},
       "provenance": {"git_rev": None, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                      "wall_s": time.time() - t0}}
atomic_write_json(out, env, indent=None, sort_keys=False, default=None)
'''


def write_suite(tmp: Path, n: int) -> Path:
    """A suite of ``n`` jobs: ``shard`` rows x 10 seeds (``n`` a multiple of 10)."""
    (tmp / "noop.py").write_text(NOOP)
    shards = max(1, n // 10)
    rows = "\n".join(f"    s{i:03d}: {i}" for i in range(shards))
    seeds = ", ".join(str(s) for s in range(n // shards))
    path = tmp / "overhead.yaml"
    path.write_text(f"""name: engine_overhead
task: command
program: [python, {tmp / 'noop.py'}]
matrix:
  shard:
{rows}
seeds: {{seed: [{seeds}]}}
tables:
  - rows: [shard]
    metrics: [score]
""")
    (tmp / "params.yaml").write_text("{}\n")
    return path


def time_startup(tmp: Path, runs: int) -> float:
    """Mean wall seconds of one bare launch of the no-op program (Python start-up + its work)."""
    out = tmp / "startup.json"
    t0 = time.perf_counter()
    for i in range(runs):
        subprocess.run([sys.executable, str(tmp / "noop.py"), "--seed", str(i), "--out_json", str(out)],
                       check=True)
    return (time.perf_counter() - t0) / runs


REAL_CKPT = ["--d_model", "64", "--layers", "2", "--heads", "4", "--n_point", "32", "--n_ray", "16",
             "--qa_tokens", "1"]


def make_executor(kind: str, workers: int):
    """None (run_jobs' own local slots), a PoolExecutor or a started dask LocalCluster executor."""
    if kind == "pool":
        from benchmark.pool import PoolExecutor

        return PoolExecutor(n_jobs=workers)
    if kind == "dask":
        from benchmark.executors import DaskExecutor, load_cluster_config

        t0 = time.perf_counter()
        executor = DaskExecutor.from_config(load_cluster_config("local", None, workers))
        print(f"dask LocalCluster start-up ({workers} workers): {time.perf_counter() - t0:.2f} s "
              "(not counted below)")
        return executor
    return None


def write_real_suite(tmp: Path, n: int, files: int) -> Path:
    """A tiny analytic cache, a scratch checkpoint and a suite of ``n`` UCPR jobs on them."""
    import numpy as np

    from nepa3d.data.analytic_sphere import sphere_cache_arrays
    from nepa3d.data.cache import save_cache

    rng = np.random.RandomState(0)
    for i in range(files):
        save_cache(tmp / "cache" / "eval" / f"cls{i % 2}" / f"s{i:03d}.npz", sphere_cache_arrays(rng, 300, 64, 8, 128))
    ckpt = tmp / "scratch.pt"
    subprocess.run([sys.executable, "-m", "nepa3d.train.scratch_ckpt", "--out", str(ckpt), *REAL_CKPT],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    path = tmp / "real.yaml"
    path.write_text(f"""name: engine_overhead_real
task: ucpr
module: nepa3d.analysis.retrieval_ucpr
args:
  cache_root: {tmp / 'cache'}
  ckpt: {ckpt}
  query_backend: mesh
  gallery_backend: udfgrid
  pooling: mean_a
  device: cpu
seeds: {{eval_seed: [{', '.join(str(s) for s in range(n))}]}}
tables:
  - rows: []
    metrics: ["r@1"]
""")
    (tmp / "params.yaml").write_text("{}\n")
    return path


def inside_main_s(outcomes) -> float:
    """Seconds the jobs spent in their own run, as they measured it (``provenance.wall_s``)."""
    return sum(json.loads(o.job.out_json.read_text())["provenance"]["wall_s"] for o in outcomes)


def real_main(a) -> None:
    """Time ``--n`` real UCPR jobs in subprocess mode and in pool mode."""
    summary = {"n_jobs": a.n, "workers": a.jobs, "files": a.real_files}
    with tempfile.TemporaryDirectory(prefix="bench_engine_real_") as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        path = write_real_suite(tmp, a.n, a.real_files)
        print(f"inputs (cache of {a.real_files} spheres + scratch checkpoint): {time.perf_counter() - t0:.1f} s")
        suite = load_suite(path, tmp / "params.yaml")
        for kind in ("local", "pool"):
            jobs = expand(suite, tmp / f"results_{kind}")
            executor = make_executor(kind, a.jobs)
            lines: list[str] = []
            t0 = time.perf_counter()
            try:
                run = run_jobs(jobs, suite_name=suite.name, n_jobs=a.jobs, log=lines.append, executor=executor)
            finally:
                if executor is not None:
                    executor.close()
            total = time.perf_counter() - t0
            assert run.count("done") == len(jobs), "\n".join(lines[-20:])
            inside = inside_main_s(run.outcomes)
            overhead = (total * a.jobs - inside) / len(jobs)
            label = "subprocess (local)" if kind == "local" else "pool"
            first = min(run.outcomes, key=lambda o: o.start)
            print(f"{label:>18} x {a.jobs}: total {total:.2f} s, {total / len(jobs):.3f} s per job; inside the "
                  f"evaluator {inside / len(jobs):.3f} s per job; overhead per job {overhead:.3f} s "
                  f"(first job {first.wall_s:.2f} s, worker start-up included)")
            summary[kind] = {"total_s": round(total, 3), "per_job_s": round(total / len(jobs), 4),
                             "inside_per_job_s": round(inside / len(jobs), 4),
                             "overhead_per_job_s": round(overhead, 4), "first_job_s": round(first.wall_s, 3)}
    met = summary["pool"]["overhead_per_job_s"] <= 0.3
    print(f"pool overhead per job {summary['pool']['overhead_per_job_s'] * 1000:.0f} ms (target <= 300 ms: "
          f"{'met' if met else 'NOT met'}); subprocess {summary['local']['overhead_per_job_s'] * 1000:.0f} ms")
    print(json.dumps(summary))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=None, help="number of jobs (default 200; --real: 20)")
    ap.add_argument("--jobs", type=int, default=1, help="parallel jobs / workers (default 1)")
    ap.add_argument("--startup-runs", type=int, default=20)
    ap.add_argument("--mlflow", action="store_true", help="log finished jobs to a temp SQLite MLflow store")
    ap.add_argument("--executor", choices=("local", "pool", "dask"), default="local",
                    help="where the no-op jobs run (default local subprocess slots)")
    ap.add_argument("--dask", action="store_true", help="same as --executor dask")
    ap.add_argument("--real", action="store_true",
                    help="time real UCPR jobs, subprocess mode vs pool mode (see the module docstring)")
    ap.add_argument("--real-files", type=int, default=16, help="--real: spheres in the cache (default 16)")
    a = ap.parse_args()
    if a.dask:
        a.executor = "dask"
    if a.real:
        a.n = a.n or 20
        real_main(a)
        return
    a.n = a.n or 200

    with tempfile.TemporaryDirectory(prefix="bench_engine_") as d:
        tmp = Path(d)
        path = write_suite(tmp, a.n)
        startup = time_startup(tmp, a.startup_runs)
        print(f"bare no-op job (python start-up + write JSON): {startup * 1000:.1f} ms "
              f"(mean of {a.startup_runs})")

        t0 = time.perf_counter()
        suite = load_suite(path, tmp / "params.yaml")
        jobs = expand(suite, tmp / "results")
        t_load = time.perf_counter() - t0
        tracker = None
        t_mlflow = 0.0
        if a.mlflow:
            from benchmark.tracking import MlflowTracker

            # once per runner process: import mlflow and create the SQLite store (migrations)
            t0 = time.perf_counter()
            from mlflow.tracking import MlflowClient

            MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}").search_experiments()
            t_mlflow = time.perf_counter() - t0
            print(f"MLflow start-up (import + new SQLite store), once per run: {t_mlflow:.2f} s (not counted below)")
            tracker = MlflowTracker(uri=f"sqlite:///{tmp / 'mlflow.db'}")
        executor = make_executor(a.executor, a.jobs)
        lines: list[str] = []
        t0 = time.perf_counter()
        first = run_jobs(jobs, suite_name=suite.name, n_jobs=a.jobs, tracker=tracker, log=lines.append,
                         executor=executor)
        t_first = time.perf_counter() - t0
        assert first.count("done") == len(jobs), "\n".join(lines[-5:])
        inside = sum(o.wall_s for o in first.outcomes)
        inside_main = inside_main_s(first.outcomes)
        overhead = (t_first * a.jobs - inside) / len(jobs)

        t0 = time.perf_counter()
        second = run_jobs(jobs, suite_name=suite.name, n_jobs=a.jobs, tracker=tracker, log=lines.append,
                          executor=executor)
        t_second = time.perf_counter() - t0
        assert second.count("skipped") == len(jobs)
        if executor is not None:
            executor.close()

        cmd = [sys.executable, "-m", "benchmark", "run", str(path), "--params", str(tmp / "params.yaml"),
               "--results-dir", str(tmp / "results"), "--no-mlflow"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        t_cli = time.perf_counter() - t0

    n = len(jobs)
    print(f"suite load + expand ({n} jobs): {t_load:.3f} s")
    print(f"first run ({n} jobs, {a.executor} x {a.jobs}, mlflow {'on' if a.mlflow else 'off'}): "
          f"total {t_first:.2f} s, {t_first / n:.3f} s per job")
    print(f"  time inside the commands: {inside:.2f} s ({inside / n * 1000:.1f} ms per job; "
          f"inside the jobs' own main: {inside_main / n * 1000:.2f} ms per job)")
    print(f"  engine overhead per job: {overhead * 1000:.1f} ms (target <= 500 ms: "
          f"{'met' if overhead <= 0.5 else 'NOT met'}); with the command start-up: "
          f"{(t_first * a.jobs - inside_main) / n * 1000:.1f} ms")
    print(f"second run (all {n} skipped): {t_second:.3f} s ({t_second / n * 1000:.2f} ms per job)")
    print(f"CLI `python -m benchmark run` (all skipped, incl. start-up and imports): {t_cli:.2f} s")
    print(json.dumps({"n_jobs": n, "workers": a.jobs, "executor": a.executor, "mlflow": a.mlflow,
                      "bare_job_s": round(startup, 4), "load_expand_s": round(t_load, 4),
                      "mlflow_startup_s": round(t_mlflow, 3),
                      "first_total_s": round(t_first, 3), "first_per_job_s": round(t_first / n, 4),
                      "inside_commands_s": round(inside, 3), "inside_main_s": round(inside_main, 3),
                      "engine_overhead_per_job_s": round(overhead, 4),
                      "overhead_incl_startup_per_job_s": round((t_first * a.jobs - inside_main) / n, 4),
                      "skip_run_s": round(t_second, 3), "cli_skip_run_s": round(t_cli, 3)}))


if __name__ == "__main__":
    main()
