"""Classic hand-made global shape descriptors of one shape's sampled query tokens.

Input: the POINT tokens of one sampled view, ``xyz (n, 3)`` (query positions, normalised
shape frame inside [-1, 1]^3, y up) and ``dist (n,)`` (the distance answers the backend
gives). Query points are a mix of uniform points in the cube and points near the surface,
so the geometry blocks look at the surface through soft weights

    w_i = exp(-(d_i - min_j d_j) / sigma),   sigma = SIGMA = 0.05

(relative to the closest point, so a backend with biased distances, e.g. a coarse UDF grid,
gets the same weights as an exact one; all weights are 1 when distances are all equal, e.g.
ablated to 0), and through a hard near-surface set: the ``m = max(3, ceil(NEAR_FRAC * n))``
points of smallest distance (NEAR_FRAC = 0.25; ties by index).

``descriptor(xyz, dist) -> (DESCRIPTOR_DIM,) float64`` concatenates, in this order:

========  ====  =============================================================================
block     dim   definition
========  ====  =============================================================================
pca       3     sqrt of the eigenvalues (descending) of the w-weighted covariance of xyz about
                the w-weighted centroid c (population normalisation: sum w (x-c)(x-c)^T / sum w)
bbox      6     per-axis min (x, y, z) then max (x, y, z) of the near-surface set
dist      8     fraction of the n points whose distance falls in the geometric bins
                [0, .01, .02, .04, .08, .16, .32, .64, inf)
d2        10    D2 shape distribution: histogram of |x_i - x_j| over ALL pairs i < j of the
                n points (deterministic, no random pairs), pair weight w_i w_j, 10 bins on
                [0, 2] (longer pairs count in the last bin), normalised to sum 1
shell     8     radial shells: w-weighted histogram of |x_i - c|, 8 bins on [0, 1] (clipped)
height    8     w-weighted histogram of the height y, 8 bins on [-1, 1] (clipped)
========  ====  =============================================================================

DESCRIPTOR_DIM = 43. Histograms are normalised to sum 1, so the descriptor does not depend on
n beyond sampling noise (n is 32..256 in practice; D2 costs n (n - 1) / 2 distances).

Rotation sensitivity: pca, dist, d2 and shell are invariant to rotations (and translations)
of the shape; bbox and height are axis-aligned and rely on the data's canonical y-up frame,
so the descriptor as a whole is NOT rotation-invariant (nor translation-invariant: bbox and
height use absolute coordinates). A rotated copy of a shape gets a different descriptor.

Pure numpy: no I/O, no random draws.
"""

from __future__ import annotations

import math

import numpy as np

from nepa3d.token import types as tt

SIGMA = 0.05
NEAR_FRAC = 0.25
DIST_EDGES = (0.0, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, math.inf)
D2_BINS, D2_RANGE = 10, (0.0, 2.0)
SHELL_BINS, SHELL_RANGE = 8, (0.0, 1.0)
HEIGHT_BINS, HEIGHT_RANGE = 8, (-1.0, 1.0)
BLOCKS = (("pca", 3), ("bbox", 6), ("dist", len(DIST_EDGES) - 1), ("d2", D2_BINS),
          ("shell", SHELL_BINS), ("height", HEIGHT_BINS))
DESCRIPTOR_DIM = sum(d for _, d in BLOCKS)


def surface_weights(dist: np.ndarray, sigma: float = SIGMA) -> np.ndarray:
    """w_i = exp(-(d_i - min d) / sigma). (n,) -> (n,) float64 in (0, 1], max 1."""
    d = np.asarray(dist, dtype=np.float64)
    if d.size == 0:
        return d
    return np.exp(-(d - d.min()) / float(sigma))


def near_surface_index(dist: np.ndarray, near_frac: float = NEAR_FRAC) -> np.ndarray:
    """Indices of the max(3, ceil(near_frac * n)) smallest distances (stable: ties by index),
    capped at n. (n,) -> (m,) int64"""
    d = np.asarray(dist, dtype=np.float64)
    m = min(len(d), max(3, int(math.ceil(near_frac * len(d)))))
    return np.argsort(d, kind="stable")[:m]


def weighted_centroid(xyz: np.ndarray, w: np.ndarray) -> np.ndarray:
    """sum w x / sum w. (n, 3), (n,) -> (3,)"""
    w = np.asarray(w, dtype=np.float64)
    return (w[:, None] * np.asarray(xyz, dtype=np.float64)).sum(0) / w.sum()


