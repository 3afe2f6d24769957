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
| voxel              | EDT of pc occupancy, nearest cell| DDA on pc occupancy         | yes   |

The voxel backend (:mod:`nepa3d.backends.voxel`) takes a :class:`VoxelConfig`
(``--voxel_grid --voxel_dilate --voxel_max_steps``).

Leakage guard: the point-cloud backends never fall back to mesh-derived distances. A cache
without a valid ``pt_dist_pc_pool`` is refused with the migration command that fixes it.
"""

from __future__ import annotations

import os

import numpy as np

from nepa3d.backends.voxel import VOXEL_INPUTS, VoxelConfig, voxel_answers
from nepa3d.data.cache import CacheError, read_cache_keys
from nepa3d.data.loader_store import read_through_store
from nepa3d.protocol_thresholds import PC_DIST_KEY, POINTCLOUD_BACKENDS, VOXEL_DIST_SOURCE

BACKENDS = ("mesh", "pointcloud", "pointcloud_meshray", "pointcloud_noray", "voxel", "udfgrid")
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


def distance_source(name: str, available) -> str:
    """Where backend ``name``'s point distances come from, given the cache keys ``available``:
    the cache key it reads (the voxel backend: ``pc_xyz``, whose occupancy it measures). The one
    definition :func:`get_pools` reads through and the evaluators record
    (``<role>_dist_source``)."""
    if name == "mesh":
        return "pt_dist_pool"
    if name in POINTCLOUD_BACKENDS:
        return PC_DIST_KEY
    if name == "voxel":
        return VOXEL_DIST_SOURCE
    return "pt_dist_udf_pool" if "pt_dist_udf_pool" in available else "pt_dist_pool"


def recorded_source(name: str, path: str | os.PathLike) -> str:
    """:func:`distance_source` of backend ``name`` on cache file ``path`` (its key names only are
    read): what a result records as ``<role>_dist_source``."""
    with np.load(path) as z:
        return distance_source(name, z.files)


def backend_keys(name: str, available) -> list[str]:
    """The cache keys backend ``name`` reads from a file holding the keys ``available`` (the
    one definition the lazy loader and :func:`get_pools` share). Optional keys are listed only
    when present: their absence is handled (and named) by :func:`get_pools`."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {BACKENDS}")
    if name == "voxel":
        return list(VOXEL_INPUTS)
    keys = ["pt_xyz_pool", "ray_o_pool", "ray_d_pool"]
    answers = ["ray_hit_pool", "ray_t_pool", "ray_n_pool"]
    if name == "mesh":
        return keys + ["pt_dist_pool"] + answers
    if name == "udfgrid":
        return keys + ["pt_dist_udf_pool" if "pt_dist_udf_pool" in available else "pt_dist_pool"]
    keys += [k for k in ("pt_dist_pc_pool",) if k in available]
    use_pc = name == "pointcloud" and all(k in available for k in PC_RAY_KEYS)
    return keys + (list(PC_RAY_KEYS) if use_pc else answers)


def read_backend_arrays(name: str, path: str | os.PathLike, store: str | os.PathLike | None = None) -> dict:
    """Only the arrays of cache ``path`` that backend ``name`` needs (lazy, validated once per
    file and process: :func:`nepa3d.data.cache.read_cache_keys`); through the decompressed
    store ``store`` when given (:mod:`nepa3d.data.loader_store`)."""
    keys = lambda available: backend_keys(name, available)  # noqa: E731
    if store:
        return read_through_store(store, path, keys)
    return read_cache_keys(path, keys)


def get_pools(name: str, path: str | os.PathLike, arrays: dict | None = None,
              voxel: VoxelConfig | None = None) -> dict:
    """Pools of cache ``path`` as seen by backend ``name``.

    Args:
        name: one of :data:`BACKENDS`; path: the cache file (named in errors);
        arrays: the already loaded cache, all keys or at least :func:`backend_keys` (memoises
            voxel answers); None reads just those keys; voxel: settings of the ``voxel``
            backend (default :class:`VoxelConfig`), ignored by the others.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {BACKENDS}")
    a = arrays if arrays is not None else read_backend_arrays(name, path)
    for k in backend_keys(name, a.keys()):
        if k not in a:
            raise CacheError(path, f"missing (the '{name}' backend reads it)", k)
    pools = {"pt_xyz_pool": a["pt_xyz_pool"]}
    rays = {"ray_o_pool": a["ray_o_pool"], "ray_d_pool": a["ray_d_pool"]}  # kept by every backend
    answers = ("ray_hit_pool", "ray_t_pool", "ray_n_pool")
    source = distance_source(name, a.keys())
    if name == "mesh":
        pools["pt_dist_pool"] = a[source]
        rays.update({k: a[k] for k in answers})
        ray_available = True
    elif name in POINTCLOUD_BACKENDS:
        pools["pt_dist_pool"] = pc_distance(a, path) if source == PC_DIST_KEY else a[source]
        use_pc = name == "pointcloud" and all(k in a for k in PC_RAY_KEYS)
        rays.update(zip(answers, (a[k] for k in (PC_RAY_KEYS if use_pc else answers))))
        ray_available = name != "pointcloud_noray"
    elif name == "voxel":  # point cloud only: no mesh-derived key is read
        try:
            ans = voxel_answers(a, voxel or VoxelConfig())
        except (KeyError, ValueError) as e:
            raise CacheError(path, f"voxel backend: {e}", "pc_xyz") from e
        pools["pt_dist_pool"] = ans["pt_dist_pool"]
        rays.update({k: ans[k] for k in answers})
        ray_available = True
    else:  # udfgrid
        pools["pt_dist_pool"] = a[source]
        m = len(rays["ray_o_pool"])
        rays.update(ray_hit_pool=np.zeros(m, np.float32), ray_t_pool=np.zeros(m, np.float32),
                    ray_n_pool=np.zeros((m, 3), np.float32))
        ray_available = False
    pools.update(rays)
    pools["ray_available"] = ray_available
    return pools
