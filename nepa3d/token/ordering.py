"""Serialisation orders for query tokens: Morton (Z-order) for points, angular for rays.

Pure functions on numpy arrays. Morton codes use 10 bits per axis (30-bit codes in int64).
"""

from __future__ import annotations

import numpy as np

MORTON_BITS = 10
_MAX_Q = (1 << MORTON_BITS) - 1


def _part1by2(v: np.ndarray) -> np.ndarray:
    """Spread the low 10 bits of ``v`` so that two zero bits sit between each pair. (N,) -> (N,)"""
    v = v.astype(np.int64) & 0x3FF
    v = (v | (v << 16)) & 0x30000FF
    v = (v | (v << 8)) & 0x300F00F
    v = (v | (v << 4)) & 0x30C30C3
    v = (v | (v << 2)) & 0x9249249
    return v


def quantize(xyz: np.ndarray) -> np.ndarray:
    """Map [-1, 1]^3 to integer cells 0..1023 per axis (truncation, clipped). (N, 3) -> (N, 3) int64"""
    q = np.clip((np.asarray(xyz, dtype=np.float64) * 0.5 + 0.5) * _MAX_Q, 0, _MAX_Q)
    return q.astype(np.int64)


def morton_code(xyz: np.ndarray) -> np.ndarray:
    """Morton code with x in the lowest bit: code = X | Y<<1 | Z<<2. (N, 3) -> (N,) int64"""
    q = quantize(xyz)
    return _part1by2(q[:, 0]) | (_part1by2(q[:, 1]) << 1) | (_part1by2(q[:, 2]) << 2)


def morton_order(xyz: np.ndarray) -> np.ndarray:
    """Indices that sort points by Morton code. Stable (equal codes keep input order),
    where the original used an unstable quicksort. (N, 3) -> (N,)"""
    if len(xyz) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.argsort(morton_code(xyz), kind="stable")


def ray_order(d: np.ndarray) -> np.ndarray:
    """Indices that sort rays by direction: azimuth theta first, polar phi second. (M, 3) -> (M,)"""
    if len(d) == 0:
        return np.zeros(0, dtype=np.int64)
    d = np.asarray(d, dtype=np.float64)
    d = d / (np.linalg.norm(d, axis=1, keepdims=True) + 1e-9)
    theta = np.arctan2(d[:, 1], d[:, 0])
    phi = np.arccos(np.clip(d[:, 2], -1.0, 1.0))
    return np.lexsort((phi, theta))