def pca_extents(xyz: np.ndarray, w: np.ndarray) -> np.ndarray:
    """sqrt eigenvalues (descending) of the weighted population covariance. -> (3,)"""
    x = np.asarray(xyz, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    c = x - weighted_centroid(x, w)
    cov = (w[:, None] * c).T @ c / w.sum()
    ev = np.linalg.eigvalsh(cov)[::-1]
    return np.sqrt(np.maximum(ev, 0.0))


def bbox_extents(xyz: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Per-axis min then max of xyz[idx]. -> (6,)"""
    x = np.asarray(xyz, dtype=np.float64)[idx]
    return np.concatenate([x.min(0), x.max(0)])


def weighted_histogram(values: np.ndarray, w: np.ndarray | None, bins: int,
                       value_range: tuple[float, float]) -> np.ndarray:
    """Histogram of values clipped into ``value_range`` (so nothing is dropped), weights w
    (None: 1), normalised to sum 1 (zeros when the total weight is 0). -> (bins,)"""
    v = np.clip(np.asarray(values, dtype=np.float64), *value_range)
    h, _ = np.histogram(v, bins=bins, range=value_range, weights=w)
    h = h.astype(np.float64)
    tot = h.sum()
    return h / tot if tot > 0 else h


def distance_histogram(dist: np.ndarray) -> np.ndarray:
    """Fraction of points per geometric distance bin (DIST_EDGES, left-closed). -> (8,)"""
    d = np.asarray(dist, dtype=np.float64)
    edges = np.asarray(DIST_EDGES)
    b = np.clip(np.searchsorted(edges, d, side="right") - 1, 0, len(edges) - 2)
    return np.bincount(b, minlength=len(edges) - 1).astype(np.float64) / max(len(d), 1)


def d2_histogram(xyz: np.ndarray, w: np.ndarray) -> np.ndarray:
    """D2 over all pairs i < j, pair weight w_i w_j. -> (D2_BINS,)"""
    x = np.asarray(xyz, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    i, j = np.triu_indices(len(x), k=1)
    dd = np.linalg.norm(x[i] - x[j], axis=1)
    return weighted_histogram(dd, w[i] * w[j], D2_BINS, D2_RANGE)


def descriptor(xyz: np.ndarray, dist: np.ndarray, *, sigma: float = SIGMA,
               near_frac: float = NEAR_FRAC) -> np.ndarray:
    """One view's global descriptor (see the module docstring).
    xyz (n, 3), dist (n,) with n >= 2 -> (DESCRIPTOR_DIM,) float64"""
    x = np.asarray(xyz, dtype=np.float64)
    d = np.asarray(dist, dtype=np.float64).reshape(-1)
    if x.ndim != 2 or x.shape[1] != 3 or len(x) != len(d) or len(x) < 2:
        raise ValueError(f"descriptor needs xyz (n, 3) and dist (n,) with n >= 2, "
                         f"got {x.shape} and {d.shape}")
    w = surface_weights(d, sigma)
    c = weighted_centroid(x, w)
    out = np.concatenate([
        pca_extents(x, w),
        bbox_extents(x, near_surface_index(d, near_frac)),
        distance_histogram(d),
        d2_histogram(x, w),
        weighted_histogram(np.linalg.norm(x - c, axis=1), w, SHELL_BINS, SHELL_RANGE),
        weighted_histogram(x[:, 1], w, HEIGHT_BINS, HEIGHT_RANGE),
    ])
    assert out.shape == (DESCRIPTOR_DIM,)
    return out


def block_slices() -> dict[str, slice]:
    """{block name: slice of the descriptor}."""
    out, s = {}, 0
    for name, dim in BLOCKS:
        out[name] = slice(s, s + dim)
        s += dim
    return out


def token_descriptor(feat: np.ndarray, type_id: np.ndarray, **kw) -> np.ndarray:
    """Descriptor of the POINT tokens of one legacy-layout sequence (xyz = channels 0:3,
    distance = channel 10). feat (T, 15), type_id (T,) -> (DESCRIPTOR_DIM,)"""
    pts = np.asarray(feat)[np.asarray(type_id) == tt.POINT]
    return descriptor(pts[:, tt.CH_XYZ], pts[:, tt.CH_DIST], **kw)
