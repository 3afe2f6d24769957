"""Surface sampling and the point-query pool (as the original's ``preprocess_one`` builds them,
KohsukeIde/3D-NEPA @ 737d98f).

All functions are pure: randomness comes from the ``rng`` argument (``np.random.Generator``
or ``np.random.RandomState``), never from the global numpy state.
"""

from __future__ import annotations

import numpy as np


def triangle_cross(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """``(F, 3)`` float64 ``cross(b - a, c - a)`` per face (length = twice the area)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    return np.cross(b - a, c - a)


def triangle_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """``(F,)`` float64 triangle areas."""
    return 0.5 * np.linalg.norm(triangle_cross(vertices, faces), axis=1)


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """``(F, 3)`` float64 unit face normals, orientation as stored (right-hand rule on a, b, c).

    Zero-area faces get a zero normal.
    """
    cr = triangle_cross(vertices, faces)
    norm = np.linalg.norm(cr, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.where(norm > 0, cr / np.where(norm > 0, norm, 1.0), 0.0)
    return n


def sample_surface(vertices: np.ndarray, faces: np.ndarray, count: int, rng,
                   areas: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted uniform samples on a triangle mesh surface.

    A face is picked with probability proportional to its area, then a point uniformly inside
    it (parallelogram sample reflected into the triangle).

    Args:
        vertices: ``(V, 3)``; faces: ``(F, 3)`` int; count: number of samples ``S``;
        rng: generator; areas: optional precomputed ``(F,)`` areas.

    Returns:
        ``(points (S, 3) float64, face_index (S,) int64)``.

    Raises:
        ValueError: when the total area is not positive and finite (nothing to sample).
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if areas is None:
        areas = triangle_areas(v, f)
    cum = np.cumsum(areas)
    total = float(cum[-1]) if len(cum) else 0.0
    if not (np.isfinite(total) and total > 0):
        raise ValueError(f"cannot sample a surface of total area {total}")
    face_idx = np.searchsorted(cum, rng.uniform(0.0, total, size=count), side="right")
    face_idx = np.minimum(face_idx, len(f) - 1).astype(np.int64)
    uv = rng.uniform(0.0, 1.0, size=(count, 2))
    flip = uv.sum(axis=1) > 1.0
    uv[flip] = 1.0 - uv[flip]
    a = v[f[face_idx, 0]]
    pts = a + uv[:, :1] * (v[f[face_idx, 1]] - a) + uv[:, 1:] * (v[f[face_idx, 2]] - a)
    return pts, face_idx


def split_counts(pool_size: int, surface_ratio: float) -> tuple[int, int]:
    """``(n_uniform, n_surface)`` with ``n_uniform = round((1 - ratio) * P)`` (Python round:
    halves to even) and ``n_surface = P - n_uniform``."""
    n_uni = int(round((1.0 - float(surface_ratio)) * int(pool_size)))
    n_uni = min(max(n_uni, 0), int(pool_size))
    return n_uni, int(pool_size) - n_uni


def point_query_pool(surface_points: np.ndarray, pool_size: int, surface_ratio: float,
                     surface_sigma: float, rng) -> np.ndarray:
    """Point-query pool: a uniform block, then a near-surface jittered block, clipped.

    Draw order (fixes the random stream): ``uniform(-1, 1, (n_uni, 3))``; then
    ``choice(N, n_surf, replace=N < n_surf)`` base indices into ``surface_points``; then
    ``normal(0, sigma, (n_surf, 3))`` jitter.

    Args:
        surface_points: ``(N, 3)`` base points for the near-surface block (``pc_xyz``).
        pool_size: ``P``; surface_ratio: fraction of near-surface points;
        surface_sigma: jitter standard deviation; rng: generator.

    Returns:
        ``(P, 3)`` float64, the first ``n_uni`` rows uniform in the cube, every coordinate in
        ``[-1, 1]``.
    """
    base = np.asarray(surface_points, dtype=np.float64)
    n_uni, n_surf = split_counts(pool_size, surface_ratio)
    uni = rng.uniform(-1.0, 1.0, size=(n_uni, 3))
    if n_surf > 0:
        if len(base) == 0:
            raise ValueError("near-surface block requested but there are no surface points")
        idx = rng.choice(len(base), size=n_surf, replace=len(base) < n_surf)
        surf = base[idx] + rng.normal(0.0, float(surface_sigma), size=(n_surf, 3))
    else:
        surf = np.zeros((0, 3))
    return np.clip(np.concatenate([uni, surf], axis=0), -1.0, 1.0)
