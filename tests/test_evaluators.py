"""End-to-end tests of the UCPR and CPAC CLIs on a tiny planted cache.

Every shape is a sphere of random radius r: mesh and UDF distances are |‖x‖ - r|, the
point-cloud distance is the NN distance to the sampled surface points, so the nn_copy
baseline can be recomputed by hand from the sampling spec (and tells the two apart).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nepa3d.analysis import completion_cpac_udf as cpac
from nepa3d.analysis import retrieval_ucpr as ucpr
from nepa3d.analysis.metrics import udf_metrics
from nepa3d.utils.seeding import path_rng
from planted import corrupted_copy, sphere_cache_arrays, tiny_checkpoint, write_spheres

P, M, G, N_PC = 300, 64, 8, 128
N_EVAL, N_TRAIN = 12, 12


def sphere_arrays(rng: np.random.RandomState) -> dict:
    """A valid mesh-kind cache of a sphere of radius r ~ U(0.3, 0.8) (analytic answers)."""
    return sphere_cache_arrays(rng, P, M, G, N_PC)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    write_spheres(root, {"eval": N_EVAL, "train_udf": N_TRAIN}, P=P, M=M, G=G, n_pc=N_PC, n_classes=3,
                  name="cls{c}/shape{i:02d}.npz")
    return root, tiny_checkpoint(root / "ckpt.pt")


def _ucpr(root, ckpt, *extra):
    return ucpr.main(["--cache_root", str(root), "--ckpt", str(ckpt), "--device", "cpu",
                      "--batch", "8", *extra])


def _cpac(root, ckpt, *extra):
    return cpac.main(["--cache_root", str(root), "--ckpt", str(ckpt), "--device", "cpu",
                      "--n_context", "24", "--n_query", "24", "--batch", "8", *extra])


def _check_envelope(res, task):
    assert res["schema_version"] == 1 and res["task"] == task
    for k in ("args", "metrics", "baselines", "flags", "provenance"):
        assert k in res
    json.dumps(res, allow_nan=False)


UCPR_KEYS = {"r@1", "r@5", "r@10", "mAP", "mean_rank", "median_rank", "expected_random_r@1",
             "embed_spread_query", "embed_spread_gallery"}


# --------------------------------------------------------------------------------------------
# UCPR
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [
    ["--query_backend", "mesh", "--gallery_backend", "udfgrid"],
    ["--query_backend", "pointcloud_noray", "--gallery_backend", "udfgrid", "--pooling", "mean_a",
     "--eval_seed_gallery", "999"],
    ["--query_backend", "pointcloud", "--gallery_backend", "mesh", "--pooling", "mean_zhat",
     "--mc_k", "2", "--ablate_point_xyz", "--ablate_point_dist"],
    ["--query_backend", "mesh", "--gallery_backend", "mesh", "--n_point", "40", "--n_ray", "30",
     "--qa_tokens", "0", "--chunk", "5"],  # legacy layout, 1+70+1 tokens; QA would need 142 > 128
])
def test_ucpr_runs(planted, tmp_path, extra):
    root, ckpt = planted
    out = tmp_path / "u.json"
    res = _ucpr(root, ckpt, *extra, "--out_json", str(out))
    _check_envelope(res, "ucpr")
    assert set(res["metrics"]) == UCPR_KEYS
    assert res["extra"]["n_files"] == N_EVAL
    assert res["metrics"]["expected_random_r@1"] == pytest.approx(1 / N_EVAL)
    assert 1 <= res["metrics"]["mean_rank"] <= N_EVAL
    assert json.loads(out.read_text()) == res


def test_ucpr_same_backend_same_seed_is_saturated(planted):
    root, ckpt = planted
    res = _ucpr(root, ckpt, "--query_backend", "mesh", "--gallery_backend", "mesh")
    assert res["metrics"]["r@1"] == 1.0
    assert "easy_pair_saturated" in res["flags"]


def test_ucpr_sanity_constant_embed(planted):
    root, ckpt = planted
    res = _ucpr(root, ckpt, "--query_backend", "mesh", "--gallery_backend", "mesh",
                "--sanity_constant_embed")
    assert "sanity_constant_embed" in res["flags"]
    assert "easy_pair_saturated" not in res["flags"]
    assert res["metrics"]["r@1"] <= 3 / N_EVAL  # ~1/N, not the 1.0 of the real embeddings
    assert 3 <= res["metrics"]["mean_rank"] <= 10  # ~(N+1)/2


def _error_line(capsys) -> str:
    """The one stderr line of an evaluator's error exit (progress bars aside)."""
    lines = [ln for ln in capsys.readouterr().err.splitlines() if " error: " in ln]
    assert len(lines) == 1, lines
    return lines[0]


