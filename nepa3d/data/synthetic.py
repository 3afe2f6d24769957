"""Procedural stand-in corpus in the real ShapeNetCore.v2 and ScanObjectNN on-disk formats.

Real ShapeNet / ScanObjectNN cannot be downloaded in the embedded setting, so this module
generates a small corpus of part-based meshes (see :mod:`nepa3d.data.synthetic_shapes`)
and writes it exactly where and how the real data sets live, so that the same
preprocessing code serves both::

    <out_root>/ShapeNetCore.v2/taxonomy.json
    <out_root>/ShapeNetCore.v2/<synset>/<model_id>/models/model_normalized.obj
    <out_root>/ScanObjectNN/h5_files/main_split/training_objectdataset.h5
    <out_root>/ScanObjectNN/h5_files/main_split/test_objectdataset.h5
    <out_root>/ScanObjectNN/h5_files/main_split_nobg/training_objectdataset.h5
    <out_root>/ScanObjectNN/h5_files/main_split_nobg/test_objectdataset.h5
    <out_root>/corpus.json

``main_split`` holds object + background scans (mask -1 = background), ``main_split_nobg``
the same instances (same labels, same order) with object points only, like the real data
set's two folders (``--scan_variants`` picks which are written).

Frames: meshes are y-up, bbox-centred, bbox diagonal 1 (like ``model_normalized.obj``).
Scans are y-up, object bbox centre at the origin, object bbox diagonal 1.4-2.0 (not
normalised; the preprocessor normalises), with floor / wall / clutter points around it
(``scan_bg_frac`` of the points) and the object yawed uniformly in
[-scan_heading_deg/2, scan_heading_deg/2] degrees (360: any heading; 0: canonical).

Everything is deterministic from ``seed``: each item draws from its own generator
``default_rng([seed, stream, class_index, item_index])`` (stream 0 = ShapeNet meshes,
1 = scan train, 2 = scan test), so the same arguments give byte-identical files. The
object-only variant draws its subsample and noise from ``default_rng([seed, stream,
class_index, item_index, 1])``, so writing it leaves ``main_split`` unchanged.

Every option is validated by :func:`validate_args` (the :data:`RULES` table) before
anything is written; each CLI flag ``--<name>`` is the params.yaml key ``synthetic.<name>``.
Bad input exits with status 2 and one line ``error: synthetic.<name> (--<name>): <cause>``.

CLI::

    python -m nepa3d.data.synthetic --out_root data/synthetic --seed 0 \\
        --n_per_class 24 --scan_train_per_class 16 --scan_test_per_class 8 --scan_points 2048 \\
        --scan_bg_frac 0.10 0.25 --scan_heading_deg 360 --scan_variants main_split main_split_nobg
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import numbers
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np
import trimesh
from trimesh.transformations import rotation_matrix

from benchmark.atomic import atomic_write_bytes, atomic_write_file
from nepa3d.data.synthetic_shapes import BUILDERS, build_mesh
from nepa3d.cli.args import make_parser
from nepa3d.cli.config import CliConfig
from nepa3d.cli.edge import out_dir_problem

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
CORPUS_NAME = "embedded procedural corpus (nepa3d.data.synthetic)"
# ScanObjectNN-style variants, named like the real data set's h5_files/<folder>:
# main_split = object + background (OBJ_BG), main_split_nobg = object only (OBJ_ONLY).
SCAN_VARIANTS = ("main_split", "main_split_nobg")
NOBG_TAG = 1  # 5th entropy word of the object-only variant's per-item generator

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


def scan_dir(out_root: str | os.PathLike, variant: str = "main_split") -> Path:
    """Folder of one ScanObjectNN-style variant (``main_split`` / ``main_split_nobg``)."""
    if variant not in SCAN_VARIANTS:
        raise KeyError(f"unknown scan variant {variant!r}; expected one of {SCAN_VARIANTS}")
    return Path(out_root) / "ScanObjectNN" / "h5_files" / variant


def scan_h5_path(out_root: str | os.PathLike, split: str, variant: str = "main_split") -> Path:
    """Path of the ``split`` ("train" / "test") ScanObjectNN h5 file of ``variant``."""
    return scan_dir(out_root, variant) / SCAN_SPLIT_FILES[split]


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Rule:
    """How one generator option is checked. ``kind``: "int", "float" or "choice";
    ``count``: None for a scalar, N for exactly N values, "+" for one or more;
    ``lo`` / ``hi``: inclusive bounds (None = unbounded); ``ordered``: values non-decreasing;
    ``choices``: allowed values of a "choice" option (each at most once)."""

    kind: str
    default: Any
    help: str
    lo: float | None = None
    hi: float | None = None
    count: int | str | None = None
    ordered: bool = False
    choices: tuple[str, ...] = ()


# Every generator option, keyed by its name: the CLI flag is ``--<name>`` and the params.yaml
# key ``synthetic.<name>``. The defaults reproduce the original corpus byte for byte.
RULES: dict[str, Rule] = {
    "seed": Rule("int", 0, "corpus seed", lo=0),
    "n_per_class": Rule("int", 24, "ShapeNet-style meshes per class", lo=0),
    "scan_train_per_class": Rule("int", 16, "scanned training instances per class", lo=0),
    "scan_test_per_class": Rule("int", 8, "scanned test instances per class", lo=0),
    "scan_points": Rule("int", 2048, "points per scan", lo=1),
    "scan_bg_frac": Rule("float", (0.10, 0.25), "LO HI: background point fraction per scan, uniform in "
                         "[LO, HI] (main_split only; 0 0 = no background)", lo=0.0, hi=1.0, count=2,
                         ordered=True),
    "scan_heading_deg": Rule("float", 360.0, "object yaw uniform in [-H/2, H/2] degrees (360: any "
                             "heading, 0: canonical)", lo=0.0, hi=360.0),
    "scan_variants": Rule("choice", SCAN_VARIANTS, "ScanObjectNN-style folders to write",
                          count="+", choices=SCAN_VARIANTS),
}
DEFAULTS: dict[str, Any] = {name: rule.default for name, rule in RULES.items()}


def _fmt(value: Any) -> str:
    """A value as the error messages show it: 400.0 -> 400, 0.3 -> 0.3, 'x' -> 'x'."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


