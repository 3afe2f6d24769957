"""Non-learned baselines: shape descriptors (hand-checked blocks), the descriptor + logistic
regression few-shot classifier (``baseline_cls``) and descriptor retrieval (``baseline_ucpr``),
plus the embedding-spread metrics of the UCPR results.

The classification cache is a planted scan-kind cache (:func:`planted.write_scan`): three classes
separable by construction (a round blob, a flat disc, a tall stick).
The retrieval cache holds analytic spheres of different radii and centres.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from nepa3d.analysis import baseline_cls, baseline_ucpr
from nepa3d.analysis import retrieval_ucpr as ucpr
from nepa3d.analysis import shape_descriptors as sd
from nepa3d.backends import get_pools
from nepa3d.data.cache import load_cache
from nepa3d.data.dataset import Item, TokenDataset
from nepa3d.token.tokenizer import TokenizerConfig, build_sequence
from nepa3d.utils.seeding import path_rng
from planted import sphere_cache_arrays, tiny_checkpoint, write_scan

UCPR_KEYS = {"r@1", "r@5", "r@10", "mAP", "mean_rank", "median_rank", "expected_random_r@1",
             "embed_spread_query", "embed_spread_gallery"}


# --------------------------------------------------------------------------------------------
# Descriptor blocks on hand-checked inputs
# --------------------------------------------------------------------------------------------

def test_descriptor_layout():
    assert sd.DESCRIPTOR_DIM == 43 == sum(d for _, d in sd.BLOCKS)
    sl = sd.block_slices()
    assert list(sl) == ["pca", "bbox", "dist", "d2", "shell", "height"]
    assert sl["height"].stop == sd.DESCRIPTOR_DIM


def test_pca_extents_rectangle():
    a, b = 0.6, 0.25  # corners (+-a, +-b, 0) shifted: population std a, b, 0
    xyz = np.array([[a, b, 0], [-a, b, 0], [a, -b, 0], [-a, -b, 0]]) + [0.1, -0.2, 0.3]
    np.testing.assert_allclose(sd.pca_extents(xyz, np.ones(4)), [a, b, 0], atol=1e-12)
    # rotated in its plane: same extents
    t = 0.7
    R = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])
    np.testing.assert_allclose(sd.pca_extents(xyz @ R.T, np.ones(4)), [a, b, 0], atol=1e-12)
    # weights: two points at x = +-1 with weights 3:1 -> mean 0.5, var (3*.25 + 1*2.25)/4 = .75
    xyz2 = np.array([[1.0, 0, 0], [-1.0, 0, 0]])
    np.testing.assert_allclose(sd.pca_extents(xyz2, np.array([3.0, 1.0])),
                               [math.sqrt(0.75), 0, 0], atol=1e-12)
    # through descriptor(): equal distances give equal weights
    d = sd.descriptor(xyz, np.full(4, 0.3))
    np.testing.assert_allclose(d[sd.block_slices()["pca"]], [a, b, 0], atol=1e-12)


def test_surface_weights_and_near_set():
    w = sd.surface_weights(np.array([0.2, 0.1, 0.1 + sd.SIGMA]))
    np.testing.assert_allclose(w, [math.exp(-0.1 / sd.SIGMA), 1.0, math.exp(-1.0)], rtol=1e-12)
    dist = np.array([0.5, 0.01, 0.3, 0.01, 0.02, 0.9, 0.04, 0.8, 0.7, 0.6, 0.2, 0.05, 0.4])
    # n = 13 -> m = max(3, ceil(13 / 4)) = 4 smallest, ties by index
    assert list(sd.near_surface_index(dist)) == [1, 3, 4, 6]
    assert len(sd.near_surface_index(np.zeros(2))) == 2


def test_bbox_of_near_surface_points():
    xyz = np.array([[0.1, 0.2, 0.3], [-0.5, 0.9, 0.0], [0.4, -0.1, -0.2], [0.9, 0.9, 0.9],
                    [-0.9, -0.9, -0.9]])
    dist = np.array([0.0, 0.01, 0.02, 0.5, 0.6])  # near set: the first three
    d = sd.descriptor(xyz, dist)
    np.testing.assert_allclose(d[sd.block_slices()["bbox"]],
                               [-0.5, -0.1, -0.2, 0.4, 0.9, 0.3], atol=1e-12)


def test_distance_histogram_by_hand():
    h = sd.distance_histogram(np.array([0.005, 0.015, 0.03, 0.7, 5.0]))
    np.testing.assert_allclose(h, [0.2, 0.2, 0.2, 0, 0, 0, 0, 0.4], atol=1e-12)
    h = sd.distance_histogram(np.array([0.0, 0.01, 0.16, 0.2]))  # left-closed bins
    np.testing.assert_allclose(h, [0.25, 0.25, 0, 0, 0, 0.5, 0, 0], atol=1e-12)


def test_d2_histogram_three_points():
    # pair distances 0.3 (bin [0.2, 0.4)), 0.5 and sqrt(.34) = 0.583 (bin [0.4, 0.6))
    xyz = np.array([[0.0, 0, 0], [0.3, 0, 0], [0, 0.5, 0]])
    np.testing.assert_allclose(sd.d2_histogram(xyz, np.ones(3)),
                               [0, 1 / 3, 2 / 3, 0, 0, 0, 0, 0, 0, 0], atol=1e-12)
    # weights 1, 1, e^-1 (distance 0, 0, sigma): pair weights 1, e^-1, e^-1
    d = sd.descriptor(xyz, np.array([0.0, 0.0, sd.SIGMA]))
    e = math.exp(-1)
    np.testing.assert_allclose(d[sd.block_slices()["d2"]],
                               [0, 1 / (1 + 2 * e), 2 * e / (1 + 2 * e), 0, 0, 0, 0, 0, 0, 0],
                               atol=1e-12)
    far = np.array([[-1.0, -1, -1], [1.0, 1, 1]])  # 2 sqrt(3) > 2: counted in the last bin
    assert sd.d2_histogram(far, np.ones(2))[-1] == 1.0


def test_shell_and_height_histograms():
    xyz = np.array([[0.0, -0.9, 0.0], [0.0, 0.1, 0.0], [0.0, 0.95, 0.0], [0.0, 2.0, 0.0]])
    d = sd.descriptor(xyz, np.zeros(4))
    sl = sd.block_slices()
    # height bins of width 0.25 on [-1, 1]; 2.0 is clipped into the last bin
    np.testing.assert_allclose(d[sl["height"]], [0.25, 0, 0, 0, 0.25, 0, 0, 0.5], atol=1e-12)
    # centroid y = 2.15 / 4 = 0.5375: radii 1.4375 (clipped), 0.4375, 0.4125, 1.4625 (clipped)
    # on 8 bins of width 0.125 on [0, 1]
    np.testing.assert_allclose(d[sl["shell"]], [0, 0, 0, 0.5, 0, 0, 0, 0.5], atol=1e-12)


def _blob(rng, n=96):
    xyz = rng.uniform(-0.8, 0.8, (n, 3))
    return xyz, rng.uniform(0, 0.3, n)


def test_descriptor_invariances_and_rotation_sensitivity():
    rng = np.random.RandomState(0)
    xyz, dist = _blob(rng)
    xyz[:, 1] *= 0.5  # not isotropic
    d0 = sd.descriptor(xyz, dist)
    assert d0.dtype == np.float64 and d0.shape == (sd.DESCRIPTOR_DIM,)
    sl = sd.block_slices()
    for name in ("dist", "d2", "shell", "height"):
        assert d0[sl[name]].sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(d0, sd.descriptor(xyz, dist))  # deterministic
    # permutation of the points (ties aside) does not matter
    perm = rng.permutation(len(xyz))
    np.testing.assert_allclose(sd.descriptor(xyz[perm], dist[perm]), d0, atol=1e-12)
    # a rotation about z changes the axis-aligned blocks only
    t = 0.9
    R = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])
    dr = sd.descriptor(xyz @ R.T, dist)
    for name in ("pca", "dist", "d2", "shell"):
        np.testing.assert_allclose(dr[sl[name]], d0[sl[name]], atol=1e-9)
    assert not np.allclose(dr[sl["bbox"]], d0[sl["bbox"]])
    assert not np.allclose(dr[sl["height"]], d0[sl["height"]])
    # a translation moves the bounding box, not the intrinsic blocks
    dt = sd.descriptor(xyz + [0.05, 0.02, -0.03], dist)
    np.testing.assert_allclose(dt[sl["bbox"]], d0[sl["bbox"]] + [0.05, 0.02, -0.03] * 2,
                               atol=1e-12)
    for name in ("pca", "d2", "shell"):
        np.testing.assert_allclose(dt[sl[name]], d0[sl[name]], atol=1e-9)
    with pytest.raises(ValueError):
        sd.descriptor(xyz[:, :2], dist)
    with pytest.raises(ValueError):
        sd.descriptor(xyz[:1], dist[:1])


# --------------------------------------------------------------------------------------------
# baseline_cls on a planted, separable scan-kind cache
# --------------------------------------------------------------------------------------------

N_TRAIN_PER, N_TEST_PER = 10, 6


@pytest.fixture(scope="module")
def scan_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("scan")
    write_scan(root, {"train": N_TRAIN_PER, "test": N_TEST_PER})
    return root


def _cls(root, *extra, out=None):
    """Run baseline_cls from the cache's parent folder with a relative --cache_root: eval-mode
    token draws are seeded by md5(file path), so an absolute pytest temp path would draw other
    points on every run (the accuracy asserted below held on most paths, not all)."""
    argv = ["--cache_root", root.name, "--backend", "pointcloud_noray", "--n_point", "48",
            "--mc_eval_k", "2", *extra]
    if out is not None:
        argv += ["--out_json", str(Path(out).resolve())]
    with contextlib.chdir(root.parent):
        return baseline_cls.main(argv)


def _read(out):
    return json.loads(out.read_text())


def test_baseline_cls_separable(scan_root, tmp_path):
    out = tmp_path / "c.json"
    assert _cls(scan_root, out=out) == 0
    res = _read(out)
    assert res["schema_version"] == 1 and res["task"] == "cls"
    for k in ("args", "metrics", "baselines", "flags", "provenance"):
        assert k in res
    m = res["metrics"]
    assert set(m) == {"test_acc", "best_val_acc", "test_majority_rate", "test_pred_classes",
                      "n_train", "n_val", "n_test", "n_classes"}
    assert m["n_classes"] == 3 and m["n_test"] == 3 * N_TEST_PER
    assert m["n_val"] == 3 and m["n_train"] == 3 * (N_TRAIN_PER - 1)  # floor(10 * 0.1) = 1 per class
    assert m["test_majority_rate"] == pytest.approx(1 / 3)
    assert m["test_acc"] >= 0.9 and m["test_pred_classes"] == 3
    assert res["flags"] == []
    ex = res["extra"]
    assert ex["baseline"] == "shape_descriptors+logreg" and ex["descriptor_dim"] == sd.DESCRIPTOR_DIM
    assert ex["C"] in baseline_cls.C_GRID and ex["views"] == {"train": 2, "val": 2, "test": 2}
    assert res["provenance"]["ckpt"] is None and res["provenance"]["seed"] == 0
    assert res["args"]["n_ray"] == 0


def test_baseline_cls_kshot_nway_and_seeds(scan_root, tmp_path):
    runs = {}
    for tag, extra in {"k2_s1": ["--fewshot_k", "2", "--fewshot_seed", "-1", "--seed", "1"],
                       "k2_f1": ["--fewshot_k", "2", "--fewshot_seed", "1", "--seed", "7"],
                       "k2_f3": ["--fewshot_k", "2", "--fewshot_seed", "3"],
                       "way2": ["--fewshot_n_way", "2", "--fewshot_way_seed", "5"],
                       "noval": ["--val_ratio", "0"]}.items():
        out = tmp_path / f"{tag}.json"
        assert _cls(scan_root, *extra, out=out) == 0
        runs[tag] = _read(out)
    m = runs["k2_s1"]["metrics"]
    assert m["n_train"] == 6 and m["n_val"] == 3 and m["n_test"] == 18
    assert runs["k2_s1"]["extra"]["fewshot_seed_used"] == 1
    # --seed acts only through the K-shot subset: the same subset gives the same result
    assert runs["k2_f1"]["metrics"] == m
    assert runs["k2_f1"]["extra"]["C"] == runs["k2_s1"]["extra"]["C"]
    assert runs["k2_f3"]["metrics"]["n_train"] == 6
    w = runs["way2"]["metrics"]
    assert w["n_classes"] == 2 and w["n_test"] == 2 * N_TEST_PER and w["n_val"] == 2
    nv = runs["noval"]
    assert nv["metrics"]["n_val"] == 0 and nv["metrics"]["best_val_acc"] == 0.0
    assert nv["extra"]["C"] == baseline_cls.C_DEFAULT and nv["metrics"]["n_train"] == 30


def test_baseline_cls_uses_eval_mode_tokens(scan_root):
    """file_descriptors sees exactly the points TokenDataset's eval mode yields."""
    paths = sorted(str(p) for p in (scan_root / "test").glob("*/*.npz"))[:3]
    got = baseline_cls.file_descriptors(paths, "pointcloud_noray", 48, 5, 3)
    tok = TokenizerConfig(n_point=48, n_ray=0, qa_tokens=False, add_eos=True)
    ds = TokenDataset([Item(p, "pointcloud_noray") for p in paths], tok, mode="eval",
                      eval_seed=5, mc_k=3)
    for i in range(len(paths)):
        feat, types, _ = ds[i]
        ref = np.mean([sd.token_descriptor(feat[k].numpy(), types[k].numpy()) for k in range(3)], 0)
        np.testing.assert_allclose(got[i], ref, atol=1e-12)