def test_ucpr_pos_emb_grows(planted, capsys):
    root, ckpt = planted
    res = _ucpr(root, ckpt, "--query_backend", "mesh", "--gallery_backend", "udfgrid",
                "--n_point", "64", "--n_ray", "32")  # 1 + 2*96 + 1 = 194 > 128
    assert res["extra"]["max_len"] == 194
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        _ucpr(root, ckpt, "--query_backend", "mesh", "--gallery_backend", "udfgrid",
              "--n_point", "64", "--n_ray", "32", "--max_len", "150")
    assert e.value.code == 2
    line = _error_line(capsys)
    assert "150" in line and "194" in line


# --------------------------------------------------------------------------------------------
# CPAC
# --------------------------------------------------------------------------------------------

CPAC_COMBOS = [
    [],
    ["--query_source", "grid", "--grid_sample_mode", "near_surface", "--grid_near_frac", "0.8",
     "--baseline", "nn_copy"],
    ["--query_source", "grid", "--grid_sample_mode", "stratified", "--rep_source", "zhat"],
    ["--query_source", "grid", "--grid_sample_mode", "coarse_to_fine", "--grid_res_schedule",
     "2,4,8", "--grid_c2f_expand", "1", "--grid_near_tau", "0.3"],
    ["--query_source", "hybrid", "--query_pool_frac", "0.5", "--grid_sample_mode", "uniform",
     "--target_transform", "trunc", "--target_trunc_max", "0.1"],
    ["--target_transform", "log1p", "--context_mode_test", "none"],
    ["--context_mode_train", "mismatch", "--context_mode_test", "mismatch", "--mismatch_shift", "5",
     "--disjoint_context_query", "0", "--head_train_n", "100"],
    ["--ridge_lipschitz_lambda", "1.0", "--ridge_lipschitz_pairs", "256",
     "--ridge_lipschitz_steps", "5", "--ridge_lipschitz_max_points", "200"],
]


@pytest.mark.parametrize("extra", CPAC_COMBOS)
def test_cpac_runs(planted, tmp_path, extra):
    root, ckpt = planted
    out = tmp_path / "c.json"
    res = _cpac(root, ckpt, *extra, "--out_json", str(out))
    _check_envelope(res, "cpac")
    m = res["metrics"]
    assert {"mae", "rmse", "iou@0.03", "near@0.05", "metrics_transformed"} <= set(m)
    assert set(m["near@0.05"]) == {"mae", "rmse", "iou@0.03", "n"}
    assert set(m["metrics_transformed"]) == {"mae", "rmse", "iou@0.03"}
    assert np.isfinite(m["mae"]) and m["rmse"] >= m["mae"] - 1e-12
    ex = res["extra"]
    assert ex["n_shapes_head_train"] == N_TRAIN and ex["n_shapes_head_test"] == N_EVAL
    assert ex["n_points_test"] == N_EVAL * 24
    assert "transductive_probe" not in res["flags"]
    tt = res["args"]["target_transform"]
    assert (f"target_transform:{tt}" in res["flags"]) == (tt != "none")
    if tt == "none":
        assert m["metrics_transformed"] == {k: m[k] for k in ("mae", "rmse", "iou@0.03")}
    assert json.loads(out.read_text()) == res


