"""MLflow while jobs run: a run is RUNNING from the job's start; a training job's epochs become
step metrics as its epoch log grows; its checkpoint's sha256, plots, log and result are logged."""
from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from benchutil import write_suite  # noqa: E402

import benchmark.tracking as tracking  # noqa: E402
from benchmark.cli import main  # noqa: E402
from benchmark.expand import expand  # noqa: E402
from benchmark.reconcile import reconcile  # noqa: E402
from benchmark.records import read_record, write_record  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402

# A stand-in for nepa3d.train.pretrain: one epoch-log line per epoch (after its checkpoint), then
# the plot and the result envelope; it starts once the job's MLflow run exists.
TRAINER = textwrap.dedent('''
    import json, os, sys, time
    from pathlib import Path
    a = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    save = Path(a["--save_dir"]); save.mkdir(parents=True, exist_ok=True)
    record = Path(a["--out_json"]).with_name(os.environ["BENCHMARK_JOB_ID"] + ".job.json")
    while "mlflow" not in record.read_text():  # the runner's first MLflow call (import, new store) is slow
        time.sleep(0.05)
    epochs = int(a["--epochs"])
    for e in range(epochs):
        time.sleep(0.6)
        (save / "last.pt").write_bytes(b"weights %d" % e)
        with open(save / "train_log.jsonl", "a") as fh:
            fh.write(json.dumps({"epoch": e, "step": 4 * (e + 1), "loss": 1.0 / (e + 1), "seconds": 0.6}) + "\\n")
    (save / "loss_curve.png").write_bytes(b"png")
    env = {"schema_version": 1, "task": "pretrain", "args": {}, "metrics": {"final_loss": 1.0 / epochs,
           "steps": 4 * epochs, "epochs": epochs, "n_params": 10},
           "provenance": {"git_rev": "fedcba9876543210", "started": "2026-01-01T00:00:00Z", "wall_s": 1.0}}
    Path(a["--out_json"]).write_text(json.dumps(env))
''')


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


@pytest.mark.slow
def test_training_job_is_logged_while_it_runs(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DVC_EXP_NAME", "urban-sign")
    monkeypatch.setattr(tracking, "POLL_S", 0.1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "trainer.py").write_text(TRAINER)
    path = write_suite(tmp_path, "pre", task="pretrain", args={"epochs": 4}, outputs=["save_dir"],
                       matrix={"variant": {"v1": {"save_dir": "runs/v1"}}},
                       tables=[{"rows": ["variant"], "metrics": ["final_loss"]}])
    doc = path.read_text().replace(str(Path(__file__).parent / "fixtures" / "benchmark" / "fake_job.py"),
                                   str(tmp_path / "trainer.py"))
    path.write_text(doc)
    assert main(["run", str(path)]) == 0
    (job,) = expand(load_suite(path), "results")
    client = _client(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("pre").experiment_id])
    tags = run.data.tags
    assert run.info.status == "FINISHED" and tags["benchmark.status"] == "done"
    assert tags["variant"] == "v1" and tags["dvc.exp_name"] == "urban-sign"
    assert tags["mlflow.source.git.commit"] == "fedcba9876543210"
    assert tags["ckpt_sha256"] == hashlib.sha256(b"weights 3").hexdigest()
    assert tags["result_sha256"] == hashlib.sha256(job.out_json.read_bytes()).hexdigest()
    assert run.data.metrics["final_loss"] == 0.25 and run.data.params["epochs"] == "4"
    loss = sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run.info.run_id, "epoch/loss"))
    assert [(s, v) for s, v, _ in loss] == [(e, 1.0 / (e + 1)) for e in range(4)]  # each epoch once
    assert loss[0][2] < min(loss[3][2], run.info.end_time)  # logged as the epoch finished, not at the end
    assert [m.value for m in client.get_metric_history(run.info.run_id, "epoch/step")] != []
    files = {a.path for d in ("log", "result", "plots") for a in client.list_artifacts(run.info.run_id, d)}
    assert files == {f"log/{job.log.name}", f"result/{job.out_json.name}", "plots/loss_curve.png"}
    assert read_record(job)["mlflow"]["run_id"] == run.info.run_id
    assert "status" not in read_record(job)["mlflow"]


@pytest.mark.slow
def test_run_is_running_from_the_start_and_reconcile_ends_it_when_its_runner_is_gone(tmp_path):
    path = write_suite(tmp_path, matrix={"ckpt": {"a": {"scale": 1}}},
                       tables=[{"rows": ["ckpt"], "metrics": ["score"]}])
    (job,) = expand(load_suite(path), tmp_path / "results")
    write_record(job, status="running")
    tracker = tracking.MlflowTracker(uri=f"sqlite:///{tmp_path}/m.db")
    run_id = tracker.start_job(job)
    client = _client(tracker.uri)
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING" and run.data.tags["ckpt"] == "a"
    assert run.data.tags["mlflow.runName"] == "demo/ckpt=a"
    assert read_record(job)["mlflow"] == {"store": tracker.store, "run_id": run_id, "result_sha256": None,
                                          "status": "RUNNING"}
    write_record(job, status="failed", detail="interrupted")  # the runner's end record keeps the run
    assert read_record(job)["mlflow"]["run_id"] == run_id
    fixed = reconcile([job], set(), tracking.MlflowTracker(uri=tracker.uri))  # the next runner
    assert fixed.killed == 1 and "left RUNNING -> KILLED" in fixed.line()
    assert client.get_run(run_id).info.status == "KILLED"
    assert read_record(job)["mlflow"]["status"] == "KILLED"
    assert reconcile([job], set(), tracking.MlflowTracker(uri=tracker.uri)).line() is None


def test_dvc_tags():
    assert tracking.dvc_tags({}) == {}
    assert tracking.dvc_tags({"DVC_EXP_NAME": "x", "DVC_EXP_BASELINE_REV": "abc"}) == {
        "dvc.exp_name": "x", "dvc.exp_baseline_rev": "abc"}


def test_epoch_log_names_match_the_trainer():
    pretrain = pytest.importorskip("nepa3d.train.pretrain")
    assert tracking.TRAIN_LOG == pretrain.LOG_NAME
    assert tracking.CHECKPOINT in pretrain.RUN_FILES and "loss_curve.png" in pretrain.RUN_FILES


def test_read_epochs_skips_torn_and_odd_lines(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text('{"epoch": 0, "loss": 1.5, "note": "x"}\n{"epoch": 1, "loss": NaN}\n[1]\n{"epoch": 2, "lo')
    assert tracking.read_epochs(log) == {0: {"loss": 1.5}, 1: {}}
