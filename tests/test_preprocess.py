"""Preprocessing pipelines and CLIs: cache contents, splits, resume after kill -9, failures."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import trimesh

from nepa3d.data import migrate_add_pt_dist_pc_pool as migrate
from nepa3d.data import preprocess_scanobjectnn as scan_cli
from nepa3d.data import preprocess_shapenet as sn_cli
from nepa3d.data import preprocess_shapenet_unpaired as mat_cli
from nepa3d.data import shapenet_unpaired_split as split_cli
from nepa3d.data.cache import CacheError, load_cache, required_keys
from nepa3d.data.mesh_pipeline import (
    MeshCacheConfig,
    MeshError,
    build_mesh_cache,
    clean_mesh,
    compute_mesh_arrays,
    preprocess_mesh,
)
from nepa3d.geometry.distance import mesh_distance_exact, nearest_neighbors
from nepa3d.geometry.normalize import normalize_bbox_unit_sphere
from nepa3d.geometry.pools import split_counts
from nepa3d.geometry.rays import dda_occupancy
from nepa3d.geometry.udf import occupancy_from_points, trilinear_sample, udf_from_occupancy

REPO = Path(__file__).resolve().parents[1]

SMALL = dict(pc_points=256, pt_pool=500, ray_pool=200, n_views=4, rays_per_view=50,
             pc_grid=16, pc_dilate=1, df_grid=16, df_dilate=1, dist_ref_points=512)
SMALL_ARGS = ["--pc_points", "256", "--pt_pool", "500", "--ray_pool", "200", "--n_views", "4",
              "--rays_per_view", "50", "--pc_grid", "16", "--df_grid", "16",
              "--dist_ref_points", "512"]


def small_cfg(**kw) -> MeshCacheConfig:
    return MeshCacheConfig(**{**SMALL, **kw})


def make_mesh(kind: int) -> trimesh.Trimesh:
    if kind % 3 == 0:
        m = trimesh.creation.icosphere(2, radius=0.8)
    elif kind % 3 == 1:
        m = trimesh.creation.box((1.0, 0.5, 0.3))
    else:
        m = trimesh.creation.cylinder(0.3, 1.0, sections=12)
    return m.apply_translation(np.array([0.1, -0.2, 0.05]) * (kind % 5))


def write_shapenet(root: Path, n: int, synsets=("02691156", "03001627", "04379243")) -> list[str]:
    """Meshes in the ShapeNet layout ``<root>/<synset>/<model>/models/model_normalized.obj``."""
    paths = []
    for i in range(n):
        d = root / synsets[i % len(synsets)] / f"model{i:03d}" / "models"
        d.mkdir(parents=True, exist_ok=True)
        make_mesh(i).export(d / "model_normalized.obj")
        paths.append(str(d / "model_normalized.obj"))
    return paths


def write_obj(root: Path, synset: str, model: str, text: str) -> None:
    d = root / synset / model / "models"
    d.mkdir(parents=True, exist_ok=True)
    (d / "model_normalized.obj").write_text(text)


NAN_OBJ = "v 0 0 0\nv 1 0 0\nv nan 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\n"


def npz_files(root: Path) -> list[Path]:
    """Finished outputs (atomic-write temp files ``.tmp_npz_*`` excluded)."""
    return sorted(p.relative_to(root) for p in root.rglob("*.npz")
                  if not p.name.startswith(".tmp_npz_"))


def assert_same_caches(a: Path, b: Path) -> None:
    fa, fb = npz_files(a), npz_files(b)
    assert fa == fb and fa
    for rel in fa:
        x, y = load_cache(a / rel), load_cache(b / rel)
        assert sorted(x) == sorted(y)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=f"{rel}:{k}")


# ---------------------------------------------------------------------------------------
# mesh cleaning and the per-shape pipeline


def test_clean_mesh_rejects_and_repairs():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [5, 5, 5], [1, 0, 0]], float)
    f = np.array([[0, 1, 2], [0, 2, 1], [0, 1, 3], [0, 0, 2], [0, 5, 2]])
    cv, cf = clean_mesh(v, f)
    # vertex 5 merges into 1 -> face 4 duplicates face 0; face 1 duplicates face 0 (reversed);
    # face 3 is degenerate; vertex 4 is unreferenced
    assert len(cf) == 2 and len(cv) == 4
    with pytest.raises(MeshError, match="non-finite"):
        clean_mesh(np.array([[0, 0, 0], [1, 0, 0], [np.nan, 1, 0]]), np.array([[0, 1, 2]]))
    with pytest.raises(MeshError, match="no vertices"):
        clean_mesh(np.zeros((0, 3)), np.zeros((0, 3), int))
    with pytest.raises(MeshError, match="no faces"):
        clean_mesh(np.eye(3), np.zeros((0, 3), int))
    with pytest.raises(MeshError, match="degenerate"):
        clean_mesh(np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0.0]]), np.array([[0, 1, 2]]))
    with pytest.raises(MeshError, match="out of range"):
        clean_mesh(np.eye(3), np.array([[0, 1, 3]]))


def _sphere_arrays(**kw):
    m = trimesh.creation.icosphere(3)
    v, _, _ = normalize_bbox_unit_sphere(m.vertices)
    cfg = small_cfg(**kw)
    return v, m.faces, cfg, compute_mesh_arrays(v, m.faces, cfg, np.random.default_rng(0))


def test_mesh_arrays_are_self_consistent_and_validate(tmp_path):
    v, f, cfg, a = _sphere_arrays(pt_dist_mode="mesh")
    from nepa3d.data.cache import save_cache
    save_cache(tmp_path / "s.npz", a, kind="mesh")
    a = load_cache(tmp_path / "s.npz")                     # validated round trip
    assert set(required_keys("mesh")) <= set(a)
    pc = a["pc_xyz"].astype(np.float64)
    pool = a["pt_xyz_pool"].astype(np.float64)
    assert a["pc_xyz"].shape == (256, 3) and pool.shape == (500, 3)
    assert mesh_distance_exact(pc, v, f).max() < 1e-6     # samples on the surface
    np.testing.assert_allclose(np.linalg.norm(a["pc_n"], axis=1), 1.0, atol=1e-6)
    assert np.abs(pool).max() <= 1.0
    n_uni, _ = split_counts(500, 0.5)
    assert nearest_neighbors(pool[n_uni:], pc)[0].max() < 0.02 * 6
    # exact mode: matches an exact distance on the stored (float32) pool
    np.testing.assert_allclose(a["pt_dist_pool"], mesh_distance_exact(pool, v, f), atol=1e-6)
    # observation-derived distance is exactly the NN distance between stored arrays
    np.testing.assert_array_equal(a["pt_dist_pc_pool"],
                                  nearest_neighbors(pool, pc)[0].astype(np.float32))
    # occupancy and UDF are reproducible from the stored cloud; the pool sample is trilinear
    occ = occupancy_from_points(pc, 16, 1)
    np.testing.assert_array_equal(a["occ_grid"], occ.astype(np.uint8))
    udf = udf_from_occupancy(occ)
    np.testing.assert_array_equal(a["udf_grid"], udf.astype(np.float16))
    np.testing.assert_allclose(a["pt_dist_udf_pool"], trilinear_sample(udf, pool), atol=1e-6)
    assert a["df_grid"].tolist() == [16] and a["df_dilate"].tolist() == [1]
    # mesh rays: origins on the camera sphere, hits on the surface, normals unit / zero
    o, d = a["ray_o_pool"].astype(np.float64), a["ray_d_pool"].astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(o, axis=1), 2.2, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-6)
    h = a["ray_hit_pool"] > 0
    assert 0.2 < h.mean() < 0.95
    hp = o[h] + a["ray_t_pool"][h, None].astype(np.float64) * d[h]
    assert mesh_distance_exact(hp, v, f).max() < 1e-5
    np.testing.assert_allclose(np.linalg.norm(a["ray_n_pool"][h], axis=1), 1.0, atol=1e-6)
    assert not a["ray_n_pool"][~h].any() and not a["ray_t_pool"][~h].any()
    # point-cloud rays: the DDA on the stored occupancy, normals from the nearest pc point
    hit_pc, t_pc = dda_occupancy(a["occ_grid"].astype(bool), o, d)
    np.testing.assert_array_equal(a["ray_hit_pc_pool"] > 0, hit_pc)
    np.testing.assert_allclose(a["ray_t_pc_pool"], t_pc, atol=1e-6)
    hpc = o[hit_pc] + t_pc[hit_pc, None] * d[hit_pc]
    np.testing.assert_array_equal(a["ray_n_pc_pool"][hit_pc],
                                  a["pc_n"][nearest_neighbors(hpc, pc)[1]])


def test_kdtree_mode_is_an_upper_bound_of_the_exact_distance():
    v, f, cfg, a = _sphere_arrays(pt_dist_mode="kdtree")
    exact = mesh_distance_exact(a["pt_xyz_pool"].astype(np.float64), v, f)
    assert np.all(a["pt_dist_pool"] >= exact - 1e-6)      # NN to surface samples >= true
    assert np.median(a["pt_dist_pool"] - exact) < 0.05


def test_disabled_udf_and_pc_rays_use_placeholders():
    _, _, _, a = _sphere_arrays(compute_udf=False, compute_pc_rays=False)
    assert a["udf_grid"].shape == (1, 1, 1) and a["udf_grid"].dtype == np.float16
    assert a["occ_grid"].shape == (1, 1, 1) and a["occ_grid"].dtype == np.uint8
    np.testing.assert_array_equal(a["pt_dist_udf_pool"], a["pt_dist_pool"])
    assert a["df_grid"].tolist() == [16]
    for k in ("ray_hit_pc_pool", "ray_t_pc_pool", "ray_n_pc_pool"):
        assert not a[k].any()
    _, _, _, b = _sphere_arrays(pc_grid=8, df_grid=16)          # separate pc occupancy
    assert b["udf_grid"].shape == (16, 16, 16)


def test_preprocess_mesh_determinism_and_failures(tmp_path):
    root = tmp_path / "root"
    (path,) = write_shapenet(root, 1)
    cfg = small_cfg()
    a = build_mesh_cache(path, cfg, 5)
    b = build_mesh_cache(path, cfg, 5)
    c = build_mesh_cache(path, cfg, 6)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["pt_xyz_pool"], c["pt_xyz_pool"])
    assert preprocess_mesh(path, tmp_path / "o" / "x.npz", cfg, 5) == ("ok", "")
    write_obj(root, "s", "nan", NAN_OBJ)
    write_obj(root, "s", "empty", "")
    write_obj(root, "s", "flat", "v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")
    for name, why in (("nan", "non-finite"), ("empty", "no vertices"), ("flat", "degenerate")):
        status, reason = preprocess_mesh(root / "s" / name / "models" / "model_normalized.obj",
                                         tmp_path / "o" / f"{name}.npz", cfg, 0)
        assert status == "fail" and why in reason
        assert not (tmp_path / "o" / f"{name}.npz").exists()
    assert preprocess_mesh(tmp_path / "missing.obj", tmp_path / "o" / "m.npz", cfg, 0)[0] == "fail"
    bad_cfg = small_cfg(pt_dist_mode="nope")
    assert preprocess_mesh(path, tmp_path / "o" / "y.npz", bad_cfg, 0)[0] == "fail"


# ---------------------------------------------------------------------------------------
# ShapeNet split and CLI


def test_synset_model_and_split_rules():
    assert sn_cli.synset_model("r/02691156/abc/models/model_normalized.obj") == ("02691156", "abc")
    assert sn_cli.synset_model("r/02691156/sub/abc.obj") == ("02691156", "abc")
    assert sn_cli.split_key("02691156", "1a04e3eab45ca15dd86060f189eb133", 0) == 2643822122
    assert sn_cli.split_key("02691156", "1a04e3eab45ca15dd86060f189eb133", 1) == 2856045352
    # n_test: Python round, >= 1 from 10 models, capped
    assert [sn_cli.n_test_for(n, 0.1) for n in (0, 5, 9, 10, 15, 25, 35)] == [0, 0, 1, 1, 2, 2, 4]
    assert sn_cli.n_test_for(3, 2.0) == 3
    # md5-ordered assignment on known input, checked against an independent computation
    models = [f"m{i:02d}" for i in range(23)]
    paths = [f"root/02691156/{m}/models/model_normalized.obj" for m in models]
    paths += ["root/03001627/only/models/model_normalized.obj"]
    got = sn_cli.assign_splits(paths, 0.1, 0)
    key = {m: int(hashlib.md5(f"02691156/{m}:0".encode()).hexdigest()[:8], 16) for m in models}
    want_test = set(sorted(models, key=key.get)[:2])        # round(2.3) = 2
    assert {p.split("/")[2] for p, s in got.items() if s == "test"} == want_test
    assert got["root/03001627/only/models/model_normalized.obj"] == "train"  # n=1 -> 0 test
    other = sn_cli.assign_splits(paths, 0.1, 1)
    assert other != got                                     # split_seed matters


def test_shapenet_cli_counts_failures_and_resumes(tmp_path, capsys):
    root, out = tmp_path / "root", tmp_path / "out"
    write_shapenet(root, 4)
    write_obj(root, "02691156", "zz_nan", NAN_OBJ)
    write_obj(root, "03001627", "zz_empty", "")
    args = ["--shapenet_root", str(root), "--out_root", str(out), "--workers", "0",
            "--test_ratio", "0.5", "--max_failures", "2"] + SMALL_ARGS
    assert sn_cli.main(args) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("[preprocess_shapenet] ok=4 skip=0 fail=2 total=6 seconds=")
    fails = (out / "_meta" / "preprocess_failures.txt").read_text().splitlines()
    assert len(fails) == 2 and "zz_nan" in fails[0] and "zz_empty" in fails[1]   # sorted
    assert "\t" in fails[0] and "non-finite" in fails[0] and "no vertices" in fails[1]
    # manifest: every mesh (failures included), sorted glob strings, newline-terminated
    train = (out / "_splits" / "train.txt").read_text()
    test = (out / "_splits" / "test.txt").read_text()
    listed = train.splitlines() + test.splitlines()
    assert sorted(listed) == sorted(str(p) for p in root.glob(sn_cli.DEFAULT_GLOB))
    assert train.endswith("\n") and train.splitlines() == sorted(train.splitlines())
    # outputs in <out>/<split>/<synset>/<model>.npz, valid caches, seed = seed + sorted index
    meshes = sorted(str(p) for p in root.glob(sn_cli.DEFAULT_GLOB))
    split = {p: ("test" if p in test.splitlines() else "train") for p in meshes}
    i = next(j for j, p in enumerate(meshes) if "model002" in p)
    syn, model = sn_cli.synset_model(meshes[i])
    got = load_cache(out / split[meshes[i]] / syn / f"{model}.npz")
    want = build_mesh_cache(meshes[i], small_cfg(), i)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    # re-run: existing outputs skipped, failures retried and logged again, exit 0
    assert sn_cli.main(args) == 0
    assert "ok=0 skip=4 fail=2 total=6" in capsys.readouterr().out
    assert sn_cli.main(args + ["--split", "train"]) == 0


def test_shapenet_cli_exit_codes(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert sn_cli.main(["--shapenet_root", str(empty), "--out_root", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(empty) in err and "*/*/models/model_normalized.obj" in err
    bad = tmp_path / "bad"
    write_obj(bad, "s1", "a", NAN_OBJ)
    write_obj(bad, "s1", "b", "")
    assert sn_cli.main(["--shapenet_root", str(bad), "--out_root", str(tmp_path / "o2"),
                        "--workers", "0"] + SMALL_ARGS) == 1
    assert "fail=2" in capsys.readouterr().out


def test_shapenet_cli_pool_workers(tmp_path, capsys):
    root = tmp_path / "root"
    write_shapenet(root, 5)
    write_obj(root, "02691156", "zz_nan", NAN_OBJ)
    base = ["--shapenet_root", str(root), "--max_failures", "1"] + SMALL_ARGS
    assert sn_cli.main(base + ["--out_root", str(tmp_path / "a"), "--workers", "2",
                               "--chunk_size", "2", "--max_tasks_per_child", "1"]) == 0
    assert "ok=5 skip=0 fail=1 total=6" in capsys.readouterr().out
    assert sn_cli.main(base + ["--out_root", str(tmp_path / "b"), "--workers", "0"]) == 0
    assert_same_caches(tmp_path / "a", tmp_path / "b")     # worker layout does not matter


def test_shapenet_kill9_then_resume_matches_uninterrupted_run(tmp_path):
    root = tmp_path / "root"
    write_shapenet(root, 20)
    prof = ["--pc_points", "1024", "--pt_pool", "6000", "--ray_pool", "3000", "--pc_grid", "32",
            "--df_grid", "32", "--dist_ref_points", "2048"]
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    cmd = [sys.executable, "-m", "nepa3d.data.preprocess_shapenet", "--shapenet_root", str(root),
           "--out_root", str(killed), "--workers", "2", "--max_tasks_per_child", "2"] + prof
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 60
        while not npz_files(killed) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)                 # the parent and its pool workers
    finally:
        proc.wait(timeout=30)
    n_before = len(npz_files(killed))
    print(f"outputs before resume: {n_before}, temp files: {len(list(killed.rglob('.tmp_npz_*')))}")
    assert 0 < n_before < 20, f"run was not interrupted mid-way ({n_before} outputs)"
    for rel in npz_files(killed):                           # whatever exists is complete
        load_cache(killed / rel)
    assert sn_cli.main(["--shapenet_root", str(root), "--out_root", str(killed),
                        "--workers", "0"] + prof) == 0
    assert not list(killed.rglob(".tmp_npz_*"))
    assert sn_cli.main(["--shapenet_root", str(root), "--out_root", str(ref),
                        "--workers", "0"] + prof) == 0
    assert len(npz_files(ref)) == 20
    assert_same_caches(killed, ref)


# ---------------------------------------------------------------------------------------
# ScanObjectNN


def write_h5(path: Path, n: int, seed: int, n_pts: int = 128) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["data"] = (rng.normal(size=(n, n_pts, 3)) * [1.0, 2.0, 0.5] + 4.0).astype(np.float32)
        f["label"] = rng.integers(0, 15, size=(n, 1)).astype(np.int64)


def test_scanobjectnn_cli(tmp_path, capsys):
    src, out = tmp_path / "main_split", tmp_path / "out"
    write_h5(src / "training_objectdataset.h5", 3, 0)
    write_h5(src / "training_objectdataset_augmentedrot_scale75.h5", 2, 1)
    write_h5(src / "test_objectdataset.h5", 2, 2)
    write_h5(src / "test_objectdataset_augmentedrot_scale75.h5", 2, 3)
    args = ["--scan_root", str(src), "--out_root", str(out), "--pt_pool", "300",
            "--ray_pool", "16"]
    assert scan_cli.main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "split=train h5=2 ok=5 skip=0 fail=0 total=5" in lines[0]
    assert "split=test h5=2 ok=4 skip=0 fail=0 total=4" in lines[1]
    with h5py.File(src / "training_objectdataset.h5") as f:
        lab, raw = int(f["label"][1, 0]), f["data"][1]
    a = load_cache(out / "train" / f"class_{lab:03d}" / "training_objectdataset_000001.npz")
    assert set(a) >= set(required_keys("scan")) and "udf_grid" not in a
    pc = a["pc_xyz"].astype(np.float64)
    np.testing.assert_allclose(pc.mean(0), 0, atol=1e-6)                  # centroid
    np.testing.assert_allclose(np.linalg.norm(pc, axis=1).max(), 1, atol=1e-6)
    c = raw.astype(np.float64) - raw.astype(np.float64).mean(0)
    np.testing.assert_allclose(pc, c / np.linalg.norm(c, axis=1).max(), atol=1e-6)
    np.testing.assert_array_equal(a["pt_dist_pool"], a["pt_dist_pc_pool"])
    np.testing.assert_array_equal(a["pt_dist_pool"], nearest_neighbors(
        a["pt_xyz_pool"].astype(np.float64), pc)[0].astype(np.float32))
    assert a["ray_o_pool"].shape == (16, 3) and not any(a[k].any() for k in (
        "ray_o_pool", "ray_d_pool", "ray_hit_pool", "ray_t_pool", "ray_n_pool", "pc_n"))
    prov = (out / "_meta" / "scanobjectnn_train_source.txt").read_text().splitlines()
    assert prov[0] == f"scan_root={src.resolve()}" and "h5_count=2" in prov
    assert prov[-1].endswith("training_objectdataset_augmentedrot_scale75.h5")
    # resume: delete some outputs, re-run -> identical files (the shared RNG stays aligned)
    ref = tmp_path / "ref"
    assert scan_cli.main(["--scan_root", str(src), "--out_root", str(ref), "--pt_pool", "300",
                          "--ray_pool", "16"]) == 0
    victims = sorted(out.rglob("*.npz"))[::2]
    for v in victims:
        v.unlink()
    assert scan_cli.main(args) == 0
    assert f"skip={5 - sum('train' in str(v) for v in victims)}" in capsys.readouterr().out
    assert_same_caches(out, ref)
    # one RandomState per split: test uses seed + 12345
    assert scan_cli.TEST_SEED_OFFSET == 12345
    # variant filter
    assert scan_cli.main(args[:2] + ["--out_root", str(tmp_path / "v"), "--variant",
                                     "pb_t50_rs", "--pt_pool", "300"]) == 0
    names = {p.name for p in (tmp_path / "v").rglob("*.npz")}
    assert names and all("augmentedrot_scale75" in n for n in names)


def test_scanobjectnn_duplicate_stems_and_discovery(tmp_path, capsys):
    root = tmp_path / "h5"
    write_h5(root / "a" / "training_objectdataset.h5", 1, 0)
    write_h5(root / "b" / "training_objectdataset.h5", 1, 1)
    write_h5(root / "train" / "part.h5", 1, 2)                 # train via the parent dir name
    write_h5(root / "test_x.h5", 1, 3)
    found = scan_cli.discover_h5(str(root))
    assert len(found) == 4
    assert [Path(p).name for p in scan_cli.select_h5(found, "test")] == ["test_x.h5"]
    assert len(scan_cli.select_h5(found, "train")) == 3
    args = ["--scan_root", str(root), "--out_root", str(tmp_path / "o"), "--pt_pool", "50",
            "--ray_pool", "4"]
    assert scan_cli.main(args) == 2
    assert "training_objectdataset" in capsys.readouterr().err
    assert scan_cli.main(args + ["--allow_duplicate_stems"]) == 0


# ---------------------------------------------------------------------------------------
# unpaired split, materialisation, migration


def test_bucket_counts_and_ratios():
    w = split_cli.normalize_ratios([0.34, 0.33, 0.33])
    assert split_cli.bucket_counts(10, w) == [3, 3, 4]
    assert split_cli.bucket_counts(100, w) == [34, 33, 33]
    one = split_cli.normalize_ratios([1, 0, 0])
    assert split_cli.bucket_counts(3, one) == [1, 1, 1]         # empties filled for n >= 3
    assert split_cli.bucket_counts(2, one) == [2, 0, 0]
    assert split_cli.bucket_counts(5, split_cli.normalize_ratios([2, 1, 1])) == [2, 1, 2]
    for bad in ([1, 1], [1, -1, 1], [0, 0, 0], [1, float("nan"), 1]):
        with pytest.raises(ValueError):
            split_cli.normalize_ratios(bad)


def _fake_cache(root: Path, split: str, syn: str, n: int, first: int = 0) -> None:
    d = root / split / syn
    d.mkdir(parents=True, exist_ok=True)
    for i in range(first, first + n):
        (d / f"inst{i:02d}.npz").write_bytes(b"x")


def test_unpaired_split_and_materialize(tmp_path, capsys):
    cache = tmp_path / "cache"
    _fake_cache(cache, "train", "02691156", 10)
    _fake_cache(cache, "train", "03001627", 3)
    _fake_cache(cache, "test", "02691156", 2, first=10)       # a shape lives in one split
    js = tmp_path / "split.json"
    assert split_cli.main(["--cache_root", str(cache), "--out_json", str(js), "--seed", "0",
                           "--ratios", "0.34", "0.33", "0.33"]) == 0
    doc = json.loads(js.read_text())
    assert doc["meta"]["counts"] == {"train_mesh": 4, "train_pc": 4, "train_udf": 5, "eval": 2}
    assert doc["meta"]["ratios_mesh_pc_udf"] == [0.34, 0.33, 0.33]
    assert doc["meta"]["cache_root"] == str(cache.resolve())
    recs = doc["records"]
    assert [r["src_relpath"] for r in recs[:13]] == sorted(r["src_relpath"] for r in recs[:13])
    assert all(r["split"] == "eval" and r["src_split"] == "test" for r in recs[13:])
    assert recs[0]["key"] == "02691156/inst00" and recs[0]["src_relpath"] == "train/02691156/inst00.npz"
    # the assignment is the seeded shuffle described in the reference
    rng = np.random.RandomState(0)
    paths = sorted(str(p) for p in (cache / "train" / "02691156").glob("*.npz"))
    rng.shuffle(paths)
    first = {Path(p).stem for p in paths[:3]}
    assert {r["key"].split("/")[1] for r in recs
            if r["split"] == "train_mesh" and r["key"].startswith("0269")} == first
    assert split_cli.main(["--cache_root", str(cache), "--out_json", str(js), "--ratios",
                           "1", "1"]) == 2
    capsys.readouterr()

    (cache / "train" / "03001627" / "inst02.npz").unlink()     # one missing source
    view = tmp_path / "view"
    argv = ["--src_cache_root", str(cache), "--split_json", str(js), "--out_root", str(view),
            "--max_failures", "1"]
    assert mat_cli.main(argv + ["--splits", "train_mesh", "train_pc", "train_udf", "eval",
                                "--link_mode", "symlink"]) == 0
    assert capsys.readouterr().out.strip() == "[materialize] created=14 skipped=0 missing=1"
    link = view / "eval" / "02691156" / "inst10.npz"
    assert link.is_symlink() and os.readlink(link) == str(cache.resolve() / "test/02691156/inst10.npz")
    meta = json.loads((view / "_meta" / "split_source.json").read_text())
    assert meta["created"] == 14 and meta["missing"] == 1 and meta["link_mode"] == "symlink"
    assert meta["splits"] == ["eval", "train_mesh", "train_pc", "train_udf"]
    assert mat_cli.main(argv) == 0
    assert "created=0 skipped=14 missing=1" in capsys.readouterr().out
    assert mat_cli.main(argv + ["--splits", "eval", "--link_mode", "copy", "--overwrite"]) == 0
    assert not link.is_symlink() and link.read_bytes() == b"x"
    hl = tmp_path / "hl"
    assert mat_cli.main(["--src_cache_root", str(cache), "--split_json", str(js), "--out_root",
                         str(hl), "--splits", "eval", "--link_mode", "hardlink"]) == 0
    assert (hl / "eval" / "02691156" / "inst10.npz").stat().st_nlink == 2
    empty = tmp_path / "empty.json"
    empty.write_text('{"records": []}')
    assert mat_cli.main(["--src_cache_root", str(cache), "--split_json", str(empty),
                         "--out_root", str(view)]) == 2


def test_migration_adds_pc_pool_through_symlinks(tmp_path, capsys):
    _, _, _, arrays = _sphere_arrays()
    src = tmp_path / "src" / "train" / "syn"
    src.mkdir(parents=True)
    legacy = {k: v for k, v in arrays.items() if k != "pt_dist_pc_pool"}
    np.savez_compressed(src / "a.npz", **legacy)                  # legacy: no version, no key
    bad_pc = dict(arrays, pt_dist_pc_pool=np.full(500, -1, np.float32))
    np.savez_compressed(src / "b.npz", **bad_pc)                  # invalid marker -> recompute
    (src / "c.npz").write_bytes(b"not a zip")
    assert "schema_version" not in load_cache(src / "a.npz")      # legacy reads as it is
    view = tmp_path / "view" / "train_pc" / "syn"
    view.mkdir(parents=True)
    for n in ("a", "b", "c"):
        os.symlink(src / f"{n}.npz", view / f"{n}.npz")
    assert migrate.main(["--cache_root", str(tmp_path / "view"), "--splits", "train_pc",
                         "--workers", "0"]) == 1
    out = capsys.readouterr()
    assert out.out.strip().splitlines()[-1] == "done: ok=2 skip=0 fail=1 total=3 stamped=0"
    assert "fail:CacheError" in out.err
    assert (view / "a.npz").is_symlink()                          # the link is untouched...
    a = load_cache(src / "a.npz")                                 # ...its source is migrated
    want = nearest_neighbors(a["pt_xyz_pool"].astype(np.float64),
                             a["pc_xyz"].astype(np.float64))[0].astype(np.float32)
    np.testing.assert_array_equal(a["pt_dist_pc_pool"], want)
    np.testing.assert_array_equal(load_cache(src / "b.npz")["pt_dist_pc_pool"], want)
    assert migrate.main(["--cache_root", str(tmp_path / "src"), "--splits", "train",
                         "--workers", "0", "--limit", "2"]) == 0
    assert "done: ok=0 skip=2 fail=0 total=2 stamped=0" in capsys.readouterr().out
    assert migrate.main(["--cache_root", str(tmp_path / "src"), "--workers", "2",
                         "--overwrite", "--limit", "2"]) == 0
    assert "done: ok=2 skip=0 fail=0 total=2 stamped=0" in capsys.readouterr().out
