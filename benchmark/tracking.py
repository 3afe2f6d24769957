"""MLflow logging of the runner's jobs, from the runner process only (one writer: no SQLite races).

A job gets its run when it starts (:meth:`MlflowTracker.start_job`: status RUNNING, the job's
params, tags and source) and the same run is completed when it ends (:meth:`MlflowTracker.log_job`:
metrics, the job log and result JSON as artifacts, FINISHED or FAILED). A training job (one whose
``outputs`` folder holds a ``train_log.jsonl``, as the lab's pretraining writes) gets its
epochs as step metrics while it runs (a daemon thread of this process polls the epoch log every
:data:`POLL_S` seconds; every MLflow call holds the tracker's lock) and, when done, its
checkpoint's sha256 as a tag and its plots as artifacts. Names: :mod:`benchmark.mlflow_names`; what
is logged of a job, as data: :mod:`benchmark.tracking_data`.

MLflow is imported lazily (it is slow to import) and every MLflow failure is a warning: after the
first failure the tracker disables itself, so a down tracking server costs one timeout, not one
per job. Tracking URI: ``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///mlflow.db`` in the cwd;
with a SQLite store, a new experiment keeps its artifacts in ``mlartifacts/<suite>`` beside the
database (not in the cwd).

One active run per job id and experiment (= suite): its latest attempt. A run is tagged with the
job id and, for a done job, the sha256 of its result file (:data:`DIGEST_TAG`); logging a job
replaces (deletes) the job's earlier runs, and a done job whose only run already carries the same
digest is not logged again (:meth:`MlflowTracker.log_job`).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from . import mlflow_names as names
from .expand import Job
from .mlflow_names import DIGEST_TAG, metric_name  # noqa: F401 - DIGEST_TAG: re-exported
from .records import mlflow_record, update_record
from .results import Envelope
from .tracking_data import (_MAX_TAG_LEN, _SQLITE, PLOT_SUFFIXES, TRAIN_LOG, _checkpoint_sha256, _describes,
                            _param_value, _params, dvc_tags, output_dirs, read_epochs, repo_head, run_name,
                            source_name, store_of, tracking_uri)
from .tracking_data import CHECKPOINT, sanitize_key  # noqa: F401  (public path kept: benchmark.tracking.X)

#: Seconds between two reads of a running training job's epoch log.
POLL_S = 10.0


@dataclass
class _Live:
    """A job whose run was created at its start and is not logged as finished yet."""

    run_id: str
    exp_id: str
    start: float
    dirs: list[Path]
    epochs: set[int] = field(default_factory=set)   # epochs logged as step metrics
    seen: dict[Path, tuple[int, int]] = field(default_factory=dict)  # epoch log (size, mtime_ns) read


class MlflowTracker:
    """Logs one MLflow run per job (experiment = suite name): created when the job starts, completed
    when it ends."""

    def __init__(self, uri: Optional[str] = None, warn: Callable[[str], None] = print) -> None:
        self.uri = uri or tracking_uri()
        self.store = store_of(self.uri)
        self.warn = warn
        self.enabled = True
        self._client = None
        self._experiments: dict[str, str] = {}
        self._head: Optional[str] = None
        self._lock = threading.RLock()   # one MLflow call at a time (runner thread, epoch poller)
        self._live: dict[str, _Live] = {}
        self._poller: Optional[threading.Thread] = None
        self._artifact_uris: dict[str, str] = {}   # run id -> artifact URI, of the runs this tracker made

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
            self._experiments[name] = exp.experiment_id if exp else client.create_experiment(
                name, artifact_location=self._artifact_location(name))
        return self._experiments[name]

    def _artifact_location(self, name: str) -> Optional[str]:
        """``mlartifacts/<name>`` beside a SQLite database; None (MLflow's default) otherwise."""
        if not self.store.startswith(_SQLITE):
            return None
        return (Path(self.store[len(_SQLITE):]).parent / "mlartifacts" / name).as_uri()

    def _fail(self, exc: BaseException) -> None:
        self.enabled = False
        self.warn(f"warning: MLflow logging disabled after an error ({self.uri}): "
                  f"{type(exc).__name__}: {exc}")

    # --- start -----------------------------------------------------------------------------

    def start_job(self, job: Job, start: Optional[float] = None) -> Optional[str]:
        """Create the job's run, status RUNNING, with its params and tags, and record it in the
        job's ``<id>.job.json``; a training job's epochs are logged as its epoch log grows.
        Returns the run id or None (tracking off or failed)."""
        if not self.enabled:
            return None
        start = time.time() if start is None else start
        try:
            with self._lock:
                exp_id = self._experiment_id(job.suite)
                dirs = output_dirs(job)
                run_id = self._create(exp_id, job, "running", None, start, {}, params=bool(dirs))
                self._live[job.job_id] = _Live(run_id, exp_id, start, dirs)
                update_record(job, mlflow=mlflow_record(self, run_id, None, status="RUNNING"))
                if self._live[job.job_id].dirs:
                    self._ensure_poller()
            return run_id
        except Exception as exc:  # noqa: BLE001 - tracking must never fail a job
            self._fail(exc)
            return None

    def end_run(self, run_id: str, status: str = "KILLED") -> bool:
        """Terminate a run left RUNNING by a runner that stopped (see :mod:`benchmark.reconcile`)."""
        if not self.enabled:
            return False
        try:
            with self._lock:
                client = self._get_client()
                client.set_tag(run_id, names.STATUS_TAG, status.lower())
                client.set_terminated(run_id, status)
            return True
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)
            return False

    # --- end -------------------------------------------------------------------------------

    def log_job(self, job: Job, *, status: str, envelope: Optional[Envelope] = None,
                start: Optional[float] = None, end: Optional[float] = None,
                extra_tags: Optional[dict[str, str]] = None,
                result_sha256: Optional[str] = None) -> Optional[str]:
        """Record one finished job (``status``: ``done`` or ``failed``) as the job's only active run
        in its suite's experiment (the run :meth:`start_job` created, if any); returns the MLflow
        run id or None.

        ``result_sha256`` (done jobs): the digest of the result file, tagged on the run. If the
        job's only run is a finished done run with that digest, it is kept and its id returned
        (nothing logged); otherwise the run is completed (or a new one logged) and the job's
        other runs are deleted."""
        if not self.enabled:
            self._live.pop(job.job_id, None)
            return None
        try:
            with self._lock:
                live = self._live.pop(job.job_id, None)
                exp_id = self._experiment_id(job.suite)
                earlier = self._runs_of(exp_id, job.job_id)
                if (live is None and status == "done" and result_sha256 and len(earlier) == 1
                        and _describes(earlier[0], result_sha256)):
                    return earlier[0].info.run_id
                tags = {**(extra_tags or {}), **({DIGEST_TAG: result_sha256} if result_sha256 else {})}
                if live is not None and any(r.info.run_id == live.run_id for r in earlier):
                    run_id = live.run_id
                else:
                    live = None
                    run_id = self._create(exp_id, job, status, envelope, start, tags)
                with_params = live is None or not live.dirs
                self._finish(run_id, job, status, envelope, end, tags, live, with_params)
                for run in earlier:
                    if run.info.run_id != run_id:
                        self._get_client().delete_run(run.info.run_id)
                return run_id
        except Exception as exc:  # noqa: BLE001 - tracking must never fail a job
            self._fail(exc)
            return None

    def _runs_of(self, exp_id: str, job_id: str) -> list:
        """Active runs of ``job_id`` in the experiment."""
        from mlflow.entities import ViewType

        return list(self._get_client().search_runs(
            [exp_id], filter_string=f"tags.{names.JOB_TAG} = '{job_id}'",
            run_view_type=ViewType.ACTIVE_ONLY, max_results=1000))

    def _tags(self, job: Job, status: str, env: Optional[Envelope]) -> dict[str, str]:
        commit = (env.provenance.git_rev if env else None) or self._head or "unknown"
        tags = {names.RUN_NAME: run_name(job), names.SOURCE_NAME: source_name(job),
                names.SOURCE_TYPE: "LOCAL", names.GIT_COMMIT: commit,
                names.JOB_TAG: job.job_id, names.TASK_TAG: job.task, names.STATUS_TAG: status,
                **dvc_tags()}
        for axis, value in job.tags.items():
            tags[names.axis_tag(axis)] = _param_value(value)[:_MAX_TAG_LEN]
        if env and env.flags:
            tags[names.FLAGS_TAG] = ",".join(env.flags)
        return tags

    def _create(self, exp_id: str, job: Job, status: str, env: Optional[Envelope],
                start: Optional[float], extra_tags: dict[str, str], params: bool = False) -> str:
        """A new run with the job's tags (and ``params``: its params; else :meth:`_finish` logs
        them, with the metrics, in one batch)."""
        client = self._get_client()
        tags = {**self._tags(job, status, env), **extra_tags}
        run = client.create_run(exp_id, run_name=run_name(job), tags=tags,
                                start_time=int((start or time.time()) * 1000))
        self._artifact_uris[run.info.run_id] = run.info.artifact_uri
        if params:
            items = _params(job)
            for i in range(0, len(items), 100):
                client.log_batch(run.info.run_id, params=items[i:i + 100])
        return run.info.run_id

    def _finish(self, run_id: str, job: Job, status: str, env: Optional[Envelope], end: Optional[float],
                extra_tags: dict[str, str], live: Optional[_Live], with_params: bool) -> None:
        """Metrics (and ``with_params``: the params), the end state's tags, artifacts; then
        FINISHED / FAILED."""
        from mlflow.entities import Metric, RunTag

        client = self._get_client()
        ts = int((end or time.time()) * 1000)
        tags: dict[str, str] = dict(extra_tags)
        if live is not None:  # created at the start: the end state's tags
            tags.update({k: v for k, v in self._tags(job, status, env).items()
                         if k in (names.GIT_COMMIT, names.STATUS_TAG, names.FLAGS_TAG)})
        items: list = []
        series: dict[str, list[tuple[int, float]]] = {}
        if env is not None:
            items = [Metric(metric_name(k), float(v), ts, 0) for k, v in env.flat().items()]
            items.append(Metric("wall_s", float(env.provenance.wall_s), ts, 0))
            series = env.history_series()   # per-epoch series: one point per epoch (step = epoch)
        for k, points in series.items():
            items += [Metric(metric_name(names.EPOCH_PREFIX + k), v, ts, step) for step, v in points]
        logged = live.epochs if live is not None else set()
        for epoch, values in sorted(self._epoch_logs(job, live).items()):
            if epoch not in logged:
                items += [Metric(metric_name(names.EPOCH_PREFIX + k), v, ts, epoch)
                          for k, v in values.items() if k not in series]
        if status == "done":
            ckpt = _checkpoint_sha256(job)
            if ckpt:
                tags[names.CKPT_TAG] = ckpt
        tag_items = [RunTag(k, v) for k, v in tags.items()]
        param_items = _params(job) if with_params else []
        # MLflow's batch limits: 1000 entities, of which at most 100 params and 100 tags
        n = max(-(-len(items) // 800), -(-len(tag_items) // 100), -(-len(param_items) // 100), 1)
        for b in range(n):
            client.log_batch(run_id, metrics=items[800 * b:800 * (b + 1)], tags=tag_items[100 * b:100 * (b + 1)],
                             params=param_items[100 * b:100 * (b + 1)])
        self._artifacts(run_id, job, status)
        client.set_terminated(run_id, "FINISHED" if status == "done" else "FAILED", end_time=ts)

    def _artifacts(self, run_id: str, job: Job, status: str) -> None:
        """The job's log; a done job's result JSON and the plots in its output folders."""
        files = [(job.log, names.LOG_DIR)] if job.log.is_file() else []
        if status == "done" and job.out_json.is_file():
            files.append((job.out_json, names.RESULT_DIR))
            for folder in output_dirs(job):
                if folder.is_dir():
                    files += [(plot, names.PLOT_DIR) for plot in sorted(folder.iterdir())
                              if plot.suffix in PLOT_SUFFIXES and plot.is_file()]
        if not files:
            return
        uri = self._artifact_uris.pop(run_id, None)
        if uri is None:
            uri = self._get_client().get_run(run_id).info.artifact_uri
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        repo = get_artifact_repository(uri, tracking_uri=self.uri)
        for path, folder in files:
            repo.log_artifact(str(path), folder)

    @staticmethod
    def _epoch_logs(job: Job, live: Optional[_Live]) -> dict[int, dict[str, float]]:
        """Epochs of the job's epoch logs; for a started job, only a log written since its start
        (an older one is a previous attempt's, about to be cleared or truncated)."""
        out: dict[int, dict[str, float]] = {}
        for folder in (live.dirs if live is not None else output_dirs(job)):
            path = folder / TRAIN_LOG
            try:
                st = path.stat()
            except OSError:
                continue
            if live is not None and st.st_mtime < live.start - 1.0:
                continue
            out.update(read_epochs(path))
        return out

    # --- while a training job runs --------------------------------------------------------

    def _ensure_poller(self) -> None:
        if self._poller is None or not self._poller.is_alive():
            self._poller = threading.Thread(target=self._poll_loop, name="mlflow-epochs", daemon=True)
            self._poller.start()

    def _poll_loop(self) -> None:
        while True:
            time.sleep(POLL_S)
            with self._lock:
                if not self.enabled or not any(live.dirs for live in self._live.values()):
                    self._poller = None
                    return
                try:
                    self.poll_epochs()
                except Exception as exc:  # noqa: BLE001 - tracking must never fail a job
                    self._fail(exc)
                    self._poller = None
                    return

    def poll_epochs(self) -> int:
        """Log the epochs that running training jobs finished since the last call (step metrics,
        from each job's epoch log); returns how many epochs were logged."""
        from mlflow.entities import Metric

        n = 0
        with self._lock:
            for live in list(self._live.values()):
                for folder in live.dirs:
                    path = folder / TRAIN_LOG
                    try:
                        st = path.stat()
                    except OSError:
                        continue
                    key = (st.st_size, st.st_mtime_ns)
                    if st.st_mtime < live.start - 1.0 or live.seen.get(path) == key:
                        continue
                    live.seen[path] = key
                    ts = int(time.time() * 1000)
                    items = [Metric(metric_name(names.EPOCH_PREFIX + k), v, ts, epoch)
                             for epoch, values in sorted(read_epochs(path).items()) if epoch not in live.epochs
                             for k, v in values.items()]
                    for i in range(0, len(items), 1000):
                        self._get_client().log_batch(live.run_id, metrics=items[i:i + 1000])
                    new = {m.step for m in items}
                    live.epochs |= new
                    n += len(new)
        return n
