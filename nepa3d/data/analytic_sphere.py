"""Cache arrays of an analytic sphere: exact answers with no mesh processing.

For tests and benchmarks that need valid caches fast: every distance is ``| |x| - r |``, every
ray answer comes from the closed-form ray-sphere intersection, and the observation-derived
distance is the nearest-neighbour distance to the sampled point cloud (as preprocessing computes
it). The arrays satisfy :mod:`nepa3d.data.cache`'s schema (mesh kind).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def sphere_rays(rng: np.random.RandomState, M: int, r: float) -> tuple[np.ndarray, ...]:
    """``M`` rays from radius 2.2 aimed near the centre, intersected with ``|x| = r``.

    Returns:
        ``(o (M, 3), d (M, 3), hit (M,) bool, t (M,), n (M, 3))`` float64; misses have t = 0, n = 0.
    """
    o = rng.normal(size=(M, 3))
    o = o / np.linalg.norm(o, axis=1, keepdims=True) * 2.2
    d = -o / 2.2 + rng.normal(0, 0.2, (M, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    b = (o * d).sum(1)
    disc = b ** 2 - ((o * o).sum(1) - r * r)
    hit = disc > 0
    t = np.where(hit, -b - np.sqrt(np.maximum(disc, 0)), 0.0)
    n = np.where(hit[:, None], (o + t[:, None] * d) / r, 0.0)
    return o, d, hit, t, n


def sphere_cache_arrays(rng: np.random.RandomState, P: int, M: int, G: int, n_pc: int) -> dict:
    """A sphere of radius ``r ~ U(0.3, 0.8)``: ``n_pc`` surface samples, a pool of ``P`` points
    (half uniform in the cube, half near the surface), ``M`` rays and a ``G^3`` UDF grid."""
    r = rng.uniform(0.3, 0.8)
    v = rng.normal(size=(n_pc, 3))
    nrm = v / np.linalg.norm(v, axis=1, keepdims=True)
    pc = nrm * r
    n_uni = P // 2
    pool = np.clip(np.concatenate([rng.uniform(-1, 1, (n_uni, 3)),
                                   pc[rng.choice(n_pc, P - n_uni)]
                                   + rng.normal(0, 0.02, (P - n_uni, 3))]), -1, 1)
    dist = np.abs(np.linalg.norm(pool, axis=1) - r)
    pc_dist = cKDTree(pc).query(pool, k=1)[0]  # observation-derived, >= dist
    c = -1 + (np.arange(G) + 0.5) * 2 / G
    cx, cy, cz = np.meshgrid(c, c, c, indexing="ij")
    udf = np.abs(np.sqrt(cx ** 2 + cy ** 2 + cz ** 2) - r)
    o, d, hit, t, n = sphere_rays(rng, M, r)
    f = lambda x: np.asarray(x, dtype=np.float32)  # noqa: E731
    return {"pc_xyz": f(pc), "pc_n": f(nrm), "pt_xyz_pool": f(pool), "pt_dist_pool": f(dist),
            "pt_dist_pc_pool": f(pc_dist), "pt_dist_udf_pool": f(dist),
            "udf_grid": udf.astype(np.float16), "occ_grid": (udf <= 2 / G).astype(np.uint8),
            "df_grid": np.array([G], np.int32), "df_dilate": np.array([1], np.int32),
            "ray_o_pool": f(o), "ray_d_pool": f(d), "ray_hit_pool": f(hit), "ray_t_pool": f(t),
            "ray_n_pool": f(n), "ray_hit_pc_pool": f(hit), "ray_t_pc_pool": f(t),
            "ray_n_pc_pool": f(n)}
