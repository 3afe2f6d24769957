"""MLflow logging of finished jobs, from the runner process only (one writer: no SQLite races).

MLflow is imported lazily (it is slow to import) and every MLflow failure is a warning: after the
first failure the tracker disables itself, so a down tracking server costs one timeout, not one
per job. Tracking URI: ``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///mlflow.db`` in the cwd.

One active run per job id and experiment (= suite): its latest attempt. A run is tagged with the
job id and, for a done job, the sha256 of its result file (:data:`DIGEST_TAG`); logging a job
replaces (deletes) the job's earlier runs, and a done job whose only run already carries the same
digest is not logged again (:meth:`MlflowTracker.log_job`).
"""
from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Any, Callable, Optional

from .expand import Job
from .results import Envelope

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: Tag holding the sha256 of the result file a done run describes.
DIGEST_TAG = "result_sha256"
_SQLITE = "sqlite:///"
_MAX_PARAM_LEN = 6000
_BAD_KEY = re.compile(r"[^A-Za-z0-9_\-. /:]")


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def store_of(uri: str) -> str:
    """``uri`` with a relative SQLite or file path made absolute: the same store gets one name
    whatever the working directory (recorded in ``<id>.job.json``)."""
    if uri.startswith(_SQLITE) and not uri[len(_SQLITE):].startswith("/"):
        return _SQLITE + os.path.abspath(uri[len(_SQLITE):])
    if "://" not in uri:
        return os.path.abspath(uri)
    return uri


def sanitize_key(key: str) -> str:
    """MLflow-safe metric/param name: ``iou@0.03`` -> ``iou_at_0.03``; other odd chars -> ``_``."""
    return _BAD_KEY.sub("_", key.replace("@", "_at_"))


def run_name(job: Job) -> str:
    """``suite/ckpt=scratch,query=pool,eval_seed=0``."""
    tags = ",".join(f"{k}={v}" for k, v in job.tags.items())
    return f"{job.suite}/{tags}" if tags else job.suite