def _bounds(rule: Rule) -> str:
    lo = "-inf" if rule.lo is None else _fmt(rule.lo)
    hi = "inf" if rule.hi is None else _fmt(rule.hi)
    return f"[{lo}, {hi}{']' if rule.hi is not None else ')'}"


def _scalar(rule: Rule, value: Any) -> Any:
    """One value converted to the rule's type and range-checked; raises ValueError(cause)."""
    if rule.kind == "choice":
        if value not in rule.choices:
            raise ValueError(f"{_fmt(value)} is not one of {', '.join(rule.choices)}")
        return value
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Real)):
        raise ValueError(f"{_fmt(value)} is not a number")
    if rule.kind == "int":
        if isinstance(value, str):
            try:
                out = int(value.strip())
            except ValueError:
                raise ValueError(f"{_fmt(value)} is not an integer") from None
        elif isinstance(value, numbers.Integral):
            out = int(value)
        elif math.isfinite(value) and float(value).is_integer():
            out = int(value)
        else:
            raise ValueError(f"{_fmt(value)} is not an integer")
    else:
        try:
            out = float(value)
        except ValueError:
            raise ValueError(f"{_fmt(value)} is not a number") from None
        if not math.isfinite(out):
            raise ValueError(f"{_fmt(out)} is not finite")
    if (rule.lo is not None and out < rule.lo) or (rule.hi is not None and out > rule.hi):
        raise ValueError(f"{_fmt(out)} is outside {_bounds(rule)}")
    return out


def _check(rule: Rule, value: Any) -> Any:
    """The normalised value of one option (a tuple for multi-valued ones); raises ValueError(cause)."""
    if rule.count is None:
        return _scalar(rule, value)
    values = [value] if isinstance(value, (str, numbers.Real)) else list(value)
    if rule.count == "+" and not values:
        raise ValueError("expected at least one value, got none")
    if isinstance(rule.count, int) and len(values) != rule.count:
        raise ValueError(f"expected {rule.count} values, got {len(values)}")
    out = tuple(_scalar(rule, v) for v in values)
    if rule.kind == "choice":
        repeated = sorted({v for v in out if out.count(v) > 1})
        if repeated:
            raise ValueError(f"{_fmt(repeated[0])} is listed more than once")
    if rule.ordered:
        for a, b in zip(out, out[1:]):
            if a > b:
                raise ValueError(f"LO {_fmt(a)} is above HI {_fmt(b)} (need LO <= HI)")
    return out


