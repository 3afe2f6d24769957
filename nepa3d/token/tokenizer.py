"""Turn a shape's query pools into a token sequence ``(feat (T, 15), type_id (T,))``.

Layouts (see :mod:`nepa3d.token.types`):

- legacy: ``[BOS] + POINT x n_point + (RAY | MISSING_RAY) x n_ray + [EOS]``
- QA:     ``[BOS] + (Q_POINT, A_POINT) x n_point + (Q_RAY, A_RAY) x n_ray + [EOS]``

Points are Morton-ordered, rays ordered by direction (theta, then phi), in the arithmetic of
``TokenizerConfig.order_dtype`` (see :mod:`nepa3d.token.ordering`; ``"float32"`` is the
original code's order bit for bit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from nepa3d.token import types as tt
from nepa3d.token.ordering import DEFAULT_ORDER_DTYPE, ORDER_DTYPES, morton_order, ray_order


@dataclass(frozen=True)
class TokenizerConfig:
    n_point: int = 256
    n_ray: int = 256
    qa_tokens: bool = True
    add_eos: bool = True
    drop_ray_prob: float = 0.0
    #: "float64" (this project's ordering) or "float32" (the original's, bit for bit)
    order_dtype: str = DEFAULT_ORDER_DTYPE

    def __post_init__(self):
        if self.order_dtype not in ORDER_DTYPES:
            raise ValueError(f"order_dtype must be one of {ORDER_DTYPES} (got {self.order_dtype!r})")

    @property
    def seq_len(self) -> int:
        return tt.required_len(self.n_point, self.n_ray, self.qa_tokens, self.add_eos)


def _choose(rng: np.random.RandomState, pool_size: int, n: int) -> np.ndarray:
    if n <= 0 or pool_size <= 0:
        return np.zeros(0, dtype=np.int64)
    return rng.choice(pool_size, n, replace=pool_size < n)


def point_features(xyz: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Legacy POINT features. (n, 3), (n,) -> (n, 15)"""
    f = np.zeros((len(xyz), tt.FEAT_DIM), dtype=np.float32)
    f[:, tt.CH_XYZ] = xyz
    f[:, tt.CH_DIST] = dist
    return f


def ray_features(o: np.ndarray, d: np.ndarray, hit: np.ndarray, t: np.ndarray,
                 n: np.ndarray) -> np.ndarray:
    """Legacy RAY features. (m, 3) x3, (m,) x2 -> (m, 15)"""
    h = (hit > 0.5).astype(np.float32)[:, None]
    f = np.zeros((len(o), tt.FEAT_DIM), dtype=np.float32)
    f[:, tt.CH_XYZ] = (o + t[:, None] * d) * h
    f[:, tt.CH_O] = o
    f[:, tt.CH_D] = d
    f[:, tt.CH_T] = t
    f[:, tt.CH_HIT] = hit
    f[:, tt.CH_N] = n * h
    return f


def split_query_answer(feat: np.ndarray, is_ray: bool) -> tuple[np.ndarray, np.ndarray]:
    """Split legacy features into (query, answer) feature rows. (k, 15) -> (k, 15), (k, 15)"""
    q = np.zeros_like(feat)
    a = np.zeros_like(feat)
    if is_ray:
        q[:, tt.CH_O] = feat[:, tt.CH_O]
        q[:, tt.CH_D] = feat[:, tt.CH_D]
        a[:, tt.CH_XYZ] = feat[:, tt.CH_XYZ]
        a[:, tt.CH_T] = feat[:, tt.CH_T]
        a[:, tt.CH_HIT] = feat[:, tt.CH_HIT]
        a[:, tt.CH_N] = feat[:, tt.CH_N]
    else:
        q[:, tt.CH_XYZ] = feat[:, tt.CH_XYZ]
        a[:, tt.CH_DIST] = feat[:, tt.CH_DIST]
    return q, a


def interleave(q: np.ndarray, a: np.ndarray) -> np.ndarray:
    """(k, F), (k, F) -> (2k, F) as q0, a0, q1, a1, ..."""
    out = np.empty((2 * len(q),) + q.shape[1:], dtype=q.dtype)
    out[0::2] = q
    out[1::2] = a
    return out


def assemble(point_feat: np.ndarray, ray_feat: np.ndarray, *, qa_tokens: bool, add_eos: bool,
             ray_missing: bool) -> tuple[np.ndarray, np.ndarray]:
    """Lay out already-ordered point/ray features as a sequence.

    (n, 15), (m, 15) -> feat (T, 15) float32, type_id (T,) int64
    """
    n, m = len(point_feat), len(ray_feat)
    if ray_missing:
        ray_feat = np.zeros_like(ray_feat)
    feats = [np.zeros((1, tt.FEAT_DIM), np.float32)]
    types = [np.array([tt.BOS])]
    if qa_tokens:
        qp, ap = split_query_answer(point_feat, is_ray=False)
        qr, ar = split_query_answer(ray_feat, is_ray=True)
        feats += [interleave(qp, ap), interleave(qr, ar)]
        types.append(np.tile([tt.Q_POINT, tt.A_POINT], n))
        ray_types = [tt.MISSING_RAY, tt.MISSING_RAY] if ray_missing else [tt.Q_RAY, tt.A_RAY]
        types.append(np.tile(ray_types, m))
    else:
        feats += [point_feat, ray_feat]
        types.append(np.full(n, tt.POINT))
        types.append(np.full(m, tt.MISSING_RAY if ray_missing else tt.RAY))
    if add_eos:
        feats.append(np.zeros((1, tt.FEAT_DIM), np.float32))
        types.append(np.array([tt.EOS]))
    return (np.concatenate(feats).astype(np.float32),
            np.concatenate(types).astype(np.int64))


