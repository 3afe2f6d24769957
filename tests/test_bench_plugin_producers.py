"""The NEPA plugin's guards read what the evaluators actually write: envelopes produced by the real
UCPR / CPAC CLIs on a tiny planted cache (tests/planted.py) trip each guard when, and only when,
the protocol was broken, and the engine derives the same flags (benchmark.guards.derive)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark import guards
from benchmark.expand import Job
from benchmark.results import Envelope
from benchmark.tasks import get_task
from nepa3d import backends
from nepa3d.analysis import completion_cpac_udf as cpac
from nepa3d.analysis import retrieval_ucpr as ucpr
from nepa3d.bench_plugin.fields import BackendUse, ProtocolView
from planted import tiny_checkpoint, write_planted

PROTOCOL_FLAGS = ("mesh_distance_leak", "transductive_probe", "context_query_overlap",
                  "probe_not_above_nn_copy")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    write_planted(root, "eval", 4, seed=0)
    write_planted(root, "train_udf", 4, seed=1, first=100)
    return root, tiny_checkpoint(root / "ckpt.pt")


def _env(result: dict) -> Envelope:
    return Envelope.model_validate(result)


def _flags(env: Envelope) -> dict[str, str]:
    """The flags the engine derives for this result (a job whose args are the result's own)."""
    job = Job(suite="t", job_id="j", tags={}, argv=[], out_json=Path("j.json"), log=Path("j.log"), task=env.task)
    return {k: v for k, v in guards.derive(job, env, get_task(env.task)).items()
            if k in PROTOCOL_FLAGS or k.startswith("target_transform:")}


def run_cpac(root, ckpt, *extra) -> Envelope:
    return _env(cpac.main(["--cache_root", str(root), "--ckpt", str(ckpt), "--device", "cpu",
                           "--n_context", "24", "--n_query", "24", "--batch", "8", *extra]))


def run_ucpr(root, ckpt, *extra) -> Envelope:
    return _env(ucpr.main(["--cache_root", str(root), "--ckpt", str(ckpt), "--device", "cpu",
                           "--batch", "8", *extra]))


def _leaky_distance_source(name, available):
    """A planted defect: the point-cloud backends read the mesh-derived distances."""
    return "pt_dist_pool" if name in backends.POINTCLOUD_BACKENDS else _REAL(name, available)


_REAL = backends.distance_source


# --- cpac ------------------------------------------------------------------------------------

def test_cpac_default_protocol_is_clean_and_recorded(planted):
    env = run_cpac(*planted)
    view = ProtocolView.of(env)
    assert set(view.backends) == {BackendUse("context", "pointcloud_noray", "pt_dist_pc_pool"),
                                  BackendUse("head_train", "udfgrid", "pt_dist_udf_pool")}
    assert (view.eval_split, view.head_train_split, view.legacy_transductive) == ("eval", "train_udf", False)
    assert view.disjoint_context_query is True and view.target_transform == "none"
    assert _flags(env) == {}


def test_cpac_mesh_distances_in_the_point_cloud_context_trip_the_leak(planted, monkeypatch):
    monkeypatch.setattr(backends, "distance_source", _leaky_distance_source)
    env = run_cpac(*planted)
    assert _flags(env) == {"mesh_distance_leak": "context_backend=pointcloud_noray reads distances from 'pt_dist_pool'"}
    assert guards.is_blocking("mesh_distance_leak")
    # a mesh context reads mesh distances by design: no leak
    assert _flags(run_cpac(*planted, "--context_backend", "mesh")) == {}


def test_cpac_transductive_head_trips_its_guard(planted):
    env = run_cpac(*planted, "--head_train_split", "")
    assert ProtocolView.of(env).legacy_transductive is True
    assert _flags(env) == {"transductive_probe": "legacy_transductive is true"}
    assert "transductive_probe" in env.flags  # the producer says so too


def test_cpac_overlapping_context_and_queries_trip_their_guard(planted):
    env = run_cpac(*planted, "--disjoint_context_query", "0")
    assert _flags(env) == {"context_query_overlap": "disjoint_context_query=False: query points may repeat context points"}


def test_cpac_target_transform_is_named(planted):
    env = run_cpac(*planted, "--target_transform", "log1p")
    assert _flags(env) == {"target_transform:log1p": "target_transform=log1p: raw metrics are not "
                                                     "comparable with untransformed ones"}


def test_cpac_probe_against_nn_copy(planted):
    env = run_cpac(*planted, "--baseline", "nn_copy")
    flat = env.flat()
    fires = flat["mae"] >= flat["baseline/nn_copy/mae"]
    assert ("probe_not_above_nn_copy" in _flags(env)) is fires
    # a baseline-only result's metrics are the baseline's: equal maes, never flagged
    only = run_cpac(*planted, "--baseline", "nn_copy", "--baseline_only", "1")
    assert only.flat()["mae"] == only.flat()["baseline/nn_copy/mae"]
    assert ProtocolView.of(only).baseline_only is True and _flags(only) == {}


# --- ucpr ------------------------------------------------------------------------------------

def test_ucpr_records_each_side_and_trips_the_leak_on_that_side(planted, monkeypatch):
    args = ("--query_backend", "pointcloud_noray", "--gallery_backend", "mesh")
    clean = run_ucpr(*planted, *args)
    assert set(ProtocolView.of(clean).backends) == {BackendUse("query", "pointcloud_noray", "pt_dist_pc_pool"),
                                                    BackendUse("gallery", "mesh", "pt_dist_pool")}
    assert "mesh_distance_leak" not in _flags(clean)
    monkeypatch.setattr(backends, "distance_source", _leaky_distance_source)
    leak = run_ucpr(*planted, *args)
    assert _flags(leak)["mesh_distance_leak"] == "query_backend=pointcloud_noray reads distances from 'pt_dist_pool'"


def test_ucpr_voxel_side_reads_the_observed_points(planted):
    env = run_ucpr(*planted, "--query_backend", "voxel", "--gallery_backend", "udfgrid")
    assert set(ProtocolView.of(env).backends) == {BackendUse("query", "voxel", "pc_xyz"),
                                                  BackendUse("gallery", "udfgrid", "pt_dist_udf_pool")}
    assert "mesh_distance_leak" not in _flags(env)


# --- the classification and descriptor producers ----------------------------------------------

@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    root = tmp_path_factory.mktemp("scan")
    write_planted(root, "train", 6, seed=2, scan=True)
    write_planted(root, "test", 3, seed=3, scan=True, first=100)
    return root


def test_baseline_cls_records_each_side(scan, monkeypatch):
    from nepa3d.analysis import baseline_cls

    out = scan / "bcls.json"
    argv = ["--cache_root", str(scan), "--backend", "pointcloud_noray", "--eval_backend", "voxel",
            "--n_point", "32", "--out_json", str(out)]
    assert baseline_cls.main(argv) == 0
    env = _env(json.loads(out.read_text()))
    assert {b for b in ProtocolView.of(env).backends if b.role} == {
        BackendUse("train", "pointcloud_noray", "pt_dist_pc_pool"), BackendUse("eval", "voxel", "pc_xyz")}
    assert "mesh_distance_leak" not in _flags(env)
    monkeypatch.setattr(backends, "distance_source", _leaky_distance_source)
    assert baseline_cls.main(argv) == 0
    assert _flags(_env(json.loads(out.read_text())))["mesh_distance_leak"] == \
        "train_backend=pointcloud_noray reads distances from 'pt_dist_pool'"


def test_finetune_cls_records_each_side(scan, tmp_path):
    from nepa3d.train import finetune_cls

    out = tmp_path / "ft.json"
    assert finetune_cls.main(["--cache_root", str(scan), "--backend", "pointcloud_noray",
                              "--eval_backend", "mesh", "--ckpt", str(tiny_checkpoint(tmp_path / "c.pt")),
                              "--epochs", "1", "--batch", "4", "--num_workers", "0", "--device", "cpu",
                              "--out_json", str(out)]) == 0
    env = _env(json.loads(out.read_text()))
    assert {b for b in ProtocolView.of(env).backends if b.role} == {
        BackendUse("train", "pointcloud_noray", "pt_dist_pc_pool"), BackendUse("eval", "mesh", "pt_dist_pool")}
    assert "mesh_distance_leak" not in _flags(env)


def test_baseline_ucpr_records_each_side(planted):
    from nepa3d.analysis import baseline_ucpr

    env = _env(baseline_ucpr.main(["--cache_root", str(planted[0]), "--split", "eval", "--query_backend",
                                   "pointcloud_noray", "--gallery_backend", "udfgrid", "--n_point", "32"]))
    assert set(ProtocolView.of(env).backends) == {BackendUse("query", "pointcloud_noray", "pt_dist_pc_pool"),
                                                  BackendUse("gallery", "udfgrid", "pt_dist_udf_pool")}