def option_error(name: str, cause: str) -> str:
    """``synthetic.<name> (--<name>): <cause>`` -- the text of every option error."""
    return f"synthetic.{name} (--{name}): {cause}"


def validate_args(**values: Any) -> dict[str, Any]:
    """Check generator options against :data:`RULES`; returns all options, normalised.

    Missing options take their defaults. Raises ``ValueError`` with the text
    ``synthetic.<name> (--<name>): <cause>`` for the first bad option (in RULES order) or
    for an unknown name.
    """
    unknown = sorted(set(values) - set(RULES))
    if unknown:
        raise ValueError(option_error(unknown[0], "unknown option"))
    out = {}
    for name, rule in RULES.items():
        try:
            out[name] = _check(rule, values.get(name, rule.default))
        except ValueError as e:
            raise ValueError(option_error(name, str(e))) from None
    return out


# --------------------------------------------------------------------------- atomic writers


#: File mode of the corpus files: ordinary readable data, whatever the umask.
CORPUS_FILE_MODE = 0o644


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:mod:`benchmark.atomic`)."""
    atomic_write_bytes(path, data, mode=CORPUS_FILE_MODE)


def write_h5_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as h5 datasets (no timestamps, so bytes are reproducible), atomically."""
    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w", track_order=False) as f:
            for key, value in arrays.items():
                f.create_dataset(key, data=value, track_times=False)
    atomic_write_file(path, write, mode=CORPUS_FILE_MODE)


