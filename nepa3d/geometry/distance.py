"""Unsigned distances: nearest-neighbour, exact point-to-triangle-mesh, sanitising.

Exact mesh distance (:func:`mesh_distance_exact`, :class:`TriangleDistanceIndex`) has no
approximation: a ``cKDTree`` over triangle centroids gives an upper bound, an AABB tree
traversed level by level (all points at once) prunes every triangle that cannot be closer,
and the survivors are evaluated with the exact point-triangle projection.

:func:`mesh_distance_trimesh` keeps ``trimesh.proximity.closest_point`` as the reference.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def sanitize_distances(d: np.ndarray) -> np.ndarray:
    """Replace NaN and +inf by the largest finite value (1.0 if none), -inf by 0.

    Args:
        d: ``(K,)`` distances.

    Returns:
        ``(K,)`` float32 copy.
    """
    out = np.array(d, dtype=np.float64, copy=True)
    finite = np.isfinite(out)
    if not finite.all():
        fill = float(out[finite].max()) if finite.any() else 1.0
        out[np.isnan(out) | (out == np.inf)] = fill
        out[out == -np.inf] = 0.0
    return out.astype(np.float32)


def build_kdtree(points: np.ndarray) -> cKDTree:
    """``cKDTree`` over ``(R, 3)`` points. Sliding-midpoint splits (``balanced_tree=False``):
    same exact answers, ~1.5x faster queries for points far from the data."""
    return cKDTree(np.asarray(points, dtype=np.float64).reshape(-1, 3), balanced_tree=False,
                   compact_nodes=False)


def nearest_neighbors(query: np.ndarray, ref: np.ndarray | cKDTree,
                      chunk: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean nearest neighbour of each query point in a reference set.

    Args:
        query: ``(Q, 3)``; ref: ``(R, 3)`` points or a prebuilt ``cKDTree`` over them;
        chunk: query rows per ``cKDTree.query`` call (0 = all at once).

    Returns:
        ``(dist (Q,) float64, index (Q,) int64)``.
    """
    q = np.asarray(query, dtype=np.float64).reshape(-1, 3)
    tree = ref if isinstance(ref, cKDTree) else build_kdtree(ref)
    if tree.n == 0:
        raise ValueError("nearest_neighbors: empty reference set")
    if chunk and chunk > 0 and len(q) > chunk:
        parts = [tree.query(q[s:s + chunk], k=1) for s in range(0, len(q), chunk)]
        dist = np.concatenate([p[0] for p in parts])
        idx = np.concatenate([p[1] for p in parts])
    else:
        dist, idx = tree.query(q, k=1)
    return np.asarray(dist, dtype=np.float64), np.asarray(idx, dtype=np.int64)


def _dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, y)


def _segment_closest(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    den = _dot(ab, ab)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(den > 0, _dot(p - a, ab) / np.where(den > 0, den, 1.0), 0.0)
    return a + np.clip(t, 0.0, 1.0)[:, None] * ab


def closest_point_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray,
                               c: np.ndarray) -> np.ndarray:
    """Closest point on triangle ``(a_i, b_i, c_i)`` to ``p_i`` (row-wise), exact.

    Voronoi-region classification (vertex, edge or face region) after Ericson,
    *Real-Time Collision Detection* §5.1.5, vectorised; degenerate (zero-area) triangles fall
    back to the nearest of their three edges.

    Args:
        p, a, b, c: ``(K, 3)`` float arrays.

    Returns:
        ``(K, 3)`` float64 closest points.
    """
    p, a, b, c = (np.asarray(x, dtype=np.float64) for x in (p, a, b, c))
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = _dot(ab, ap), _dot(ac, ap)
    bp = p - b
    d3, d4 = _dot(ab, bp), _dot(ac, bp)
    cp = p - c
    d5, d6 = _dot(ab, cp), _dot(ac, cp)
    vc = d1 * d4 - d3 * d2
    vb = d5 * d2 - d1 * d6
    va = d3 * d6 - d5 * d4

    out = np.empty_like(p)
    done = np.zeros(len(p), dtype=bool)

    def assign(mask, value_fn):
        m = mask & ~done
        if m.any():
            out[m] = value_fn(m)
            done[m] = True

    with np.errstate(invalid="ignore", divide="ignore"):
        assign((d1 <= 0) & (d2 <= 0), lambda m: a[m])                     # vertex A
        assign((d3 >= 0) & (d4 <= d3), lambda m: b[m])                    # vertex B
        assign((vc <= 0) & (d1 >= 0) & (d3 <= 0),                          # edge AB
               lambda m: a[m] + (d1[m] / (d1[m] - d3[m]))[:, None] * ab[m])
        assign((d6 >= 0) & (d5 <= d6), lambda m: c[m])                    # vertex C
        assign((vb <= 0) & (d2 >= 0) & (d6 <= 0),                          # edge AC
               lambda m: a[m] + (d2[m] / (d2[m] - d6[m]))[:, None] * ac[m])
        assign((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0),               # edge BC
               lambda m: b[m] + ((d4[m] - d3[m]) / ((d4[m] - d3[m]) + (d5[m] - d6[m])))[:, None]
               * (c[m] - b[m]))
        rest = ~done
        if rest.any():                                                     # face interior
            den = va[rest] + vb[rest] + vc[rest]
            v = vb[rest] / den
            w = vc[rest] / den
            out[rest] = a[rest] + v[:, None] * ab[rest] + w[:, None] * ac[rest]

    bad = ~np.all(np.isfinite(out), axis=1)
    if bad.any():  # degenerate triangles: nearest point over the three edges
        pb = p[bad]
        cands = [_segment_closest(pb, s, e) for s, e in
                 ((a[bad], b[bad]), (b[bad], c[bad]), (c[bad], a[bad]))]
        dists = np.stack([np.linalg.norm(pb - q, axis=1) for q in cands], axis=1)
        pick = np.argmin(dists, axis=1)
        out[bad] = np.stack(cands, axis=1)[np.arange(len(pb)), pick]
    return out


