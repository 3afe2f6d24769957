"""Planted caches for tests, the one module that writes them (every test imports its caches from here):

- :func:`write_planted` / :func:`planted_arrays`: analytic shapes whose distances are known in closed
  form, written through the real schema. Class ``sphere``: radius r; class ``box``: half-extent b
  (cube). Unsigned distances: sphere |‖x‖ - r|, cube: distance to the cube's surface.
- :func:`write_spheres`: spheres of :mod:`nepa3d.data.analytic_sphere` (exact ray answers, the
  observation-derived distance from the sampled cloud), through the real schema.
- :func:`write_scan` / :func:`scan_arrays`: scan-kind caches written by hand with
  ``np.savez_compressed`` (not the project's writers): three classes separable by construction
  (:data:`SCAN_CLASSES`: a round blob, a flat disc, a tall stick).

Plus :func:`corrupted_copy` (a cache root with one file overwritten) and :func:`tiny_checkpoint`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from nepa3d.data.analytic_sphere import sphere_cache_arrays
from nepa3d.data.cache import save_cache


def cube_surface_distance(x: np.ndarray, b: float) -> np.ndarray:
    """Unsigned distance from points (n, 3) to the surface of the cube [-b, b]^3."""
    q = np.abs(x) - b
    outside = np.linalg.norm(np.maximum(q, 0), axis=1)
    inside = np.minimum(q.max(axis=1), 0)
    return np.abs(outside + inside)


def planted_arrays(kind: str, size: float, rng: np.random.Generator, *, N=256, P=300, M=64, G=8,
                   scan: bool = False) -> dict:
    if kind == "sphere":
        d = rng.normal(size=(N, 3))
        pc = size * d / np.linalg.norm(d, axis=1, keepdims=True)
        dist = lambda x: np.abs(np.linalg.norm(x, axis=1) - size)
    else:
        pc = rng.uniform(-size, size, (N, 3))
        ax = rng.integers(0, 3, N)
        pc[np.arange(N), ax] = size * rng.choice([-1, 1], N)
        dist = lambda x: cube_surface_distance(x, size)
    pts = rng.uniform(-1, 1, (P, 3))
    o = rng.normal(size=(M, 3))
    o = 2.2 * o / np.linalg.norm(o, axis=1, keepdims=True)
    dd = -o / np.linalg.norm(o, axis=1, keepdims=True)
    hit = np.ones(M)
    t = np.full(M, 2.2 - size)
    n = -dd
    a = {"pc_xyz": pc, "pc_n": np.zeros((N, 3)), "pt_xyz_pool": pts, "pt_dist_pool": dist(pts),
         "pt_dist_pc_pool": dist(pts), "ray_o_pool": o, "ray_d_pool": dd, "ray_hit_pool": hit,
         "ray_t_pool": t, "ray_n_pool": n}
    if not scan:
        c = -1 + (np.arange(G) + 0.5) * (2.0 / G)
        grid = np.stack(np.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 3)
        udf = dist(grid).reshape(G, G, G)
        a.update(pt_dist_udf_pool=dist(pts), udf_grid=udf.astype(np.float16),
                 occ_grid=(udf < 2.0 / G).astype(np.uint8), df_grid=np.array([G], np.int32),
                 df_dilate=np.array([1], np.int32), ray_hit_pc_pool=hit, ray_t_pc_pool=t,
                 ray_n_pc_pool=n)
    out = {}
    for k, v in a.items():
        v = np.asarray(v)
        out[k] = v if v.dtype in (np.float16, np.uint8, np.int32) else v.astype(np.float32)
    return out


def write_planted(root: Path, split: str, per_class: int, seed: int = 0, scan: bool = False,
                  first: int = 0, **sizes) -> list[Path]:
    """Write ``per_class`` sphere and cube caches under ``root/split/<class>/``, numbered from
    ``first`` (give another split other numbers: one name is one shape)."""
    rng = np.random.default_rng(seed)
    paths = []
    for ci, kind in enumerate(("sphere", "box")):
        cls = f"class_{ci:03d}" if scan else kind
        for i in range(first, first + per_class):
            size = float(rng.uniform(0.4, 0.8))
            p = Path(root) / split / cls / f"{kind}_{i:04d}.npz"
            save_cache(p, planted_arrays(kind, size, rng, scan=scan, **sizes))
            paths.append(p)
    return paths


def write_spheres(root: Path, counts: dict[str, int], *, P: int, M: int, G: int, n_pc: int, n_classes: int,
                  name: str = "cls{c}/s{i}.npz", seed: int = 0) -> list[Path]:
    """``counts[split]`` analytic spheres (:func:`sphere_cache_arrays` with ``P`` pool points, ``M``
    rays, a ``G^3`` grid, ``n_pc`` cloud points) per split, at ``root/<split>/<name>`` with
    ``c = i % n_classes``; one ``RandomState(seed)`` drawn in split order."""
    rng = np.random.RandomState(seed)
    paths = []
    for split, n in counts.items():
        for i in range(n):
            p = Path(root) / split / name.format(c=i % n_classes, i=i)
            save_cache(p, sphere_cache_arrays(rng, P, M, G, n_pc))
            paths.append(p)
    return paths


#: The scan-kind classes of :func:`write_scan`, separable by construction.
SCAN_CLASSES = ("blob", "disc", "stick")


def _surface(kind: str, rng, n: int) -> np.ndarray:
    s = rng.uniform(0.85, 1.15)
    if kind == "blob":
        v = rng.normal(size=(n, 3))
        return 0.6 * s * v / np.linalg.norm(v, axis=1, keepdims=True)
    if kind == "disc":
        r, t = 0.8 * s * np.sqrt(rng.uniform(size=n)), rng.uniform(0, 2 * np.pi, n)
        return np.stack([r * np.cos(t), np.zeros(n), r * np.sin(t)], 1)
    t = rng.uniform(0, 2 * np.pi, n)  # stick: thin vertical cylinder
    return np.stack([0.08 * np.cos(t), rng.uniform(-0.85, 0.85, n) * s, 0.08 * np.sin(t)], 1)


def scan_arrays(kind: str, rng, P: int = 200, n_pc: int = 256, M: int = 8) -> dict:
    """Scan-kind cache arrays written by hand (keys/dtypes of nepa3d.data.cache)."""
    pc = _surface(kind, rng, n_pc)
    pool = np.concatenate([rng.uniform(-1, 1, (P // 2, 3)),
                           pc[rng.choice(n_pc, P - P // 2)] + rng.normal(0, 0.02, (P - P // 2, 3))])
    pool = np.clip(pool, -1, 1)
    dist = cKDTree(pc).query(pool)[0]
    f = lambda x: np.asarray(x, dtype=np.float32)  # noqa: E731
    z3, z1 = np.zeros((M, 3), np.float32), np.zeros(M, np.float32)
    return {"schema_version": np.array([1], np.int32), "pc_xyz": f(pc), "pc_n": f(0 * pc),
            "pt_xyz_pool": f(pool), "pt_dist_pool": f(dist), "pt_dist_pc_pool": f(dist),
            "ray_o_pool": z3, "ray_d_pool": z3, "ray_hit_pool": z1, "ray_t_pool": z1,
            "ray_n_pool": z3}


def write_scan(root: Path, counts: dict[str, int], name: str = "{split}_{c}_{i:02d}.npz",
               seed: int = 0) -> list[Path]:
    """``counts[split]`` scan-kind caches per class of :data:`SCAN_CLASSES` per split, at
    ``root/<split>/<c:03d>_<kind>/<name>``; one ``RandomState(seed)`` drawn in split, class order."""
    rng = np.random.RandomState(seed)
    paths = []
    for split, n in counts.items():
        for c, kind in enumerate(SCAN_CLASSES):
            for i in range(n):
                p = Path(root) / split / f"{c:03d}_{kind}" / name.format(split=split, c=c, i=i)
                p.parent.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(p, **scan_arrays(kind, rng))
                paths.append(p)
    return paths


def corrupted_copy(root: Path, dest: Path, victim: str, splits=("eval", "train_udf")) -> Path:
    """Copy ``splits`` of a cache root to ``dest`` and overwrite ``dest/victim`` with garbage.
    Returns the corrupted file's path."""
    import shutil

    for s in splits:
        shutil.copytree(Path(root) / s, Path(dest) / s)
    bad = Path(dest) / victim
    bad.write_bytes(b"this is not a zip file" * 10)
    return bad


def tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A random-init QA checkpoint (d_model 32, 1 layer, max_len 128) saved like pretrain's."""
    import torch

    from nepa3d.models.query_nepa import ModelConfig, QueryNepa
    from nepa3d.utils.ckpt import save_checkpoint

    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=32, nhead=2, num_layers=1, max_len=128)
    save_checkpoint({"model": QueryNepa(cfg).state_dict(), "model_config": cfg.to_dict(),
                     "args": {"qa_tokens": 1, "add_eos": 1, "n_point": 16, "n_ray": 8,
                              "d_model": 32, "heads": 2, "layers": 1},
                     "epoch": 0, "step": 0}, path)
    return Path(path)
