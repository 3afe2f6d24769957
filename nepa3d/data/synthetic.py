"""Procedural stand-in corpus in the real ShapeNetCore.v2 and ScanObjectNN on-disk formats.

Real ShapeNet / ScanObjectNN cannot be downloaded in the embedded setting, so this module
generates a small corpus of part-based meshes (see :mod:`nepa3d.data.synthetic_shapes`)
and writes it exactly where and how the real data sets live, so that the same
preprocessing code serves both::

    <out_root>/ShapeNetCore.v2/taxonomy.json
    <out_root>/ShapeNetCore.v2/<synset>/<model_id>/models/model_normalized.obj
    <out_root>/ScanObjectNN/h5_files/main_split/training_objectdataset.h5
    <out_root>/ScanObjectNN/h5_files/main_split/test_objectdataset.h5
    <out_root>/corpus.json

Frames: meshes are y-up, bbox-centred, bbox diagonal 1 (like ``model_normalized.obj``).
Scans are y-up, object bbox centre at the origin, object bbox diagonal 1.4-2.0 (not
normalised; the preprocessor normalises), with floor / wall / clutter points around it.

Everything is deterministic from ``seed``: each item draws from its own generator
``default_rng([seed, stream, class_index, item_index])`` (stream 0 = ShapeNet meshes,
1 = scan train, 2 = scan test), so the same arguments give byte-identical files.

CLI::

    python -m nepa3d.data.synthetic --out_root data/synthetic --seed 0 \\
        --n_per_class 24 --scan_train_per_class 16 --scan_test_per_class 8 --scan_points 2048
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import trimesh
from trimesh.transformations import rotation_matrix

from nepa3d.data.synthetic_shapes import BUILDERS, build_mesh

# (name, ShapeNetCore.v2 synset id), sorted by name: the ScanObjectNN-style label of a
# class is its index in this list.
CLASSES: list[tuple[str, str]] = [
    ("bathtub", "02808440"),
    ("bed", "02818832"),
    ("bench", "02828884"),
    ("bookshelf", "02871439"),
    ("bottle", "02876657"),
    ("cabinet", "02933112"),
    ("chair", "03001627"),
    ("display", "03211117"),
    ("lamp", "03636649"),
    ("mug", "03797390"),
    ("sofa", "04256520"),
    ("table", "04379243"),
]

# The "name" field of the real ShapeNetCore.v2 taxonomy.json for these synsets.
TAXONOMY_NAMES: dict[str, str] = {
    "bathtub": "bathtub,bathing tub,bath,tub",
    "bed": "bed",
    "bench": "bench",
    "bookshelf": "bookshelf",
    "bottle": "bottle",
    "cabinet": "cabinet",
    "chair": "chair",
    "display": "display,video display",
    "lamp": "lamp",
    "mug": "mug",
    "sofa": "sofa,couch,lounge",
    "table": "table",
}

STREAM_SHAPENET, STREAM_SCAN_TRAIN, STREAM_SCAN_TEST = 0, 1, 2
SCAN_SPLIT_FILES = {"train": "training_objectdataset.h5", "test": "test_objectdataset.h5"}
MARKER = ".nepa3d_synthetic"  # marks a ShapeNetCore.v2 folder as generated (safe to prune)

assert [c[0] for c in CLASSES] == sorted(BUILDERS), "CLASSES and synthetic_shapes.BUILDERS disagree"


# --------------------------------------------------------------------------- ids / paths


def item_rng(seed: int, stream: int, class_index: int, index: int) -> np.random.Generator:
    """The generator owning one item: independent of generation order and of other items."""
    return np.random.default_rng([seed, stream, class_index, index])


def model_id(seed: int, class_name: str, index: int) -> str:
    """Deterministic 32-hex ShapeNet-style model id."""
    return hashlib.md5(f"{seed}/{class_name}/{index}".encode()).hexdigest()


def shapenet_root(out_root: str | os.PathLike) -> Path:
    return Path(out_root) / "ShapeNetCore.v2"


def scan_h5_path(out_root: str | os.PathLike, split: str) -> Path:
    """Path of the ``split`` ("train" / "test") ScanObjectNN main_split h5 file."""
    return Path(out_root) / "ScanObjectNN" / "h5_files" / "main_split" / SCAN_SPLIT_FILES[split]


# --------------------------------------------------------------------------- atomic writers


def _tmp_beside(path: Path) -> Path:
    """A fresh temporary file name in ``path``'s folder (so ``os.replace`` is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; the corpus is ordinary readable data
    return Path(tmp)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file + ``os.replace``."""
    tmp = _tmp_beside(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_h5_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as h5 datasets (no timestamps, so bytes are reproducible), atomically."""
    tmp = _tmp_beside(path)
    try:
        with h5py.File(tmp, "w", track_order=False) as f:
            for key, value in arrays.items():
                f.create_dataset(key, data=value, track_times=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def obj_text(mesh: trimesh.Trimesh, comment: str = "") -> str:
    """Wavefront OBJ text of a triangle mesh: ``v x y z`` lines then 1-based ``f a b c`` lines."""
    verts = np.asarray(mesh.vertices, dtype=np.float64) + 0.0  # +0.0 turns -0.0 into 0.0
    faces = np.asarray(mesh.faces, dtype=np.int64) + 1
    lines = [f"# {comment}"] if comment else []
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts.tolist()]
    lines += [f"f {a} {b} {c}" for a, b, c in faces.tolist()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- scanning


def place_object(mesh: trimesh.Trimesh, rng: np.random.Generator) -> trimesh.Trimesh:
    """A scaled copy of ``mesh`` (bbox diagonal 1.4-2.0), randomly yawed, standing on y=0, centred in x/z."""
    obj = mesh.copy()
    obj.apply_transform(rotation_matrix(rng.uniform(0.0, 2.0 * np.pi), [0.0, 1.0, 0.0]))
    obj.apply_scale(rng.uniform(1.4, 2.0) / float(np.linalg.norm(obj.extents)))
    lo, hi = obj.bounds
    obj.apply_translation([-(lo[0] + hi[0]) / 2.0, -lo[1], -(lo[2] + hi[2]) / 2.0])
    return obj


def background_mesh(obj: trimesh.Trimesh, view_azimuth: float, rng: np.random.Generator) -> trimesh.Trimesh:
    """Scene clutter around ``obj`` (standing on y=0): a floor patch, usually a wall behind, maybe a box.

    The wall stands on the far side of the object as seen from ``view_azimuth`` (radians
    about y), so the cameras see it behind the object.
    """
    ext = obj.extents
    r_xz = 0.5 * float(np.hypot(ext[0], ext[2]))
    floor_side = r_xz * rng.uniform(2.0, 3.0)
    jitter = rng.uniform(-0.2, 0.2, size=2) * r_xz
    parts = [trimesh.creation.box(extents=(floor_side, 0.02, floor_side))]
    parts[0].apply_translation([jitter[0], -0.012, jitter[1]])  # top face just below the object
    toward_cam = np.array([np.cos(view_azimuth), 0.0, np.sin(view_azimuth)])
    if rng.random() < 0.75:
        wall_h = ext[1] * rng.uniform(0.5, 1.5)
        wall = trimesh.creation.box(extents=(r_xz * rng.uniform(1.5, 3.0), wall_h, 0.02))
        wall.apply_transform(rotation_matrix(-view_azimuth + np.pi / 2.0, [0.0, 1.0, 0.0]))
        gap = r_xz * rng.uniform(1.05, 1.4)
        wall.apply_translation(-toward_cam * gap + [0.0, wall_h / 2.0, 0.0])
        parts.append(wall)
    if rng.random() < 0.5:
        size = rng.uniform(0.1, 0.3, size=3) * r_xz * 2.0
        angle = view_azimuth + rng.choice([-1.0, 1.0]) * rng.uniform(0.5 * np.pi, 0.9 * np.pi)
        dist = r_xz + size.max() * 0.75
        clutter = trimesh.creation.box(extents=size)
        clutter.apply_translation([dist * np.cos(angle), size[1] / 2.0, dist * np.sin(angle)])
        parts.append(clutter)
    return trimesh.util.concatenate(parts)


def camera_rays(
    center: np.ndarray, radius: float, azimuth: float, rng: np.random.Generator, n_rays: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rays from one camera on the ``azimuth`` side looking at a sphere (``center`` (3,), ``radius``).

    The camera sits 2.2-3.5 radii away at 10-45 degrees elevation; ray directions are uniform
    on the spherical cap that covers the sphere plus a margin. Returns origins (n_rays, 3)
    and unit directions (n_rays, 3).
    """
    elev = rng.uniform(np.deg2rad(10.0), np.deg2rad(45.0))
    dist = radius * rng.uniform(2.2, 3.5)
    offset = np.array([np.cos(elev) * np.cos(azimuth), np.sin(elev), np.cos(elev) * np.sin(azimuth)])
    origin = center + dist * offset
    forward = center + rng.normal(scale=0.05 * radius, size=3) - origin
    forward /= np.linalg.norm(forward)
    side = np.cross(forward, [0.0, 1.0, 0.0])
    side /= np.linalg.norm(side)
    up = np.cross(side, forward)
    half_angle = np.arcsin(min(1.0, 1.25 * radius / dist))
    cos_t = rng.uniform(np.cos(half_angle), 1.0, size=n_rays)
    sin_t = np.sqrt(1.0 - cos_t**2)
    phi = rng.uniform(0.0, 2.0 * np.pi, size=n_rays)
    dirs = cos_t[:, None] * forward + sin_t[:, None] * (np.cos(phi)[:, None] * side + np.sin(phi)[:, None] * up)
    return np.broadcast_to(origin, dirs.shape).copy(), dirs


def _intersector(mesh: trimesh.Trimesh):
    """Embree ray intersector when available (fast), trimesh's pure-python one otherwise."""
    try:
        from trimesh.ray.ray_pyembree import RayMeshIntersector

        return RayMeshIntersector(mesh)
    except Exception:  # pragma: no cover - embreex missing
        from trimesh.ray.ray_triangle import RayMeshIntersector

        return RayMeshIntersector(mesh)


def cast_views(
    scene: trimesh.Trimesh, n_obj_faces: int, center: np.ndarray, radius: float, rng: np.random.Generator, n_rays: int
) -> tuple[np.ndarray, np.ndarray]:
    """First hits of 1-3 cameras on one side of the scene.

    The first ``n_obj_faces`` faces of ``scene`` are the object. Returns hit points (H, 3)
    and a boolean (H,) that is True where the hit face belongs to the object.
    """
    n_views = int(rng.integers(1, 4))
    sector = rng.uniform(0.0, 2.0 * np.pi)
    azimuths = sector + rng.uniform(-np.deg2rad(50.0), np.deg2rad(50.0), size=n_views)
    rays = [camera_rays(center, radius, float(a), rng, n_rays) for a in azimuths]
    origins = np.concatenate([r[0] for r in rays])
    dirs = np.concatenate([r[1] for r in rays])
    locations, _, index_tri = _intersector(scene).intersects_location(origins, dirs, multiple_hits=False)
    return np.asarray(locations, dtype=np.float64), np.asarray(index_tri) < n_obj_faces


def _pick(rng: np.random.Generator, n_available: int, n: int) -> np.ndarray:
    """``n`` indices into ``n_available`` items: without replacement if possible, else all + padding."""
    if n_available >= n:
        return rng.choice(n_available, size=n, replace=False)
    return np.concatenate([np.arange(n_available), rng.choice(n_available, size=n - n_available, replace=True)])


def scan_object(
    mesh: trimesh.Trimesh, label: int, rng: np.random.Generator, n_points: int = 2048
) -> tuple[np.ndarray, np.ndarray, trimesh.Trimesh]:
    """Simulated partial RGB-D-like scan of ``mesh`` in a ScanObjectNN-style frame.

    The object is randomly yawed and scaled, stood on a floor patch with an optional wall
    and clutter box, and ray-cast from 1-3 cameras on one side. Gaussian noise (sigma
    0.5-1% of the object's bbox diagonal) is added, 10-25% of the points are background,
    and the result is subsampled / padded with replacement to exactly ``n_points``.

    Returns points (n_points, 3) float32, mask (n_points,) int32 (-1 = background,
    ``label`` = object) and the object mesh in the same frame as the points.
    """
    obj = place_object(mesh, rng)
    center = obj.bounds.mean(axis=0)
    radius = 0.5 * float(np.linalg.norm(obj.extents))
    for _ in range(8):
        view_az = rng.uniform(0.0, 2.0 * np.pi)
        scene = trimesh.util.concatenate([obj, background_mesh(obj, view_az, rng)])
        hits, is_obj = cast_views(scene, len(obj.faces), center, radius, rng, n_rays=max(2 * n_points, 2048))
        if is_obj.sum() >= 16 and (~is_obj).sum() >= 16:
            break
    else:  # pragma: no cover - practically unreachable
        raise RuntimeError("scan_object: cameras kept missing the object or the background")
    n_bg = int(round(rng.uniform(0.10, 0.25) * n_points))
    obj_pts, bg_pts = hits[is_obj], hits[~is_obj]
    points = np.concatenate([obj_pts[_pick(rng, len(obj_pts), n_points - n_bg)], bg_pts[_pick(rng, len(bg_pts), n_bg)]])
    mask = np.concatenate([np.full(n_points - n_bg, label, np.int32), np.full(n_bg, -1, np.int32)])
    points += rng.normal(scale=rng.uniform(0.005, 0.01) * 2.0 * radius, size=points.shape)
    order = rng.permutation(n_points)
    points, mask = points[order] - center, mask[order]
    obj.apply_translation(-center)
    return points.astype(np.float32), mask, obj


# --------------------------------------------------------------------------- corpus


def taxonomy(counts: dict[str, int]) -> list[dict]:
    """ShapeNetCore.v2 ``taxonomy.json`` entries for the synthetic classes."""
    return [
        {"synsetId": synset, "name": TAXONOMY_NAMES[name], "children": [], "numInstances": int(counts[name])}
        for name, synset in CLASSES
    ]


def _prepare_shapenet_root(root: Path) -> None:
    """Refuse to write into a real (unmarked, non-empty) ShapeNetCore.v2 folder; mark ours."""
    if root.exists() and any(root.iterdir()) and not (root / MARKER).exists():
        raise FileExistsError(f"{root} exists and was not generated by nepa3d.data.synthetic; refusing to overwrite it")
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("generated by nepa3d.data.synthetic\n")


def _prune_stale_models(root: Path, synset: str, keep: set[str]) -> None:
    """Remove model folders of an earlier, larger generation (only inside a marked root)."""
    folder = root / synset
    for child in folder.iterdir():
        if child.is_dir() and child.name not in keep and len(child.name) == 32:
            shutil.rmtree(child)


def write_shapenet(out_root: str | os.PathLike, seed: int, n_per_class: int) -> dict[str, int]:
    """Write ``n_per_class`` meshes per class plus ``taxonomy.json``. Returns faces per class."""
    root = shapenet_root(out_root)
    _prepare_shapenet_root(root)
    faces = {}
    for ci, (name, synset) in enumerate(CLASSES):
        ids, n_faces = set(), 0
        for i in range(n_per_class):
            mid = model_id(seed, name, i)
            mesh = build_mesh(name, item_rng(seed, STREAM_SHAPENET, ci, i))
            path = root / synset / mid / "models" / "model_normalized.obj"
            write_bytes_atomic(path, obj_text(mesh, f"nepa3d synthetic {name} {synset}/{mid}").encode())
            ids.add(mid)
            n_faces += len(mesh.faces)
        (root / synset).mkdir(parents=True, exist_ok=True)
        _prune_stale_models(root, synset, ids)
        faces[name] = n_faces
    tax = json.dumps(taxonomy({name: n_per_class for name, _ in CLASSES}), indent=1)
    write_bytes_atomic(root / "taxonomy.json", (tax + "\n").encode())
    return faces


def make_scans(seed: int, stream: int, per_class: int, n_points: int) -> dict[str, np.ndarray]:
    """``per_class`` fresh scanned instances per class: data (N, P, 3) f32, label (N,) i64, mask (N, P) i32."""
    data, labels, masks = [], [], []
    for ci, (name, _) in enumerate(CLASSES):
        for i in range(per_class):
            rng = item_rng(seed, stream, ci, i)
            points, mask, _ = scan_object(build_mesh(name, rng), ci, rng, n_points)
            data.append(points)
            masks.append(mask)
            labels.append(ci)
    n = len(labels)
    return {
        "data": np.asarray(data, dtype=np.float32).reshape(n, n_points, 3),
        "label": np.asarray(labels, dtype=np.int64),
        "mask": np.asarray(masks, dtype=np.int32).reshape(n, n_points),
    }


def generate(
    out_root: str | os.PathLike,
    seed: int = 0,
    n_per_class: int = 24,
    scan_train_per_class: int = 16,
    scan_test_per_class: int = 8,
    scan_points: int = 2048,
) -> dict:
    """Regenerate the whole synthetic corpus under ``out_root``; returns a summary dict."""
    if seed < 0 or min(n_per_class, scan_train_per_class, scan_test_per_class) < 0 or scan_points < 1:
        raise ValueError("seed and counts must be >= 0 and scan_points >= 1")
    start = time.perf_counter()
    out = Path(out_root)
    faces = write_shapenet(out, seed, n_per_class)
    scan_counts = {}
    splits = (("train", STREAM_SCAN_TRAIN, scan_train_per_class), ("test", STREAM_SCAN_TEST, scan_test_per_class))
    for split, stream, per_class in splits:
        arrays = make_scans(seed, stream, per_class, scan_points)
        write_h5_atomic(scan_h5_path(out, split), arrays)
        scan_counts[split] = int(len(arrays["label"]))
    args = {
        "seed": seed,
        "n_per_class": n_per_class,
        "scan_train_per_class": scan_train_per_class,
        "scan_test_per_class": scan_test_per_class,
        "scan_points": scan_points,
    }
    corpus = {
        "generator": "nepa3d.data.synthetic",
        "args": args,
        "up_axis": "y",
        "classes": [{"name": n, "synset": s, "label": i} for i, (n, s) in enumerate(CLASSES)],
        "counts": {
            "classes": len(CLASSES),
            "meshes": n_per_class * len(CLASSES),
            "mesh_faces": int(sum(faces.values())),
            "scans_train": scan_counts["train"],
            "scans_test": scan_counts["test"],
        },
        "paths": {
            "shapenet": "ShapeNetCore.v2",
            "scan_train": str(scan_h5_path(".", "train")),
            "scan_test": str(scan_h5_path(".", "test")),
        },
    }
    write_bytes_atomic(out / "corpus.json", (json.dumps(corpus, indent=1) + "\n").encode())
    return {"out_root": str(out), **corpus["counts"], "args": args, "seconds": time.perf_counter() - start}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out_root", default="data/synthetic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n_per_class", type=int, default=24)
    parser.add_argument("--scan_train_per_class", type=int, default=16)
    parser.add_argument("--scan_test_per_class", type=int, default=8)
    parser.add_argument("--scan_points", type=int, default=2048)
    a = parser.parse_args(argv)
    summary = generate(a.out_root, a.seed, a.n_per_class, a.scan_train_per_class, a.scan_test_per_class, a.scan_points)
    print(
        f"synthetic corpus -> {summary['out_root']}: {summary['classes']} classes, {summary['meshes']} meshes, "
        f"{summary['scans_train']}+{summary['scans_test']} scans x {a.scan_points} pts, {summary['seconds']:.1f}s"
    )
    return summary


if __name__ == "__main__":
    main()