def point_triangle_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray,
                            c: np.ndarray) -> np.ndarray:
    """Row-wise exact Euclidean distance from ``p_i`` to triangle ``(a_i, b_i, c_i)``.

    Args:
        p, a, b, c: ``(K, 3)``.

    Returns:
        ``(K,)`` float64.
    """
    p = np.asarray(p, dtype=np.float64)
    return np.linalg.norm(p - closest_point_on_triangles(p, a, b, c), axis=1)


def _aabb_sqdist(q: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Row-wise squared distance from ``q (K, 3)`` to boxes ``box (K, 6)`` = ``[lo, hi]``
    (0 inside); computed in the dtype of the inputs."""
    gap = np.maximum(np.maximum(box[:, :3] - q, q - box[:, 3:]), 0)
    return np.einsum("ij,ij->i", gap, gap)


def _outward_f32(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """float32 ``(K, 6)`` boxes that contain the float64 boxes ``[lo, hi]``."""
    lo32 = np.nextafter(lo.astype(np.float32), np.float32(-np.inf))
    hi32 = np.nextafter(hi.astype(np.float32), np.float32(np.inf))
    return np.concatenate([lo32, hi32], axis=1)


class TriangleDistanceIndex:
    """Exact point-to-mesh distance queries: an AABB tree traversed level by level.

    The tree is an implicit balanced binary tree over triangles ordered by recursive median
    splits of their centroids (longest axis of each node's centroid box); node ``i`` of level
    ``l`` holds the ordered triangles ``[floor(i F / 2^l), floor((i + 1) F / 2^l))``. A query
    runs all points together (numpy, no per-point loop):

    1. ``ub`` = exact distance to the triangles owning the 4 nearest centroids (``cKDTree``),
       an upper bound of the true distance.
    2. Level by level, (point, node) pairs are expanded to the children; a pair whose box
       distance exceeds ``ub`` is dropped (the closest triangle's ancestors all have box
       distance <= true distance <= ``ub``, so they are never dropped).
    3. The surviving leaf triangles are evaluated with :func:`point_triangle_distance`.

    Args:
        vertices: ``(V, 3)``; faces: ``(F, 3)`` int; leaf_size: max triangles per leaf.
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, leaf_size: int = 4):
        v = np.asarray(vertices, dtype=np.float64)
        f = np.asarray(faces, dtype=np.int64)
        if len(f) == 0:
            raise ValueError("TriangleDistanceIndex: mesh has no faces")
        tri = v[f]                                   # (F, 3, 3)
        n = len(f)
        cen = tri.mean(axis=1)
        depth = max(0, int(np.ceil(np.log2(max(n / max(leaf_size, 1), 1.0)))))
        while depth > 0 and (1 << depth) > n:
            depth -= 1
        order = np.arange(n)
        pos = np.arange(n)
        for level in range(depth):
            # node id of every position at this level, then sort each node along its axis
            # position p belongs to node i iff start(i) <= p < start(i + 1)
            node = np.searchsorted(self._starts(n, level), pos, side="right") - 1
            c = cen[order]
            lo = np.full((1 << level, 3), np.inf)
            hi = np.full((1 << level, 3), -np.inf)
            np.minimum.at(lo, node, c)
            np.maximum.at(hi, node, c)
            axis = np.argmax(hi - lo, axis=1)
            key = c[pos, axis[node]]
            order = order[np.lexsort((key, node))]
        self.n = n
        self.depth = depth
        self.order = order                           # tree position -> face index
        self.tri = tri[order]                        # (F, 3, 3) in tree order
        tlo, thi = self.tri.min(axis=1), self.tri.max(axis=1)
        # float32 boxes (rounded outward) for the traversal; per level node boxes
        self.tri_box = _outward_f32(tlo, thi)
        self.box, self.starts = [], []
        for level in range(depth + 1):
            st = self._starts(n, level)
            self.starts.append(st)
            self.box.append(_outward_f32(np.minimum.reduceat(tlo, st[:-1], axis=0),
                                         np.maximum.reduceat(thi, st[:-1], axis=0)))
        # float32 rounding of query points and arithmetic: absolute slack on the bound
        self.slack = 1e-5 * (1.0 + float(np.abs(tri).max()))
        self.centroid_tree = build_kdtree(self.tri.mean(axis=1))

    @staticmethod
    def _starts(n: int, level: int) -> np.ndarray:
        """``(2^level + 1,)`` segment starts of the nodes of ``level`` (last = n)."""
        i = np.arange((1 << level) + 1, dtype=np.int64)
        return (i * n) >> level

    def query(self, points: np.ndarray, max_pairs: int = 1 << 21) -> tuple[np.ndarray, np.ndarray]:
        """Exact distances and closest faces.

        Args:
            points: ``(P, 3)``; max_pairs: bound on (point, node) pairs held at once (points
                are processed in batches sized from it).

        Returns:
            ``(dist (P,) float64, face (P,) int64)`` -- ``face`` indexes the input faces.
        """
        q = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        dist = np.empty(len(q))
        face = np.empty(len(q), dtype=np.int64)
        batch = max(1, max_pairs // 64)
        for s in range(0, len(q), batch):
            dist[s:s + batch], face[s:s + batch] = self._query(q[s:s + batch])
        return dist, face

    def _query(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_q = len(q)
        # upper bound: exact distance to the triangles of the k nearest centroids
        k = min(self.n, 4)
        _, near = self.centroid_tree.query(q, k=k)
        near = np.asarray(near, dtype=np.int64).reshape(n_q, k)
        t = self.tri[near.reshape(-1)]
        d0 = point_triangle_distance(np.repeat(q, k, axis=0), t[:, 0], t[:, 1], t[:, 2])
        d0 = d0.reshape(n_q, k)
        j = np.argmin(d0, axis=1)
        ub = d0[np.arange(n_q), j]
        best = ub.copy()
        best_pos = near[np.arange(n_q), j]
        # prune test in float32 on squared distances: keep iff box_dist^2 <= (ub + slack)^2
        q32 = q.astype(np.float32)
        slack = self.slack + 1e-6 * float(np.abs(q).max(initial=0.0))
        lim = ((ub + slack) ** 2).astype(np.float32)

        pp = np.arange(n_q)                       # pair -> point (kept sorted)
        nd = np.zeros(n_q, dtype=np.int64)        # pair -> node at the current level
        for level in range(1, self.depth + 1):
            pp = np.repeat(pp, 2)
            nd = np.repeat(2 * nd, 2)
            nd[1::2] += 1
            keep = _aabb_sqdist(q32[pp], self.box[level][nd]) <= lim[pp]
            pp, nd = pp[keep], nd[keep]
        # leaves -> triangle positions
        st = self.starts[self.depth]
        size = st[nd + 1] - st[nd]
        tp = np.repeat(pp, size)
        tpos = np.repeat(st[nd], size) + (np.arange(size.sum()) - np.repeat(np.cumsum(size) - size, size))
        keep = _aabb_sqdist(q32[tp], self.tri_box[tpos]) <= lim[tp]
        tp, tpos = tp[keep], tpos[keep]
        t = self.tri[tpos]
        d = point_triangle_distance(q[tp], t[:, 0], t[:, 1], t[:, 2])
        # per-point minimum (pairs are grouped by point, in increasing point order)
        if len(tp):
            seg = np.flatnonzero(np.r_[True, tp[1:] != tp[:-1]])
            pts = tp[seg]
            dmin = np.minimum.reduceat(d, seg)
            # position of the minimum inside each segment
            is_min = d == np.repeat(dmin, np.diff(np.r_[seg, len(d)]))
            first = np.minimum.reduceat(np.where(is_min, np.arange(len(d)), len(d)), seg)
            better = dmin <= best[pts]
            best[pts[better]] = dmin[better]
            best_pos[pts[better]] = tpos[first[better]]
        return best, self.order[best_pos]


def mesh_distance_exact(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                        chunk: int = 0) -> np.ndarray:
    """Exact unsigned distance from each point to a triangle mesh surface (fast path).

    Args:
        points: ``(P, 3)``; vertices: ``(V, 3)``; faces: ``(F, 3)``;
        chunk: accepted for interface symmetry with :func:`mesh_distance_trimesh`; memory is
            bounded internally.

    Returns:
        ``(P,)`` float64.
    """
    return TriangleDistanceIndex(vertices, faces).query(points)[0]


def mesh_distance_trimesh(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                          chunk: int = 2048) -> np.ndarray:
    """Reference: ``trimesh.proximity.closest_point`` in chunks of ``chunk`` points.

    Args:
        points: ``(P, 3)``; vertices: ``(V, 3)``; faces: ``(F, 3)``.

    Returns:
        ``(P,)`` float64.
    """
    import trimesh

    mesh = trimesh.Trimesh(vertices=np.asarray(vertices, dtype=np.float64),
                           faces=np.asarray(faces, dtype=np.int64), process=False)
    q = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    step = chunk if chunk and chunk > 0 else max(len(q), 1)
    out = [trimesh.proximity.closest_point(mesh, q[s:s + step])[1] for s in range(0, len(q), step)]
    return np.concatenate(out) if out else np.zeros(0)