def repo_head(start: Path | None = None) -> Optional[str]:
    """Commit of HEAD read from ``.git`` files (no git subprocess); None outside a repository."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        git = folder / ".git"
        if git.is_file():  # worktree: "gitdir: <path>"
            text = git.read_text().strip()
            if text.startswith("gitdir:"):
                git = (folder / text.split(":", 1)[1].strip()).resolve()
        if not git.is_dir():
            continue
        try:
            head = (git / "HEAD").read_text().strip()
        except OSError:
            return None
        if not head.startswith("ref:"):
            return head or None
        ref = head.split(":", 1)[1].strip()
        common = git
        if (git / "commondir").exists():
            common = (git / (git / "commondir").read_text().strip()).resolve()
        for base in (git, common):
            if (base / ref).exists():
                return (base / ref).read_text().strip() or None
            packed = base / "packed-refs"
            if packed.exists():
                for line in packed.read_text().splitlines():
                    parts = line.split()
                    if len(parts) == 2 and parts[1] == ref:
                        return parts[0]
        return None
    return None


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)
    return text[:_MAX_PARAM_LEN]


class MlflowTracker:
    """Logs one MLflow run per finished job (experiment = suite name)."""

    def __init__(self, uri: Optional[str] = None, warn: Callable[[str], None] = print) -> None:
        self.uri = uri or tracking_uri()
        self.store = store_of(self.uri)
        self.warn = warn
        self.enabled = True
        self._client = None
        self._experiments: dict[str, str] = {}
        self._head: Optional[str] = None

    def _get_client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
            self._head = repo_head()
        return self._client

    def _experiment_id(self, name: str) -> str:
        if name not in self._experiments:
            client = self._get_client()
            exp = client.get_experiment_by_name(name)
            self._experiments[name] = exp.experiment_id if exp else client.create_experiment(name)
        return self._experiments[name]

    def log_job(self, job: Job, *, status: str, envelope: Optional[Envelope] = None,
                start: Optional[float] = None, end: Optional[float] = None,
                extra_tags: Optional[dict[str, str]] = None,
                result_sha256: Optional[str] = None) -> Optional[str]:
        """Record one job (``status``: ``done`` or ``failed``) as the job's only active run in its
        suite's experiment; returns the MLflow run id or None.

        ``result_sha256`` (done jobs): the digest of the result file, tagged on the run. If the
        job's only run is a finished done run with that digest, it is kept and its id returned
        (nothing logged); otherwise a new run is logged and the job's earlier runs are deleted."""
        if not self.enabled:
            return None
        try:
            exp_id = self._experiment_id(job.suite)
            earlier = self._runs_of(exp_id, job.job_id)
            if status == "done" and result_sha256 and len(earlier) == 1 and _describes(earlier[0], result_sha256):
                return earlier[0].info.run_id
            tags = {**(extra_tags or {}), **({DIGEST_TAG: result_sha256} if result_sha256 else {})}
            run_id = self._log(job, status, envelope, start, end, tags)
            for run in earlier:
                self._get_client().delete_run(run.info.run_id)
            return run_id
        except Exception as exc:  # noqa: BLE001 - tracking must never fail a job
            self.enabled = False
            self.warn(f"warning: MLflow logging disabled after an error ({self.uri}): "
                      f"{type(exc).__name__}: {exc}")
            return None

    def _runs_of(self, exp_id: str, job_id: str) -> list:
        """Active runs of ``job_id`` in the experiment."""
        from mlflow.entities import ViewType

        return list(self._get_client().search_runs([exp_id], filter_string=f"tags.job_id = '{job_id}'",
                                                   run_view_type=ViewType.ACTIVE_ONLY, max_results=1000))

    def _log(self, job: Job, status: str, env: Optional[Envelope], start: Optional[float],
             end: Optional[float], extra_tags: dict[str, str]) -> str:
        from mlflow.entities import Metric, Param

        client = self._get_client()
        exp_id = self._experiment_id(job.suite)
        git_rev = (env.provenance.git_rev if env else None) or self._head or "unknown"
        tags = {"task": job.task, "job_id": job.job_id, "git_rev": git_rev, "suite": job.suite,
                "result_json": str(job.out_json), "host": socket.gethostname(), "benchmark.status": status}
        if env and env.flags:
            tags["flags"] = ",".join(env.flags)
        tags.update(extra_tags)
        now = time.time()
        run = client.create_run(exp_id, run_name=run_name(job), tags=tags,
                                start_time=int((start or now) * 1000))
        run_id = run.info.run_id
        params: dict[str, str] = {}
        for key, value in job.args.items():
            params[sanitize_key(key)] = _param_value(value)
        for key, value in job.tags.items():
            params[sanitize_key(f"tag.{key}")] = _param_value(value)
        params["job_id"] = job.job_id
        metrics: dict[str, float] = {}
        if env is not None:
            metrics = {sanitize_key(k): v for k, v in env.flat().items()}
            metrics["wall_s"] = float(env.provenance.wall_s)
        ts = int((end or now) * 1000)
        param_items = [Param(k, v) for k, v in params.items()]
        metric_items = [Metric(k, float(v), ts, 0) for k, v in metrics.items()]
        if env is not None:  # per-epoch series: one metric point per epoch (step = epoch)
            for k, series in env.history_series().items():
                metric_items += [Metric(sanitize_key(f"epoch/{k}"), v, ts, step) for step, v in series]
        for i in range(0, max(len(param_items), len(metric_items), 1), 100):
            client.log_batch(run_id, metrics=metric_items[i:i + 100], params=param_items[i:i + 100])
        client.set_terminated(run_id, "FINISHED" if status == "done" else "FAILED",
                              end_time=int((end or now) * 1000))
        return run_id


def _describes(run, result_sha256: str) -> bool:
    """Whether ``run`` is a completely logged done run of the result file with that digest."""
    tags = run.data.tags
    return (run.info.status == "FINISHED" and tags.get("benchmark.status") == "done"
            and tags.get(DIGEST_TAG) == result_sha256)
