"""Benchmark (not a test) of the benchmark engine's own cost per job.

    .venv/bin/python scripts/bench/bench_engine_overhead.py [--n 200] [--jobs 1] [--mlflow] [--dask]

Writes a temporary suite of ``--n`` no-op ``command`` jobs (a trivial Python program that writes
a valid result envelope and exits), then:

1. times the bare program ``--startup-runs`` times (the per-job Python start-up, which is the
   job's cost, not the engine's);
2. runs the suite with the engine (``run_jobs``, as ``python -m benchmark run`` does) and prints
   total seconds, seconds per job, the time spent inside the subprocesses and the engine's own
   overhead per job: ``(total * workers - time inside subprocesses) / n``;
3. runs it again (every job finished: all skipped) and prints that time;
4. times the whole command line ``python -m benchmark run ... --no-mlflow`` once more (all
   skipped), interpreter start-up and imports included.

``--mlflow`` logs every finished job to a throw-away SQLite MLflow store (as a real run does);
without it the engine runs as ``--no-mlflow``. ``--dask`` sends the commands to a dask
LocalCluster instead of local slots (its start-up is printed, not counted). The target is <= 0.5 s of engine overhead per job.
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
import json, os, sys, time
t0 = time.time()
argv = sys.argv[1:]
args = dict(zip(argv[0::2], argv[1::2]))
out = args.pop("--out_json")
env = {"schema_version": 1, "task": "command", "args": {k.lstrip("-"): v for k, v in args.items()},
       "metrics": {"score": float(args.get("--seed", 0))},
       "provenance": {"git_rev": None, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                      "wall_s": time.time() - t0}}
tmp = f"{out}.tmp-{os.getpid()}"
with open(tmp, "w") as fh:
    json.dump(env, fh)
os.replace(tmp, out)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="number of jobs (default 200)")
    ap.add_argument("--jobs", type=int, default=1, help="parallel local jobs (default 1)")
    ap.add_argument("--startup-runs", type=int, default=20)
    ap.add_argument("--mlflow", action="store_true", help="log finished jobs to a temp SQLite MLflow store")
    ap.add_argument("--dask", action="store_true",
                    help="run through a dask LocalCluster of --jobs single-threaded worker processes")
    a = ap.parse_args()

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
        executor = None
        if a.dask:
            from benchmark.executors import DaskExecutor, load_cluster_config

            t0 = time.perf_counter()
            executor = DaskExecutor.from_config(load_cluster_config("local", None, a.jobs))
            print(f"dask LocalCluster start-up ({a.jobs} workers): {time.perf_counter() - t0:.2f} s "
                  "(not counted below)")
        lines: list[str] = []
        t0 = time.perf_counter()
        first = run_jobs(jobs, suite_name=suite.name, n_jobs=a.jobs, tracker=tracker, log=lines.append,
                         executor=executor)
        t_first = time.perf_counter() - t0
        assert first.count("done") == len(jobs), "\n".join(lines[-5:])
        inside = sum(o.wall_s for o in first.outcomes)
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
    print(f"first run ({n} jobs, {'dask' if a.dask else 'local'} x {a.jobs}, mlflow {'on' if a.mlflow else 'off'}): "
          f"total {t_first:.2f} s, {t_first / n:.3f} s per job")
    print(f"  time inside subprocesses: {inside:.2f} s ({inside / n * 1000:.1f} ms per job)")
    print(f"  engine overhead per job: {overhead * 1000:.1f} ms (target <= 500 ms: "
          f"{'met' if overhead <= 0.5 else 'NOT met'})")
    print(f"second run (all {n} skipped): {t_second:.3f} s ({t_second / n * 1000:.2f} ms per job)")
    print(f"CLI `python -m benchmark run` (all skipped, incl. start-up and imports): {t_cli:.2f} s")
    print(json.dumps({"n_jobs": n, "workers": a.jobs, "executor": "dask" if a.dask else "local", "mlflow": a.mlflow,
                      "bare_job_s": round(startup, 4), "load_expand_s": round(t_load, 4), "mlflow_startup_s": round(t_mlflow, 3),
                      "first_total_s": round(t_first, 3), "first_per_job_s": round(t_first / n, 4),
                      "inside_subprocess_s": round(inside, 3), "engine_overhead_per_job_s": round(overhead, 4),
                      "skip_run_s": round(t_second, 3), "cli_skip_run_s": round(t_cli, 3)}))


if __name__ == "__main__":
    main()
