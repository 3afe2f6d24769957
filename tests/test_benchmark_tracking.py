"""MLflow logging from the runner process: one run per finished job; failures only warn."""
from __future__ import annotations


import pytest

from benchutil import FAKE_JOB, write_suite  # noqa: E402

from benchmark.cli import main  # noqa: E402
from benchmark.expand import expand  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402
from benchmark.tracking import MlflowTracker, run_name, sanitize_key  # noqa: E402


def test_sanitize_key():
    assert sanitize_key("iou@0.03") == "iou_at_0.03"
    assert sanitize_key("near@0.05/mae") == "near_at_0.05/mae"
    assert sanitize_key("a(b)") == "a_x28_b_x29_"


@pytest.mark.slow
def test_one_mlflow_run_per_job(tmp_path, monkeypatch, capsys):
    import mlflow

    uri = f"sqlite:///{tmp_path}/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # nothing may land in the repository
    path = write_suite(tmp_path, matrix={"ckpt": {"a": {"scale": 1}, "b": {"scale": 2}}},
                       seeds={"seed": [1, 2]}, tables=[{"rows": ["ckpt"], "metrics": ["score"]}])
    assert main(["run", str(path), "--jobs", "2"]) == 0
    jobs = expand(load_suite(path), "results")
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["demo"])
    assert len(runs) == 4
    assert set(runs["tags.job_id"]) == {j.job_id for j in jobs}
    assert set(runs["tags.mlflow.runName"]) == {run_name(j) for j in jobs}
    assert "demo/ckpt=a,seed=1" in set(runs["tags.mlflow.runName"])
    assert set(runs["tags.task"]) == {"command"}
    assert set(runs["tags.mlflow.source.git.commit"]) == {"0123456789abcdef"}  # the results' provenance
    assert set(runs["tags.mlflow.source.name"]) == {str(FAKE_JOB)} and set(runs["status"]) == {"FINISHED"}
    assert sorted(zip(runs["tags.ckpt"], runs["tags.seed"])) == [("a", "1"), ("a", "2"), ("b", "1"), ("b", "2")]
    by_id = runs.set_index("tags.job_id")
    j = jobs[3]  # ckpt=b seed=2: score 4
    assert by_id.loc[j.job_id, "metrics.score"] == 4.0
    assert by_id.loc[j.job_id, "metrics.hit_at_1"] == 0.04  # '@' sanitized
    assert by_id.loc[j.job_id, "params.scale"] == "2" and by_id.loc[j.job_id, "params.tag.ckpt"] == "b"
    # the job's log and result JSON as artifacts, beside the database
    from mlflow.tracking import MlflowClient

    run_id = by_id.loc[j.job_id, "run_id"]
    got = {a.path for folder in ("log", "result") for a in MlflowClient(uri).list_artifacts(run_id, folder)}
    assert got == {f"log/{j.log.name}", f"result/{j.out_json.name}"}
    assert (tmp_path / "mlartifacts" / "demo").is_dir()
    # a second run skips everything and logs nothing new
    assert main(["run", str(path)]) == 0
    assert len(mlflow.search_runs(experiment_names=["demo"])) == 4
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_per_epoch_history_becomes_metric_series(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    path = write_suite(tmp_path, matrix={"ckpt": {"a": {"scale": 1, "epochs": 4}}},
                       seeds={"seed": [2]}, tables=[{"rows": ["ckpt"], "metrics": ["score"]}])
    assert main(["run", str(path)]) == 0
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("demo")
    (run,) = client.search_runs([exp.experiment_id])
    series = client.get_metric_history(run.info.run_id, "epoch/loss")
    got = sorted((m.step, m.value) for m in series)
    assert got == [(e, 2.0 + 1 / (e + 1)) for e in range(4)]   # v = scale * seed = 2


@pytest.mark.slow
def test_tracking_failure_is_a_warning(tmp_path):
    path = write_suite(tmp_path, matrix={"ckpt": {"a": {"scale": 1}}}, tables=[{"rows": ["ckpt"],
                                                                                 "metrics": ["score"]}])
    job = expand(load_suite(path, tmp_path / "p.yaml"), tmp_path / "results")[0]
    warnings: list[str] = []
    tracker = MlflowTracker(uri="nosuchscheme://nowhere", warn=warnings.append)
    assert tracker.log_job(job, status="done") is None
    assert tracker.enabled is False and len(warnings) == 1 and "MLflow logging disabled" in warnings[0]
    assert tracker.log_job(job, status="done") is None and len(warnings) == 1
