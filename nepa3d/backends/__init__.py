"""Primitive backends: which answers a token sequence sees for the same shape.

A backend reads one cache file and returns the *pools* dict the tokenizer consumes:
``pt_xyz_pool (P, 3)``, ``pt_dist_pool (P,)``, ``ray_{o,d,n}_pool (M, 3)``,
``ray_{hit,t}_pool (M,)`` (all float32) and ``ray_available`` (bool).

| backend            | point distance                   | ray answers                 | rays? |
|--------------------|----------------------------------|-----------------------------|-------|
| mesh               | pt_dist_pool (mesh-derived)      | mesh ray pools              | yes   |
| pointcloud         | pt_dist_pc_pool (observed pc)    | ray_*_pc_pool (pc DDA)      | yes   |
| pointcloud_meshray | pt_dist_pc_pool                  | mesh ray pools (ablation)   | yes   |
| pointcloud_noray   | pt_dist_pc_pool                  | (ignored)                   | no    |
| udfgrid            | pt_dist_udf_pool                 | o, d kept; answers zeroed   | no    |

Leakage guard: the point-cloud backends never fall back to mesh-derived distances. A cache
without a valid ``pt_dist_pc_pool`` is refused with the migration command that fixes it.
"""

from __future__ import annotations

import os

import numpy as np

from nepa3d.data.cache import CacheError, load_cache

BACKENDS = ("mesh", "pointcloud", "pointcloud_meshray", "pointcloud_noray", "udfgrid")
POINTCLOUD_BACKENDS = ("pointcloud", "pointcloud_meshray", "pointcloud_noray")
RAY_KEYS = ("ray_o_pool", "ray_d_pool", "ray_hit_pool", "ray_t_pool", "ray_n_pool")
PC_RAY_KEYS = ("ray_hit_pc_pool", "ray_t_pc_pool", "ray_n_pc_pool")

MIGRATION_HINT = ("python -m nepa3d.data.migrate_add_pt_dist_pc_pool --cache_root <cache_root> "
                  "--splits train,test")


class LeakageError(CacheError):
    """A point-cloud backend was asked to read a cache with no observation-derived distances."""


def pc_distance(arrays: dict, path: str | os.PathLike) -> np.ndarray:
    """Observation-derived distances ``pt_dist_pc_pool (P,)``, or a :class:`LeakageError`."""
    d = arrays.get("pt_dist_pc_pool")
    if d is None:
        raise LeakageError(path, "missing: point-cloud backends refuse mesh-derived distances "
                                 f"(pt_dist_pool). Add it with: {MIGRATION_HINT}",
                           "pt_dist_pc_pool")
    if not np.all(np.isfinite(d)) or np.any(d < 0):
        raise LeakageError(path, "holds invalid entries (-1 marks a failed computation); "
                                 f"recompute with: {MIGRATION_HINT} --overwrite", "pt_dist_pc_pool")
    return d


def get_pools(name: str, path: str | os.PathLike, arrays: dict | None = None) -> dict:
    """Pools of cache ``path`` as seen by backend ``name``. ``arrays``: an already loaded cache."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {BACKENDS}")
    a = arrays if arrays is not None else load_cache(path)
    pools = {"pt_xyz_pool": a["pt_xyz_pool"]}
    rays = {k: a[k] for k in RAY_KEYS}
    if name == "mesh":
        pools["pt_dist_pool"] = a["pt_dist_pool"]
        ray_available = True
    elif name in POINTCLOUD_BACKENDS:
        pools["pt_dist_pool"] = pc_distance(a, path)
        if name == "pointcloud" and all(k in a for k in PC_RAY_KEYS):
            rays["ray_hit_pool"], rays["ray_t_pool"], rays["ray_n_pool"] = (a[k] for k in PC_RAY_KEYS)
        ray_available = name != "pointcloud_noray"
    else:  # udfgrid
        pools["pt_dist_pool"] = a.get("pt_dist_udf_pool", a["pt_dist_pool"])
        for k in ("ray_hit_pool", "ray_t_pool", "ray_n_pool"):
            rays[k] = np.zeros_like(rays[k])
        ray_available = False
    pools.update(rays)
    pools["ray_available"] = ray_available
    return pools