def build_sequence(pools: Mapping[str, np.ndarray], cfg: TokenizerConfig,
                   rng: np.random.RandomState, ray_available: bool | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Sample points and rays from ``pools`` and tokenise them.

    ``pools`` holds ``pt_xyz_pool (P, 3)``, ``pt_dist_pool (P,)`` and the ray pools
    ``ray_{o,d,n}_pool (M, 3)``, ``ray_{hit,t}_pool (M,)``; ``ray_available`` defaults to
    ``pools["ray_available"]``. RNG draws: point indices, ray indices, then (only when rays
    are available and ``drop_ray_prob > 0``) one uniform for the ray-drop decision.

    Returns feat (T, 15) float32, type_id (T,) int64 with T = ``cfg.seq_len``.
    """
    if ray_available is None:
        ray_available = bool(pools.get("ray_available", True))
    xyz, dist = pools["pt_xyz_pool"], pools["pt_dist_pool"]
    pi = _choose(rng, len(xyz), cfg.n_point)
    ri = _choose(rng, len(pools["ray_o_pool"]), cfg.n_ray)
    missing = (not ray_available) or (cfg.drop_ray_prob > 0 and rng.rand() < cfg.drop_ray_prob)
    pxyz = xyz[pi]
    pi = pi[morton_order(pxyz, cfg.order_dtype)]
    n, m = len(pi), len(ri)
    step = 2 if cfg.qa_tokens else 1
    feat = np.zeros((1 + step * (n + m) + int(cfg.add_eos), tt.FEAT_DIM), dtype=np.float32)
    q = feat[1: 1 + step * n: step]                      # Q_POINT / POINT rows
    a = feat[step: 1 + step * n: step]                   # A_POINT / POINT rows
    q[:, tt.CH_XYZ] = xyz[pi]
    a[:, tt.CH_DIST] = dist[pi]
    if not missing:  # missing rays stay all-zero rows; their order draws nothing
        d = pools["ray_d_pool"][ri]
        ri = ri[ray_order(d, cfg.order_dtype)]
        o, d = pools["ray_o_pool"][ri], pools["ray_d_pool"][ri]
        hit, t = pools["ray_hit_pool"][ri], pools["ray_t_pool"][ri]
        h = (hit > 0.5).astype(np.float32)[:, None]
        base = 1 + step * n
        q = feat[base: base + step * m: step]            # Q_RAY / RAY rows
        a = feat[base + step - 1: base + step * m: step]  # A_RAY / RAY rows
        q[:, tt.CH_O] = o
        q[:, tt.CH_D] = d
        a[:, tt.CH_XYZ] = (o + t[:, None] * d) * h
        a[:, tt.CH_T] = t
        a[:, tt.CH_HIT] = hit
        a[:, tt.CH_N] = pools["ray_n_pool"][ri] * h
    return feat, sequence_types(n, m, cfg.qa_tokens, cfg.add_eos, missing)


_TYPES: dict[tuple, np.ndarray] = {}


def sequence_types(n: int, m: int, qa_tokens: bool, add_eos: bool, ray_missing: bool) -> np.ndarray:
    """type_id (T,) int64 of a sequence of ``n`` points and ``m`` rays (a fresh copy of a
    memoised template: the same ids :func:`assemble` lays out)."""
    key = (n, m, bool(qa_tokens), bool(add_eos), bool(ray_missing))
    ids = _TYPES.get(key)
    if ids is None:
        _, ids = assemble(np.zeros((n, tt.FEAT_DIM), np.float32),
                          np.zeros((m, tt.FEAT_DIM), np.float32), qa_tokens=qa_tokens,
                          add_eos=add_eos, ray_missing=ray_missing)
        if len(_TYPES) < 256:
            _TYPES[key] = ids
    return ids.copy()


def point_only_sequence(ctx_xyz: np.ndarray, ctx_dist: np.ndarray, query_xyz: np.ndarray, *,
                        qa_tokens: bool, add_eos: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Context points with answers followed by query points with zeroed answers (CPAC).

    (c, 3), (c,), (q, 3) -> feat (T, 15), type_id (T,), query_pos (q,) positions whose hidden
    state represents each query (the Q_POINT token in QA layout, the POINT token in legacy).
    Inputs must already be in the desired order.
    """
    ctx = point_features(ctx_xyz, ctx_dist)
    qry = point_features(query_xyz, np.zeros(len(query_xyz), np.float32))
    feat, types = assemble(np.concatenate([ctx, qry]), np.zeros((0, tt.FEAT_DIM), np.float32),
                           qa_tokens=qa_tokens, add_eos=add_eos, ray_missing=False)
    c = len(ctx_xyz)
    per = 2 if qa_tokens else 1
    query_pos = 1 + per * c + per * np.arange(len(query_xyz))
    return feat, types, query_pos