@pytest.mark.parametrize("extra, needle", [
    (["--n_ray", "8"], "--n_ray 8"),
    (["--mc_eval_k", "0"], "argument --mc_eval_k: must be an integer >= 1"),
    (["--n_point", "1"], "argument --n_point: must be an integer >= 2"),
    (["--val_ratio", "1.5"], "--val_ratio"),
])
def test_baseline_cls_bad_flags(scan_root, tmp_path, capsys, extra, needle):
    out = tmp_path / "bad.json"
    try:
        rc = _cls(scan_root, *extra, out=out)
    except SystemExit as e:  # argparse's range types exit at parse time
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0] and needle in err[0]
    assert not out.exists()


def test_baseline_cls_no_files(tmp_path, capsys):
    assert baseline_cls.main(["--cache_root", str(tmp_path / "none"), "--n_point", "16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs train" in err[0]


# --------------------------------------------------------------------------------------------
# baseline_ucpr on analytic spheres (different radii and centres)
# --------------------------------------------------------------------------------------------

N_SPH = 12


@pytest.fixture(scope="module")
def sphere_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("spheres")
    rng = np.random.RandomState(0)
    for i in range(N_SPH):
        a = sphere_cache_arrays(rng, 300, 16, 8, 128)
        c = rng.uniform(-0.15, 0.15, 3).astype(np.float32)  # distances are translation-free
        a["pt_xyz_pool"] = a["pt_xyz_pool"] + c
        a["pc_xyz"] = a["pc_xyz"] + c
        a["schema_version"] = np.array([1], np.int32)
        p = root / "eval" / f"c{i % 3}" / f"s{i:02d}.npz"
        p.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(p, **a)
    return root


def _bu(root, *extra):
    return baseline_ucpr.main(["--cache_root", str(root), "--n_point", "48", "--mc_k", "2",
                               "--eval_seed", "0", "--eval_seed_gallery", "999", *extra])


def test_baseline_ucpr_retrieves(sphere_root, tmp_path):
    out = tmp_path / "u.json"
    res = _bu(sphere_root, "--query_backend", "mesh", "--gallery_backend", "udfgrid",
              "--out_json", str(out))
    assert json.loads(out.read_text()) == res
    assert res["task"] == "ucpr" and set(res["metrics"]) == UCPR_KEYS
    m = res["metrics"]
    assert m["expected_random_r@1"] == pytest.approx(1 / N_SPH)
    assert m["r@1"] >= 4 / N_SPH and m["r@1"] <= m["r@5"] <= m["r@10"]
    assert 0.5 < m["embed_spread_query"] <= 1 + 1 / (N_SPH - 1) + 1e-9
    ex = res["extra"]
    assert ex["baseline"] == "shape_descriptors" and ex["n_files"] == N_SPH
    assert ex["eval_seed_gallery"] == 999 and ex["n_ray"] == 0 and ex["qa_tokens"] is False
    # the point-cloud distance is another primitive: still well above chance
    pc = _bu(sphere_root, "--query_backend", "pointcloud_noray", "--gallery_backend", "udfgrid")
    assert pc["metrics"]["r@1"] >= 3 / N_SPH


def test_baseline_ucpr_ablations_change_metrics(sphere_root):
    pair = ["--query_backend", "mesh", "--gallery_backend", "udfgrid"]
    base = _bu(sphere_root, *pair)["metrics"]
    no_dist = _bu(sphere_root, *pair, "--ablate_point_dist")
    no_xyz = _bu(sphere_root, *pair, "--ablate_point_xyz")
    assert no_dist["metrics"] != base and no_xyz["metrics"] != base
    assert no_dist["extra"]["ablate_point_dist"] and no_xyz["extra"]["ablate_point_xyz"]
    # distance answers alone (xyz zeroed) carry less than the full tokens
    assert no_xyz["metrics"]["mAP"] < base["mAP"]


def test_baseline_ucpr_same_view_saturates(sphere_root):
    res = _bu(sphere_root, "--query_backend", "mesh", "--gallery_backend", "mesh",
              "--eval_seed_gallery", "0")
    assert res["metrics"]["r@1"] == 1.0 and "easy_pair_saturated" in res["flags"]


def test_baseline_ucpr_descriptor_of_retrieval_tokens(sphere_root):
    """Query row i = mean descriptor of the points drawn by path_rng(path, eval_seed, k)."""
    args = baseline_ucpr.BaselineUcprConfig.parse(
        ["--cache_root", str(sphere_root), "--query_backend", "mesh", "--gallery_backend",
         "pointcloud_noray", "--n_point", "40", "--mc_k", "2", "--eval_seed", "3"])
    paths = sorted(str(p) for p in (sphere_root / "eval").glob("*/*.npz"))[:2]
    cfg = TokenizerConfig(n_point=40, n_ray=0, qa_tokens=False, add_eos=True)
    Dq, Dg = baseline_ucpr.descriptors(paths, args, cfg, gallery_seed=11)
    for i, p in enumerate(paths):
        a = load_cache(p)
        for D, backend, seed in ((Dq, "mesh", 3), (Dg, "pointcloud_noray", 11)):
            pools = get_pools(backend, p, a)
            ref = np.mean([sd.token_descriptor(*build_sequence(pools, cfg, path_rng(p, seed, k)))
                           for k in range(2)], 0)
            np.testing.assert_allclose(D[i], ref, atol=1e-12)


@pytest.mark.parametrize("extra, needle", [
    (["--n_ray", "8"], "--n_ray 8"),
    (["--mc_k", "0"], "argument --mc_k: must be an integer >= 1 (got '0')"),
    (["--split", "nope"], "no cache files"),
])
def test_baseline_ucpr_bad_flags(sphere_root, tmp_path, capsys, extra, needle):
    out = tmp_path / "bad.json"
    with pytest.raises(SystemExit) as e:
        _bu(sphere_root, "--query_backend", "mesh", "--gallery_backend", "udfgrid", *extra,
            "--out_json", str(out))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0] and needle in err[0]
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# Embedding spread of the model-based retrieval_ucpr
# --------------------------------------------------------------------------------------------

def test_retrieval_ucpr_records_spread(sphere_root, tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "ckpt.pt")
    common = ["--cache_root", str(sphere_root), "--ckpt", str(ckpt), "--device", "cpu",
              "--query_backend", "mesh", "--gallery_backend", "udfgrid", "--n_point", "16",
              "--n_ray", "8"]
    res = ucpr.main(common)
    m = res["metrics"]
    assert set(m) == UCPR_KEYS
    assert 0.0 <= m["embed_spread_query"] <= 1 + 1 / (N_SPH - 1) + 1e-9
    assert 0.0 <= m["embed_spread_gallery"] <= 1 + 1 / (N_SPH - 1) + 1e-9
    const = ucpr.main(common + ["--sanity_constant_embed"])["metrics"]
    assert const["embed_spread_query"] == pytest.approx(0.0, abs=1e-6)
    assert const["embed_spread_gallery"] == pytest.approx(0.0, abs=1e-6)
