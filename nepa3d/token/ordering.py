"""Serialisation orders for query tokens: Morton (Z-order) for points, angular for rays.

Pure functions on numpy arrays. Morton codes use 10 bits per axis (30-bit codes).

``order_dtype`` chooses the arithmetic:

- ``"float64"`` (default, this project's): quantisation and ray angles in float64, int64 codes,
  stable argsort (equal codes keep their input order).
- ``"float32"``: the original code's, bit for bit: float32 quantisation and ray angles, uint32
  codes and numpy's default (unstable quicksort) argsort. About 1% of samples then order a few
  neighbouring tokens differently from float64 (a coordinate at a cell boundary, a tie).
"""

from __future__ import annotations

import numpy as np

MORTON_BITS = 10
_MAX_Q = (1 << MORTON_BITS) - 1
#: Values of ``order_dtype`` (``TokenizerConfig.order_dtype``, ``--order_dtype``).
ORDER_DTYPES = ("float64", "float32")
DEFAULT_ORDER_DTYPE = "float64"


def _check(order_dtype: str) -> None:
    if order_dtype not in ORDER_DTYPES:
        raise ValueError(f"order_dtype must be one of {ORDER_DTYPES} (got {order_dtype!r})")


def _part1by2(v: np.ndarray) -> np.ndarray:
    """Spread the low 10 bits of ``v`` so that two zero bits sit between each pair, in ``v``'s
    integer dtype (int64 or uint32; neither overflows). (N,) -> (N,)"""
    t = v.dtype.type
    v = v & t(0x3FF)
    v = (v | (v << t(16))) & t(0x30000FF)
    v = (v | (v << t(8))) & t(0x300F00F)
    v = (v | (v << t(4))) & t(0x30C30C3)
    v = (v | (v << t(2))) & t(0x9249249)
    return v


def quantize(xyz: np.ndarray, order_dtype: str = DEFAULT_ORDER_DTYPE) -> np.ndarray:
    """Map [-1, 1]^3 to integer cells 0..1023 per axis (truncation, clipped).

    (N, 3) -> (N, 3): int64 from float64 arithmetic, or (``"float32"``) uint32 from float32
    arithmetic as ``uint32(clip((xyz * 0.5 + 0.5) * 1023, 0, 1023))`` on float32 xyz."""
    _check(order_dtype)
    if order_dtype == "float32":
        x = np.asarray(xyz, dtype=np.float32)
        f = np.float32
        return np.clip((x * f(0.5) + f(0.5)) * f(_MAX_Q), f(0), f(_MAX_Q)).astype(np.uint32)
    q = np.clip((np.asarray(xyz, dtype=np.float64) * 0.5 + 0.5) * _MAX_Q, 0, _MAX_Q)
    return q.astype(np.int64)


def morton_code(xyz: np.ndarray, order_dtype: str = DEFAULT_ORDER_DTYPE) -> np.ndarray:
    """Morton code with x in the lowest bit: code = X | Y<<1 | Z<<2.
    (N, 3) -> (N,) int64 (``"float64"``) or uint32 (``"float32"``)"""
    q = quantize(xyz, order_dtype)
    one, two = q.dtype.type(1), q.dtype.type(2)
    return _part1by2(q[:, 0]) | (_part1by2(q[:, 1]) << one) | (_part1by2(q[:, 2]) << two)


def morton_order(xyz: np.ndarray, order_dtype: str = DEFAULT_ORDER_DTYPE) -> np.ndarray:
    """Indices that sort points by Morton code. (N, 3) -> (N,)

    ``"float64"``: stable (equal codes keep input order). ``"float32"``: ``np.argsort``'s
    default kind on the uint32 codes, as the original (unstable: the order of equal codes is
    numpy's)."""
    _check(order_dtype)
    if len(xyz) == 0:
        return np.zeros(0, dtype=np.int64)
    codes = morton_code(xyz, order_dtype)
    if order_dtype == "float32":
        return np.argsort(codes)
    return np.argsort(codes, kind="stable")


def ray_order(d: np.ndarray, order_dtype: str = DEFAULT_ORDER_DTYPE) -> np.ndarray:
    """Indices that sort rays by direction: azimuth theta first, polar phi second, computed in
    ``order_dtype`` (d normalised with +1e-9, theta = arctan2(dy, dx), phi = arccos(clip(dz)),
    ``np.lexsort((phi, theta))``). (M, 3) -> (M,)"""
    _check(order_dtype)
    if len(d) == 0:
        return np.zeros(0, dtype=np.int64)
    d = np.asarray(d, dtype=np.float32 if order_dtype == "float32" else np.float64)
    d = d / (np.linalg.norm(d, axis=1, keepdims=True) + 1e-9)
    theta = np.arctan2(d[:, 1], d[:, 0])
    phi = np.arccos(np.clip(d[:, 2], -1.0, 1.0))
    return np.lexsort((phi, theta))
