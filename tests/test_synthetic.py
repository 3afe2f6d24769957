"""Tests for the procedural ShapeNet / ScanObjectNN stand-in corpus (nepa3d.data.synthetic).

Checks are independent of the generator's own bookkeeping: OBJ files are parsed by hand
and by trimesh, scan labels are checked against the geometry of the scanned mesh, and
partiality is measured against a dense surface sample.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from nepa3d.data import synthetic
from nepa3d.data.synthetic import CLASSES, build_mesh, generate, scan_object

NAMES = [c[0] for c in CLASSES]

SMALL = dict(n_per_class=2, scan_train_per_class=2, scan_test_per_class=1, scan_points=512)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """SMALL corpus written by the CLI with every scan option at its default (no flag given)."""
    root = tmp_path_factory.mktemp("synth") / "a"
    synthetic.main(["--out_root", str(root), "--seed", "0"] + [f"--{k}={v}" for k, v in SMALL.items()])
    return root


def _tree_bytes(root: Path) -> dict[str, bytes]:
    """Relative path -> content for every file under ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _parse_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Minimal independent OBJ reader: vertices (V, 3) float, triangle faces (F, 3) 0-based."""
    verts, faces = [], []
    for line in path.read_text().splitlines():
        if line.startswith("v "):
            verts.append([float(x) for x in line.split()[1:4]])
        elif line.startswith("f "):
            idx = [int(tok.split("/")[0]) for tok in line.split()[1:]]
            assert len(idx) == 3, f"non-triangle face in {path}"
            faces.append(idx)
    return np.asarray(verts), np.asarray(faces) - 1


def _obj_paths(root: Path) -> list[Path]:
    return sorted((root / "ShapeNetCore.v2").glob("*/*/models/model_normalized.obj"))


def _aspect(vertices: np.ndarray) -> float:
    """Height (y extent) over the larger horizontal extent."""
    ext = vertices.max(axis=0) - vertices.min(axis=0)
    return float(ext[1] / max(ext[0], ext[2]))


# --------------------------------------------------------------------------- ShapeNet part


def test_layout_and_taxonomy(corpus):
    sn = corpus / "ShapeNetCore.v2"
    tax = json.loads((sn / "taxonomy.json").read_text())
    assert isinstance(tax, list) and len(tax) >= 10
    synsets = {entry["synsetId"] for entry in tax}
    assert len(synsets) == len(tax)
    assert {"04379243", "03001627", "02876657", "03797390"} <= synsets  # table, chair, bottle, mug
    for entry in tax:
        assert re.fullmatch(r"\d{8}", entry["synsetId"]) and entry["name"]
        models = [p for p in (sn / entry["synsetId"]).iterdir() if p.is_dir()]
        assert len(models) == entry["numInstances"] == SMALL["n_per_class"]
        for m in models:
            assert re.fullmatch(r"[0-9a-f]{32}", m.name)
            assert (m / "models" / "model_normalized.obj").is_file()
    assert {p.name for p in sn.iterdir() if p.is_dir()} == synsets

    meta = json.loads((corpus / "corpus.json").read_text())
    names = [c["name"] for c in meta["classes"]]
    assert names == sorted(names)
    assert [c["label"] for c in meta["classes"]] == list(range(len(names)))
    assert {c["synset"] for c in meta["classes"]} == synsets
    assert meta["args"]["seed"] == 0 and meta["counts"]["meshes"] == len(_obj_paths(corpus))


def test_model_ids_are_md5_of_seed_class_index(corpus):
    for name, synset in CLASSES:
        expected = {hashlib.md5(f"0/{name}/{i}".encode()).hexdigest() for i in range(SMALL["n_per_class"])}
        found = {p.name for p in (corpus / "ShapeNetCore.v2" / synset).iterdir()}
        assert found == expected


def test_objs_are_valid_normalised_triangle_meshes(corpus):
    paths = _obj_paths(corpus)
    assert len(paths) == SMALL["n_per_class"] * len(CLASSES)
    for path in paths:
        verts, faces = _parse_obj(path)
        assert np.isfinite(verts).all() and len(faces) > 0
        assert faces.min() >= 0 and faces.max() < len(verts)
        tri = verts[faces]
        areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        assert (areas > 0).mean() > 0.99, f"{path}: mostly degenerate faces"
        lo, hi = verts.min(axis=0), verts.max(axis=0)
        assert np.allclose((lo + hi) / 2.0, 0.0, atol=1e-5)  # model_normalized: bbox centred
        assert np.linalg.norm(hi - lo) == pytest.approx(1.0, abs=1e-4)  # ... with unit diagonal
        mesh = trimesh.load(path, force="mesh")
        assert len(mesh.faces) > 0 and np.isfinite(mesh.vertices).all()
        assert 500 <= len(mesh.faces) <= 10000


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes(corpus, tmp_path):
    generate(tmp_path / "b", seed=0, **SMALL)
    a, b = _tree_bytes(corpus), _tree_bytes(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]


def test_different_seed_gives_different_corpus(corpus, tmp_path):
    generate(tmp_path / "c", seed=1, **SMALL)
    objs_a = sorted(p.read_bytes() for p in _obj_paths(corpus))
    objs_c = sorted(p.read_bytes() for p in _obj_paths(tmp_path / "c"))
    assert not set(objs_a) & set(objs_c)
    with h5py.File(synthetic.scan_h5_path(corpus, "train")) as fa:
        data_a = fa["data"][:]
    with h5py.File(synthetic.scan_h5_path(tmp_path / "c", "train")) as fc:
        data_c = fc["data"][:]
    assert data_a.shape == data_c.shape and not np.allclose(data_a, data_c)


def test_regenerate_smaller_prunes_stale_models(tmp_path):
    generate(tmp_path, seed=3, n_per_class=2, scan_train_per_class=1, scan_test_per_class=1, scan_points=64)
    generate(tmp_path, seed=3, n_per_class=1, scan_train_per_class=1, scan_test_per_class=1, scan_points=64)
    for _, synset in CLASSES:
        assert len([p for p in (tmp_path / "ShapeNetCore.v2" / synset).iterdir() if p.is_dir()]) == 1


def test_refuses_to_overwrite_unmarked_shapenet(tmp_path):
    (tmp_path / "ShapeNetCore.v2" / "04379243").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        generate(tmp_path, seed=0, n_per_class=1, scan_train_per_class=1, scan_test_per_class=1, scan_points=64)


# --------------------------------------------------------------------------- ScanObjectNN part


@pytest.mark.parametrize(
    "split,per_class", [("train", SMALL["scan_train_per_class"]), ("test", SMALL["scan_test_per_class"])]
)
def test_h5_format(corpus, split, per_class):
    path = corpus / "ScanObjectNN" / "h5_files" / "main_split" / synthetic.SCAN_SPLIT_FILES[split]
    n, p = per_class * len(CLASSES), SMALL["scan_points"]
    with h5py.File(path) as f:
        data, label, mask = f["data"][:], f["label"][:], f["mask"][:]
    assert data.shape == (n, p, 3) and data.dtype == np.float32 and np.isfinite(data).all()
    assert label.shape == (n,) and label.dtype in (np.int64, np.uint8)
    assert mask.shape == (n, p) and mask.dtype == np.int32
    assert sorted(np.unique(label)) == list(range(len(CLASSES)))
    assert np.bincount(label).tolist() == [per_class] * len(CLASSES)
    for i in range(n):
        values = set(np.unique(mask[i]).tolist())
        assert values == {-1, int(label[i])}
        bg_fraction = float((mask[i] == -1).mean())
        assert 0.09 <= bg_fraction <= 0.26
    assert np.abs(data).max() < 5.0  # roughly unit-scale frame


def test_scan_mask_matches_geometry():
    """Object-labelled points lie on the scanned surface; background points mostly do not."""
    for ci, (name, _) in enumerate(CLASSES):
        rng = np.random.default_rng([11, ci])
        points, mask, obj = scan_object(build_mesh(name, rng), ci, rng, 1024)
        diag = float(np.linalg.norm(obj.extents))
        surface = trimesh.sample.sample_surface(obj, 20000, seed=0)[0]
        tree = cKDTree(surface)
        d_obj = tree.query(points[mask == ci])[0] / diag
        d_bg = tree.query(points[mask == -1])[0] / diag
        assert np.percentile(d_obj, 90) < 0.035, name
        assert np.median(d_bg) > 0.05, name


def test_scans_are_partial():
    """A one-sided scan leaves a large part of the surface unobserved; a full sample does not."""
    for name in ("bottle", "mug", "cabinet", "sofa"):
        ci = [c[0] for c in CLASSES].index(name)
        for i in range(3):
            rng = np.random.default_rng([21, ci, i])
            points, mask, obj = scan_object(build_mesh(name, rng), ci, rng, 2048)
            diag = float(np.linalg.norm(obj.extents))
            surface = trimesh.sample.sample_surface(obj, 5000, seed=1)[0]
            far = cKDTree(points[mask >= 0]).query(surface)[0] > 0.05 * diag
            assert 0.2 < far.mean() < 0.95, (name, i, far.mean())
            # control: a dense, equally noisy sample of the full surface covers everything
            full = trimesh.sample.sample_surface(obj, 2048, seed=2)[0]
            full = full + np.random.default_rng(0).normal(scale=0.01 * diag, size=full.shape)
            assert (cKDTree(full).query(surface)[0] > 0.05 * diag).mean() < 0.02


def test_scan_frame_is_y_up_with_floor_below():
    rng = np.random.default_rng(5)
    ci = [c[0] for c in CLASSES].index("table")
    points, mask, obj = scan_object(build_mesh("table", rng), ci, rng, 1024)
    assert np.allclose(obj.bounds.mean(axis=0), 0.0, atol=1e-6)  # object bbox centred
    floor_y = obj.bounds[0, 1]
    bg = points[mask == -1]
    near_floor = np.abs(bg[:, 1] - floor_y) < 0.05
    assert near_floor.mean() > 0.3  # a good share of the background is the floor patch
    assert (points[mask >= 0][:, 1] > floor_y - 0.1).all()


# --------------------------------------------------------------------------- class structure


def test_classes_differ_in_shape_statistics():
    def mean_aspect(name: str, stream: int) -> float:
        meshes = [build_mesh(name, np.random.default_rng([stream, i])) for i in range(8)]
        return float(np.mean([_aspect(m.vertices) for m in meshes]))

    bottle, table, bookshelf, bed = (mean_aspect(n, k) for k, n in enumerate(("bottle", "table", "bookshelf", "bed")))
    assert bottle > 2.0 * table
    assert bookshelf > 2.0 * bed


def test_instances_are_diverse():
    verts = [build_mesh("chair", np.random.default_rng([9, i])).extents for i in range(6)]
    assert len({tuple(np.round(v, 4)) for v in verts}) == 6


def test_build_mesh_is_deterministic_and_rejects_unknown_class():
    a = build_mesh("lamp", np.random.default_rng(4))
    b = build_mesh("lamp", np.random.default_rng(4))
    assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces)
    with pytest.raises(KeyError):
        build_mesh("spaceship", np.random.default_rng(0))


def test_cli_prints_summary(tmp_path, capsys):
    summary = synthetic.main(
        ["--out_root", str(tmp_path), "--seed", "2", "--n_per_class", "1", "--scan_train_per_class", "1",
         "--scan_test_per_class", "1", "--scan_points", "128"]
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "classes" in out[0] and "meshes" in out[0] and "scans" in out[0]
    assert summary["classes"] == len(CLASSES) and summary["meshes"] == len(CLASSES)
    assert summary["scans_train"] == summary["scans_test"] == len(CLASSES)


# --------------------------------------------------------------------------- default bytes unchanged

# Digests of the SMALL seed-0 corpus written with every scan option at its default. Obtained by
# running the generator as it was BEFORE the scan options existed (commit 2f6070e,
# `generate(root, seed=0, n_per_class=2, scan_train_per_class=2, scan_test_per_class=1,
# scan_points=512)`) and hashing with `_dataset_digest` / `_objs_digest` below. The full
# default corpus (24/16/8/2048) was also compared file by file: identical.
PRE_OPTION_H5_DIGESTS = {
    "main_split/test_objectdataset.h5:data": "b6b3b4232599709ae671fa260de9f4d063c62c772d3aa1e90afd6f056c9f6b57",
    "main_split/test_objectdataset.h5:label": "7dd67388abdd31cdec5032422dcb048cd919f350be9ebd9cf4d593d696ee2afb",
    "main_split/test_objectdataset.h5:mask": "2ab642b5af196491e6233f8d816ee927462d592f7853b129d8fd80e5029ead56",
    "main_split/training_objectdataset.h5:data": "8e3dbdc1fdf75139a508f17ca24af48f42c0545e3628fef5983e8c1e87358c7a",
    "main_split/training_objectdataset.h5:label": "23985e88d04854727eedb1718cd3ed04d2dd386ef3749ce1b572846fb2c1cc97",
    "main_split/training_objectdataset.h5:mask": "3bb02021d0121d523cfef9a10360fdcb76d6483bf874678f4fdc669561c7e713",
}
PRE_OPTION_OBJS_DIGEST = "335d060ec6db2f67893f899fc3b91b68d4560b10298cd5bb22a472e937d0675e"  # 24 OBJ files


def _dataset_digest(array: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(f"{array.dtype.str}{array.shape}".encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def _objs_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.obj")):
        h.update(f"{p.relative_to(root)}\t{hashlib.sha256(p.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def test_default_options_reproduce_the_pre_option_corpus(corpus):
    h5_root = corpus / "ScanObjectNN" / "h5_files"
    got = {}
    for path in sorted((h5_root / "main_split").glob("*.h5")):
        with h5py.File(path) as f:
            got.update({f"main_split/{path.name}:{k}": _dataset_digest(f[k][:]) for k in f})
    assert got == PRE_OPTION_H5_DIGESTS
    assert _objs_digest(corpus) == PRE_OPTION_OBJS_DIGEST and len(_obj_paths(corpus)) == 24


def test_corpus_json_names_the_corpus_and_lists_variants(corpus):
    meta = json.loads((corpus / "corpus.json").read_text())
    assert meta["name"] == "embedded procedural corpus (nepa3d.data.synthetic)" and meta["synthetic"] is True
    assert meta["args"]["scan_bg_frac"] == [0.10, 0.25] and meta["args"]["scan_heading_deg"] == 360
    assert meta["args"]["scan_variants"] == ["main_split", "main_split_nobg"]
    n = {"train": SMALL["scan_train_per_class"] * len(CLASSES), "test": SMALL["scan_test_per_class"] * len(CLASSES)}
    for variant in ("main_split", "main_split_nobg"):
        rec = meta["variants"][variant]
        assert rec["path"] == f"ScanObjectNN/h5_files/{variant}" and rec["counts"] == n
        for split, rel in rec["files"].items():
            with h5py.File(corpus / rel) as f:
                assert len(f["label"]) == n[split]


# --------------------------------------------------------------------------- background fraction


def _bg_counts(arrays: dict) -> np.ndarray:
    return (arrays["mask"] == -1).sum(axis=1)


def test_background_fraction_follows_the_range():
    points = 200
    arrays = synthetic.make_scans(4, synthetic.STREAM_SCAN_TRAIN, 1, points, bg_frac=(0.30, 0.40))
    n_bg = _bg_counts(arrays)
    assert len(n_bg) == len(CLASSES)
    assert (n_bg >= np.floor(0.30 * points)).all() and (n_bg <= np.ceil(0.40 * points)).all(), n_bg
    assert len(set(n_bg.tolist())) > 1  # drawn, not fixed
    # the object points carry the label, background -1: nothing else
    for mask, label in zip(arrays["mask"], arrays["label"]):
        assert set(np.unique(mask).tolist()) <= {-1, int(label)}


def test_zero_background_fraction_gives_object_only_scans(tmp_path):
    generate(tmp_path, seed=1, n_per_class=0, scan_train_per_class=1, scan_test_per_class=1, scan_points=64,
             scan_bg_frac=(0.0, 0.0), scan_variants=["main_split"])
    for split in ("train", "test"):
        with h5py.File(synthetic.scan_h5_path(tmp_path, split)) as f:
            mask, label = f["mask"][:], f["label"][:]
        assert (mask != -1).all() and (mask == label[:, None]).all()


# --------------------------------------------------------------------------- heading


def test_draw_yaw_ranges():
    for heading in (0.0, 10.0, 90.0, 200.0):
        rng = np.random.default_rng(0)
        yaws = np.degrees([synthetic.draw_yaw(rng, heading) for _ in range(2000)])
        assert (np.abs(yaws) <= heading / 2 + 1e-9).all()
        if heading:  # uses the whole range
            assert yaws.min() < -0.45 * heading and yaws.max() > 0.45 * heading
    # 360 is the original draw, value for value: uniform [0, 2 pi) from the same stream
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    assert [synthetic.draw_yaw(a, 360.0) for _ in range(5)] == [b.uniform(0.0, 2.0 * np.pi) for _ in range(5)]
    # one draw whatever the heading: the rest of the item's stream is unchanged
    for heading in (0.0, 45.0, 360.0):
        rng = np.random.default_rng(8)
        synthetic.draw_yaw(rng, heading)
        assert rng.random() == np.random.default_rng(8).random(2)[1]


def _principal_angle(xyz: np.ndarray) -> float:
    """Angle (degrees, in [0, 180)) of the main horizontal (x-z) axis of a point set."""
    xz = xyz[:, [0, 2]] - xyz[:, [0, 2]].mean(axis=0)
    axis = np.linalg.eigh(xz.T @ xz)[1][:, -1]
    return float(np.degrees(np.arctan2(axis[1], axis[0])) % 180.0)


def _wrap90(deg: float) -> float:
    return (deg + 90.0) % 180.0 - 90.0


@pytest.mark.parametrize("heading", [0.0, 40.0])
def test_heading_measured_from_geometry(heading):
    """The yaw actually applied -- the turn of the placed object's main horizontal axis against
    the canonical mesh's (rotation-covariant, scale/translation invariant) -- stays within
    [-H/2, H/2]; H=0 leaves the canonical orientation."""
    measured = []
    for name in ("bench", "display", "bookshelf", "bathtub"):
        ci = NAMES.index(name)
        for i in range(3):
            canonical = build_mesh(name, synthetic.item_rng(6, 1, ci, i))
            rng = synthetic.item_rng(6, 1, ci, i)
            _, _, obj = scan_object(build_mesh(name, rng), ci, rng, 128, heading_deg=heading)
            measured.append(_wrap90(_principal_angle(obj.vertices) - _principal_angle(canonical.vertices)))
    measured = np.asarray(measured)
    assert (np.abs(measured) <= heading / 2 + 0.5).all(), measured
    if heading:
        assert np.abs(measured).max() > 2.0  # really turned


def test_canonical_heading_visible_in_the_scanned_points():
    """Benches are long along x: at H=0 the scanned object points keep that axis (up to the
    bias of a one-sided view); at H=360 they do not."""
    ci = NAMES.index("bench")

    def angles(heading: float) -> np.ndarray:
        out = []
        for i in range(6):
            rng = synthetic.item_rng(5, 1, ci, i)
            points, mask, _ = scan_object(build_mesh("bench", rng), ci, rng, 256, heading_deg=heading)
            out.append(_wrap90(_principal_angle(points[mask == ci])))
        return np.abs(out)

    assert angles(0.0).max() < 20.0
    assert angles(360.0).max() > 30.0


# --------------------------------------------------------------------------- object-only variant


def _read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path) as f:
        return {k: f[k][:] for k in f}


@pytest.mark.parametrize("split", ["train", "test"])
def test_nobg_variant_same_instances_object_points_only(corpus, split):
    main = _read(synthetic.scan_h5_path(corpus, split, "main_split"))
    nobg = _read(synthetic.scan_h5_path(corpus, split, "main_split_nobg"))
    assert (corpus / "ScanObjectNN/h5_files/main_split_nobg" / synthetic.SCAN_SPLIT_FILES[split]).is_file()
    n, p = len(main["label"]), SMALL["scan_points"]
    assert nobg["data"].shape == (n, p, 3) and nobg["data"].dtype == np.float32 and np.isfinite(nobg["data"]).all()
    assert nobg["label"].dtype == main["label"].dtype and np.array_equal(nobg["label"], main["label"])
    assert nobg["mask"].shape == (n, p) and nobg["mask"].dtype == np.int32
    assert (nobg["mask"] != -1).all() and (nobg["mask"] == nobg["label"][:, None]).all()
    for i in range(n):
        obj = main["data"][i][main["mask"][i] >= 0]
        bg = main["data"][i][main["mask"][i] == -1]
        other = main["data"][(i + 1) % n][main["mask"][(i + 1) % n] >= 0]
        diag = float(np.linalg.norm(obj.max(axis=0) - obj.min(axis=0)))
        d_same = np.median(cKDTree(obj).query(nobg["data"][i])[0])
        assert d_same < 0.03 * diag, (i, d_same / diag)  # the same scanned instance ...
        assert d_same < 0.5 * np.median(cKDTree(other).query(nobg["data"][i])[0])  # ... not its neighbour
        assert d_same < 0.5 * np.median(cKDTree(bg).query(nobg["data"][i])[0])  # ... and not the background


def test_nobg_points_lie_on_the_object():
    for name in ("chair", "lamp", "sofa"):
        ci = NAMES.index(name)
        rng = np.random.default_rng([12, ci])
        scan = synthetic.simulate_scan(build_mesh(name, rng), ci, rng, 512)
        points, mask = synthetic.object_only(scan, np.random.default_rng([12, ci, 1]), 512)
        assert points.shape == (512, 3) and (mask == ci).all()
        diag = float(np.linalg.norm(scan.obj.extents))
        surface = trimesh.sample.sample_surface(scan.obj, 20000, seed=0)[0]
        d = cKDTree(surface).query(points)[0] / diag
        assert np.percentile(d, 90) < 0.035, name


def test_variant_choice_does_not_change_main_split(tmp_path):
    both = synthetic.make_scan_variants(2, synthetic.STREAM_SCAN_TEST, 1, 64)
    only = synthetic.make_scans(2, synthetic.STREAM_SCAN_TEST, 1, 64)
    assert all(np.array_equal(both["main_split"][k], only[k]) for k in only)
    # regenerate without nobg: the stale nobg files of the earlier run go, corpus.json follows
    small = dict(seed=2, n_per_class=0, scan_train_per_class=1, scan_test_per_class=1, scan_points=64)
    generate(tmp_path, **small)
    assert synthetic.scan_h5_path(tmp_path, "train", "main_split_nobg").is_file()
    generate(tmp_path, **small, scan_variants=["main_split"])
    assert not list(synthetic.scan_dir(tmp_path, "main_split_nobg").glob("*.h5"))
    meta = json.loads((tmp_path / "corpus.json").read_text())
    assert list(meta["variants"]) == ["main_split"] and meta["args"]["scan_variants"] == ["main_split"]


# --------------------------------------------------------------------------- validation

BAD_OPTIONS = [
    (["--scan_heading_deg", "400"], "synthetic.scan_heading_deg (--scan_heading_deg): 400 is outside [0, 360]"),
    (["--scan_heading_deg", "-1"], "synthetic.scan_heading_deg (--scan_heading_deg): -1 is outside [0, 360]"),
    (["--scan_heading_deg", "nan"], "synthetic.scan_heading_deg (--scan_heading_deg): nan is not finite"),
    (["--scan_bg_frac", "0.3", "0.2"], "synthetic.scan_bg_frac (--scan_bg_frac): LO 0.3 is above HI 0.2 (need LO <= HI)"),
    (["--scan_bg_frac", "0", "1.5"], "synthetic.scan_bg_frac (--scan_bg_frac): 1.5 is outside [0, 1]"),
    (["--scan_bg_frac", "-0.1", "0.2"], "synthetic.scan_bg_frac (--scan_bg_frac): -0.1 is outside [0, 1]"),
    (["--scan_bg_frac", "0.1", "inf"], "synthetic.scan_bg_frac (--scan_bg_frac): inf is not finite"),
    (["--scan_bg_frac", "0.1"], "synthetic.scan_bg_frac (--scan_bg_frac): expected 2 arguments"),
    (["--n_per_class", "-1"], "synthetic.n_per_class (--n_per_class): -1 is outside [0, inf)"),
    (["--scan_train_per_class", "-2"], "synthetic.scan_train_per_class (--scan_train_per_class): -2 is outside [0, inf)"),
    (["--scan_test_per_class", "-3"], "synthetic.scan_test_per_class (--scan_test_per_class): -3 is outside [0, inf)"),
    (["--scan_points", "0"], "synthetic.scan_points (--scan_points): 0 is outside [1, inf)"),
    (["--scan_points", "1.5"], "synthetic.scan_points (--scan_points): '1.5' is not an integer"),
    (["--seed", "-1"], "synthetic.seed (--seed): -1 is outside [0, inf)"),
    (["--scan_variants", "main_split", "pb_t50_rs"],
     "synthetic.scan_variants (--scan_variants): 'pb_t50_rs' is not one of main_split, main_split_nobg"),
]


@pytest.mark.parametrize("argv,message", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_option_is_refused_before_writing(tmp_path, capsys, argv, message):
    out_root = tmp_path / "corpus"
    with pytest.raises(SystemExit) as exc:
        synthetic.main(["--out_root", str(out_root), "--n_per_class", "1", "--scan_train_per_class", "1",
                        "--scan_test_per_class", "1", "--scan_points", "64", *argv])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"error: {message}"] and captured.out == ""
    assert not out_root.exists()


def test_generate_raises_the_same_text_before_writing(tmp_path):
    cases = [(dict(scan_heading_deg=400), BAD_OPTIONS[0][1]), (dict(scan_bg_frac=(0.3, 0.2)), BAD_OPTIONS[3][1]),
             (dict(n_per_class=-1), BAD_OPTIONS[8][1]), (dict(scan_bg_frac=(0.1, float("inf"))), BAD_OPTIONS[6][1])]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as exc:
            generate(tmp_path / "g", **kwargs)
        assert str(exc.value) == message
    assert not (tmp_path / "g").exists()
    assert synthetic.validate_args() == synthetic.DEFAULTS


def test_bad_option_cli_exit_status_without_traceback(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "nepa3d.data.synthetic", "--out_root", str(tmp_path / "x"),
                        "--scan_heading_deg", "400"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == f"error: {BAD_OPTIONS[0][1]}\n"
    assert not (tmp_path / "x").exists()