def test_cpac_lipschitz_info(planted):
    root, ckpt = planted
    res = _cpac(root, ckpt, "--ridge_lipschitz_lambda", "1.0", "--ridge_lipschitz_steps", "3")
    info = res["extra"]["ridge_lipschitz_info"]
    assert info["enabled"] and info["n_valid_groups"] == N_TRAIN
    res = _cpac(root, ckpt, "--ridge_lipschitz_lambda", "1.0", "--target_transform", "trunc")
    assert res["extra"]["ridge_lipschitz_info"] == {"enabled": False}


def test_cpac_transductive(planted):
    root, ckpt = planted
    res = _cpac(root, ckpt, "--head_train_split", "none", "--head_train_ratio", "0.25")
    assert "transductive_probe" in res["flags"]
    ex = res["extra"]
    assert ex["legacy_transductive"] and ex["head_train_split"] == "legacy_transductive"
    assert ex["n_shapes_head_train"] == 3 and ex["n_shapes_head_test"] == 9
    assert ex["head_train_backend"] == "pointcloud_noray"
    res = _cpac(root, ckpt, "--head_train_split", "", "--head_train_n", "5")
    assert res["extra"]["n_shapes_head_train"] == 5 and res["extra"]["n_rows_head_train"] == 5


def hand_nn_copy(root, n_ctx, n_q, seed, tau):
    """nn_copy from the written spec: one disjoint draw (context first), context distance
    from pt_dist_pc_pool, target pt_dist_udf_pool, nearest context point by explicit loop."""
    ys, ps = [], []
    for path in sorted(str(p) for p in (root / "eval").glob("*/*.npz")):
        d = np.load(path)
        rng = path_rng(path, seed)
        n_pool = len(d["pt_xyz_pool"])
        idx = rng.choice(n_pool, n_ctx + n_q, replace=n_pool < n_ctx + n_q)
        c, q = idx[:n_ctx], idx[n_ctx:]
        for qi in q:
            best, best_d = None, np.inf
            for ci in c:
                dd = float(np.sum((d["pt_xyz_pool"][qi].astype(np.float64)
                                   - d["pt_xyz_pool"][ci]) ** 2))
                if dd < best_d:
                    best, best_d = ci, dd
            ps.append(d["pt_dist_pc_pool"][best])
            ys.append(d["pt_dist_udf_pool"][qi])
    return udf_metrics(np.array(ps), np.array(ys), tau)


def test_cpac_nn_copy_matches_hand_computation(planted):
    root, ckpt = planted
    res = _cpac(root, ckpt, "--baseline", "nn_copy", "--eval_seed", "3")
    ref = hand_nn_copy(root, 24, 24, 3 + 999, 0.03)
    got = res["baselines"]["nn_copy"]
    assert set(got) == set(ref)  # numbers only; the key names the baseline
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, abs=1e-9)
    only = _cpac(root, ckpt, "--baseline", "nn_copy", "--eval_seed", "3", "--baseline_only", "1")
    assert "baseline_only" in only["flags"]
    assert only["metrics"] == {k: got[k] for k in ("mae", "rmse", "iou@0.03")}
    assert "ridge_lipschitz_info" not in only["extra"]


def test_cpac_deterministic(planted):
    root, ckpt = planted
    a = _cpac(root, ckpt, "--query_source", "grid", "--grid_sample_mode", "near_surface")
    b = _cpac(root, ckpt, "--query_source", "grid", "--grid_sample_mode", "near_surface",
              "--batch", "5", "--workers", "1")
    for k in ("mae", "rmse", "iou@0.03"):
        assert a["metrics"][k] == pytest.approx(b["metrics"][k], rel=1e-4, abs=1e-7)


