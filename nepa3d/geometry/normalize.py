"""Unit-sphere normalisation.

Meshes are centred on their bounding-box centre, scanned point clouds on their centroid, as in
the original code (KohsukeIde/3D-NEPA @ 737d98f: ``preprocess_modelnet40.preprocess_one`` and
``preprocess_scanobjectnn.py``). Both then divide by the largest vertex norm, so the result lies in
the unit ball (hence in ``[-1, 1]^3``). A scale below ``1e-9`` (or non-finite) is replaced by 1.
"""

from __future__ import annotations

import numpy as np

MIN_SCALE = 1e-9


def _unit_scale(centred: np.ndarray) -> float:
    if len(centred) == 0:
        return 1.0
    scale = float(np.sqrt((centred * centred).sum(axis=1)).max())
    if not np.isfinite(scale) or scale < MIN_SCALE:
        return 1.0
    return scale


def normalize_bbox_unit_sphere(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Centre on the bounding-box centre ``(vmax + vmin) / 2`` and scale into the unit ball.

    Args:
        vertices: ``(V, 3)`` mesh vertices (only referenced vertices should be passed).

    Returns:
        ``(normalised (V, 3) float64, center (3,) float64, scale float)`` with
        ``normalised = (vertices - center) / scale``.
    """
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {v.shape}")
    center = (v.max(axis=0) + v.min(axis=0)) / 2.0 if len(v) else np.zeros(3)
    centred = v - center
    scale = _unit_scale(centred)
    return centred / scale, center, scale


def normalize_centroid_unit_sphere(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Centre on the mean point and scale into the unit ball (ScanObjectNN convention).

    Args:
        points: ``(N, 3)`` observed points.

    Returns:
        ``(normalised (N, 3) float64, center (3,) float64, scale float)``.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {p.shape}")
    center = p.mean(axis=0) if len(p) else np.zeros(3)
    centred = p - center
    scale = _unit_scale(centred)
    return centred / scale, center, scale
