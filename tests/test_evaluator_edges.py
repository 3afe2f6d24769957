"""Evaluator numerics on edge inputs, against independent references (brute force in float64,
hand-checked tiny cases; the original's semantics from the reference notes):

- UCPR ranks: a gallery of 1 or 2, exact ties without noise (gallery order), duplicated and
  identical query / gallery embeddings with noise (a stable descending sort of the noisy
  scores), fewer files than k in R@k (trivially 1.0, as the original); NaN in an embedding
  is refused (a NaN score compares false with everything and ranked its query first);
- CPAC: IoU at tau equal to a distance (<=), the near block with no / all points near, the
  ridge head with more features than rows (dual form) and lambda 0 (refused when the system
  has no unique solution: LAPACK returned one of infinitely many answers);
- CLIs: a checkpoint whose finite weights overflow (NaN outputs) made UCPR report R@1 = 1.0 and
  CPAC null errors, and fine-tuning report class 0's frequency, all with exit 0 -> one line
  naming the checkpoint, exit 2 (evaluators) / 1 (the fine-tuning run), no result written.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nepa3d.analysis import completion_cpac_udf as cpac
from nepa3d.analysis import metrics as M
from nepa3d.analysis import retrieval_ucpr as ucpr
from nepa3d.train import finetune_cls
from nepa3d.utils.ckpt import load_checkpoint, save_checkpoint
from planted import tiny_checkpoint, write_planted, write_spheres


def brute_ranks(Q, G, eps, seed, chunk=256):
    """The original: noisy cosines (float32 noise drawn chunk by chunk), rank = 1 + position
    of item i in a stable descending sort of row i."""
    Q = Q / (np.linalg.norm(Q, axis=1, keepdims=True) + 1e-9)
    G = G / (np.linalg.norm(G, axis=1, keepdims=True) + 1e-9)
    rng = np.random.RandomState(seed)
    n = len(Q)
    ranks = []
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        score = Q[s:e].astype(np.float64) @ G.T.astype(np.float64)
        if eps > 0:
            score = score + eps * rng.standard_normal((e - s, n)).astype(np.float32)
        for r in range(e - s):
            order = np.argsort(-score[r], kind="mergesort")
            ranks.append(1 + int(np.flatnonzero(order == s + r)[0]))
    return np.array(ranks)


# ------------------------------------------------------------------------------------ UCPR

def test_gallery_of_one_and_two():
    assert M.tie_aware_ranks(np.ones((1, 3)), np.ones((1, 3)), eps=1e-6).tolist() == [1]
    # two identical items, no noise: ties fall back to gallery order
    E = np.ones((2, 3))
    assert M.tie_aware_ranks(E, E, eps=0.0).tolist() == [1, 2]
    m = M.retrieval_metrics(np.array([1, 2]))
    assert (m["r@1"], m["r@5"], m["mAP"], m["mean_rank"], m["median_rank"]) == (0.5, 1.0, 0.75, 1.5, 1.5)
    assert m["expected_random_r@1"] == 0.5


@pytest.mark.parametrize("eps", [0.0, 1e-6])
def test_duplicated_and_identical_embeddings_vs_brute_force(eps):
    rng = np.random.RandomState(0)
    base = rng.randn(4, 5)
    E = base[[0, 1, 1, 2, 2, 2, 3, 0]]  # duplicated rows: exact ties in every row
    for Q, G in ((E, E), (E, E[::-1].copy()), (np.ones((7, 5)), np.ones((7, 5)))):
        got = M.tie_aware_ranks(Q, G, eps=eps, seed=5, chunk=3)
        assert got.tolist() == brute_ranks(Q, G, eps, 5, chunk=3).tolist()


def test_fewer_files_than_k_gives_trivial_recall():
    # 3 files: every rank is <= 3, so r@5 and r@10 are 1.0 whatever the model (as the original)
    m = M.retrieval_metrics(np.array([3, 1, 2]))
    assert m["r@1"] == pytest.approx(1 / 3) and m["r@5"] == 1.0 and m["r@10"] == 1.0
    assert m["mAP"] == pytest.approx((1 / 3 + 1 + 1 / 2) / 3) and m["median_rank"] == 2.0


@pytest.mark.parametrize("side", ["query", "gallery"])
def test_nan_embedding_is_refused(side):
    E = np.eye(4)
    bad = E.copy()
    bad[2, 1] = np.nan
    Q, G = (bad, E) if side == "query" else (E, bad)
    with pytest.raises(ValueError, match=rf"1 {side} embedding\(s\) hold NaN or inf \(first: row 2\)"):
        M.tie_aware_ranks(Q, G, eps=1e-6)


# ------------------------------------------------------------------------------------ CPAC

def test_iou_at_tau_equal_to_a_distance_is_inclusive():
    gt = np.array([0.03, 0.03, 0.5, 0.01])
    pred = np.array([0.03, 0.2, 0.03, 0.5])
    m = M.udf_metrics(pred, gt, 0.03)
    # {gt <= .03} = {0, 1, 3}, {pred <= .03} = {0, 2}: intersection 1, union 4
    assert m["iou@0.03"] == pytest.approx(1 / (4 + 1e-9), rel=0, abs=1e-15)
    assert m["mae"] == pytest.approx((0 + 0.17 + 0.47 + 0.49) / 4)


def test_near_block_none_and_all_near():
    gt = np.array([0.2, 0.3])
    none = M.near_block(np.zeros(2), gt, 0.03, 0.05)
    assert none["n"] == 0 and all(np.isnan(none[k]) for k in ("mae", "rmse", "iou@0.03"))
    allnear = M.near_block(np.array([0.1, 0.0]), gt, 0.03, 0.3)  # 0.3 <= 0.3: included
    assert allnear["n"] == 2
    assert allnear["mae"] == pytest.approx(0.2) and allnear["rmse"] == pytest.approx(np.sqrt(0.05))
    assert allnear["iou@0.03"] == pytest.approx(0.0)


def test_ridge_with_more_features_than_rows_vs_dual_form():
    rng = np.random.RandomState(1)
    X, y, lam = rng.randn(5, 12), rng.randn(5), 0.3
    Xa = np.hstack([X, np.ones((5, 1))])
    dual = Xa.T @ np.linalg.solve(Xa @ Xa.T + lam * np.eye(5), y)  # (XᵀX + λI)⁻¹Xᵀy = Xᵀ(XXᵀ + λI)⁻¹y
    assert np.allclose(M.ridge_fit(X, y, lam).ravel(), dual, rtol=1e-9, atol=1e-12)


def test_ridge_lambda_zero():
    rng = np.random.RandomState(2)
    X, y = rng.randn(30, 4), rng.randn(30)
    Xa = np.hstack([X, np.ones((30, 1))])
    assert np.allclose(M.ridge_fit(X, y, 0.0).ravel(), np.linalg.lstsq(Xa, y, rcond=None)[0])
    with pytest.raises(M.SingularHead, match="3 training rows for 5 unknowns"):
        M.ridge_fit(X[:3], y[:3], 0.0)
    with pytest.raises(M.SingularHead, match="span 2 of 5 dimensions"):  # duplicated rows
        M.ridge_fit(np.repeat(X[:2], 10, axis=0), np.repeat(y[:2], 10), 0.0)


# ------------------------------------------------------------------------------------ CLIs

def _overflowing(src, dest):
    """A checkpoint whose weights are all finite but overflow float32 in the first sum."""
    ck = load_checkpoint(src)
    for k in ("pos_emb", "type_emb.weight"):
        ck["model"][k] = torch.full_like(ck["model"][k], 3e38)
    save_checkpoint(ck, dest)
    return dest


@pytest.fixture(scope="module")
def spheres(tmp_path_factory):
    root = tmp_path_factory.mktemp("edges")
    write_spheres(root, {"eval": 4, "train_udf": 3}, P=120, M=16, G=8, n_pc=64, n_classes=2)
    good = tiny_checkpoint(root / "ckpt.pt")
    return root, good, _overflowing(good, root / "overflow.pt")


def _error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if "error" in ln]


@pytest.mark.parametrize("prog", ["ucpr", "cpac"])
def test_overflowing_checkpoint_is_refused(spheres, tmp_path, capsys, prog):
    root, _, bad = spheres
    out = tmp_path / "r.json"
    out.write_text("previous\n")
    common = ["--cache_root", str(root), "--ckpt", str(bad), "--device", "cpu", "--out_json", str(out)]
    with pytest.raises(SystemExit) as ex:
        if prog == "ucpr":
            ucpr.main([*common, "--query_backend", "mesh", "--gallery_backend", "udfgrid"])
        else:
            cpac.main([*common, "--n_context", "8", "--n_query", "8"])
    assert ex.value.code == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and str(bad) in lines[0] and "NaN or inf" in lines[0], lines
    assert out.read_text() == "previous\n"


def test_cpac_ridge_lambda_zero_without_enough_rows(spheres, tmp_path, capsys):
    root, good, _ = spheres
    out = tmp_path / "r.json"
    with pytest.raises(SystemExit) as ex:  # 3 shapes x 4 queries = 12 rows for 33 unknowns
        cpac.main(["--cache_root", str(root), "--ckpt", str(good), "--device", "cpu",
                   "--n_context", "8", "--n_query", "4", "--ridge_lambda", "0",
                   "--out_json", str(out)])
    assert ex.value.code == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "--ridge_lambda 0" in lines[0] and "12 training rows" in lines[0]
    assert not out.exists()


def test_finetune_with_an_overflowing_checkpoint_fails(spheres, tmp_path, capsys):
    root, _, bad = spheres
    data = tmp_path / "scan"
    write_planted(data, "train", 4, seed=1, scan=True)
    write_planted(data, "test", 2, seed=2, scan=True)
    out = tmp_path / "cls.json"
    rc = finetune_cls.main(["--cache_root", str(data), "--ckpt", str(bad), "--backend",
                            "pointcloud_noray", "--epochs", "1", "--batch", "8", "--num_workers", "0",
                            "--n_ray", "0", "--device", "cpu", "--out_json", str(out)])
    assert rc == 1
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and str(bad) in lines[0] and "NaN or inf" in lines[0], lines
    assert not out.exists()
