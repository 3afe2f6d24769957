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

SMALL = dict(n_per_class=2, scan_train_per_class=2, scan_test_per_class=1, scan_points=512)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "a"
    generate(root, seed=0, **SMALL)
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
