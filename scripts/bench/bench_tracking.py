"""Per-job cost of MLflow logging (benchmark.tracking): log N fake finished jobs into a fresh
SQLite store and print the mean wall time per job (start + end when the tracker has ``start_job``).

    PYTHONPATH=. python scripts/bench/bench_tracking.py [--jobs 50]

The first job pays the MLflow import, the store's schema migration and the experiment's
creation; they are reported apart ("first") from the steady per-job cost ("per job").
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmark.envelope import build_envelope
from benchmark.expand import Job
from benchmark.records import file_sha256
from benchmark.results import load_result
from benchmark.tracking import MlflowTracker


def fake_job(root: Path, i: int) -> Job:
    out = root / "results" / "bench" / f"{i:016x}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    env = build_envelope("cpac", {"ckpt": "x", "eval_seed": i},
                         {"mae": 0.1, "rmse": 0.2, "iou@0.03": 0.3, "near@0.05": {"mae": 0.1, "iou@0.03": 0.2}},
                         {"git_rev": "0123456789abcdef", "started": "2026-01-01T00:00:00Z", "wall_s": 1.0},
                         baselines={"nn_copy": {"mae": 0.2, "iou@0.03": 0.5}})
    out.write_text(json.dumps(env))
    log = out.parent / "logs" / f"{i:016x}.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text("line\n" * 200)
    return Job(suite="bench", job_id=f"{i:016x}", tags={"ckpt": "x", "eval_seed": i}, argv=["python", "-m", "m"],
               out_json=out, log=log, task="cpac", args={"ckpt": "x", "eval_seed": i, "n": 3})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=50)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tracker = MlflowTracker(uri=f"sqlite:///{root}/m.db")
        times, cpu = [], []
        for i in range(a.jobs + 1):
            job = fake_job(root, i)
            t, c = time.perf_counter(), time.process_time()
            if hasattr(tracker, "start_job"):
                tracker.start_job(job)
            env = load_result(job.out_json)
            tracker.log_job(job, status="done", envelope=env, start=time.time() - 1, end=time.time(),
                            result_sha256=file_sha256(job.out_json))
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        assert tracker.enabled
        steady = times[1:]
        print(f"first: {times[0]:.2f} s; per job: {1000 * sum(steady) / len(steady):.1f} ms wall, "
              f"{1000 * sum(cpu[1:]) / len(steady):.1f} ms CPU (mean of {len(steady)}, "
              f"max {1000 * max(steady):.1f} ms wall)")


if __name__ == "__main__":
    main()
