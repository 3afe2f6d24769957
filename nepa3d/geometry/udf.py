"""Occupancy grids, EDT unsigned distance field and trilinear sampling.

The UDF grid step of the original's per-shape mesh pipeline (KohsukeIde/3D-NEPA @ 737d98f,
``preprocess_modelnet40.preprocess_one``).

Grid convention: side ``G`` over ``[-1, 1]^3``, voxel ``2 / G``, index ``[ix, iy, iz]``, voxel
centre ``-1 + (i + 0.5) * voxel``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def voxel_size(grid: int) -> float:
    """Voxel edge ``2 / G`` for a grid of side ``G`` over ``[-1, 1]``."""
    if grid <= 0:
        raise ValueError(f"grid side must be positive, got {grid}")
    return 2.0 / float(grid)


def voxel_index(points: np.ndarray, grid: int) -> np.ndarray:
    """``(K, 3)`` int64 voxel indices ``clip(floor((p + 1) / voxel), 0, G - 1)``."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    idx = np.floor((p + 1.0) / voxel_size(grid)).astype(np.int64)
    return np.clip(idx, 0, grid - 1)


def voxel_centers(grid: int) -> np.ndarray:
    """``(G,)`` voxel-centre coordinates along one axis."""
    return -1.0 + (np.arange(grid) + 0.5) * voxel_size(grid)


def occupancy_from_points(points: np.ndarray, grid: int, dilate: int = 0) -> np.ndarray:
    """Boolean occupancy of the voxels containing a point, dilated ``dilate`` times.

    Dilation uses ``scipy.ndimage.binary_dilation`` with its default structuring element (the
    6-connected cross) and ``iterations=dilate``.

    Args:
        points: ``(N, 3)`` in the normalised frame (outside points are clamped to the border).
        grid: ``G``; dilate: dilation iterations (0 = none).

    Returns:
        ``(G, G, G)`` bool, indexed ``[ix, iy, iz]``.
    """
    occ = np.zeros((grid, grid, grid), dtype=bool)
    idx = voxel_index(points, grid)
    occ[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    if dilate > 0 and occ.any():
        occ = ndimage.binary_dilation(occ, iterations=int(dilate))
    return occ


def udf_from_occupancy(occ: np.ndarray) -> np.ndarray:
    """World-unit EDT from each voxel centre to the nearest occupied voxel centre.

    ``distance_transform_edt(~occ, sampling=(voxel,) * 3)``; occupied voxels are 0.

    Args:
        occ: ``(G, G, G)`` bool with at least one occupied voxel.

    Returns:
        ``(G, G, G)`` float32.
    """
    occ = np.asarray(occ, dtype=bool)
    if occ.ndim != 3 or len(set(occ.shape)) != 1:
        raise ValueError(f"occupancy must be a (G, G, G) cube, got {occ.shape}")
    if not occ.any():
        raise ValueError("occupancy grid is empty: the distance field is undefined")
    vox = voxel_size(occ.shape[0])
    return ndimage.distance_transform_edt(~occ, sampling=(vox, vox, vox)).astype(np.float32)


def trilinear_sample(grid: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of a cube grid at points, voxel-centre convention, edge clamp.

    Per axis: ``s = (x + 1) / voxel - 0.5``, ``i0 = floor(s)``, ``w = s - i0``; then ``i0`` and
    ``i0 + 1`` are clamped to ``[0, G - 1]`` (so values beyond the outer centres are constant).

    Args:
        grid: ``(G, G, G)`` values indexed ``[ix, iy, iz]`` (any float dtype).
        points: ``(K, 3)``.

    Returns:
        ``(K,)`` float64.
    """
    g = np.asarray(grid, dtype=np.float64)
    side = g.shape[0]
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    s = (p + 1.0) / voxel_size(side) - 0.5
    i0 = np.floor(s)
    w = s - i0
    i0 = i0.astype(np.int64)
    lo = np.clip(i0, 0, side - 1)
    hi = np.clip(i0 + 1, 0, side - 1)
    out = np.zeros(len(p))
    for cx in (0, 1):
        ix = hi[:, 0] if cx else lo[:, 0]
        wx = w[:, 0] if cx else 1.0 - w[:, 0]
        for cy in (0, 1):
            iy = hi[:, 1] if cy else lo[:, 1]
            wy = w[:, 1] if cy else 1.0 - w[:, 1]
            for cz in (0, 1):
                iz = hi[:, 2] if cz else lo[:, 2]
                wz = w[:, 2] if cz else 1.0 - w[:, 2]
                out += wx * wy * wz * g[ix, iy, iz]
    return out
