"""Metric and sampler code against independent brute-force references (float64, 1e-9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nepa3d.analysis import grid_sampling as gs
from nepa3d.analysis import metrics as M


# --------------------------------------------------------------------------------------------
# UCPR ranks
# --------------------------------------------------------------------------------------------

def _embeddings(rng, n=37, d=8, n_dup=6):
    Q = rng.normal(size=(n, d))
    G = rng.normal(size=(n, d))
    # planted exact ties: duplicated gallery rows (some of them the correct item)
    for a, b in rng.choice(n, size=(n_dup, 2), replace=False):
        G[b] = G[a]
    Q[:4] = G[:4]
    return Q, G


def brute_ranks(Q, G, eps, seed):
    """Explicit per-query sort with the same noise realisation (one (N, N) draw)."""
    n = len(Q)
    q = Q / (np.linalg.norm(Q, axis=1, keepdims=True) + 1e-9)
    g = G / (np.linalg.norm(G, axis=1, keepdims=True) + 1e-9)
    noise = (np.random.RandomState(seed).standard_normal((n, n)).astype(np.float32)
             if eps > 0 else np.zeros((n, n), np.float32))
    ranks = []
    for i in range(n):
        s = [float(q[i] @ g[j]) + eps * float(noise[i, j]) for j in range(n)]
        order = sorted(range(n), key=lambda j: -s[j])  # Python's sort is stable
        ranks.append(order.index(i) + 1)
    return np.array(ranks)


@pytest.mark.parametrize("eps", [0.0, 1e-6, 1e-2])
@pytest.mark.parametrize("chunk", [1, 5, 256])
def test_tie_aware_ranks_vs_brute_force(eps, chunk):
    Q, G = _embeddings(np.random.RandomState(0))
    seed = M.tie_noise_seed(0, 999)
    got = M.tie_aware_ranks(Q, G, eps=eps, seed=seed, chunk=chunk)
    assert np.array_equal(got, brute_ranks(Q, G, eps, seed))


def test_tie_aware_ranks_counting_semantics_without_noise():
    """eps = 0: rank = 1 + count(score > correct) + count(earlier gallery items tied)."""
    Q, G = _embeddings(np.random.RandomState(1))
    got = M.tie_aware_ranks(Q, G, eps=0.0)
    q = Q / (np.linalg.norm(Q, axis=1, keepdims=True) + 1e-9)
    g = G / (np.linalg.norm(G, axis=1, keepdims=True) + 1e-9)
    for i in range(len(Q)):
        s = np.array([q[i] @ g[j] for j in range(len(G))])
        assert got[i] == 1 + np.sum(s > s[i]) + np.sum(s[:i] == s[i])


def test_constant_embeddings_give_random_ranks():
    n = 400
    ranks = M.tie_aware_ranks(np.ones((n, 4)), np.ones((n, 4)), eps=1e-6, seed=5, chunk=64)
    m = M.retrieval_metrics(ranks)
    assert sorted(np.bincount(ranks, minlength=n + 1)[1:]) != [0] * n
    assert m["r@1"] <= 5 / n
    assert abs(m["mean_rank"] - (n + 1) / 2) < 0.1 * n
    assert m["expected_random_r@1"] == 1 / n


def test_retrieval_metrics_vs_loops():
    ranks = np.random.RandomState(2).randint(1, 30, size=101)
    m = M.retrieval_metrics(ranks)
    for k in (1, 5, 10):
        assert m[f"r@{k}"] == pytest.approx(sum(1 for r in ranks if r <= k) / len(ranks), abs=1e-12)
    assert m["mAP"] == pytest.approx(sum(1.0 / r for r in ranks) / len(ranks), abs=1e-12)
    assert m["mean_rank"] == pytest.approx(sum(ranks) / len(ranks), abs=1e-12)
    assert m["median_rank"] == sorted(ranks)[len(ranks) // 2]


# --------------------------------------------------------------------------------------------
# UDF metrics
# --------------------------------------------------------------------------------------------

def loop_metrics(pred, gt, tau):
    n = len(gt)
    mae = sum(abs(float(p) - float(g)) for p, g in zip(pred, gt)) / n
    rmse = (sum((float(p) - float(g)) ** 2 for p, g in zip(pred, gt)) / n) ** 0.5
    inter = sum(1 for p, g in zip(pred, gt) if p <= tau and g <= tau)
    union = sum(1 for p, g in zip(pred, gt) if p <= tau or g <= tau)
    return mae, rmse, inter / (union + 1e-9)


def test_udf_metrics_vs_loops():
    rng = np.random.RandomState(3)
    gt = rng.uniform(0, 0.2, 500).astype(np.float32)
    pred = (gt + rng.normal(0, 0.03, 500)).astype(np.float32)
    m = M.udf_metrics(pred, gt, 0.03)
    mae, rmse, iou = loop_metrics(pred, gt, 0.03)
    assert m["mae"] == pytest.approx(mae, abs=1e-9)
    assert m["rmse"] == pytest.approx(rmse, abs=1e-9)
    assert m["iou@0.03"] == pytest.approx(iou, abs=1e-9)
    nb = M.near_block(pred, gt, 0.03, 0.05)
    mask = gt <= 0.05
    mae, rmse, iou = loop_metrics(pred[mask], gt[mask], 0.03)
    assert nb["n"] == int(mask.sum())
    assert (nb["mae"], nb["rmse"], nb["iou@0.03"]) == pytest.approx((mae, rmse, iou), abs=1e-9)
    empty = M.near_block(pred, gt + 1.0, 0.03, 0.05)
    assert empty["n"] == 0 and np.isnan(empty["mae"]) and np.isnan(empty["iou@0.03"])
    assert set(M.udf_metrics(pred, gt, 0.7, key_tau=0.03)) == {"mae", "rmse", "iou@0.03"}


def test_nn_copy_vs_loops():
    rng = np.random.RandomState(4)
    c, cd, q = rng.uniform(-1, 1, (40, 3)), rng.uniform(0, 1, 40), rng.uniform(-1, 1, (25, 3))
    got = M.nn_copy_predict(c, cd, q, chunk=7)
    for i in range(len(q)):
        j = min(range(len(c)), key=lambda j: float(np.sum((q[i] - c[j]) ** 2)))
        assert got[i] == np.float32(cd[j])
    assert np.array_equal(M.nn_copy_predict(np.zeros((0, 3)), np.zeros(0), q), np.zeros(25))


# --------------------------------------------------------------------------------------------
# Ridge head and target transforms
# --------------------------------------------------------------------------------------------

def test_ridge_vs_lstsq_and_normal_equations():
    rng = np.random.RandomState(5)
    X = rng.normal(size=(200, 12)).astype(np.float32)
    y = (X @ rng.normal(size=12) + 0.3 + rng.normal(0, 0.1, 200)).astype(np.float32)
    lam = 0.5
    w = M.ridge_fit(X, y, lam)
    assert w.shape == (13, 1) and w.dtype == np.float64
    Xa = np.concatenate([X.astype(np.float64), np.ones((200, 1))], axis=1)
    # lstsq on the augmented system [Xa; sqrt(lam) I] w = [y; 0] (bias regularised too)
    A = np.concatenate([Xa, np.sqrt(lam) * np.eye(13)])
    b = np.concatenate([y.astype(np.float64), np.zeros(13)])
    w_ls = np.linalg.lstsq(A, b, rcond=None)[0]
    assert np.allclose(w[:, 0], w_ls, atol=1e-9, rtol=0)
    w_ne = np.linalg.solve(Xa.T @ Xa + lam * np.eye(13), Xa.T @ y.astype(np.float64))
    assert np.allclose(w[:, 0], w_ne, atol=1e-9, rtol=0)
    acc = M.RidgeAccumulator(12)
    for s in range(0, 200, 33):
        acc.add(X[s:s + 33], y[s:s + 33])
    assert np.allclose(acc.solve(lam), w, atol=1e-9, rtol=0)
    pred = M.ridge_predict(X, w)
    assert pred.dtype == np.float32
    assert np.allclose(pred, Xa @ w[:, 0], atol=1e-6)


@pytest.mark.parametrize("name", M.TARGET_TRANSFORMS)
def test_transforms_invert(name):
    y = np.random.RandomState(6).uniform(0, 0.08, 300)  # below trunc_max: trunc is lossless here
    yt = M.transform_target(y, name, trunc_max=0.1, log_scale=0.03)
    assert np.allclose(M.inverse_transform_target(yt, name, 0.1, 0.03), y, atol=1e-12, rtol=0)
    assert M.transform_target(np.array([0.5]), "trunc", 0.1)[0] == 0.1
    assert M.transform_tau(0.03, "trunc", trunc_max=0.02) == 0.02
    assert M.transform_tau(0.03, "log1p", log_scale=0.03) == pytest.approx(np.log(2.0), abs=1e-15)
    assert M.transform_tau(0.03, "none") == 0.03


# --------------------------------------------------------------------------------------------
# Lipschitz refinement: the numpy gradients + Adam against torch autograd + torch.optim.Adam
# --------------------------------------------------------------------------------------------

def torch_reference(X, y, q, gid, lam, lip_lambda, pairs, steps, lr, max_points, seed):
    rng = np.random.RandomState(seed)
    n = len(X)
    if n > max_points:
        sel = rng.permutation(n)[:max_points]
        X, y, q, gid = X[sel], y[sel], q[sel], gid[sel]
    members, offsets, sizes = M.group_members(gid)
    w0 = M.ridge_fit(X, y, lam)
    Xa = torch.from_numpy(M.augment(X, np.float32))
    yt, qt = torch.from_numpy(y.astype(np.float32)), torch.from_numpy(q.astype(np.float32))
    w = torch.nn.Parameter(torch.from_numpy(w0[:, 0].astype(np.float32)))
    opt = torch.optim.Adam([w], lr=lr)
    M.sample_group_pairs(members, offsets, sizes, pairs, rng)  # the init-violation draw
    for _ in range(steps):
        i, j = (torch.from_numpy(a) for a in M.sample_group_pairs(members, offsets, sizes, pairs, rng))
        mse = ((Xa @ w - yt) ** 2).mean()
        ridge = lam * (w[:-1] ** 2).mean()
        lip = torch.relu((Xa[i] @ w - Xa[j] @ w).abs() - (qt[i] - qt[j]).norm(dim=1)).mean()
        loss = mse + ridge + lip_lambda * lip
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach().numpy().astype(np.float64)


def test_lipschitz_matches_torch_autograd():
    rng = np.random.RandomState(7)
    n, d = 300, 6
    X = rng.normal(size=(n, d)).astype(np.float32) * 3
    y = rng.uniform(0, 1, n).astype(np.float32)
    q = rng.uniform(-0.05, 0.05, (n, 3)).astype(np.float32)  # tight boxes: violations exist
    gid = rng.randint(0, 10, n)
    kw = dict(lam=1e-3, lip_lambda=2.0, pairs=64, steps=25, lr=1e-2, max_points=250, seed=11)
    w, info = M.ridge_fit_lipschitz(X, y, q, gid, batch=8192, **kw)
    assert info["enabled"] and "skipped" not in info and info["init_lip"] > 0
    assert info["n_train_points_after_cap"] == 250 and info["lip_batch"] == 250
    assert {"mse", "ridge", "lip", "loss"} <= set(info)
    ref = torch_reference(X, y, q, gid, **kw)
    assert np.allclose(w[:, 0], ref, atol=1e-4, rtol=1e-4)


def test_lipschitz_early_exits():
    rng = np.random.RandomState(8)
    X = rng.normal(size=(50, 3)).astype(np.float32) * 1e-4  # tiny features: f is ~constant
    y = np.full(50, 0.1, np.float32)
    q = rng.uniform(-1, 1, (50, 3)).astype(np.float32)
    w, info = M.ridge_fit_lipschitz(X, y, q, np.arange(50) % 5, lam=1e-3, lip_lambda=1.0)
    assert info["skipped"] == "zero_violation_at_init"
    assert np.allclose(w, M.ridge_fit(X, y, 1e-3))
    assert M.ridge_fit_lipschitz(X, y, q, np.arange(50), lam=1e-3, lip_lambda=1.0)[1]["skipped"] \
        == "no_valid_groups"
    assert M.ridge_fit_lipschitz(X, y, q, np.arange(50), lam=1e-3, lip_lambda=0.0)[1] == {"enabled": False}


def test_group_pairs_distinct_and_uniform():
    gid = np.array([0] * 3 + [1] * 1 + [2] * 4)
    members, offsets, sizes = M.group_members(gid)
    assert list(sizes) == [3, 4]
    i, j = M.sample_group_pairs(members, offsets, sizes, 20000, np.random.RandomState(0))
    assert np.all(i != j) and np.all(gid[i] == gid[j]) and not np.any(gid[i] == 1)
    assert abs(np.mean(gid[i] == 0) - 0.5) < 0.02
    # within group 2 (4 members) every ordered pair is equally likely: 1/12
    sel = gid[i] == 2
    counts = np.unique(i[sel] * 10 + j[sel], return_counts=True)[1]
    assert len(counts) == 12 and np.all(np.abs(counts / sel.sum() - 1 / 12) < 0.01)


# --------------------------------------------------------------------------------------------
# Grid samplers
# --------------------------------------------------------------------------------------------

def test_grid_conventions():
    g = 4
    udf = np.arange(g ** 3, dtype=np.float32).reshape(g, g, g)
    lin = np.array([0, 1, g, g * g, g ** 3 - 1])
    xyz, y = gs.cells_to_queries(udf, lin)
    assert np.array_equal(y, lin.astype(np.float32))  # exact cell values, [i, j, k] order
    assert np.allclose(xyz[1], [-0.75, -0.75, -0.25]) and np.allclose(xyz[3], [-0.25, -0.75, -0.75])
    with pytest.raises(ValueError):
        gs.sample_grid_queries(np.zeros((4, 4, 3)), 4, np.random.RandomState(0))


def test_uniform_without_replacement():
    udf = np.random.RandomState(0).uniform(size=(8, 8, 8)).astype(np.float16)
    xyz, y = gs.sample_grid_queries(udf, 500, np.random.RandomState(1), mode="uniform")
    assert len(np.unique(xyz, axis=0)) == 500
    xyz, _ = gs.sample_grid_queries(udf, 10 ** 4, np.random.RandomState(1), mode="uniform")
    assert len(xyz) == 512 and len(np.unique(xyz, axis=0)) == 512  # capped at G³


def test_near_surface_fraction_exact():
    udf = np.full((8, 8, 8), 0.5, np.float32)
    near_cells = np.random.RandomState(2).choice(512, 100, replace=False)
    udf.reshape(-1)[near_cells] = 0.01
    for frac, n in ((0.8, 50), (0.7, 64), (0.0, 30), (1.0, 40)):
        lin = gs.sample_near_surface_cells(udf, n, np.random.RandomState(3), 0.05, frac)
        assert len(np.unique(lin)) == n
        assert np.sum(udf.reshape(-1)[lin] <= 0.05) == int(round(n * frac))
    # not enough near cells: all 100 taken, the rest backfilled from far
    lin = gs.sample_near_surface_cells(udf, 200, np.random.RandomState(3), 0.05, 0.9)
    assert np.sum(udf.reshape(-1)[lin] <= 0.05) == 100 and len(np.unique(lin)) == 200
    assert gs.near_far_counts(10, 0, 50, 0.8) == (0, 10)
    assert gs.near_far_counts(10, 50, 0, 0.2) == (10, 0)


def test_stratified_per_bin():
    udf = np.random.RandomState(4).uniform(0, 1, (10, 10, 10)).astype(np.float32)
    bins = gs.stratified_bins(udf)
    for n in (100, 103):
        lin = gs.sample_stratified_cells(udf, n, np.random.RandomState(5))
        assert len(lin) == n and len(np.unique(lin)) == n
        per = np.bincount(bins[lin], minlength=5)
        expected = [n // 5 + (1 if b < n % 5 else 0) for b in range(5)]
        assert list(per) == expected


def test_allocate_counts_largest_remainder():
    assert gs.allocate_counts(256, [1, 2, 3]) == [43, 85, 128]
    assert gs.allocate_counts(10, [1, 1, 1]) == [4, 3, 3]
    assert sum(gs.allocate_counts(97, [0.2, 5, 1.3])) == 97
    assert gs.parse_res_schedule("16,32,32,64,128", 64) == [16, 32, 64]
    assert gs.parse_res_schedule("", 8) == [8]
    assert gs.parse_stage_weights("1,x,2", 3) == [1.0, 2.0, 3.0]


def test_coarse_to_fine():
    g = 16
    c = -1 + (np.arange(g) + 0.5) * 2 / g
    cx, cy, cz = np.meshgrid(c, c, c, indexing="ij")
    udf = np.abs(np.sqrt(cx ** 2 + cy ** 2 + cz ** 2) - 0.6).astype(np.float16)
    n = 200
    xyz, y = gs.sample_grid_queries(udf, n, np.random.RandomState(6), mode="coarse_to_fine",
                                    near_tau=0.1, res_schedule="4,8,16", c2f_expand=1)
    assert xyz.shape == (n, 3) and y.shape == (n,)
    counts = gs.allocate_counts(n, [1, 2, 3])
    # stage cells are stage-grid centres; targets are nearest source-cell values
    for res, k, part in zip((4, 8, 16), counts, np.split(np.arange(n), np.cumsum(counts)[:-1])):
        ijk = np.rint((xyz[part] + 1) * res / 2 - 0.5).astype(int)
        assert np.allclose(gs.ijk_to_xyz(ijk, res), xyz[part])
        assert np.array_equal(gs.udf_nearest(udf.astype(np.float32), ijk, res), y[part])
    # refinement concentrates the finest stage near the surface vs uniform sampling
    fine = y[-counts[-1]:]
    assert np.mean(fine <= 0.1) > 2 * np.mean(udf <= 0.1)


# --------------------------------------------------------------------------------------------
# Embedding spread
# --------------------------------------------------------------------------------------------

def test_mean_pairwise_cosine_vs_double_loop():
    rng = np.random.RandomState(3)
    for n, c in ((2, 3), (17, 5), (40, 64)):
        E = M.l2_normalize(rng.normal(size=(n, c)).astype(np.float32))
        e = E.astype(np.float64)
        ref = sum(float(e[i] @ e[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        assert M.mean_pairwise_cosine(E) == pytest.approx(ref, abs=1e-9)
    same = np.tile([[0.0, 0.6, 0.0, 0.8]], (25, 1))  # identical exactly-unit rows
    assert M.mean_pairwise_cosine(same) == pytest.approx(1.0, abs=1e-12)
    same = np.tile(M.l2_normalize(rng.normal(size=(1, 8))), (25, 1))  # norms 1 - O(1e-9)
    assert M.mean_pairwise_cosine(same) == pytest.approx(1.0, abs=1e-8)
    opposite = np.array([[1.0, 0.0], [-1.0, 0.0]])
    assert M.mean_pairwise_cosine(opposite) == -1.0
    assert np.isnan(M.mean_pairwise_cosine(np.ones((1, 4))))