# --------------------------------------------------------------------------------------------
# Errors: one clear line naming the file, no JSON written
# --------------------------------------------------------------------------------------------

def test_missing_checkpoint(planted, tmp_path, capsys):
    root, _ = planted
    out = tmp_path / "x.json"
    missing = tmp_path / "nope.pt"
    for fn, extra in ((_ucpr, ["--query_backend", "mesh", "--gallery_backend", "udfgrid"]),
                      (_cpac, [])):
        with pytest.raises(SystemExit) as e:
            fn(root, missing, *extra, "--out_json", str(out))
        assert e.value.code == 2
        line = _error_line(capsys)
        assert "nope.pt" in line and "does not exist" in line
        assert not out.exists()


def test_corrupt_cache_file(planted, tmp_path, capsys):
    root, ckpt = planted
    bad_root = tmp_path / "bad"
    bad = corrupted_copy(root, bad_root, "eval/cls1/shape04.npz")
    out = tmp_path / "x.json"
    for fn, extra in ((_ucpr, ["--query_backend", "mesh", "--gallery_backend", "udfgrid"]),
                      (_cpac, [])):
        with pytest.raises(SystemExit) as e:
            fn(bad_root, ckpt, *extra, "--out_json", str(out))
        assert e.value.code == 2
        assert str(bad) in _error_line(capsys)
        assert not out.exists()


def test_pc_pool_leakage_guard(planted, tmp_path, capsys):
    """Point-cloud backends refuse caches without valid observation-derived distances."""
    root, ckpt = planted
    rng = np.random.RandomState(1)
    for tag in ("invalid", "missing"):
        legacy = tmp_path / tag
        for i in range(3):
            a = sphere_arrays(rng)
            a["schema_version"] = np.array([1], np.int32)
            if tag == "invalid":
                a["pt_dist_pc_pool"] = np.full(P, -1, np.float32)  # failed-computation marker
            else:
                a.pop("pt_dist_pc_pool")
            (legacy / "eval" / "c").mkdir(parents=True, exist_ok=True)
            np.savez_compressed(legacy / "eval" / "c" / f"s{i}.npz", **a)
        out = tmp_path / f"{tag}.json"
        with pytest.raises(SystemExit) as e:
            _ucpr(legacy, ckpt, "--query_backend", "pointcloud_noray", "--gallery_backend", "udfgrid",
                  "--out_json", str(out))
        assert e.value.code == 2
        line = _error_line(capsys)
        assert "pt_dist_pc_pool" in line and "s0.npz" in line
        assert not out.exists()
    # the mesh backend does not need it
    res = _ucpr(tmp_path / "invalid", ckpt, "--query_backend", "mesh", "--gallery_backend", "udfgrid")
    assert res["extra"]["n_files"] == 3


def test_empty_split(planted, tmp_path, capsys):
    _, ckpt = planted
    with pytest.raises(SystemExit) as e:
        _cpac(tmp_path, ckpt)
    assert e.value.code == 2 and "no cache files" in _error_line(capsys)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(planted):
    root, ckpt = planted
    for prec, tol in (("fp32", 1e-4), ("bf16", 0.2)):
        a = _cpac(root, ckpt, "--query_source", "hybrid")
        b = _cpac(root, ckpt, "--query_source", "hybrid", "--device", "cuda", "--precision", prec)
        assert b["extra"]["precision"] == prec and b["provenance"]["device"] == "cuda"
        for k in ("mae", "rmse"):
            assert b["metrics"][k] == pytest.approx(a["metrics"][k], rel=tol)
    u = [_ucpr(root, ckpt, "--query_backend", "mesh", "--gallery_backend", "udfgrid",
               "--pooling", "mean_a", *dev) for dev in ([], ["--device", "cuda"])]
    assert u[1]["metrics"]["mean_rank"] == pytest.approx(u[0]["metrics"]["mean_rank"], abs=0.5)