def obj_text(mesh: trimesh.Trimesh, comment: str = "") -> str:
    """Wavefront OBJ text of a triangle mesh: ``v x y z`` lines then 1-based ``f a b c`` lines."""
    verts = np.asarray(mesh.vertices, dtype=np.float64) + 0.0  # +0.0 turns -0.0 into 0.0
    faces = np.asarray(mesh.faces, dtype=np.int64) + 1
    lines = [f"# {comment}"] if comment else []
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts.tolist()]
    lines += [f"f {a} {b} {c}" for a, b, c in faces.tolist()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- scanning


def draw_yaw(rng: np.random.Generator, heading_deg: float = 360.0) -> float:
    """A yaw angle (radians about +y) uniform over a ``heading_deg``-wide range centred on 0.

    ``heading_deg == 360``: ``rng.uniform(0, 2 pi)`` (any heading; the original draw,
    kept exactly); otherwise ``rng.uniform(-h/2, h/2)`` with ``h`` in radians, so 0 gives
    the canonical heading. Always consumes exactly one uniform draw, so the rest of an
    item's stream (scale, cameras, noise) does not depend on ``heading_deg``.
    """
    if heading_deg == 360.0:
        return float(rng.uniform(0.0, 2.0 * np.pi))
    half = np.deg2rad(heading_deg) / 2.0
    return float(rng.uniform(-half, half))


def place_object(mesh: trimesh.Trimesh, rng: np.random.Generator, heading_deg: float = 360.0) -> trimesh.Trimesh:
    """A scaled copy of ``mesh`` (bbox diagonal 1.4-2.0), yawed by :func:`draw_yaw`, standing on y=0, centred in x/z."""
    obj = mesh.copy()
    obj.apply_transform(rotation_matrix(draw_yaw(rng, heading_deg), [0.0, 1.0, 0.0]))
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


@dataclass
class Scan:
    """One simulated scan. ``points`` / ``mask``: the main_split sample (object + background);
    ``obj_hits``: every object hit of the cameras, noise-free, in the points' frame;
    ``noise_sigma``: the Gaussian noise sigma applied to ``points``; ``obj``: the object mesh
    in the same frame."""

    points: np.ndarray
    mask: np.ndarray
    obj: trimesh.Trimesh
    obj_hits: np.ndarray
    noise_sigma: float
    label: int


def simulate_scan(
    mesh: trimesh.Trimesh,
    label: int,
    rng: np.random.Generator,
    n_points: int = 2048,
    bg_frac: tuple[float, float] = (0.10, 0.25),
    heading_deg: float = 360.0,
) -> Scan:
    """Simulated partial RGB-D-like scan of ``mesh`` in a ScanObjectNN-style frame.

    The object is yawed (:func:`draw_yaw` with ``heading_deg``) and scaled, stood on a floor
    patch with an optional wall and clutter box, and ray-cast from 1-3 cameras on one side.
    A fraction uniform in ``bg_frac`` (LO, HI) of the points is background; Gaussian noise
    (sigma 0.5-1% of the object's bbox diagonal) is added, and the result is subsampled /
    padded with replacement to exactly ``n_points``. Draws only from ``rng``, in the same
    order whatever ``bg_frac`` and ``heading_deg`` are.
    """
    obj = place_object(mesh, rng, heading_deg)
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
    n_bg = int(round(rng.uniform(bg_frac[0], bg_frac[1]) * n_points))
    obj_pts, bg_pts = hits[is_obj], hits[~is_obj]
    points = np.concatenate([obj_pts[_pick(rng, len(obj_pts), n_points - n_bg)], bg_pts[_pick(rng, len(bg_pts), n_bg)]])
    mask = np.concatenate([np.full(n_points - n_bg, label, np.int32), np.full(n_bg, -1, np.int32)])
    sigma = rng.uniform(0.005, 0.01) * 2.0 * radius
    points += rng.normal(scale=sigma, size=points.shape)
    order = rng.permutation(n_points)
    points, mask = points[order] - center, mask[order]
    obj.apply_translation(-center)
    return Scan(points.astype(np.float32), mask, obj, obj_pts - center, float(sigma), int(label))


def object_only(scan: Scan, rng: np.random.Generator, n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """The main_split_nobg sample of ``scan``: its object hits only, subsampled / padded to
    ``n_points`` (:func:`_pick`), with the scan's noise sigma, shuffled; draws only from ``rng``.

    Returns points (n_points, 3) float32 in the scan's frame and mask (n_points,) int32 all
    ``scan.label``.
    """
    points = scan.obj_hits[_pick(rng, len(scan.obj_hits), n_points)]
    points = points + rng.normal(scale=scan.noise_sigma, size=points.shape)
    points = points[rng.permutation(n_points)]
    return points.astype(np.float32), np.full(n_points, scan.label, np.int32)


def scan_object(
    mesh: trimesh.Trimesh,
    label: int,
    rng: np.random.Generator,
    n_points: int = 2048,
    bg_frac: tuple[float, float] = (0.10, 0.25),
    heading_deg: float = 360.0,
) -> tuple[np.ndarray, np.ndarray, trimesh.Trimesh]:
    """:func:`simulate_scan` as a tuple.

    Returns points (n_points, 3) float32, mask (n_points,) int32 (-1 = background,
    ``label`` = object) and the object mesh in the same frame as the points.
    """
    scan = simulate_scan(mesh, label, rng, n_points, bg_frac, heading_deg)
    return scan.points, scan.mask, scan.obj


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


def nobg_rng(seed: int, stream: int, class_index: int, index: int) -> np.random.Generator:
    """The object-only variant's generator of one item (separate from :func:`item_rng`)."""
    return np.random.default_rng([seed, stream, class_index, index, NOBG_TAG])


def make_scan_variants(
    seed: int,
    stream: int,
    per_class: int,
    n_points: int,
    bg_frac: tuple[float, float] = (0.10, 0.25),
    heading_deg: float = 360.0,
    variants: Sequence[str] = SCAN_VARIANTS,
) -> dict[str, dict[str, np.ndarray]]:
    """``per_class`` fresh scanned instances per class, as ``{variant: arrays}``.

    Arrays: data (N, P, 3) f32, label (N,) i64, mask (N, P) i32. Every variant holds the
    same instances in the same order (class-major); ``main_split`` has background points
    (mask -1), ``main_split_nobg`` the object points of the same scan only.
    """
    unknown = [v for v in variants if v not in SCAN_VARIANTS]
    if unknown:
        raise KeyError(f"unknown scan variant {unknown[0]!r}; expected one of {SCAN_VARIANTS}")
    data: dict[str, list] = {v: [] for v in variants}
    masks: dict[str, list] = {v: [] for v in variants}
    labels = []
    for ci, (name, _) in enumerate(CLASSES):
        for i in range(per_class):
            rng = item_rng(seed, stream, ci, i)
            scan = simulate_scan(build_mesh(name, rng), ci, rng, n_points, bg_frac, heading_deg)
            if "main_split" in data:
                data["main_split"].append(scan.points)
                masks["main_split"].append(scan.mask)
            if "main_split_nobg" in data:
                points, mask = object_only(scan, nobg_rng(seed, stream, ci, i), n_points)
                data["main_split_nobg"].append(points)
                masks["main_split_nobg"].append(mask)
            labels.append(ci)
    n = len(labels)
    return {
        v: {
            "data": np.asarray(data[v], dtype=np.float32).reshape(n, n_points, 3),
            "label": np.asarray(labels, dtype=np.int64),
            "mask": np.asarray(masks[v], dtype=np.int32).reshape(n, n_points),
        }
        for v in variants
    }


def make_scans(
    seed: int,
    stream: int,
    per_class: int,
    n_points: int,
    bg_frac: tuple[float, float] = (0.10, 0.25),
    heading_deg: float = 360.0,
) -> dict[str, np.ndarray]:
    """The main_split arrays of :func:`make_scan_variants`: data (N, P, 3) f32, label (N,) i64, mask (N, P) i32."""
    return make_scan_variants(seed, stream, per_class, n_points, bg_frac, heading_deg, ("main_split",))["main_split"]


def _remove_stale_variants(out: Path, keep: Sequence[str]) -> None:
    """Delete h5 files of variants an earlier run of this generator wrote (per the existing
    ``corpus.json``) and this run does not; nothing else is ever removed."""
    try:
        old = json.loads((out / "corpus.json").read_text())
    except (OSError, ValueError):
        return
    if not isinstance(old, dict) or old.get("generator") != "nepa3d.data.synthetic":
        return
    for variant in (old.get("variants") or {}):
        if variant in SCAN_VARIANTS and variant not in keep:
            for split in SCAN_SPLIT_FILES:
                scan_h5_path(out, split, variant).unlink(missing_ok=True)


def generate(
    out_root: str | os.PathLike,
    seed: int = DEFAULTS["seed"],
    n_per_class: int = DEFAULTS["n_per_class"],
    scan_train_per_class: int = DEFAULTS["scan_train_per_class"],
    scan_test_per_class: int = DEFAULTS["scan_test_per_class"],
    scan_points: int = DEFAULTS["scan_points"],
    scan_bg_frac: Sequence[float] = DEFAULTS["scan_bg_frac"],
    scan_heading_deg: float = DEFAULTS["scan_heading_deg"],
    scan_variants: Sequence[str] = DEFAULTS["scan_variants"],
) -> dict:
    """Regenerate the whole synthetic corpus under ``out_root``; returns a summary dict.

    Raises ``ValueError`` (``synthetic.<name> (--<name>): <cause>``, see
    :func:`validate_args`) before writing anything when an option is out of range.
    """
    a = validate_args(
        seed=seed, n_per_class=n_per_class, scan_train_per_class=scan_train_per_class,
        scan_test_per_class=scan_test_per_class, scan_points=scan_points, scan_bg_frac=scan_bg_frac,
        scan_heading_deg=scan_heading_deg, scan_variants=scan_variants,
    )
    variants = [v for v in SCAN_VARIANTS if v in a["scan_variants"]]  # canonical order
    start = time.perf_counter()
    out = Path(out_root)
    faces = write_shapenet(out, a["seed"], a["n_per_class"])
    _remove_stale_variants(out, variants)
    scan_counts = {}
    splits = (("train", STREAM_SCAN_TRAIN, a["scan_train_per_class"]), ("test", STREAM_SCAN_TEST, a["scan_test_per_class"]))
    for split, stream, per_class in splits:
        arrays = make_scan_variants(
            a["seed"], stream, per_class, a["scan_points"], a["scan_bg_frac"], a["scan_heading_deg"], variants
        )
        for variant in variants:
            write_h5_atomic(scan_h5_path(out, split, variant), arrays[variant])
        scan_counts[split] = int(len(arrays[variants[0]]["label"]))
    args = {
        "seed": a["seed"],
        "n_per_class": a["n_per_class"],
        "scan_train_per_class": a["scan_train_per_class"],
        "scan_test_per_class": a["scan_test_per_class"],
        "scan_points": a["scan_points"],
        "scan_bg_frac": list(a["scan_bg_frac"]),
        "scan_heading_deg": a["scan_heading_deg"],
        "scan_variants": variants,
    }
    corpus = {
        "name": CORPUS_NAME,
        "synthetic": True,
        "generator": "nepa3d.data.synthetic",
        "args": args,
        "up_axis": "y",
        "classes": [{"name": n, "synset": s, "label": i} for i, (n, s) in enumerate(CLASSES)],
        "counts": {
            "classes": len(CLASSES),
            "meshes": a["n_per_class"] * len(CLASSES),
            "mesh_faces": int(sum(faces.values())),
            "scans_train": scan_counts["train"],
            "scans_test": scan_counts["test"],
        },
        "paths": {
            "shapenet": "ShapeNetCore.v2",
            "scan_train": str(scan_h5_path(".", "train", variants[0])),
            "scan_test": str(scan_h5_path(".", "test", variants[0])),
        },
        "variants": {
            v: {
                "path": str(scan_dir(".", v)),
                "files": {split: str(scan_h5_path(".", split, v)) for split in SCAN_SPLIT_FILES},
                "background": v == "main_split",
                "counts": {split: scan_counts[split] for split in SCAN_SPLIT_FILES},
            }
            for v in variants
        },
    }
    write_bytes_atomic(out / "corpus.json", (json.dumps(corpus, indent=1) + "\n").encode())
    return {"out_root": str(out), **corpus["counts"], "args": args, "seconds": time.perf_counter() - start}


class _OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``error: ...``, exit 2), naming the params key."""

    def error(self, message: str):  # noqa: D401 - argparse API
        for name in RULES:
            prefix = f"argument --{name}: "
            if message.startswith(prefix):
                message = option_error(name, message[len(prefix):])
                break
        self.exit(2, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("nepa3d.data.synthetic", __doc__.split("\n")[0],
                         parser_class=_OneLineParser)
    parser.add_argument("--out_root", default="data/synthetic",
                        help="folder to write the generated cache and corpus.json to")
    for name, rule in RULES.items():
        default = list(rule.default) if isinstance(rule.default, tuple) else rule.default
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        nargs = {None: None, "+": "+"}.get(rule.count, rule.count)
        metavar = ("LO", "HI") if rule.count == 2 else None
        parser.add_argument(f"--{name}", default=default, nargs=nargs, metavar=metavar,
                            help=f"{rule.help} (params: synthetic.{name}; default: {shown})")
    return parser


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig(CliConfig):
    """Flags of ``python -m nepa3d.data.synthetic`` (one field per flag). The option values are
    as parsed (text from the command line, the :data:`RULES` defaults otherwise);
    :func:`validate_args` checks and converts them."""

    out_root: str
    seed: int | str
    n_per_class: int | str
    scan_train_per_class: int | str
    scan_test_per_class: int | str
    scan_points: int | str
    scan_bg_frac: list[float | str]
    scan_heading_deg: float | str
    scan_variants: list[str]

    @classmethod
    def build_parser(cls) -> argparse.ArgumentParser:
        return build_parser()


def main(argv: Sequence[str] | None = None) -> dict:
    """CLI. Bad options: one line ``error: synthetic.<name> (--<name>): <cause>`` on stderr,
    ``SystemExit(2)``, nothing written."""
    a = SyntheticConfig.parse(argv)
    options = {name: getattr(a, name) for name in RULES}
    try:
        validate_args(**options)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    blocked = out_dir_problem("--out_root", a.out_root)
    if blocked:
        print(f"error: {blocked}", file=sys.stderr)
        raise SystemExit(2)
    summary = generate(a.out_root, **options)
    args = summary["args"]
    print(
        f"synthetic corpus -> {summary['out_root']}: {summary['classes']} classes, {summary['meshes']} meshes, "
        f"{summary['scans_train']}+{summary['scans_test']} scans x {args['scan_points']} pts "
        f"({', '.join(args['scan_variants'])}), {summary['seconds']:.1f}s"
    )
    return summary


if __name__ == "__main__":
    main()
